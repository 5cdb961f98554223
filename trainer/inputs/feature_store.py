"""Policy inputs of pools too large for float32 in RAM: rows stay the cache's float16 vectors and
are centred (SPEC 8 speaker means, label-free) and z-scored to float32 only a chunk at a time.

A pool of a million utterances of one 512-wide layer is 1 GB as float16 and 2 GB per float32
copy; the in-memory path made several copies (layer selection, centring, z-scoring, tensors). Here
each chunk goes through exactly the operations of that path, in the same order and precision,
so a row's float32 input is bit-for-bit what it was, whatever the chunk size. The operations are
torch's, on the run's device (the float16 rows are copied there once), so a GPU run never sends
the pool through the host; on the CPU they are numpy's (trainer/inputs/placement.py), bit for bit.

The float16 rows a run reads from its cache are themselves kept out of the process's memory
(SpilledRows): a million 512-wide rows are 1 GB, which the operating system's file cache holds
instead (and may drop under pressure), while the trainer holds only the chunk it is working on.
"""
from __future__ import annotations

import mmap
import os
import tempfile
import warnings

import numpy as np
import torch

from data_manifests.errors import UserError
from trainer.inputs.features import middle_layer
from trainer.inputs.placement import Placement

CHUNK_ROWS = 16384  # rows per float32 chunk: ~32 MB of 512-wide float32, ~64 MB of float64 centring


def states_to_read(layer: str, n_states: int) -> list[int]:
    """The hidden states a `layer` setting uses: one for an index or 'middle', all otherwise."""
    if layer in ("weighted", "concat"):
        return list(range(n_states))
    i = middle_layer(n_states) if layer == "middle" else int(layer)
    if not -n_states <= i < n_states:
        raise UserError(f"layer {i}: the cache has hidden states 0..{n_states - 1}")
    return [i % n_states]


class SpilledRows:
    """A float16 array [N, ...] in an unnamed temporary file, memory-mapped (shared): `rows[idx]`
    copies rows out and `rows[a:b] = block` copies them in, and either hands the pages it touched
    back to the file cache (madvise DONTNEED; a shared mapping's writes stay in the file), so the
    process's resident memory grows by the copies it makes, never by the array. The values are
    the array's, bit for bit: only where they wait between reads changes. The file (in $TMPDIR)
    has no name and is gone when the last view goes or the process ends. Its blocks are reserved
    up front: where $TMPDIR has no room the rows stay in (shared) memory instead, with a warning,
    as a write into an unreserved mapping on a full disk would kill the process."""

    def __init__(self, shape, dtype=np.float16, _map: mmap.mmap | None = None):
        self.shape, self.dtype = tuple(int(n) for n in shape), np.dtype(dtype)
        count = int(np.prod(self.shape))
        self._map = self._reserved_map(max(count * self.dtype.itemsize, 1)) if _map is None else _map
        self._array = np.frombuffer(self._map, self.dtype, count).reshape(self.shape)

    @staticmethod
    def _reserved_map(nbytes: int) -> mmap.mmap:
        with tempfile.TemporaryFile(prefix="bgrpo-rows-") as f:  # the mapping keeps the data alive
            try:
                os.posix_fallocate(f.fileno(), 0, nbytes)
            except OSError as err:
                warnings.warn(f"no room for {nbytes / 2**20:.0f} MB of feature rows in {tempfile.gettempdir()} "
                              f"({err.strerror}): they stay in memory (set TMPDIR to a folder with room)")
                return mmap.mmap(-1, nbytes)
            return mmap.mmap(f.fileno(), nbytes)

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def reshape(self, *shape) -> "SpilledRows":
        """The same file seen with another shape (no copy)."""
        return SpilledRows(self._array.reshape(*shape).shape, self.dtype, self._map)

    def _release(self) -> None:
        self._map.madvise(mmap.MADV_DONTNEED)

    def __getitem__(self, idx) -> np.ndarray:
        if isinstance(idx, np.ndarray) and idx.ndim == 1 and idx.dtype.kind in "iu" and len(idx) > 1:
            return self._gather(idx)
        out = np.array(self._array[idx])
        self._release()
        return out

    def _gather(self, idx: np.ndarray) -> np.ndarray:
        """Rows at idx, read one region of the file (~16 MB) at a time in ascending order: rows
        scattered over the file would otherwise map all of it before the release, as the kernel
        maps the pages around every page it reads."""
        idx = np.where(idx < 0, idx + len(self), idx)
        order = np.argsort(idx, kind="stable")
        out = np.empty((len(idx), *self.shape[1:]), self.dtype)
        row_bytes = int(np.prod(self.shape[1:])) * self.dtype.itemsize
        region = idx[order] // max(1, (16 << 20) // max(row_bytes, 1))
        for part in np.split(order, np.flatnonzero(np.diff(region)) + 1):
            out[part] = self._array[idx[part]]
            self._release()
        return out

    def __setitem__(self, idx, value) -> None:
        self._array[idx] = value
        self._release()

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        """The whole array, copied into memory (a device's copy of the rows is made from it once)."""
        return self[...] if dtype is None else self[...].astype(dtype)


