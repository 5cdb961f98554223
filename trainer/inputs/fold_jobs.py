"""Preparing a fold x seed from a cache: the cache read once per process (only the hidden states a
run uses), the split (SPEC 2), the `auto` choices resolved on the fold's labels, and the FoldData."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

import numpy as np
import pandas as pd

from pipeline.cache import load_cache
from trainer.inputs.auto_choices import choose_text_norm, resolve_auto
from trainer.inputs.feature_store import CenteredCache, SpilledRows, states_to_read
from trainer.inputs.fold_data import FoldData
from trainer.inputs.protocol import Split, make_split
from trainer.inputs.sources import centred_source, check_source, hidden_labels, mean_row, source_paths, unseen_speaker_rows
from trainer.inputs.speaker_prior import SpeakerPrior

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
    speaker_prior: SpeakerPrior | None = None  # with speaker_norm: how predict centres speakers with few files


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
    """Features, split (SPEC 2) and the pool (with unlabeled_cache) of one fold x seed, on `device`."""
    table = table_cache(str(cache_path)).table
    classes = class_names(table)
    y = table["label"].astype(str).map({c: i for i, c in enumerate(classes)}).to_numpy()
    split = make_split(table, fold, seed, cfg.labeled_fraction, cfg.val_fraction, cfg.transductive,
                       cfg.inner_validation)
    # label-only choices; only layer=auto reads every hidden state (its CV compares them)
    cfg, choice = resolve_auto(cfg, raw_cache(str(cache_path)) if cfg.layer == "auto" else table_cache(str(cache_path)),
                               split, y, len(classes))
    x, _, attrs, _ = prepared_cache(str(cache_path), cfg.layer, cfg.speaker_norm)
    return fold_job(cfg, x, table, y, classes, split, choice, device, attrs)


def fold_job(cfg, x: CenteredCache, table: pd.DataFrame, y: np.ndarray, classes: list[str], split: Split,
             choice: dict, device, attrs: dict | None = None) -> FoldJob:
    """A split's FoldJob from its centred rows (layer and speaker_norm resolved): the text_norm
    choice on the split's labels, then the FoldData with the unlabeled_cache sources (checked
    against the cache's `attrs`). `train` (prepare_fold) and `label` both end here."""
    speakers = table["speaker"].astype(str).to_numpy()
    x_run, text_choice = choose_text_norm(cfg.text_norm, x, table.get("text_id"), speakers, split, y, len(classes))
    cfg = cfg.replace(text_norm=text_choice["text_norm"])
    externals = external_pools(cfg, x_run, attrs or {}, table, split, classes) if cfg.unlabeled_cache else []
    data = FoldData.build(x_run, y, speakers, split, len(classes), device, externals)
    visible = np.concatenate([split.labeled, split.val, split.unlabeled])
    prior = SpeakerPrior.fit(x.raw, speakers, np.sort(visible)) if cfg.speaker_norm else None
    return FoldJob(data, split, table, y, classes, cfg, {**choice, **text_choice}, x_run if cfg.text_norm else None,
                   prior)
