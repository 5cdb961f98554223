"""The evaluation protocol (SPEC 2): speaker-independent folds, and per fold x seed a stratified
labelled subset, a validation part carved from it, and the unlabelled pool.

Only training-fold labels are read when splitting; test rows are chosen by fold membership alone,
so the test labels cannot influence any decision.
"""
from __future__ import annotations

import warnings
import zlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from data_manifests.errors import UserError


@dataclass
class Split:
    """Row indices into the cache table (and, for `external`, into the unlabelled cache)."""

    fold: str
    seed: int
    labeled: np.ndarray
    val: np.ndarray
    unlabeled: np.ndarray  # training-fold rows without labels (+ test rows when transductive)
    test: np.ndarray
    train: np.ndarray  # the whole training fold (labels used only by `topline`)
    speaker_overlap: int  # speakers present in both train and test (0 for proper folds)

    @classmethod
    def labelled_and_pool(cls, labeled: np.ndarray, unlabeled: np.ndarray) -> "Split":
        """Every row either labelled or in the pool, no validation and no test (`label`): the
        labelled rows are the training fold."""
        empty = np.zeros(0, np.int64)
        return cls(fold="all", seed=0, labeled=labeled, val=empty, unlabeled=unlabeled, test=empty, train=labeled,
                   speaker_overlap=0)


def fold_names(table: pd.DataFrame) -> list[str]:
    """Fold ids of the cache: its `fold` column (>= 0), or one fold 'split' from train/test splits."""
    folds = sorted(int(f) for f in np.unique(table["fold"]) if int(f) >= 0)
    if len(folds) == 1:  # every speaker in the test fold: nothing left to train on
        raise UserError(f"every utterance of the cache is in fold {folds[0]}, but a speaker-independent test needs "
                         "at least 2 folds: rebuild its manifest with speakers of 2 or more folds (`manifest "
                         "--speakers`) or `--n-folds 2`, then extract again")
    if folds:
        return [str(f) for f in folds]
    split = table.get("split", pd.Series([""] * len(table))).astype(str)
    if (split == "test").any() and split.isin(["train", "valid", "validation", "dev"]).any():
        return ["split"]
    raise UserError("the cache has neither speaker folds (fold >= 0) nor a train/test split: "
                     "rebuild its manifest with folds (see `python cli.py manifest --help`)")


