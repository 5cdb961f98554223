"""Standardisation of policy inputs (SPEC 3), fitted on training rows only, and the layer `middle`
names. Layer selection and speaker centring are trainer/inputs/feature_store.py's (`policy_rows`).
"""
from __future__ import annotations

import numpy as np
import torch

from data_manifests.errors import UserError
from trainer.inputs.placement import Placement


def middle_layer(n_states: int) -> int:
    """The hidden state `layer=middle` means: L // 2 of 0..L (Whisper base: 3 of 0..6). Mid-depth
    encoder layers carry the most paralinguistic information in probing studies, and it names no
    corpus-specific index."""
    return n_states // 2


def sequential_sum(acc: torch.Tensor | None, block, where="cpu") -> torch.Tensor:
    """acc + the rows of block (an array or a tensor on `where`'s device) in float64. On the host's
    path the rows are added one after the other (numpy's axis-0 sum), the association order of a
    one-shot sum over all blocks, so a sum over chunks equals it exactly; an accelerator reduces in
    its own order (float64 rounding apart, the same sum)."""
    block = torch.as_tensor(block)
    if Placement.of(where).host:  # numpy's sequential sum (torch's cumsum is ~10x slower here)
        rows = block.numpy().astype(np.float64)
        return torch.from_numpy((rows if acc is None else np.concatenate([acc.numpy()[None], rows])).sum(0))
    rows = block.double()
    return (rows if acc is None else torch.cat([acc[None], rows])).sum(0)


class Standardizer:
    """Per-(layer, dim) z-scoring; fit on training rows only so test statistics never leak in.
    The statistics are float32 arrays; transform takes an array or a tensor on any device."""

    def __init__(self):
        self._on: dict = {}  # device -> (mean, std) tensors there

    @classmethod
    def from_stats(cls, mean, std) -> "Standardizer":
        """The statistics a run saved with its policy (Policy.feat_mean / feat_std), for `predict`."""
        st = cls()
        st.mean_ = torch.as_tensor(mean).float().cpu().numpy()
        st.std_ = torch.as_tensor(std).float().cpu().numpy()
        return st

    def fit(self, x: np.ndarray) -> "Standardizer":
        return self.fit_blocks(lambda: [x])

    def fit_blocks(self, blocks, where="cpu") -> "Standardizer":
        """Fit on the rows of the blocks (arrays or tensors on `where`'s device) that `blocks()`
        yields (called twice: mean, then spread), in float64 sums taken row after row, so chunks
        give the one-shot statistics exactly."""
        total, n = None, 0
        for b in blocks():
            total, n = sequential_sum(total, b, where), n + len(b)
        if n < 2:
            raise UserError("standardisation needs at least 2 training rows")
        mean = total / n
        squares = None
        for b in blocks():
            dev = torch.as_tensor(b).double() - mean
            squares = sequential_sum(squares, dev * dev, where)
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
