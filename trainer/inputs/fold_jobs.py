"""Preparing a fold x seed from a cache: the cache read once per process (only the hidden states a
run uses), the split (SPEC 2), the `auto` choices resolved on the fold's labels, and the FoldData."""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch

from pipeline.cache import load_cache
from trainer.inputs.auto_choices import choose_text_norm, resolve_auto
from trainer.inputs.feature_store import CenteredCache, SpilledRows, states_to_read
from trainer.inputs.fold_data import FoldData
from trainer.inputs.protocol import Split, fold_masks, make_split
from trainer.inputs.source_corpora import (class_index, classes_in_play, mapped_labels, source_rows, source_speakers,
                                           target_prior)
from trainer.inputs.sources import (centred_source, check_source, hidden_labels, mean_row, own_prompts_centred,
                                    source_paths, unseen_speaker_rows)
from trainer.inputs.speaker_prior import SpeakerPrior

TABLE_COLUMNS = (
    "utt_id",
    "label",
    "speaker",
    "fold",
    "split",
    "corpus",
    "text_id",
)  # what a run reads of a cache's table


@lru_cache(maxsize=2)
def raw_cache(path: str):
    """The cache as stored (every hidden state, float16), once per process: what layer=auto's
    per-run cross-validation over layers and the `label` command need. Runs with a fixed layer
    never load it (prepared_cache reads their one layer)."""
    return load_cache(path)


@lru_cache(maxsize=2)
def table_cache(path: str):
    """The cache's table, attributes and fingerprint without its vectors (CacheData, features [N, 0, D])."""
    return load_cache(path, layers=[], columns=TABLE_COLUMNS)


class PreparedCache(NamedTuple):
    """A cache as a run reads it: the hidden state(s) its layer uses (None while `auto` is unresolved)."""

    features: CenteredCache | None
    table: pd.DataFrame
    attrs: dict
    fingerprint: str


@lru_cache(maxsize=8)
def prepared_cache(path: str, layer: str, speaker_norm) -> PreparedCache:
    """The cache once per process: only the states `layer` uses are read from disk, and they stay
    float16 in memory. `auto` settings are resolved per fold x seed (prepare_fold); with them only
    the table is read.

    The one place the trainer reads cached features for training. The rows wait in a file the
    system caches (SpilledRows), not in the process's memory: a million-row pool's 1 GB of them
    is read a chunk at a time.
    """
    t = table_cache(path)  # one copy of the table per process, whatever the settings
    if layer == "auto" or speaker_norm == "auto":
        return PreparedCache(None, t.table, t.attrs, t.fingerprint)
    feats = load_cache(path, layers=lambda n_states: states_to_read(layer, n_states), columns=(),
                       allocate=SpilledRows).features
    return PreparedCache(CenteredCache(feats, t.table["speaker"].to_numpy(), layer, speaker_norm), t.table, t.attrs,
                         t.fingerprint)


def class_names(table: pd.DataFrame) -> list[str]:
    """The label vocabulary (sorted); a vocabulary, not test evidence: shuffling test labels keeps it."""
    return sorted(set(table["label"].astype(str)))


@dataclass
class FoldJob:
    """A fold x seed ready to train: its tensors plus what the run needs to name and score rows."""

    data: FoldData
    split: Split
    table: pd.DataFrame
    y: np.ndarray  # label index of every cache row
    classes: list[str]
    cfg: object  # the run's TrainConfig with `auto` layer / speaker_norm / text_norm resolved for this fold x seed
    choice: dict  # what was chosen and why (results.json "choices")
    prompts: object = None  # the PromptCentered features when text_norm is on (its means are saved for predict)
    source_speakers: np.ndarray | None = None  # speakers of the labelled rows from source_corpora (prefixed)
    rows: CenteredCache | None = None  # the cache's rows the run reads (before prompt means)

    def speaker_prior(self) -> SpeakerPrior | None:
        """With speaker_norm, how predict centres speakers with few files: fitted on the rows this run
        may see. Computed when asked (a saved run, the estimator), not for every fold x seed."""
        if not self.cfg.speaker_norm or self.rows is None:
            return None
        visible = np.sort(np.concatenate([self.split.labeled, self.split.val, self.split.unlabeled]))
        return SpeakerPrior.fit(self.rows.raw, self.table["speaker"].astype(str).to_numpy(), visible)

    def labelled_speakers(self) -> np.ndarray:
        """The speaker of each labelled row (data.x_lab's order): the cache's, then the source corpora's."""
        own = self.table["speaker"].astype(str).to_numpy()[self.split.labeled]
        return own if self.source_speakers is None else np.concatenate([own, self.source_speakers])


