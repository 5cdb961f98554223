"""The data of one fold x seed: cached features prepared once per process (SPEC 3), the split
(SPEC 2), and the tensors on the device, shared by every method's training loop.

Only the hidden state(s) a run uses are read, and they stay float16 (trainer/feature_store.py).
The small labelled and validation sets are float32 tensors; the pool, the test fold and the whole
training fold are FeatureRows (float16 rows z-scored a chunk at a time): x[idx] gives a float32
tensor, x.map(fn) applies fn chunk by chunk, so a pool of any size never exists in float32 whole."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from itertools import chain

import numpy as np
import pandas as pd
import torch

from pipeline.cache import load_cache
from trainer.feature_store import CenteredCache, FeatureRows, states_to_read
from trainer.features import Standardizer
from trainer.protocol import Split, make_split


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
    standardizer: Standardizer  # fitted on the rows the learner sees (labelled, val, pool); every x_* is z-scored

    @classmethod
    def build(cls, x: CenteredCache, y: np.ndarray, speakers: np.ndarray, split, n_classes: int, device,
              externals=()) -> "FoldData":
        """`externals`: (CenteredCache, speakers) of other caches whose rows join the pool unlabelled."""
        dev = torch.device(device)
        t = lambda a, dt=torch.float32: torch.as_tensor(np.ascontiguousarray(a), dtype=dt, device=dev)  # noqa: E731
        parts = [(x, split.unlabeled)]
        y_unl, spk_unl = y[split.unlabeled], speakers[split.unlabeled]
        for x_ext, speakers_ext in externals:
            parts.append((x_ext, np.arange(len(x_ext))))
            y_unl = np.concatenate([y_unl, -np.ones(len(x_ext), dtype=y.dtype)])
            spk_unl = np.concatenate([spk_unl, np.char.add("ext:", np.asarray(speakers_ext, dtype=str))])
        # The test fold's hidden labels must not even reach the pool's diagnostics in transductive mode.
        if len(split.test):
            in_test = np.isin(split.unlabeled, split.test)
            y_unl = y_unl.copy()
            y_unl[: len(in_test)][in_test] = -1
        _, spk_ids = np.unique(spk_unl.astype(str), return_inverse=True)
        pool = FeatureRows(parts, device=dev)
        x_lab, x_val = x.rows(split.labeled), x.rows(split.val)
        st = Standardizer().fit_blocks(lambda: chain([x_lab, x_val], pool.centered_chunks()))  # chunk by chunk
        pool.standardizer = st
        lab_all = np.concatenate([y[split.labeled], y[split.val]])
        prior = np.bincount(lab_all, minlength=n_classes).astype(np.float64)
        return cls(x_lab=t(st.transform(x_lab)), y_lab=t(y[split.labeled], torch.long),
                   x_val=t(st.transform(x_val)), y_val=t(y[split.val], torch.long),
                   x_unl=pool, y_unl_hidden=t(y_unl, torch.long), group_speaker=t(spk_ids, torch.long),
                   x_train_all=FeatureRows([(x, split.train)], st, dev), y_train_all=t(y[split.train], torch.long),
                   x_test=FeatureRows([(x, split.test)], st, dev), y_test=t(y[split.test], torch.long),
                   prior=t(prior / prior.sum()), n_classes=n_classes, standardizer=st)


# --- preparing a fold x seed from a cache --------------------------------------------------------
TABLE_COLUMNS = ("utt_id", "label", "speaker", "fold", "split", "corpus", "text_id")  # what a run reads of a cache's table


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


@lru_cache(maxsize=8)
def prepared_cache(path: str, layer: str, speaker_norm):
    """(CenteredCache of the hidden state(s) `layer` uses, table, attrs, fingerprint) of a cache,
    once per process: only those states are read from disk, and they stay float16 in memory.
    `auto` settings are resolved per fold x seed (prepare_fold); with them only the table is read.

    The one place the trainer reads cached features for training.
    """
    t = table_cache(path)  # one copy of the table per process, whatever the settings
    if layer == "auto" or speaker_norm == "auto":
        return None, t.table, t.attrs, t.fingerprint
    feats = load_cache(path, layers=lambda n_states: states_to_read(layer, n_states), columns=()).features
    return CenteredCache(feats, t.table["speaker"].to_numpy(), layer, speaker_norm), t.table, t.attrs, t.fingerprint


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


def external_pools(cfg, x: CenteredCache, attrs: dict) -> list[tuple]:
    """(CenteredCache, speakers) of each unlabeled_cache (comma list): more unlabelled audio for
    the pool, from caches of the same encoder; their labels are never read."""
    pools = []
    for path in [p for p in str(cfg.unlabeled_cache or "").split(",") if p]:
        x_ext, t_ext, a_ext, _ = prepared_cache(path, cfg.layer, cfg.speaker_norm)
        if x_ext.row_shape != x.row_shape or a_ext.get("encoder_id") != attrs.get("encoder_id"):
            raise ValueError(f"unlabeled_cache {path} holds {a_ext.get('encoder_id')!r} features {x_ext.row_shape}, "
                             f"the training cache {attrs.get('encoder_id')!r} {x.row_shape}: extract it with the "
                             "same encoder (and use the same layer)")
        pools.append((x_ext, (t_ext["corpus"].astype(str) + "/" + t_ext["speaker"].astype(str)).to_numpy()))
    return pools


def prepare_fold(cfg, cache_path: str, fold: str, seed: int, device) -> FoldJob:
    """Features, split (SPEC 2) and the pool (with unlabeled_cache) of one fold x seed, on `device`."""
    from trainer.auto_choices import choose_text_norm, resolve_auto  # late import: auto_choices -> supervised -> monitor -> here

    table = table_cache(str(cache_path)).table
    classes = class_names(table)
    y = table["label"].astype(str).map({c: i for i, c in enumerate(classes)}).to_numpy()
    split = make_split(table, fold, seed, cfg.labeled_fraction, cfg.val_fraction, cfg.transductive,
                       cfg.inner_validation)
    # label-only choices; only layer=auto reads every hidden state (its CV compares them)
    cfg, choice = resolve_auto(cfg, raw_cache(str(cache_path)) if cfg.layer == "auto" else table_cache(str(cache_path)),
                               split, y, len(classes))
    x, _, attrs, _ = prepared_cache(str(cache_path), cfg.layer, cfg.speaker_norm)
    speakers = table["speaker"].astype(str).to_numpy()
    x_run, text_choice = choose_text_norm(cfg.text_norm, x, table.get("text_id"), speakers, split, y,
                                            len(classes))
    choice.update(text_choice)
    cfg = cfg.replace(text_norm=text_choice["text_norm"])
    data = FoldData.build(x_run, y, speakers, split, len(classes), device, external_pools(cfg, x, attrs))
    return FoldJob(data, split, table, y, classes, cfg, choice, x_run if cfg.text_norm else None)