def policy_rows(raw: np.ndarray, speakers, layer: str, speaker_norm: bool, prior=None) -> "CenteredCache":
    """The one builder of what the policy sees from pooled hidden states [N, L+1, D] (a cache's
    float16 vectors, or files `predict` embedded): the states `layer` uses, centred by speaker when
    speaker_norm (each speaker's mean shrunk toward a run's SpeakerPrior when given). `train` reads
    the same CenteredCache from disk a layer at a time (fold_jobs.py); `label`, the layer CV and
    `predict` build it here; prompt means and z-scoring follow."""
    raw = np.asarray(raw)
    return CenteredCache(raw[:, states_to_read(layer, raw.shape[1])], speakers, layer, speaker_norm, prior=prior)


def add_rows_by_group(sums: np.ndarray, groups: np.ndarray, rows: np.ndarray) -> None:
    """sums[g] += each row of group g, in row order, in float64: np.add.at's result bit for bit
    (a group's running sum heads its segment, then its rows follow in order), at the speed of
    one sort and one np.add.reduceat instead of np.add.at's element-wise loop."""
    present = np.unique(groups)
    keys = np.concatenate([present, groups])
    order = np.argsort(keys, kind="stable")  # each group: its running sum first, then its rows in order
    stacked = np.concatenate([sums[present], rows.astype(np.float64)])[order]
    sums[present] = np.add.reduceat(stacked, np.searchsorted(keys[order], present), axis=0)


def centre(x16: torch.Tensor, speaker_means: torch.Tensor | None) -> torch.Tensor:
    """Float16 rows [n, L', D] -> float32, minus each row's speaker mean (float64 [n, L'*D]) in
    float64, rounded to float32: CenteredCache.rows's operations, bit for bit, on any device."""
    x = x16.float()
    if speaker_means is None:
        return x
    flat = torch.sub(x.reshape(len(x), speaker_means.shape[1]), speaker_means, out=speaker_means)
    return flat.float().reshape(x.shape)


class CenteredCache:
    """The float16 rows of one cache ([N, L', D], L' = 1 for one layer; 'concat' = [N, 1, L*D])
    and, with speaker_norm, each speaker's mean vector over all its rows (float64), or, given a
    `prior` (trainer/inputs/speaker_prior.SpeakerPrior), that mean shrunk toward the prior's by how
    few rows the speaker has. The means are summed on the host once; `take` centres rows on a
    device from copies made there once."""

    def __init__(self, raw16: np.ndarray, speakers, layer: str, speaker_norm: bool, chunk_rows: int = CHUNK_ROWS,
                 prior=None):
        self.raw = raw16.reshape(len(raw16), 1, -1) if layer == "concat" else raw16
        self.chunk_rows = chunk_rows
        self.inv = self.means = None
        if speaker_norm:
            _, self.inv = np.unique(np.asarray(speakers, dtype=str), return_inverse=True)
            n_spk = int(self.inv.max()) + 1 if len(self.inv) else 0
            sums = np.zeros((n_spk, self.raw[0].size), np.float64)
            for start in range(0, len(self.raw), chunk_rows):
                sl = slice(start, start + chunk_rows)
                add_rows_by_group(sums, self.inv[sl], self.raw[sl].reshape(-1, sums.shape[1]).astype(np.float32))
            counts = np.bincount(self.inv, minlength=n_spk)
            self.means = sums / counts[:, None] if prior is None else prior.speaker_means(sums, counts)
        self._on: dict[torch.device, tuple] = {}

    def __len__(self) -> int:
        return len(self.raw)

    @property
    def row_shape(self) -> tuple[int, int]:
        return self.raw.shape[1:]

    def rows(self, idx) -> np.ndarray:
        """Centred float32 [n, L', D] of rows idx (an index array; no standardisation), on the host,
        computed a chunk at a time (the float64 centring never exists for more than a chunk)."""
        idx = np.asarray(idx)
        out = np.empty((len(idx), *self.row_shape), np.float32)
        for start in range(0, len(idx), self.chunk_rows):
            part = idx[start:start + self.chunk_rows]
            x = self.raw[part].astype(np.float32)
            if self.means is not None:
                flat = x.reshape(len(x), self.means.shape[1])
                x = (flat - self.means[self.inv[part]]).astype(np.float32).reshape(x.shape)
            out[start:start + len(part)] = x
        return out

    def on(self, device: torch.device) -> tuple:
        """(rows float16, speaker index, speaker means float64) as tensors on `device`, copied once."""
        if device not in self._on:
            as_t = lambda a: None if a is None else torch.as_tensor(np.ascontiguousarray(a), device=device)  # noqa: E731
            self._on[device] = (as_t(self.raw), as_t(self.inv), as_t(self.means))
        return self._on[device]

    def take(self, idx: torch.Tensor, where) -> torch.Tensor:
        """Centred float32 [n, L', D] of rows idx (a tensor on the device), on the device of
        `where` (a Placement or a device)."""
        place = Placement.of(where)
        if place.host:
            return torch.from_numpy(self.rows(idx.numpy()))
        raw, inv, means = self.on(place.device)
        return centre(raw[idx], None if means is None else means[inv[idx]])