def run_classes(cfg, table: pd.DataFrame) -> tuple[list[str], np.ndarray, str]:
    """(the classes in play, each cache row's class index or -1, why those classes): the cache's
    labels, or with source_corpora / classes the classes named or shared (trainer/inputs/source_corpora.py)."""
    labels = mapped_labels(table, cfg.label_map)
    classes, why = classes_in_play(cfg, labels, source_labels(cfg))
    return classes, class_index(labels, classes), why


def source_labels(cfg) -> dict[str, np.ndarray]:
    """Each source corpus's labels (path -> labels, renamed by label_map)."""
    return {p: mapped_labels(table_cache(p).table, cfg.label_map) for p in source_paths(cfg.source_corpora)}


class LabelledCorpus(NamedTuple):
    """One source corpus's labelled rows for a fold x seed (FoldData.build's `labelled`)."""

    features: object  # its CenteredCache (own speakers), own prompt means removed when the run removes them
    rows: np.ndarray  # its labelled rows (classes in play, source_fraction)
    y: np.ndarray  # their class indices
    stats_rows: np.ndarray  # the rows its standardisation is fitted on: all of its audio
    speakers: np.ndarray  # their speakers, prefixed (source_corpora.source_speakers)
    record: dict  # results.json: path, fingerprint, rows used per class


def labelled_corpora(cfg, x_run, attrs: dict, classes: list[str], split: Split) -> list[LabelledCorpus]:
    """The labelled rows of each source corpus: same encoder and window as the cache (else a
    UserError, as for unlabeled_cache), centred on its own speakers and prompts."""
    out = []
    for k, path in enumerate(source_paths(cfg.source_corpora), start=1):
        x_src, t_src, a_src, fingerprint = prepared_cache(path, cfg.layer, cfg.speaker_norm)
        check_source(path, a_src, x_src.row_shape, attrs, x_run.row_shape, "source_corpora")
        every, speaker_centred = np.arange(len(t_src)), x_src
        x_src = own_prompts_centred(x_src, t_src.get("text_id"), bool(cfg.text_norm), every)
        y_src = class_index(mapped_labels(t_src, cfg.label_map), classes)
        rows = source_rows(y_src, cfg.source_fraction, split.seed, split.fold, path)
        counts = np.bincount(y_src[rows], minlength=len(classes))
        record = {"path": path, "fingerprint": fingerprint, "rows": int(len(rows)),
                  "rows_per_class": {c: int(n) for c, n in zip(classes, counts)},
                  "prompts_normalised": x_src is not speaker_centred}
        out.append(LabelledCorpus(x_src, rows, y_src[rows], every, source_speakers(t_src, k)[rows], record))
    return out


