"""Deterministic speaker-independent folds for corpora without an official split."""
from __future__ import annotations

import numpy as np
import pandas as pd

from data_manifests.errors import UserError


def fold_units(speakers: pd.Series, recordings: pd.Series | None = None) -> pd.Series:
    """The unit a fold keeps whole, per row: the speaker, or, with recordings (segments of longer
    audio), the connected group of speakers and recordings (two speakers of one call share a unit,
    so neither a speaker nor a recording is ever split between folds). Named by its first speaker
    in sorted order, so the result depends only on the rows' values."""
    if recordings is None:
        return speakers
    parent: dict = {}

    def root(node):
        while parent.setdefault(node, node) != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for speaker, recording in zip(speakers.astype(str), recordings.astype(str)):
        a, b = root(("s", speaker)), root(("r", recording))
        if a != b:
            parent[max(a, b)] = min(a, b)
    return speakers.astype(str).map(lambda speaker: root(("s", speaker))[1])


def speaker_folds(speakers: pd.Series, k: int = 5, recordings: pd.Series | None = None) -> pd.Series:
    """Fold (0..k-1) per row, every speaker (and recording, when given) in exactly one fold, folds
    balanced by utterance count.

    Greedy: units (fold_units) in order of decreasing utterance count (ties by name) go to the
    currently smallest fold (ties by fold index), so the result depends only on the speaker list,
    never on file order or a seed. k is capped at the number of units (leave-one-speaker-out when
    there are few).
    """
    if k < 2:
        raise UserError(f"k must be >= 2 folds, got {k}")
    units = fold_units(speakers, recordings)
    counts = units.value_counts()
    order = sorted(counts.index, key=lambda unit: (-counts[unit], str(unit)))
    sizes = np.zeros(min(k, len(order)), dtype=np.int64)
    fold_of = {}
    for unit in order:
        fold = int(np.argmin(sizes))
        fold_of[unit] = fold
        sizes[fold] += counts[unit]
    return units.map(fold_of).astype("Int64")