class FeatureRows:
    """Rows of one or more CenteredCaches (parts: (cache, row indices)), z-scored by a fitted
    Standardizer on demand: x[idx] -> float32 tensor, map(fn) -> fn over chunks, concatenated.
    Everything (indices, rows, chunks) stays on `device` (a device or a Placement): nothing is
    copied to the host."""

    def __init__(self, parts: list[tuple[CenteredCache, np.ndarray]], standardizer=None, device="cpu",
                 chunk_rows: int = CHUNK_ROWS):
        self.placement = Placement.of(device)
        self.device = self.placement.device
        self.parts = [(c, torch.as_tensor(np.asarray(r, np.int64), device=self.device)) for c, r in parts]
        offsets = np.cumsum([0] + [len(r) for _, r in self.parts])
        self.offsets = torch.as_tensor(offsets, device=self.device)
        self.standardizer, self.chunk_rows = standardizer, chunk_rows
        self.shape = (int(offsets[-1]), *self.parts[0][0].row_shape)

    def __len__(self) -> int:
        return self.shape[0]

    def _block(self, pos: torch.Tensor) -> torch.Tensor:
        """Centred rows at positions pos (into the concatenated parts)."""
        if len(self.parts) == 1:
            cache, rows = self.parts[0]
            return cache.take(rows[pos], self.placement)
        part = torch.searchsorted(self.offsets, pos, right=True) - 1
        block = torch.empty((len(pos), *self.shape[1:]), dtype=torch.float32, device=self.device)
        for k, (cache, rows) in enumerate(self.parts):
            mine = torch.nonzero(part == k).flatten()
            block[mine] = cache.take(rows[pos[mine] - self.offsets[k]], self.placement)
        return block

    def centered(self, idx: torch.Tensor, standardize: bool = False, out: torch.Tensor | None = None) -> torch.Tensor:
        """Centred (and optionally z-scored) float32 rows at positions idx (into the concatenated
        parts), in idx's order, written into `out` if given; built chunk by chunk, so temporaries
        stay one chunk large."""
        if out is None:
            out = torch.empty((len(idx), *self.shape[1:]), dtype=torch.float32, device=self.device)
        for start in range(0, len(idx), self.chunk_rows):
            block = self._block(idx[start:start + self.chunk_rows])
            out[start:start + len(block)] = self.standardizer.transform(block) if standardize else block
        return out

    def _positions(self, idx) -> torch.Tensor:
        if isinstance(idx, slice):
            return torch.arange(len(self), device=self.device)[idx]
        idx = torch.as_tensor(idx, device=self.device)
        return torch.nonzero(idx).flatten() if idx.dtype == torch.bool else idx.long()

    def __getitem__(self, idx) -> torch.Tensor:
        return self.centered(self._positions(idx), standardize=self.standardizer is not None)

    def after(self, head: torch.Tensor, idx) -> torch.Tensor:
        """torch.cat([head, self[idx]]) built in one allocation (a refit's labelled + selected rows:
        the selection of a large pool is not materialised twice)."""
        pos = self._positions(idx)
        out = torch.empty((len(head) + len(pos), *self.shape[1:]), dtype=torch.float32, device=self.device)
        out[:len(head)] = head
        self.centered(pos, standardize=self.standardizer is not None, out=out[len(head):])
        return out

    def position_chunks(self):
        for start in range(0, len(self), self.chunk_rows):
            yield torch.arange(start, min(start + self.chunk_rows, len(self)), device=self.device)

    def map(self, fn) -> torch.Tensor:
        """torch.cat of fn(chunk) over the rows in order (e.g. a policy's probabilities)."""
        outs = [fn(self[pos]) for pos in self.position_chunks()]
        return torch.cat(outs) if outs else fn(self[torch.zeros(0, dtype=torch.long)])

    def map_indexed(self, fn):
        """torch.cat of fn(chunk, its positions) (teachers look rows up); a fn that returns a tuple
        gives a tuple of concatenations, so several views share one pass."""
        outs = [fn(self[pos], pos) for pos in self.position_chunks()]
        return tuple(map(torch.cat, zip(*outs))) if isinstance(outs[0], tuple) else torch.cat(outs)

    def centered_chunks(self):
        """Centred float32 chunks in row order, on the device (fitting the Standardizer or a PCA)."""
        for pos in self.position_chunks():
            yield self.centered(pos)