def external_pools(cfg, x_run, attrs: dict, table: pd.DataFrame, split: Split, classes: list[str]) -> list[tuple]:
    """(features, rows, speakers, hidden labels) of each unlabeled_cache source: more unlabelled audio
    for the pool, from caches of the same encoder and window, each centred on its own speakers,
    prompts and mean (trainer/inputs/sources.py); their labels are never trained on (diagnostics
    only). Rows of the labelled corpus's own speakers that the run must not see are left out."""
    seen = np.concatenate([split.labeled, split.val, split.unlabeled])
    speakers = table["speaker"].astype(str).to_numpy()
    unseen = np.setdiff1d(speakers, speakers[seen])
    corpus = str(table["corpus"].iloc[0]) if "corpus" in table and len(table) else ""
    target = mean_row(x_run, seen)
    pools = []
    for path in source_paths(cfg.unlabeled_cache):
        x_ext, t_ext, a_ext, _ = prepared_cache(path, cfg.layer, cfg.speaker_norm)
        check_source(path, a_ext, x_ext.row_shape, attrs, x_run.row_shape)
        rows = np.flatnonzero(~unseen_speaker_rows(t_ext, corpus, unseen))
        x_ext = centred_source(x_ext, t_ext.get("text_id"), bool(cfg.text_norm), target, rows)
        names = (t_ext["corpus"].astype(str) + "/" + t_ext["speaker"].astype(str)).to_numpy()
        pools.append((x_ext, rows, names[rows], hidden_labels(t_ext, classes)[rows]))
    return pools


def prepare_fold(cfg, cache_path: str, fold: str, seed: int, device) -> FoldJob:
    """Features, split (SPEC 2) and the pool (with unlabeled_cache) of one fold x seed, on `device`;
    with source_corpora their labelled rows (trainer/inputs/source_corpora.py)."""
    table = table_cache(str(cache_path)).table
    classes, y, _ = run_classes(cfg, table)
    split = make_split(table.assign(label=mapped_labels(table, cfg.label_map)), fold, seed, cfg.labeled_fraction,
                       cfg.val_fraction, cfg.transductive, cfg.inner_validation, in_play=y >= 0)
    # label-only choices; only layer=auto reads every hidden state (its CV compares them)
    cfg, choice = resolve_auto(cfg, raw_cache(str(cache_path)) if cfg.layer == "auto" else table_cache(str(cache_path)),
                               split, y, len(classes))
    x, _, attrs, _ = prepared_cache(str(cache_path), cfg.layer, cfg.speaker_norm)
    left_out = int(fold_masks(table, fold, cfg.inner_validation)[1].sum()) - len(split.test)
    return fold_job(cfg, x, table, y, classes, split, {**choice, "test_rows_left_out": left_out}, device, attrs)


def fold_job(cfg, x: CenteredCache, table: pd.DataFrame, y: np.ndarray, classes: list[str], split: Split,
             choice: dict, device, attrs: dict | None = None) -> FoldJob:
    """A split's FoldJob from its centred rows (layer and speaker_norm resolved): the text_norm
    choice on the split's labels, then the FoldData with the unlabeled_cache sources and the
    source_corpora's labelled rows (checked against the cache's `attrs`). `train` (prepare_fold)
    and `label` both end here."""
    speakers = table["speaker"].astype(str).to_numpy()
    x_run, text_choice = choose_text_norm(cfg.text_norm, x, table.get("text_id"), speakers, split, y, len(classes))
    cfg = cfg.replace(text_norm=text_choice["text_norm"])
    externals = external_pools(cfg, x_run, attrs or {}, table, split, classes) if cfg.unlabeled_cache else []
    labelled = labelled_corpora(cfg, x_run, attrs or {}, classes, split) if cfg.source_corpora else []
    data = FoldData.build(x_run, y, speakers, split, len(classes), device, externals,
                          [(s.features, s.rows, s.y, s.stats_rows) for s in labelled])
    choice = {**choice, **text_choice}
    if cfg.pool_keep < 1 and len(data.x_unl):
        data = data.typical_pool(cfg.pool_keep)
        choice["pool_kept"] = len(data.x_unl)
    if labelled:
        prior, why = target_prior(y[np.concatenate([split.labeled, split.val])], len(classes))
        data = replace(data, prior=torch.as_tensor(prior, dtype=data.prior.dtype, device=data.prior.device))
        choice.update(source_corpora=[s.record for s in labelled], prior_reason=why)
    return FoldJob(data, split, table, y, classes, cfg, choice, x_run if cfg.text_norm else None,
                   np.concatenate([s.speakers for s in labelled]) if labelled else None, x)
