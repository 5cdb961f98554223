"""Tiny audio trees for the manifest tests (shared by tests/test_manifest*.py and tests/test_adapters*.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf


def write_tone(path: Path, seconds: float = 0.25, rate: int = 16000, channels: int = 1) -> Path:
    """A short sine (not silence, so it is a real signal) of exactly round(seconds*rate) frames."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = int(round(seconds * rate))
    tone = 0.1 * np.sin(2 * np.pi * 440 * np.arange(frames) / rate)
    data = np.repeat(tone[:, None], channels, axis=1) if channels > 1 else tone
    sf.write(str(path), data, rate, subtype="PCM_16")
    return path


def write_tree(root: Path, names: list[str], **tone) -> Path:
    for name in names:
        write_tone(root / name, **tone)
    return root


# --- the audio scan and header reading themselves ------------------------------------------------
import pytest  # noqa: E402

from data_manifests import ManifestError  # noqa: E402
from data_manifests.audio_files import find_audio, read_headers  # noqa: E402


def test_find_audio_skips_hidden_and_macos_debris(tmp_path):
    write_tree(tmp_path, ["a/x.wav", "a/y.FLAC", "a/._x.wav", "__MACOSX/a/x.wav", ".hidden/z.wav"])
    (tmp_path / "a" / "notes.txt").write_text("not audio")
    assert [p.as_posix() for p in find_audio(tmp_path)] == ["a/x.wav", "a/y.FLAC"]


def test_headers_give_duration_rate_channels_including_48k_stereo(tmp_path):
    write_tone(tmp_path / "mono.wav", seconds=0.5, rate=16000)
    write_tone(tmp_path / "stereo.wav", seconds=0.25, rate=48000, channels=2)
    headers = read_headers(tmp_path, ["mono.wav", "stereo.wav"])
    assert headers["duration"].tolist() == [0.5, 0.25]
    assert headers["sample_rate"].tolist() == [16000, 48000]
    assert headers["channels"].tolist() == [1, 2]


def test_unreadable_header_names_the_file(tmp_path):
    write_tone(tmp_path / "good.wav")
    (tmp_path / "broken.wav").write_bytes(b"RIFF....not a wave file")
    with pytest.raises(ManifestError, match=r"1 audio files .* unreadable headers[\s\S]*broken\.wav"):
        read_headers(tmp_path, ["good.wav", "broken.wav"])


def test_missing_root_and_empty_root(tmp_path):
    with pytest.raises(ManifestError, match="does not exist"):
        find_audio(tmp_path / "nowhere")
    with pytest.raises(ManifestError, match="no audio"):
        find_audio(tmp_path)
