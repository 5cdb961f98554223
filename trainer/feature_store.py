"""Policy inputs of pools too large for float32 in RAM: rows stay the cache's float16 vectors and
are centred (SPEC 8 speaker means, label-free) and z-scored to float32 only a chunk at a time.

A pool of a million utterances of one 512-wide layer is 1 GB as float16 and 2 GB per float32
copy; the in-memory path made several copies (layer selection, centring, z-scoring, tensors). Here
each chunk goes through exactly the operations of that path, in the same order and precision,
so a row's float32 input is bit-for-bit what it was, whatever the chunk size.
"""
from __future__ import annotations

import numpy as np
import torch

from trainer.features import middle_layer

CHUNK_ROWS = 16384  # rows per float32 chunk: ~32 MB of 512-wide float32, ~64 MB of float64 centring


def states_to_read(layer: str, n_states: int) -> list[int]:
    """The hidden states a `layer` setting uses: one for an index or 'middle', all otherwise."""
    if layer in ("weighted", "concat"):
        return list(range(n_states))
    i = middle_layer(n_states) if layer == "middle" else int(layer)
    if not -n_states <= i < n_states:
        raise ValueError(f"layer {i}: the cache has hidden states 0..{n_states - 1}")
    return [i % n_states]


def add_rows_by_group(sums: np.ndarray, groups: np.ndarray, rows: np.ndarray) -> None:
    """sums[g] += each row of group g, in row order, in float64: np.add.at's result bit for bit
    (a group's running sum heads its segment, then its rows follow in order), at the speed of
    one sort and one np.add.reduceat instead of np.add.at's element-wise loop."""
    present = np.unique(groups)
    keys = np.concatenate([present, groups])
    order = np.argsort(keys, kind="stable")  # each group: its running sum first, then its rows in order
    stacked = np.concatenate([sums[present], rows.astype(np.float64)])[order]
    sums[present] = np.add.reduceat(stacked, np.searchsorted(keys[order], present), axis=0)


class CenteredCache:
    """The float16 rows of one cache ([N, L', D], L' = 1 for one layer; 'concat' = [N, 1, L*D])
    and, with speaker_norm, each speaker's mean vector over all its rows (float64)."""

    def __init__(self, raw16: np.ndarray, speakers, layer: str, speaker_norm: bool, chunk_rows: int = CHUNK_ROWS):
        self.raw = raw16.reshape(len(raw16), 1, -1) if layer == "concat" else raw16
        self.inv = self.means = None
        if speaker_norm:
            _, self.inv = np.unique(np.asarray(speakers, dtype=str), return_inverse=True)
            n_spk = int(self.inv.max()) + 1 if len(self.inv) else 0
            sums = np.zeros((n_spk, self.raw[0].size), np.float64)
            for start in range(0, len(self.raw), chunk_rows):
                sl = slice(start, start + chunk_rows)
                add_rows_by_group(sums, self.inv[sl], self.raw[sl].reshape(-1, sums.shape[1]).astype(np.float32))
            self.means = sums / np.bincount(self.inv, minlength=n_spk)[:, None]

    def __len__(self) -> int:
        return len(self.raw)

    @property
    def row_shape(self) -> tuple[int, int]:
        return self.raw.shape[1:]

    def rows(self, idx) -> np.ndarray:
        """Centred float32 [n, L', D] of rows idx (no standardisation)."""
        x = self.raw[idx].astype(np.float32)
        if self.means is None:
            return x
        flat = x.reshape(len(x), self.means.shape[1])
        return (flat - self.means[self.inv[idx]]).astype(np.float32).reshape(x.shape)


class FeatureRows:
    """Rows of one or more CenteredCaches (parts: (cache, row indices)), z-scored by a fitted
    Standardizer on demand: x[idx] -> float32 tensor, map(fn) -> fn over chunks, concatenated."""

    def __init__(self, parts: list[tuple[CenteredCache, np.ndarray]], standardizer=None, device="cpu",
                 chunk_rows: int = CHUNK_ROWS):
        self.parts = [(c, np.asarray(r, np.int64)) for c, r in parts]
        self.offsets = np.cumsum([0] + [len(r) for _, r in self.parts])
        self.standardizer, self.device, self.chunk_rows = standardizer, torch.device(device), chunk_rows
        self.shape = (int(self.offsets[-1]), *self.parts[0][0].row_shape)

    def __len__(self) -> int:
        return self.shape[0]

    def centered(self, idx: np.ndarray, standardize: bool = False, out: np.ndarray | None = None) -> np.ndarray:
        """Centred (and optionally z-scored) float32 rows at positions idx (into the concatenated
        parts), in idx's order, written into `out` if given; built chunk by chunk, so temporaries
        stay one chunk large."""
        out = np.empty((len(idx), *self.shape[1:]), np.float32) if out is None else out
        for start in range(0, len(idx), self.chunk_rows):
            pos = idx[start:start + self.chunk_rows]
            part = np.searchsorted(self.offsets, pos, side="right") - 1
            block = np.empty((len(pos), *self.shape[1:]), np.float32)
            for k, (cache, rows) in enumerate(self.parts):
                mine = np.flatnonzero(part == k)
                if len(mine):
                    block[mine] = cache.rows(rows[pos[mine] - self.offsets[k]])
            out[start:start + len(pos)] = self.standardizer.transform(block) if standardize else block
        return out

    def _positions(self, idx) -> np.ndarray:
        if isinstance(idx, slice):
            return np.arange(len(self))[idx]
        idx = idx.cpu().numpy() if torch.is_tensor(idx) else np.asarray(idx)
        return np.flatnonzero(idx) if idx.dtype == bool else idx.astype(np.int64)

    def __getitem__(self, idx) -> torch.Tensor:
        x = self.centered(self._positions(idx), standardize=self.standardizer is not None)
        return torch.as_tensor(x, device=self.device)

    def after(self, head: torch.Tensor, idx) -> torch.Tensor:
        """torch.cat([head, self[idx]]) built in one allocation (a refit's labelled + selected rows:
        the selection of a large pool is not materialised twice)."""
        pos = self._positions(idx)
        out = np.empty((len(head) + len(pos), *self.shape[1:]), np.float32)
        out[:len(head)] = head.cpu().numpy()
        self.centered(pos, standardize=self.standardizer is not None, out=out[len(head):])
        return torch.as_tensor(out, device=self.device)

    def position_chunks(self):
        for start in range(0, len(self), self.chunk_rows):
            yield np.arange(start, min(start + self.chunk_rows, len(self)))

    def map(self, fn) -> torch.Tensor:
        """torch.cat of fn(chunk) over the rows in order (e.g. a policy's probabilities)."""
        outs = [fn(self[pos]) for pos in self.position_chunks()]
        return torch.cat(outs) if outs else fn(self[np.zeros(0, np.int64)])

    def map_indexed(self, fn):
        """torch.cat of fn(chunk, its positions as a tensor) (teachers look rows up); a fn that
        returns a tuple gives a tuple of concatenations, so several views share one pass."""
        outs = [fn(self[pos], torch.as_tensor(pos, device=self.device)) for pos in self.position_chunks()]
        return tuple(map(torch.cat, zip(*outs))) if isinstance(outs[0], tuple) else torch.cat(outs)

    def centered_chunks(self):
        """Centred float32 chunks in row order (fitting the Standardizer or a PCA)."""
        for pos in self.position_chunks():
            yield self.centered(pos)
