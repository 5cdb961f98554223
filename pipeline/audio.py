"""Audio for the encoder: soundfile decode, mono downmix, soxr to 16 kHz, 30 s pieces, batches.

Runs inside DataLoader workers so that decoding never makes the encoder wait (the log-mel is
computed batched on the encoder's device: pipeline.log_mel).
A bad file (unreadable, empty, zero-length, non-finite) becomes an item with `error` set,
never an exception: one file must not kill a corpus-sized run. A segment of a longer recording
(a manifest row with start/end, `cli.py segment`) is read in place: a seek to its first sample
and a read of its samples only (exact for wav/flac/ogg; mp3 seeks as libsndfile decodes it).
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass, field, replace

import numpy as np
import soundfile as sf
import soxr

SAMPLE_RATE = 16000
HOP = 160  # samples per mel frame
WINDOW_SAMPLES = 30 * SAMPLE_RATE  # Whisper's input length
FULL_MEL_FRAMES = WINDOW_SAMPLES // HOP  # 3000


class BadAudio(ValueError):
    """Audio that cannot be encoded; the message is the reason recorded in the cache."""


@dataclass(frozen=True)
class Span:
    """Seconds [start, end) of a source file, and the channel read (None: the downmix of all)."""

    start: float
    end: float
    channel: int | None = None


def read_span(path, span: Span, dtype: str = "float32") -> tuple[np.ndarray, int]:
    """(samples [n, channels] of `dtype`, rate) of the span only, by seek; BadAudio when it runs past the end."""
    with sf.SoundFile(str(path)) as f:
        rate = f.samplerate
        first, last = round(span.start * rate), round(span.end * rate)
        if last > f.frames:
            raise BadAudio(f"span {span.start:.3f}-{span.end:.3f} s runs past the file's end ({f.frames / rate:.3f} s)")
        f.seek(first)
        return f.read(last - first, dtype=dtype, always_2d=True), rate


def span_wav(path, span: Span) -> bytes:
    """The span's samples as a WAV file at the source's rate and channels (its one channel with
    span.channel): the samples `extract` reads, exactly (16-bit sources as 16-bit, others float32),
    so the labelling page plays what is labelled. BadAudio when the file or span cannot be read."""
    try:
        pcm16 = sf.info(str(path)).subtype == "PCM_16"
        data, rate = read_span(path, span, "int16" if pcm16 else "float32")
    except BadAudio:
        raise
    except Exception as exc:  # soundfile raises several types (LibsndfileError, RuntimeError, ...)
        raise BadAudio(f"unreadable: {exc}".replace("\n", " ")) from exc
    if span.channel is not None:
        if not 0 <= span.channel < data.shape[1]:
            raise BadAudio(f"no channel {span.channel}: the file has {data.shape[1]}")
        data = data[:, [span.channel]]
    out = io.BytesIO()
    sf.write(out, data, rate, subtype="PCM_16" if pcm16 else "FLOAT", format="WAV")
    return out.getvalue()


def load_audio(path, span: Span | None = None) -> np.ndarray:
    """Mono float32 at 16 kHz of the file (or of its `span`); raises BadAudio with the reason."""
    if not os.path.exists(path):
        raise BadAudio("missing: no such file")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True) if span is None else read_span(path, span)
    except BadAudio:
        raise
    except Exception as exc:  # soundfile raises several types (LibsndfileError, RuntimeError, ...)
        raise BadAudio(f"unreadable: {exc}".replace("\n", " ")) from exc
    if data.size == 0:
        raise BadAudio("empty: zero samples")
    if not np.isfinite(data).all():
        raise BadAudio("non-finite samples (NaN/inf)")
    channel = None if span is None else span.channel
    if channel is not None and not 0 <= channel < data.shape[1]:
        raise BadAudio(f"no channel {channel}: the file has {data.shape[1]}")
    audio = data.mean(axis=1, dtype=np.float32) if channel is None else np.ascontiguousarray(data[:, channel])
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


class AudioDataset:
    """Item i = the 30 s pieces of file i's audio, or of its span (or the reason it could not be read).
    A map-style dataset for torch's DataLoader (this module imports no torch: `segment` reads audio
    through it without paying for torch)."""

    def __init__(self, paths, spans=None):
        self.paths = list(paths)
        self.spans = [None] * len(self.paths) if spans is None else list(spans)

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i) -> Item:
        try:
            audio = load_audio(self.paths[i], self.spans[i])
        except BadAudio as exc:
            return Item(i, error=str(exc))
        return Item(i, split_windows(audio), len(audio) / SAMPLE_RATE)


def collate(items: list[Item]):
    """All pieces of a batch, zero-padded to the longest -> (items, audio [W, S], samples [W], owner [W]).

    owner[j] = position among the batch's readable items of the item piece j belongs to.  The
    items come back without their pieces: the audio travels once, as the (shared-memory) tensor."""
    import torch

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
