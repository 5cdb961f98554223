"""What a speaker-centred run (SPEC 8) knows of a speaker it meets with few files: the mean of its
training speakers' means, and how far to trust a new speaker's own mean.

Speaker centring subtracts each speaker's mean vector. A file predicted alone is its own mean, so
its centred vector is zero and every lone file got the same answer. The estimate here is the
random-effects (James-Stein) shrinkage of a speaker's mean, from the mean xbar of n of its files:

    m = (n * xbar + k * mu) / (n + k),   k = tr(S_w) / tr(S_b)

mu = the mean of the training speakers' means, S_w / S_b = the within- / between-speaker
covariances of the training fold's rows (k: how many files' worth of evidence the population
mean is). A lone file is centred by (mostly) the population mean, a speaker with many files by
(almost) its own. One k for every dimension, on purpose: measured per dimension, or as the
multivariate predictor that removes only the directions in which speakers differ, a lone file and
a speaker's files together both scored lower (docs/PREDICT_ALONE.md). Both statistics come from
the training fold's audio, no labels; `train` saves the prior with each policy and `predict`,
`load_run` and BGRPOClassifier use it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trainer.inputs.feature_store import CHUNK_ROWS, add_rows_by_group


@dataclass(frozen=True)
class SpeakerPrior:
    """mu (float64 [F], F = one policy row flattened) and k (float64 [1], in files)."""

    mean: np.ndarray
    weight: np.ndarray

    @classmethod
    def fit(cls, raw16, speakers, rows, chunk_rows: int = CHUNK_ROWS) -> "SpeakerPrior | None":
        """The prior from `rows` of float16 rows [N, L', D] (the run's visible rows) grouped by
        `speakers` (one per row of raw16); None with fewer than 2 speakers (no between-speaker
        variance to measure)."""
        rows = np.asarray(rows)
        names, inv = np.unique(np.asarray(speakers, dtype=str)[rows], return_inverse=True)
        n_spk, width = len(names), int(np.prod(raw16.shape[1:]))
        if n_spk < 2:
            return None
        sums = np.zeros((n_spk, width), np.float64)
        squares = 0.0
        for start in range(0, len(rows), chunk_rows):
            x = np.asarray(raw16[rows[start:start + chunk_rows]]).reshape(-1, width).astype(np.float64)
            add_rows_by_group(sums, inv[start:start + chunk_rows], x)
            squares += float(np.einsum("ij,ij->", x, x))
        counts = np.bincount(inv, minlength=n_spk).astype(np.float64)
        means = sums / counts[:, None]
        within = max(squares - float((counts[:, None] * means ** 2).sum()), 0.0) / max(len(rows) - n_spk, 1)
        between = float(means.var(0, ddof=1).sum()) - within * float(np.mean(1.0 / counts))
        weight = within / between if between > 0 else np.inf
        return cls(means.mean(0), np.array([weight]))

    def speaker_means(self, sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """Each speaker's estimated mean [S, F] from its row sums [S, F] and row counts [S]."""
        if np.isinf(self.weight).all():  # speakers do not differ: the population mean
            return np.broadcast_to(self.mean, sums.shape).copy()
        return (sums + self.weight * self.mean) / (counts[:, None] + self.weight)
