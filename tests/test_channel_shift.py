"""`cli.py shift` (pipeline/channel_shift.py): telephone band and mu-law, noise at a given SNR, MP3, speed."""
import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from data_manifests.errors import UserError
from pipeline.channel_shift import add_noise, mp3, mu_law, shift_corpus, speed, telephone


def test_telephone_keeps_the_narrow_band_and_noise_has_its_snr():
    t = np.arange(16000) / 16000
    low, high = np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 6000 * t)
    out = telephone((0.4 * (low + high)).astype(np.float32))
    spec = np.abs(np.fft.rfft(out))
    assert spec[6000] < 0.01 * spec[440] and len(out) == 16000  # 6 kHz is above the 4 kHz band; 1 Hz bins
    assert np.max(np.abs(mu_law(np.float32([0.0, 0.5, -0.25])) - [0.0, 0.5, -0.25])) < 0.02
    x = (0.3 * low).astype(np.float32)
    noisy = add_noise(x, 10.0, np.random.default_rng(0))
    snr = 10 * np.log10(np.mean(x ** 2) / np.mean((noisy - x) ** 2))
    assert abs(snr - 10.0) < 0.2


def test_codec_keeps_length_and_speed_moves_pitch_and_duration():
    t = np.arange(16000) / 16000
    x = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    coded = mp3(x)
    assert len(coded) == len(x) and 0 < np.mean((coded - x) ** 2) < 0.1 * np.mean(x ** 2)  # lossy, >10 dB SNR
    slow = speed(x, 0.9)
    assert abs(len(slow) - 16000 / 0.9) <= 1
    peak = np.argmax(np.abs(np.fft.rfft(slow))) * 16000 / len(slow)
    assert abs(peak - 396.0) < 2  # 440 Hz * 0.9


def test_shift_corpus_writes_a_copy_and_its_manifest(tmp_path):
    root = tmp_path / "corpus"
    root.mkdir()
    rows = []
    for i in range(2):
        sf.write(root / f"a{i}.wav", (0.1 * np.sin(np.arange(8000) / 5)).astype(np.float32), 16000)
        rows.append({"utt_id": f"u{i}", "path": f"a{i}.wav", "speaker": "s1", "label": "sad", "corpus": "mine",
                     "fold": 0, "duration": 0.5, "gender": "f", "language": "en", "raw_label": "sad", "split": "",
                     "sample_rate": 16000, "channels": 1})
    manifest = tmp_path / "m.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    (tmp_path / "m.csv.root").write_text(str(root) + "\n")
    out = shift_corpus(manifest, "noise", tmp_path / "copy")
    copy = pd.read_csv(out)
    assert copy.utt_id.tolist() == ["u0", "u1"] and (copy.corpus == "mine").all()
    audio, rate = sf.read(tmp_path / "copy" / "a0.flac")
    assert rate == 16000 and len(audio) == 8000
    fast = pd.read_csv(shift_corpus(manifest, "speed", tmp_path / "fast", factor=1.25))
    assert fast.duration.tolist() == [0.4, 0.4] and len(sf.read(tmp_path / "fast" / "a1.flac")[0]) == 6400
    with pytest.raises(UserError, match="--factor 3"):
        shift_corpus(manifest, "speed", tmp_path / "bad", factor=3.0)
    with pytest.raises(UserError, match="--kind reverb"):
        shift_corpus(manifest, "reverb", tmp_path / "bad")
