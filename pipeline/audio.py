"""Audio -> Whisper log-mel windows: soundfile decode, mono downmix, soxr to 16 kHz, 30 s windows.

Runs inside DataLoader workers so that decoding and the log-mel never make the encoder wait.
A bad file (unreadable, empty, zero-length, non-finite) becomes an item with `error` set,
never an exception: one file must not kill a corpus-sized run.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

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


def log_mel_windows(audio: np.ndarray, feature_extractor, window: str):
    """Cut into 30 s windows -> (list of [n_mels, T] float32 log-mel, list of real mel frames).

    Every window goes through WhisperFeatureExtractor padded to 30 s (its normalisation is
    defined on that input); trim mode then keeps only the window's real frames.
    """
    mels, counts = [], []
    for start in range(0, len(audio), WINDOW_SAMPLES):
        piece = audio[start:start + WINDOW_SAMPLES]
        if len(piece) < HOP and start > 0:  # a sliver under one frame after a 30 s cut adds nothing
            continue
        n_mel = min(-(-len(piece) // HOP), FULL_MEL_FRAMES)
        mel = feature_extractor(piece, sampling_rate=SAMPLE_RATE, return_tensors="np").input_features[0]
        mels.append(np.ascontiguousarray(mel[:, :n_mel] if window == "trim" else mel, dtype=np.float32))
        counts.append(n_mel)
    return mels, counts


@dataclass
class Item:
    index: int
    mels: list = field(default_factory=list)
    num_mel: list = field(default_factory=list)
    seconds: float = 0.0
    error: str = ""


class AudioDataset(torch.utils.data.Dataset):
    """Item i = log-mel windows of file i (or the reason it could not be read)."""

    def __init__(self, paths, feature_extractor, window: str):
        self.paths, self.fe, self.window = list(paths), feature_extractor, window

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i) -> Item:
        try:
            audio = load_audio(self.paths[i])
        except BadAudio as exc:
            return Item(i, error=str(exc))
        mels, counts = log_mel_windows(audio, self.fe, self.window)
        return Item(i, mels, counts, len(audio) / SAMPLE_RATE)


def collate(items: list[Item]):
    """Stack all windows of a batch, zero-padded to the longest (trim) -> (items, mel, num_mel, owner)."""
    good = [it for it in items if not it.error]
    windows = [(k, m, n) for k, it in enumerate(good) for m, n in zip(it.mels, it.num_mel)]
    if not windows:
        return items, None, None, None
    width = max(m.shape[1] for _, m, _ in windows)
    mel = np.zeros((len(windows), windows[0][1].shape[0], width), np.float32)
    for j, (_, m, _) in enumerate(windows):
        mel[j, :, :m.shape[1]] = m
    owner = torch.tensor([k for k, _, _ in windows])
    return items, torch.from_numpy(mel), torch.tensor([n for _, _, n in windows]), owner
