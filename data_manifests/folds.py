"""Deterministic speaker-independent folds for corpora without an official split."""
from __future__ import annotations

import numpy as np
import pandas as pd

from data_manifests.errors import UserError


def speaker_folds(speakers: pd.Series, k: int = 5) -> pd.Series:
    """Fold (0..k-1) per row, every speaker in exactly one fold, folds balanced by utterance count.

    Greedy: speakers in order of decreasing utterance count (ties by name) go to the currently smallest
    fold (ties by fold index), so the result depends only on the speaker list, never on file order or a
    seed. k is capped at the number of speakers (leave-one-speaker-out when there are few).
    """
    if k < 2:
        raise UserError(f"k must be >= 2 folds, got {k}")
    counts = speakers.value_counts()
    order = sorted(counts.index, key=lambda speaker: (-counts[speaker], str(speaker)))
    sizes = np.zeros(min(k, len(order)), dtype=np.int64)
    fold_of = {}
    for speaker in order:
        fold = int(np.argmin(sizes))
        fold_of[speaker] = fold
        sizes[fold] += counts[speaker]
    return speakers.map(fold_of).astype("Int64")
