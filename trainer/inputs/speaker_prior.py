"""What a speaker-centred run (SPEC 8) knows of a speaker it meets with few files: the mean of its
training speakers' means, and how far to trust a new speaker's own mean.

Speaker centring subtracts each speaker's mean vector. A file predicted alone is its own mean, so
its centred vector is zero and every lone file got the same answer. The estimate here is the
random-effects (best linear unbiased) predictor of a speaker's mean from n of its files, per
dimension d:

    m_d = (n * mean_d + k_d * mu_d) / (n + k_d),   k_d = within-speaker variance_d / between-speaker variance_d

mu = the mean of the training speakers' means. One file is pulled to the training population
(its speaker-shared part shrunk away as far as the training speakers say it varies), a speaker with
many files keeps close to its own mean. Both statistics come from the training fold's audio, no
labels; `train` saves them with each policy and `predict`, `load_run` and BGRPOClassifier use them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trainer.inputs.feature_store import CHUNK_ROWS, add_rows_by_group

MAX_WEIGHT = 1e6  # a dimension whose speakers do not differ: the prior alone (k ~ infinity)


@dataclass(frozen=True)
class SpeakerPrior:
    """mu (float64 [F], F = one policy row flattened) and k (float64 [F], in files)."""

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
        squares = np.zeros(width, np.float64)
        for start in range(0, len(rows), chunk_rows):
            x = np.asarray(raw16[rows[start:start + chunk_rows]]).reshape(-1, width).astype(np.float64)
            add_rows_by_group(sums, inv[start:start + chunk_rows], x)
            squares += np.einsum("ij,ij->j", x, x)
        counts = np.bincount(inv, minlength=n_spk).astype(np.float64)
        means = sums / counts[:, None]
        within = np.maximum(squares - (counts[:, None] * means ** 2).sum(0), 0.0) / max(len(rows) - n_spk, 1)
        between = np.maximum(means.var(0, ddof=1) - within * np.mean(1.0 / counts), 0.0)
        weight = np.divide(within, between, out=np.full(width, MAX_WEIGHT), where=between > within / MAX_WEIGHT)
        return cls(means.mean(0), np.minimum(weight, MAX_WEIGHT))

    def speaker_means(self, sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """Each speaker's estimated mean [S, F] from its row sums [S, F] and row counts [S]."""
        return (sums + self.weight * self.mean) / (counts[:, None] + self.weight)
