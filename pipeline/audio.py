"""Audio for the encoder: soundfile decode, mono downmix, soxr to 16 kHz, 30 s pieces, batches.

Runs inside DataLoader workers so that decoding never makes the encoder wait (the log-mel is
computed batched on the encoder's device: pipeline.log_mel).
A bad file (unreadable, empty, zero-length, non-finite) becomes an item with `error` set,
never an exception: one file must not kill a corpus-sized run.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

import numpy as np
import soundfile as sf
import soxr
import torch

SAMPLE_RATE = 16000
HOP = 160  # samples per mel frame
WINDOW_SAMPLES = 30 * SAMPLE_RATE  # Whisper's input length
FULL_MEL_FRAMES = WINDOW_SAMPLES // HOP  # 3000


class BadAudio(ValueError):
    """Audio that cannot be encoded; the message is the reason recorded in the cache."""


def load_audio(path) -> np.ndarray:
    """Mono float32 at 16 kHz; raises BadAudio with the reason."""
    if not os.path.exists(path):
        raise BadAudio("missing: no such file")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises several types (LibsndfileError, RuntimeError, ...)
        raise BadAudio(f"unreadable: {exc}".replace("\n", " ")) from exc
    if data.size == 0:
        raise BadAudio("empty: zero samples")
    if not np.isfinite(data).all():
        raise BadAudio("non-finite samples (NaN/inf)")
    audio = data.mean(axis=1, dtype=np.float32)
    if rate != SAMPLE_RATE:
        audio = soxr.resample(audio, rate, SAMPLE_RATE, quality="HQ").astype(np.float32)
    if audio.size < HOP:
        raise BadAudio(f"zero-length: {data.shape[0]} samples at {rate} Hz is under one mel frame")
    return audio


def split_windows(audio: np.ndarray) -> list[np.ndarray]:
    """Cut into 30 s pieces (Whisper's input length); a sliver under one mel frame after a cut adds nothing."""
    return [audio[start:start + WINDOW_SAMPLES] for start in range(0, len(audio), WINDOW_SAMPLES)
            if start == 0 or len(audio) - start >= HOP]


@dataclass
class Item:
    index: int
    pieces: list = field(default_factory=list)  # float32 audio, <= 30 s each
    seconds: float = 0.0
    error: str = ""


class AudioDataset(torch.utils.data.Dataset):
    """Item i = the 30 s pieces of file i's audio (or the reason it could not be read)."""

    def __init__(self, paths):
        self.paths = list(paths)

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i) -> Item:
        try:
            audio = load_audio(self.paths[i])
        except BadAudio as exc:
            return Item(i, error=str(exc))
        return Item(i, split_windows(audio), len(audio) / SAMPLE_RATE)


def collate(items: list[Item]):
    """All pieces of a batch, zero-padded to the longest -> (items, audio [W, S], samples [W], owner [W]).

    owner[j] = position among the batch's readable items of the item piece j belongs to.  The
    items come back without their pieces: the audio travels once, as the (shared-memory) tensor."""
    good = [it for it in items if not it.error]
    pieces = [(k, p) for k, it in enumerate(good) for p in it.pieces]
    items = [replace(it, pieces=[]) for it in items]
    if not pieces:
        return items, None, None, None
    width = -(-max(len(p) for _, p in pieces) // HOP) * HOP
    audio = np.zeros((len(pieces), width), np.float32)
    for j, (_, p) in enumerate(pieces):
        audio[j, :len(p)] = p
    return (items, torch.from_numpy(audio), torch.tensor([len(p) for _, p in pieces]),
            torch.tensor([k for k, _ in pieces]))
