"""Policy inputs from cached hidden states (SPEC 3): layer selection, optional per-speaker mean
subtraction (label-free, SPEC 8), and standardisation fitted on training rows only.
"""
from __future__ import annotations

import numpy as np
import torch

from data_manifests.errors import UserError
from trainer.inputs.placement import host_path


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
            raise UserError(f"layer {i}: the cache has hidden states 0..{raw.shape[1] - 1}")
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


def sequential_sum(acc: torch.Tensor | None, block) -> torch.Tensor:
    """acc + the rows of block (an array or a tensor) in float64, on the block's device. On the CPU
    the rows are added one after the other (numpy's axis-0 sum), the association order of a
    one-shot sum over all blocks, so a sum over chunks equals it exactly; an accelerator reduces in
    its own order (float64 rounding apart, the same sum)."""
    block = torch.as_tensor(block)
    if host_path(block.device):  # numpy's sequential sum (torch's cumsum is ~10x slower here)
        rows = block.numpy().astype(np.float64)
        return torch.from_numpy((rows if acc is None else np.concatenate([acc.numpy()[None], rows])).sum(0))
    rows = block.double()
    return (rows if acc is None else torch.cat([acc[None], rows])).sum(0)


class Standardizer:
    """Per-(layer, dim) z-scoring; fit on training rows only so test statistics never leak in.
    The statistics are float32 arrays; transform takes an array or a tensor on any device."""

    def __init__(self):
        self._on: dict = {}  # device -> (mean, std) tensors there

    def fit(self, x: np.ndarray) -> "Standardizer":
        return self.fit_blocks(lambda: [x])

    def fit_blocks(self, blocks) -> "Standardizer":
        """Fit on the rows of the blocks (arrays or tensors on one device) that `blocks()` yields
        (called twice: mean, then spread), in float64 sums taken row after row, so chunks give the
        one-shot statistics exactly."""
        total, n = None, 0
        for b in blocks():
            total, n = sequential_sum(total, b), n + len(b)
        if n < 2:
            raise UserError("standardisation needs at least 2 training rows")
        mean = total / n
        squares = None
        for b in blocks():
            dev = torch.as_tensor(b).double() - mean
            squares = sequential_sum(squares, dev * dev)
        self.mean_ = mean.float().cpu().numpy()
        self.std_ = torch.sqrt(squares / n).clamp_min(1e-5).float().cpu().numpy()
        return self

    def transform(self, x):
        if torch.is_tensor(x):
            if x.device not in self._on:
                self._on[x.device] = (torch.as_tensor(self.mean_, device=x.device),
                                      torch.as_tensor(self.std_, device=x.device))
            mean, std = self._on[x.device]
            return (x - mean) / std
        return ((x - self.mean_) / self.std_).astype(np.float32)


def prepare(raw: np.ndarray, speakers, layer: str, speaker_norm: bool) -> np.ndarray:
    """Layer selection then (optionally) speaker centring; standardisation comes per fold."""
    x = select_layers(raw, layer)
    return speaker_center(x, speakers) if speaker_norm else x
