"""The data of one fold x seed: cached features prepared once per process (SPEC 3), the split
(SPEC 2), and the tensors on the device, shared by every method's training loop."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd
import torch

from pipeline.cache import load_cache
from trainer.features import Standardizer, prepare
from trainer.protocol import Split, make_split


@dataclass
class FoldData:
    x_lab: torch.Tensor  # [n_L, L, D] labelled (training part)
    y_lab: torch.Tensor  # [n_L]
    x_val: torch.Tensor  # [n_V, L, D] validation carved from the labelled subset (may be empty)
    y_val: torch.Tensor
    x_unl: torch.Tensor  # [n_U, L, D] unlabelled pool
    y_unl_hidden: torch.Tensor  # [n_U] hidden labels, -1 where unknown: diagnostics only, never trained on
    group_speaker: torch.Tensor  # [n_U] speaker ids of the pool (for balance_scope=speaker)
    x_train_all: torch.Tensor  # whole training fold (topline only)
    y_train_all: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor  # used only to score; never by any training decision
    prior: torch.Tensor  # [C] class distribution of the labelled subset (labelled + val)
    n_classes: int
    standardizer: Standardizer  # fitted on the rows the learner sees (labelled, val, pool); every x_* is z-scored

    @classmethod
    def build(cls, x: np.ndarray, y: np.ndarray, speakers: np.ndarray, split, n_classes: int, device,
              x_ext: np.ndarray | None = None, speakers_ext: np.ndarray | None = None) -> "FoldData":
        dev = torch.device(device)
        t = lambda a, dt=torch.float32: torch.as_tensor(np.ascontiguousarray(a), dtype=dt, device=dev)  # noqa: E731
        x_unl, y_unl, spk_unl = x[split.unlabeled], y[split.unlabeled], speakers[split.unlabeled]
        if x_ext is not None and len(x_ext):
            x_unl = np.concatenate([x_unl, x_ext])
            y_unl = np.concatenate([y_unl, -np.ones(len(x_ext), dtype=y.dtype)])
            spk_unl = np.concatenate([spk_unl, np.array(["ext:" + str(s) for s in speakers_ext])])
        # The test fold's hidden labels must not even reach the pool's diagnostics in transductive mode.
        if len(split.test):
            in_test = np.isin(np.arange(len(x))[split.unlabeled], split.test)
            y_unl = y_unl.copy()
            y_unl[: len(in_test)][in_test] = -1
        _, spk_ids = np.unique(spk_unl.astype(str), return_inverse=True)
        st = Standardizer().fit(np.concatenate([x[split.labeled], x[split.val], x_unl]))
        x, x_unl = st.transform(x), st.transform(x_unl)
        lab_all = np.concatenate([y[split.labeled], y[split.val]])
        prior = np.bincount(lab_all, minlength=n_classes).astype(np.float64)
        return cls(x_lab=t(x[split.labeled]), y_lab=t(y[split.labeled], torch.long),
                   x_val=t(x[split.val]), y_val=t(y[split.val], torch.long),
                   x_unl=t(x_unl), y_unl_hidden=t(y_unl, torch.long), group_speaker=t(spk_ids, torch.long),
                   x_train_all=t(x[split.train]), y_train_all=t(y[split.train], torch.long),
                   x_test=t(x[split.test]), y_test=t(y[split.test], torch.long),
                   prior=t(prior / prior.sum()), n_classes=n_classes, standardizer=st)


# --- preparing a fold x seed from a cache --------------------------------------------------------
@lru_cache(maxsize=2)
def raw_cache(path: str):
    """The cache as stored (every hidden state), once per process.

    The one place the trainer reads cached features: a layer-only reader can replace load_cache here.
    """
    return load_cache(path)


@lru_cache(maxsize=8)
def prepared_cache(path: str, layer: str, speaker_norm):
    """(features [N, L', D'] float32, table, attrs, fingerprint) of a cache, once per process.
    `auto` settings are resolved per fold x seed (prepare_fold); with them only the table is read."""
    c = raw_cache(path)
    if layer == "auto" or speaker_norm == "auto":
        return None, c.table, c.attrs, c.fingerprint
    return prepare(c.features, c.table["speaker"].to_numpy(), layer, speaker_norm), c.table, c.attrs, c.fingerprint


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
    cfg: object  # the run's TrainConfig with `auto` layer / speaker_norm resolved for this fold x seed
    choice: dict  # what was chosen and why (results.json "choices")


def prepare_fold(cfg, cache_path: str, fold: str, seed: int, device) -> FoldJob:
    """Features, split (SPEC 2) and the pool (with unlabeled_cache) of one fold x seed, on `device`."""
    from trainer.auto_choices import resolve_auto  # late import: auto_choices -> supervised -> monitor -> here

    table = raw_cache(str(cache_path)).table
    classes = class_names(table)
    y = table["label"].astype(str).map({c: i for i, c in enumerate(classes)}).to_numpy()
    split = make_split(table, fold, seed, cfg.labeled_fraction, cfg.val_fraction, cfg.transductive,
                       cfg.inner_validation)
    cfg, choice = resolve_auto(cfg, raw_cache(str(cache_path)), split, y, len(classes))  # issue 14: label-only
    x = prepared_cache(str(cache_path), cfg.layer, cfg.speaker_norm)[0]
    x_ext = spk_ext = None
    if cfg.unlabeled_cache:
        x_ext, t_ext, _, _ = prepared_cache(str(cfg.unlabeled_cache), cfg.layer, cfg.speaker_norm)
        if x_ext.shape[1:] != x.shape[1:]:
            raise ValueError(f"unlabeled_cache {cfg.unlabeled_cache} has features {x_ext.shape[1:]}, "
                             f"this cache {x.shape[1:]}: extract it with the same encoder and layer")
        spk_ext = (t_ext["corpus"].astype(str) + "/" + t_ext["speaker"].astype(str)).to_numpy()
    data = FoldData.build(x, y, table["speaker"].astype(str).to_numpy(), split, len(classes), device, x_ext, spk_ext)
    return FoldJob(data, split, table, y, classes, cfg, choice)
