"""The data of one fold x seed (SPEC 2-3): the tensors on the device, shared by every method's
training loop (trainer/inputs/fold_jobs.py prepares them from a cache).

Only the hidden state(s) a run uses are read, and they stay float16 (trainer/inputs/feature_store.py).
The small labelled and validation sets are float32 tensors; the pool, the test fold and the whole
training fold are FeatureRows (float16 rows z-scored a chunk at a time): x[idx] gives a float32
tensor, x.map(fn) applies fn chunk by chunk, so a pool of any size never exists in float32 whole.
On a GPU the float16 rows are copied to it once and the standardisation is fitted there."""
from __future__ import annotations

from dataclasses import dataclass, replace
from itertools import chain

import numpy as np
import torch

from trainer.inputs.feature_store import CHUNK_ROWS, CenteredCache, FeatureRows
from trainer.inputs.features import Standardizer
from trainer.inputs.placement import Placement


@dataclass
class FoldData:
    x_lab: torch.Tensor  # [n_L, L, D] labelled (training part)
    y_lab: torch.Tensor  # [n_L]
    x_val: torch.Tensor  # [n_V, L, D] validation carved from the labelled subset (may be empty)
    y_val: torch.Tensor
    x_unl: FeatureRows  # [n_U, L, D] unlabelled pool (+ an external cache's rows)
    y_unl_hidden: torch.Tensor  # [n_U] hidden labels, -1 where unknown: diagnostics only, never trained on
    group_speaker: torch.Tensor  # [n_U] speaker ids of the pool (for balance_scope=speaker)
    x_train_all: FeatureRows  # whole training fold (topline only)
    y_train_all: torch.Tensor
    x_test: FeatureRows
    y_test: torch.Tensor  # used only to score; never by any training decision
    prior: torch.Tensor  # [C] class distribution of the labelled subset (labelled + val)
    n_classes: int
    # fitted on the labelled corpus's rows the learner sees (labelled, val, own pool); every x_* is z-scored
    standardizer: Standardizer
    pool_source: torch.Tensor | None = (
        None  # [n_U] 0 = the corpus's own pool, k = the k-th unlabeled_cache (trainer/inputs/sources.py)
    )
    source_priors: torch.Tensor | None = (
        None  # [sources + 1, C] prior of each source's balanced assignment (None: `prior` for all)
    )

    @classmethod
    def build(cls, x: CenteredCache, y: np.ndarray, speakers: np.ndarray, split, n_classes: int, device,
              externals=(), labelled=()) -> "FoldData":
        """`externals`: (features, rows, their speakers, their hidden labels) of other caches whose rows join the pool
        unlabelled (trainer/inputs/sources.py). They never touch the labelled rows: the standardisation is
        fitted on the labelled corpus's own rows (labelled, validation, its pool).
        `labelled`: (features, rows, labels, rows of its own statistics) of labelled source corpora
        (trainer/inputs/source_corpora.py): their rows follow the cache's own labelled rows, each
        z-scored on its own corpus's statistics rows (per-domain standardisation)."""
        place = Placement.of(device)  # where every row of the fold lives and which code computes on it
        dev = place.device
        t = lambda a, dt=torch.float32: torch.as_tensor(np.ascontiguousarray(a), dtype=dt, device=dev)  # noqa: E731
        parts = [(x, split.unlabeled)]
        y_unl, spk_unl = y[split.unlabeled], speakers[split.unlabeled]
        source = [np.zeros(len(split.unlabeled), np.int64)]
        for k, (x_ext, rows_ext, speakers_ext, hidden_ext) in enumerate(externals, start=1):
            parts.append((x_ext, rows_ext))
            y_unl = np.concatenate([y_unl, np.asarray(hidden_ext, dtype=y.dtype)])
            spk_unl = np.concatenate([spk_unl, np.char.add(f"src{k}:", np.asarray(speakers_ext, dtype=str))])
            source.append(np.full(len(rows_ext), k, np.int64))
        # The test fold's hidden labels must not even reach the pool's diagnostics in transductive mode.
        if len(split.test):
            in_test = np.isin(split.unlabeled, split.test)
            y_unl = y_unl.copy()
            y_unl[: len(in_test)][in_test] = -1
        _, spk_ids = np.unique(spk_unl.astype(str), return_inverse=True)
        pool, own_pool = FeatureRows(parts, device=place), FeatureRows(parts[:1], device=place)
        x_lab, x_val = (x.take(t(rows, torch.long), place) for rows in (split.labeled, split.val))
        st = Standardizer().fit_blocks(lambda: chain(x_lab.split(CHUNK_ROWS), x_val.split(CHUNK_ROWS),
                                                     own_pool.centered_chunks()), place)  # chunk by chunk
        pool.standardizer = st
        x_lab = st.transform(x_lab)
        if len(labelled):
            x_lab = torch.cat([x_lab, *(own_standardised(x_src, rows, stats_rows, place)
                                        for x_src, rows, _, stats_rows in labelled)])
        y_lab = np.concatenate([y[split.labeled], *(y_src for _, _, y_src, _ in labelled)]).astype(np.int64)
        lab_all = np.concatenate([y_lab, y[split.val]])
        prior = np.bincount(lab_all, minlength=n_classes).astype(np.float64)
        return cls(x_lab=x_lab, y_lab=t(y_lab, torch.long),
                   x_val=st.transform(x_val), y_val=t(y[split.val], torch.long),
                   x_unl=pool, y_unl_hidden=t(y_unl, torch.long), group_speaker=t(spk_ids, torch.long),
                   x_train_all=FeatureRows([(x, split.train)], st, place), y_train_all=t(y[split.train], torch.long),
                   x_test=FeatureRows([(x, split.test)], st, place), y_test=t(y[split.test], torch.long),
                   prior=t(prior / prior.sum()), n_classes=n_classes, standardizer=st,
                   pool_source=t(np.concatenate(source), torch.long))

    @property
    def placement(self) -> Placement:
        return self.x_unl.placement

    def with_pool(self, keep: torch.Tensor) -> "FoldData":
        """This fold with only the pool rows where `keep` (bool [n_U]) is set; every per-row field of
        the pool follows, the source ids stay, and no source prior is kept (it was fitted on the old pool)."""
        parts = [(cache, rows[keep[self.x_unl.offsets[k]:self.x_unl.offsets[k + 1]]].cpu().numpy())
                 for k, (cache, rows) in enumerate(self.x_unl.parts)]
        parts = parts[:1] + [part for part in parts[1:] if len(part[1])]  # a source left out: no empty part
        source = None if self.pool_source is None else self.pool_source[keep]
        return replace(self, x_unl=FeatureRows(parts, self.standardizer, self.x_unl.device),
                       y_unl_hidden=self.y_unl_hidden[keep], group_speaker=self.group_speaker[keep],
                       pool_source=source, source_priors=None)

    def typical_pool(self, share: float) -> "FoldData":
        """Label-free open-set trimming (`pool_keep`): the `share` of the pool rows nearest (z-scored,
        Euclidean) to some labelled class's mean. Audio of a class the labelled rows lack (another
        corpus's classes: source_corpora) lies far from all of them, and the balanced assignment would
        otherwise force it onto the classes in play."""
        means = torch.stack([self.x_lab[self.y_lab == c].mean(0).flatten() for c in torch.unique(self.y_lab)])
        dist = self.x_unl.map(lambda x: torch.cdist(x.flatten(1), means).min(1).values)
        keep = torch.zeros(len(dist), dtype=torch.bool, device=dist.device)
        keep[torch.argsort(dist)[: max(1, int(round(share * len(dist))))]] = True
        return self.with_pool(keep)


def own_standardised(x: CenteredCache, rows: np.ndarray, stats_rows: np.ndarray, place: Placement) -> torch.Tensor:
    """Rows `rows` of another corpus's features, z-scored on that corpus's own rows `stats_rows`."""
    own = FeatureRows([(x, stats_rows)], device=place)
    st = Standardizer().fit_blocks(own.centered_chunks, place)
    return st.transform(x.take(torch.as_tensor(np.asarray(rows, np.int64), device=place.device), place))
