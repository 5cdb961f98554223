"""Channel-shifted copies of a corpus (`cli.py shift`): the same utterances heard through another
channel, a pool condition real external audio has (issue 24: docs/EXTERNAL.md).

Kinds:
- telephone: the G.711 narrow band: 8 kHz (soxr's anti-aliasing low-pass keeps < 4 kHz) with 8-bit
  mu-law quantisation, back to 16 kHz;
- noise: white noise at 10 dB SNR (per utterance, from its signal power; seeded by its utt_id);
- codec: MP3 (MPEG layer III, variable bitrate at compression level 0.9: ~16-24 kbit/s on speech),
  decoded back to 16 kHz and to the input's length;
- speed: speed perturbation by --factor (0.9: 10% slower, pitch 10% lower; Kaldi's resampling
  augmentation), the one kind that changes durations and voices, not only the channel.
The copy keeps every manifest column (utt_id, speaker, corpus, label, prompt), so `extract` encodes it
into a cache whose rows the trainer keeps apart from the test speakers (trainer/inputs/sources.py). Each
file is written through a temp name and renamed; the manifest is written last.
"""
from __future__ import annotations

import io
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
import soxr

from data_manifests.errors import UserError
from data_manifests.home import manifest_root, write_manifest_root
from data_manifests.storage import atomic_path, read_manifest, write_manifest
from pipeline.audio import SAMPLE_RATE, load_audio

KINDS = ("telephone", "noise", "codec", "speed")
TELEPHONE_RATE = 8000
MU = 255.0


def mu_law(audio: np.ndarray, levels_bits: int = 8) -> np.ndarray:
    """Mu-law companding to 2**bits levels and back (G.711's quantisation)."""
    x = np.clip(audio, -1.0, 1.0)
    y = np.sign(x) * np.log1p(MU * np.abs(x)) / np.log1p(MU)
    step = 2.0 / (2 ** levels_bits - 1)
    y = np.round((y + 1.0) / step) * step - 1.0
    return (np.sign(y) * np.expm1(np.abs(y) * np.log1p(MU)) / MU).astype(np.float32)


def telephone(audio: np.ndarray) -> np.ndarray:
    """16 kHz -> 8 kHz band -> mu-law -> 16 kHz."""
    narrow = soxr.resample(audio, SAMPLE_RATE, TELEPHONE_RATE, quality="HQ")
    return soxr.resample(mu_law(narrow), TELEPHONE_RATE, SAMPLE_RATE, quality="HQ").astype(np.float32)


def add_noise(audio: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """White noise scaled so that signal power / noise power = 10^(snr_db / 10)."""
    power = float(np.mean(audio.astype(np.float64) ** 2))
    noise = rng.standard_normal(len(audio)) * np.sqrt(power / 10 ** (snr_db / 10))
    return (audio + noise).astype(np.float32)


def mp3(audio: np.ndarray) -> np.ndarray:
    """Encoded as low-bitrate MP3 and decoded, cut or zero-padded to the input's length (libsndfile's
    level 1.0 is refused by its MP3 encoder, hence 0.9)."""
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(audio, -1.0, 1.0), SAMPLE_RATE, format="MP3", subtype="MPEG_LAYER_III",
             compression_level=0.9)
    buffer.seek(0)
    decoded, rate = sf.read(buffer, dtype="float32")
    if rate != SAMPLE_RATE:
        decoded = soxr.resample(decoded, rate, SAMPLE_RATE).astype(np.float32)
    return np.pad(decoded[:len(audio)], (0, max(len(audio) - len(decoded), 0)))


def speed(audio: np.ndarray, factor: float) -> np.ndarray:
    """Played `factor` times as fast: the samples read as if taken at SAMPLE_RATE * factor."""
    return soxr.resample(audio, SAMPLE_RATE * factor, SAMPLE_RATE, quality="HQ").astype(np.float32)


def shifted_audio(audio: np.ndarray, kind: str, utt_id: str, snr_db: float = 10.0, factor: float = 0.9) -> np.ndarray:
    if kind == "telephone":
        return telephone(audio)
    if kind == "noise":
        return add_noise(audio, snr_db, np.random.default_rng(zlib.crc32(utt_id.encode())))
    if kind == "codec":
        return mp3(audio)
    if kind == "speed":
        return speed(audio, factor)
    raise UserError(f"--kind {kind}: choose from {', '.join(KINDS)}")


def shift_corpus(manifest, kind: str, out_dir, snr_db: float = 10.0, factor: float = 0.9) -> Path:
    """Write every utterance of `manifest` through channel `kind` as 16 kHz FLAC under out_dir (same
    relative paths, .flac), and out_dir/manifest.csv (+ its .root) describing the copy."""
    if kind == "speed" and not 0.5 <= factor <= 2.0:
        raise UserError(f"--factor {factor}: a speed factor between 0.5 and 2 (0.9 = 10% slower)")
    if kind not in KINDS:
        raise UserError(f"--kind {kind}: choose from {', '.join(KINDS)}")
    table = read_manifest(manifest)
    root, out_dir = manifest_root(manifest), Path(out_dir)
    paths, durations = [], []
    for utt, rel in zip(table["utt_id"], table["path"]):
        dest = Path(rel).with_suffix(".flac")
        target = out_dir / dest
        if not target.exists():  # a rerun resumes where it stopped
            audio = shifted_audio(load_audio(root / rel), kind, str(utt), snr_db, factor)
            with atomic_path(target) as tmp:
                sf.write(str(tmp), np.clip(audio, -1.0, 1.0), SAMPLE_RATE, format="FLAC")
        paths.append(str(dest))
        durations.append(f"{sf.info(str(target)).duration:.3f}")
    out = table.assign(path=paths)
    if "sample_rate" in table:
        out = out.assign(sample_rate="16000", channels="1")
    if "duration" in table:
        out = out.assign(duration=durations)
    manifest_out = out_dir / "manifest.csv"
    write_manifest(pd.DataFrame(out), manifest_out)
    write_manifest_root(manifest_out, out_dir.resolve())
    return manifest_out
