"""Batches for the encoder: planned by a frame budget, encoded on the device without host waits.

A plan is a list of batches of manifest rows, sorted longest first, cut so that each batch holds
about `frame_budget` mel frames of encoder input (padding included): short clips in trim or padN
make big batches, full windows small ones, and the device gets the same amount of work per
batch whatever the window.  With padN, a batch holds clips of one padded length only (a length
bucket); with trim, sorted lengths keep the padding of a batch small.

`encode_batch` takes a collated batch of raw audio (pipeline.audio.collate), copies it to the
device, computes the log-mel there (pipeline.log_mel), runs the encoder per shape (one pass for
trim and full, one per padded length for padN) and combines the 30 s pieces of long clips
weighted by frame count.  Every shape decision is made from the lengths on the host, so nothing
waits for the device until the caller copies the pooled vectors back.
"""
from __future__ import annotations

import numpy as np
import torch

from pipeline.encoder import Encoder, encoder_frames, pooled_hidden_states
from pipeline.log_mel import log_mel
from pipeline.window import FULL_MEL_FRAMES, TRIM_STEP, batch_width, clip_cost, masked, real_mel_frames, \
    seen_mel_frames

MAX_BATCH_ITEMS = 256  # a worker decodes a whole batch: bigger ones only delay the first


def plan_batches(durations, shard: tuple[int, int], window: str, frame_budget: int,
                 max_items: int | None = None) -> list[list[int]]:
    """Deterministic length-sorted batches (longest first) of this shard's rows.

    Shard i takes every n-th row of the sorted order, so shards get similar amounts of audio.
    A batch closes when one more clip would take it over `frame_budget` mel frames (each batch
    holds at least one clip), at `max_items` clips, or, for padN, where the padded length changes.
    """
    seconds = np.nan_to_num(np.asarray(durations, np.float64), nan=0.0)
    order = np.argsort(-seconds, kind="stable")
    mine = order[shard[0]::shard[1]]
    cost = clip_cost(window, seconds[mine]).tolist()
    limit = min(max_items or MAX_BATCH_ITEMS, MAX_BATCH_ITEMS)
    batches, current = [], []
    first = width = pieces = total = 0  # the open batch's first cost, trim width, pieces and frames
    for row, c in zip(mine.tolist(), cost):
        n_pieces = -(-c // FULL_MEL_FRAMES)
        if current:
            frames = (pieces + n_pieces) * width if window == "trim" else total + c
            if frames > frame_budget or len(current) >= limit or (window != "trim" and c != first):
                batches.append(current)
                current = []
        if not current:  # the first clip is the batch's longest: it sets the width (trim) or bucket
            first, width, pieces, total = c, min(-(-c // TRIM_STEP) * TRIM_STEP, FULL_MEL_FRAMES), 0, 0
        current.append(row)
        pieces, total = pieces + n_pieces, total + c
    if current:
        batches.append(current)
    return batches


@torch.inference_mode()
def encode_batch(enc: Encoder, filters: torch.Tensor, batch, window: str):
    """A collated batch -> (pooled [n_ok, L+1, D] float32 on the device, encoder frames [n_ok] int64
    numpy, the batch's readable items in that order); (None, None, []) when none could be read."""
    items, audio, samples, owner = batch
    good = [it for it in items if not it.error]
    if audio is None:
        return None, None, good
    dev = enc.device
    audio = audio.to(dev, non_blocking=True)
    real = real_mel_frames(samples.numpy())
    seen = seen_mel_frames(window, real)
    n_real = torch.from_numpy(real).to(dev, non_blocking=True)
    if window == "trim" or len(np.unique(seen)) == 1:
        groups = [(None, batch_width(window, real))]
    else:
        groups = [(np.flatnonzero(seen == w), int(w)) for w in np.unique(seen)]
    pooled = None
    for rows, width in groups:
        part = audio if rows is None else audio[torch.from_numpy(rows).to(dev)]
        n = n_real if rows is None else n_real[torch.from_numpy(rows).to(dev)]
        mask = masked(window) and bool((real if rows is None else real[rows]).min() < width)
        out = pooled_hidden_states(enc, log_mel(part, width, filters), n, mask)
        if rows is None:
            pooled = out
        else:
            pooled = pooled if pooled is not None else out.new_empty((len(real), *out.shape[1:]))
            pooled[torch.from_numpy(rows).to(dev)] = out
    frames = encoder_frames(real)
    total = np.bincount(owner.numpy(), weights=frames, minlength=len(good)).astype(np.int64)
    if len(real) > len(good):  # long clips: frame-weighted mean of their pieces' means
        weight = torch.from_numpy(frames / total[owner.numpy()]).to(dev, torch.float32)
        combined = torch.zeros((len(good), *pooled.shape[1:]), device=dev)
        pooled = combined.index_add_(0, owner.to(dev), pooled * weight[:, None, None])
    return pooled, total, good