def fold_masks(table: pd.DataFrame, fold: str, inner: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(train_mask, test_mask) of one fold; official-split corpora train on train+valid.

    inner=True is the model-selection protocol: the outer test fold is dropped entirely and the
    next fold's speakers (official split: the validation part) are scored instead, so that
    choosing settings never looks at a test fold's audio or labels.
    """
    if fold == "split":
        split = table["split"].astype(str).to_numpy()
        if inner:
            held = np.isin(split, ["valid", "validation", "dev"])
            return (split != "test") & ~held, held
        return split != "test", split == "test"
    f = table["fold"].to_numpy().astype(int)
    outer = f == int(fold)
    if not inner:
        return (f >= 0) & ~outer, outer
    names = fold_names(table)
    held = f == int(names[(names.index(str(fold)) + 1) % len(names)])
    return (f >= 0) & ~outer & ~held, held


def class_quota(n_class: int, fraction: float, min_per_class: int | None = None) -> int:
    """Labelled utterances a class of n_class training rows gets: round(fraction * n), at least
    min_per_class (default 1, and 0 at fraction 0: no labels of the cache's own, `source_corpora`)."""
    least = (1 if fraction > 0 else 0) if min_per_class is None else min_per_class
    return min(n_class, max(least, int(round(fraction * n_class))))


def stratified_pick(labels: np.ndarray, fraction: float, rng: np.random.Generator,
                    min_per_class: int | None = None) -> np.ndarray:
    """Positions (into `labels`) of a stratified subset: round(fraction * n_c), at least min_per_class."""
    picked = []
    for c in np.unique(labels):
        pos = np.flatnonzero(labels == c)
        k = class_quota(len(pos), fraction, min_per_class)
        picked.append(rng.choice(pos, size=k, replace=False))
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=int)


class FewLabelsWarning(UserWarning):
    """Too few labelled utterances per class for the protocol's numbers to mean much."""


class EmptyPoolWarning(FewLabelsWarning):
    """Every training utterance is labelled: the methods that learn from the pool have nothing to learn from."""


POOL_METHODS = ("bgrpo", "pseudo-label", "dino")


MIN_LABELLED_PER_CLASS = 5


def warn_few_labels(table: pd.DataFrame, folds: list[str], fraction: float, inner: bool = False) -> None:
    """One warning when some fold's labelled subset has fewer than MIN_LABELLED_PER_CLASS utterances of a
    class: the warm-up, the LDA teacher (a covariance from 1-2 samples) and the scores are then mostly noise."""
    labels = table["label"].astype(str).to_numpy()
    worst = None
    if fraction == 0:  # no labels of the cache's own (source_corpora): nothing to warn about
        return
    for fold in folds:
        train = labels[fold_masks(table, fold, inner)[0]]
        for c in np.unique(labels):
            k = class_quota(int((train == c).sum()), fraction)
            if worst is None or k < worst[0]:
                worst = (k, fold, c)
    if worst is not None and worst[0] < MIN_LABELLED_PER_CLASS:
        k, fold, c = worst
        warnings.warn(FewLabelsWarning(
            f"too few labelled utterances per class: with --labeled-fraction {fraction:g}, fold {fold} has {k} "
            f"labelled '{c}' (fewer than {MIN_LABELLED_PER_CLASS} for some class): scores will be noisy and the "
            "LDA teacher degenerate. Raise --labeled-fraction or use a larger corpus."), stacklevel=2)


def warn_empty_pool(table: pd.DataFrame, folds: list[str], fraction: float, methods, inner: bool = False,
                    transductive: bool = False) -> None:
    """One warning when some fold's unlabelled pool is empty (every training utterance labelled, not
    transductive): the pool methods then return the warm-up, so their scores are supervised's."""
    pooled = [m for m in methods if m in POOL_METHODS]
    if transductive or not pooled:
        return
    labels = table["label"].astype(str).to_numpy()
    empty = [fold for fold in folds
             if all(class_quota(int((train == c).sum()), fraction) == int((train == c).sum())
                    for train in [labels[fold_masks(table, fold, inner)[0]]] for c in np.unique(train))]
    if empty:
        warnings.warn(EmptyPoolWarning(
            f"--labeled-fraction {fraction:g} labels every training utterance of fold(s) {', '.join(empty)}: "
            f"there is no unlabelled pool, so {', '.join(pooled)} equal supervised there (the warm-up, unchanged). "
            "Use a fraction below 1 (e.g. 0.1) to compare them, or --transductive to pool the test audio."),
            stacklevel=2)


def make_split(table: pd.DataFrame, fold: str, seed: int, labeled_fraction: float,
               val_fraction: float = 0.0, transductive: bool = False, inner: bool = False,
               in_play: np.ndarray | None = None) -> Split:
    """in_play: per table row, is its label a class of the run (default: every row). Rows of other
    classes are never labelled, scored or in `train` (topline's labels); they stay in the pool (the
    pool is never filtered by label), and the whole test fold joins it when transductive."""
    train_mask, test_mask = fold_masks(table, fold, inner)
    in_play = np.ones(len(table), bool) if in_play is None else np.asarray(in_play, bool)
    pool_train, test_fold = np.flatnonzero(train_mask), np.flatnonzero(test_mask)
    train, test = pool_train[in_play[pool_train]], test_fold[in_play[test_fold]]
    if len(train) == 0 or len(test) == 0:
        raise UserError(f"fold {fold}: {len(train)} training and {len(test)} test rows; a fold needs both")
    overlap = len(set(table["speaker"].iloc[train]) & set(table["speaker"].iloc[test]))
    if overlap:
        warnings.warn(f"fold {fold}: {overlap} speaker(s) appear in both train and test (official split?)")
    # A seed's subset must not depend on which other folds run: derive the stream from (seed, fold).
    rng = np.random.default_rng([seed, zlib.crc32(str(fold).encode())])
    train_labels = table["label"].to_numpy()[train]
    lab_pos = stratified_pick(train_labels, labeled_fraction, rng)
    labeled = train[lab_pos]
    val = np.zeros(0, dtype=int)
    if val_fraction > 0:
        lab_labels = train_labels[lab_pos]
        val_pos = []
        for c in np.unique(lab_labels):
            pos = np.flatnonzero(lab_labels == c)
            k = min(len(pos) - 1, int(round(val_fraction * len(pos))))  # keep >= 1 per class for training
            if k > 0:
                val_pos.append(rng.choice(pos, size=k, replace=False))
        if val_pos:
            val = np.sort(labeled[np.concatenate(val_pos)])
            labeled = np.setdiff1d(labeled, val)
    unlabeled = np.setdiff1d(pool_train, np.concatenate([labeled, val]))
    if transductive:
        unlabeled = np.concatenate([unlabeled, test_fold])
    return Split(fold=str(fold), seed=int(seed), labeled=labeled, val=val, unlabeled=unlabeled,
                 test=test, train=train, speaker_overlap=overlap)
