"""Policy inputs from cached hidden states (SPEC 3): layer selection, optional per-speaker mean
subtraction (label-free, SPEC 8), and standardisation fitted on training rows only.
"""
from __future__ import annotations

import numpy as np


def middle_layer(n_states: int) -> int:
    """The hidden state `layer=middle` means: L // 2 of 0..L (Whisper base: 3 of 0..6). Mid-depth
    encoder layers carry the most paralinguistic information in probing studies, and it names no
    corpus-specific index."""
    return n_states // 2


def select_layers(raw: np.ndarray, layer: str) -> np.ndarray:
    """[N, L, D] -> [N, L', D'] float32: one layer ([N,1,D]), all for the weighted sum, or concat
    ([N,1,L*D]); 'middle' is middle_layer."""
    raw = np.asarray(raw)
    if layer == "middle":
        layer = str(middle_layer(raw.shape[1]))
    if layer == "weighted":
        out = raw
    elif layer == "concat":
        out = raw.reshape(raw.shape[0], 1, -1)
    else:
        i = int(layer)
        if not -raw.shape[1] <= i < raw.shape[1]:
            raise ValueError(f"layer {i}: the cache has hidden states 0..{raw.shape[1] - 1}")
        out = raw[:, [i], :]
    return out.astype(np.float32)


def speaker_center(x: np.ndarray, speakers) -> np.ndarray:
    """Subtract each speaker's mean vector (over all that speaker's rows, no labels involved).

    Removes speaker identity, the dominant non-emotion factor in utterance embeddings; needs
    several utterances per speaker, also at test time.
    """
    _, inv = np.unique(np.asarray(speakers, dtype=str), return_inverse=True)
    flat = x.reshape(len(x), -1)
    sums = np.zeros((inv.max() + 1, flat.shape[1]), dtype=np.float64)
    np.add.at(sums, inv, flat)
    means = sums / np.bincount(inv)[:, None]
    return (flat - means[inv]).astype(np.float32).reshape(x.shape)


def sequential_sum(acc: np.ndarray | None, block: np.ndarray) -> np.ndarray:
    """acc + the rows of block, added one after the other in float64: the association order of
    numpy's axis-0 sum over all blocks at once, so a sum over chunks equals the one-shot sum."""
    block = np.asarray(block, np.float64)
    return (block if acc is None else np.concatenate([acc[None], block])).sum(0)


class Standardizer:
    """Per-(layer, dim) z-scoring; fit on training rows only so test statistics never leak in."""

    def fit(self, x: np.ndarray) -> "Standardizer":
        return self.fit_blocks(lambda: [x])

    def fit_blocks(self, blocks) -> "Standardizer":
        """Fit on the rows of the blocks that `blocks()` yields (called twice: mean, then spread),
        in float64 sums taken row after row, so chunks give the one-shot statistics exactly."""
        total, n = None, 0
        for b in blocks():
            total, n = sequential_sum(total, b), n + len(b)
        if n < 2:
            raise ValueError("standardisation needs at least 2 training rows")
        mean = total / n
        squares = None
        for b in blocks():
            dev = b - mean
            squares = sequential_sum(squares, dev * dev)
        self.mean_ = mean.astype(np.float32)
        self.std_ = np.maximum(np.sqrt(squares / n), 1e-5).astype(np.float32)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean_) / self.std_).astype(np.float32)


def prepare(raw: np.ndarray, speakers, layer: str, speaker_norm: bool) -> np.ndarray:
    """Layer selection then (optionally) speaker centring; standardisation comes per fold."""
    x = select_layers(raw, layer)
    return speaker_center(x, speakers) if speaker_norm else x
