"""What the encoder sees of a clip (the `--window`), as mel-frame arithmetic.

  full   Whisper's 30 s padded input, unmasked, as published (3000 mel frames per clip);
  trim   only the clip's real frames: a batch is padded to its longest clip (rounded up to
         TRIM_STEP frames, so that a run has few shapes) and the padding is masked, so a clip's
         vectors do not depend on its batch;
  padN   (N whole seconds, 1-30) the clip padded as Whisper pads it, unmasked, to the next
         multiple of N s: a clip sees the same input in any batch, at N/30 of full's frames
         for clips under N s.
A clip over 30 s is cut into 30 s pieces first; each piece gets the window.
"""
from __future__ import annotations

import re

import numpy as np

from data_manifests.errors import UserError
from pipeline.audio import FULL_MEL_FRAMES, HOP, SAMPLE_RATE

FRAMES_PER_SECOND = SAMPLE_RATE // HOP  # 100 mel frames
TRIM_STEP = 128  # mel frames (64 encoder frames): trim widths are multiples of it
PATTERN = re.compile(r"full|trim|pad([1-9]|[12][0-9]|30)")


def check_window(window: str) -> str:
    """`window` if it is one of full, trim, pad1..pad30; else ValueError saying what to pass."""
    if not isinstance(window, str) or not PATTERN.fullmatch(window):
        raise UserError(f"--window {window!r}: choose full, trim, or padN (N whole seconds 1-30, e.g. pad10)")
    return window


def masked(window: str) -> bool:
    """True when the encoder must ignore padding (trim): the other windows see Whisper's padding."""
    return window == "trim"


def real_mel_frames(samples):
    """Mel frames holding real audio of a <= 30 s piece of `samples` samples: ceil(samples / hop)."""
    return np.minimum(-(-np.asarray(samples, np.int64) // HOP), FULL_MEL_FRAMES)


def seen_mel_frames(window: str, real) -> np.ndarray:
    """Mel frames the encoder runs on for pieces with `real` real frames (trim: before batching)."""
    real = np.asarray(real, np.int64)
    if window == "full":
        return np.full_like(real, FULL_MEL_FRAMES)
    if window == "trim":
        return real
    step = int(window[3:]) * FRAMES_PER_SECOND
    return np.minimum(np.maximum(-(-real // step), 1) * step, FULL_MEL_FRAMES)


def batch_width(window: str, real) -> int:
    """Mel frames of one encoder pass over pieces with `real` frames (all seen alike, or trim)."""
    seen = seen_mel_frames(window, real)
    if window == "trim":
        return int(min(-(-int(seen.max()) // TRIM_STEP) * TRIM_STEP, FULL_MEL_FRAMES))
    return int(seen.max())


def clip_cost(window: str, seconds) -> np.ndarray:
    """Mel frames the encoder runs on for clips of `seconds` (pieces of 30 s), for batch planning.
    Unknown durations (0 or NaN) count as one full window."""
    seconds = np.nan_to_num(np.asarray(seconds, np.float64), nan=0.0)
    samples = np.round(seconds * SAMPLE_RATE).astype(np.int64)
    whole, rest = np.divmod(samples, 30 * SAMPLE_RATE)
    cost = whole * seen_mel_frames(window, [FULL_MEL_FRAMES])[0]
    cost = cost + np.where(rest >= HOP, seen_mel_frames(window, real_mel_frames(rest)), 0)
    return np.where(samples > 0, cost, FULL_MEL_FRAMES)
