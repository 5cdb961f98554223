"""Extraction: pooling maths, batching invariance, resume after SIGKILL, bad audio, identity checks."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from data_manifests import write_manifest
from pipeline.audio import BadAudio, load_audio
from pipeline.cache import load_cache
from pipeline.encoder import EncoderError, load_encoder
from pipeline.cache import CacheMismatch
from pipeline.extract import AudioNotFound, embed_files, extract
from pipeline.run_lock import Locked

REPO = Path(__file__).resolve().parents[1]
LABELS = ("angry", "happy", "sad", "neutral")


def make_clip(path: Path, seconds: float, seed: int, rate: int = 22050, channels: int = 2) -> Path:
    """A voiced-like tone (pitch glide + harmonics + noise), stereo at 22.05 kHz: exercises downmix + resample."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    f0 = 120 + 80 * rng.random() + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    x = sum(np.sin(k * phase) / k for k in range(1, 6)) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2)
    x = 0.2 * x / np.abs(x).max() + 0.01 * rng.standard_normal(len(t))
    sf.write(path, np.stack([x] * channels, 1) if channels > 1 else x, rate, subtype="PCM_16")
    return path


def make_corpus(root: Path, n: int, seed: int = 0, lengths=(1.0, 2.5)) -> Path:
    """n generated clips under root/audio + a validated manifest CSV (paths relative to root)."""
    (root / "audio").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        secs = float(rng.uniform(*lengths))
        make_clip(root / "audio" / f"u{i:03d}.wav", secs, seed * 1000 + i)
        rows.append(dict(utt_id=f"u{i:03d}", path=f"audio/u{i:03d}.wav", speaker=f"s{i % 3}", gender="",
                         language="en", label=LABELS[i % 4], raw_label=LABELS[i % 4], fold=i % 3, split="",
                         duration=secs, corpus="gen", sample_rate=22050, channels=2))
    table = pd.DataFrame(rows)
    table["fold"] = table["fold"].astype("Int64")
    return write_manifest(table, root / "manifest.csv")


def run_cli(*args, check_rc=None):
    """The CLI in-process (typer's runner): exit code + output, without a fresh interpreter."""
    from typer.testing import CliRunner

    from cli import app
    result = CliRunner().invoke(app, [str(a) for a in args])
    if check_rc is not None:
        assert result.exit_code == check_rc, result.output
    return result


@pytest.fixture(scope="module")
def tiny():
    return load_encoder("tiny.en", "cpu")


def test_pooling_is_mean_over_real_frames_only(tmp_path, tiny):
    """Full mode: pooled last state = mean of the encoder's own output over ceil(mel/2) frames."""
    clip = make_clip(tmp_path / "a.wav", 1.3, 1)
    audio = load_audio(clip)
    mel = tiny.feature_extractor(audio, sampling_rate=16000, return_tensors="pt").input_features
    with torch.inference_mode():
        ref = tiny.module(mel).last_hidden_state[0].numpy()
    n_mel = -(-len(audio) // 160)
    n_enc = (n_mel + 1) // 2
    assert n_enc == 65  # 1.3 s -> 130 mel frames -> 65 encoder frames (50 per second)
    got = embed_files([clip], encoder=tiny, window="full")
    assert got.shape == (1, 5, 384)
    np.testing.assert_allclose(got[0, -1], ref[:n_enc].mean(0), atol=1e-4)
    assert np.abs(got[0, -1] - ref.mean(0)).max() > 1e-2  # padding frames would change it
    same = embed_files([clip], encoder=tiny, window="full", weights_sha256=tiny.weights_sha256)
    np.testing.assert_array_equal(same, got)
    with pytest.raises(EncoderError, match="weights"):
        embed_files([clip], encoder=tiny, weights_sha256="0" * 64)


def test_batched_equals_one_at_a_time_full_default_encoder(tmp_path):
    clips = [make_clip(tmp_path / f"{i}.wav", s, i) for i, s in enumerate((0.8, 1.7))]
    enc = load_encoder(None, "cpu")  # the embedded default, Whisper base
    batched = embed_files(clips, encoder=enc, window="full", batch_size=2)
    single = np.concatenate([embed_files([c], encoder=enc, window="full", batch_size=1) for c in clips])
    assert batched.shape == (2, 7, 512)
    np.testing.assert_allclose(batched, single, atol=1e-3)  # fp16 storage precision


def test_trim_batched_equals_one_at_a_time_and_differs_from_full(tmp_path, tiny):
    clips = [make_clip(tmp_path / f"{i}.wav", s, i) for i, s in enumerate((0.6, 2.2, 1.4, 1.0))]
    batched = embed_files(clips, encoder=tiny, window="trim", batch_size=4)
    single = np.concatenate([embed_files([c], encoder=tiny, window="trim", batch_size=1) for c in clips])
    np.testing.assert_allclose(batched, single, atol=2e-4)
    full = embed_files(clips[:1], encoder=tiny, window="full")
    cos = (full[0, -1] @ batched[0, -1]) / np.linalg.norm(full[0, -1]) / np.linalg.norm(batched[0, -1])
    assert 0.5 < cos < 0.9999  # trim sees no padding: close to, but not the same as, full


def test_long_clip_windows_combined_by_frame_count(tmp_path, tiny):
    long = make_clip(tmp_path / "long.wav", 31.0, 7, rate=16000, channels=1)
    audio = sf.read(long, dtype="float32")[0]
    sf.write(tmp_path / "w1.wav", audio[:480000], 16000, subtype="FLOAT")
    sf.write(tmp_path / "w2.wav", audio[480000:], 16000, subtype="FLOAT")
    whole = embed_files([long], encoder=tiny, window="trim")[0]
    a, b = embed_files([tmp_path / "w1.wav", tmp_path / "w2.wav"], encoder=tiny, window="trim", batch_size=1)
    np.testing.assert_allclose(whole, (1500 * a + 50 * b) / 1550, atol=2e-3)


def test_bad_files_are_recorded_not_fatal(tmp_path):
    csv = make_corpus(tmp_path, 3)
    audio = tmp_path / "audio"
    (audio / "u000.wav").write_bytes(b"")  # empty file
    (audio / "u001.wav").write_bytes(b"RIFF not really a wave file")  # unreadable
    sf.write(audio / "u002.wav", np.zeros((0, 1), np.float32), 16000)  # zero samples
    nan = np.full(16000, np.nan, np.float32)
    sf.write(audio / "u003.wav", nan, 16000, subtype="FLOAT")  # non-finite
    table = pd.read_csv(csv, keep_default_na=False)
    extra = table.iloc[[0]].assign(utt_id="u003", path="audio/u003.wav")
    good = table.iloc[[0]].assign(utt_id="u004", path="audio/u004.wav")
    make_clip(audio / "u004.wav", 1.0, 4)
    table = pd.concat([table, extra, good], ignore_index=True)
    table["fold"] = table["fold"].astype("Int64")
    write_manifest(table, csv)
    out = tmp_path / "c.h5"
    proc = run_cli("extract", "--manifest", str(csv), "--model", "tiny.en", "--window", "trim", "--out", str(out))
    assert proc.exit_code == 1, proc.output  # finished, but says something failed
    assert "4 failed of 5" in proc.output
    with h5py.File(out, "r") as f:
        ok, err = f["ok"][...], f["error"].asstr()[...]
        assert f["embeddings"].shape == (5, 5, 384)
    assert ok.tolist() == [False, False, False, False, True]
    assert "empty" in err[0] or "unreadable" in err[0]
    assert "unreadable" in err[1] and "zero" in err[2] and "non-finite" in err[3]
    cache = load_cache(out)
    assert cache.table["utt_id"].tolist() == ["u004"] and np.isfinite(cache.features.astype(float)).all()
    with pytest.raises(BadAudio, match="u003.wav"):
        embed_files([audio / "u003.wav"], model="tiny.en", device="cpu")


def test_kill_and_resume_gives_identical_cache(tmp_path, tiny):
    csv = make_corpus(tmp_path, 8, seed=3, lengths=(1.5, 3.0))
    table = pd.read_csv(csv, keep_default_na=False)
    opts = dict(model="tiny.en", device="cpu", window="trim", batch_size=2, workers=0, progress=False,
                log=lambda *_: None)
    ref = extract(table, tmp_path, tmp_path / "ref.h5", **opts)  # the uninterrupted run
    out = tmp_path / "killed.h5"
    args = ["extract", "--manifest", str(csv), "--model", "tiny.en", "--window", "trim", "--batch-size", "2",
            "--workers", "0", "--device", "cpu", "--out", str(out)]
    proc = subprocess.Popen([sys.executable, str(REPO / "cli.py"), *args], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    work = Path(str(out) + ".partial")
    deadline = time.time() + 900  # a hung run's safety net: a loaded machine may take minutes to start it
    def finished():  # a batch being written is a .tmp.npz until its atomic rename
        return [p for p in work.glob("batch-*.npz") if ".tmp" not in p.name]

    while not finished() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(finished())
    assert 1 <= done < 4 and not out.exists(), "killed too late to test resuming"
    resumed = run_cli(*args, check_rc=0)
    assert f"{done} of 4 batches already done" in resumed.output
    a, b = load_cache(ref.path), load_cache(out)
    assert np.array_equal(a.features, b.features) and a.fingerprint == b.fingerprint
    assert a.table["utt_id"].tolist() == b.table["utt_id"].tolist() == [f"u{i:03d}" for i in range(8)]
    assert not work.exists() and extract(table, tmp_path, out, **opts).already_complete


def test_mismatch_lock_overwrite_and_reader_without_audio(tmp_path, tiny):
    csv = make_corpus(tmp_path, 3, seed=5)
    table = pd.read_csv(csv, keep_default_na=False)
    out = tmp_path / "c.h5"
    kw = dict(model="tiny.en", device="cpu", progress=False, log=lambda *_: None)
    first = extract(table, tmp_path, out, window="trim", **kw)
    assert first.encoded == 3 and not first.failed
    with pytest.raises(CacheMismatch, match="window"):
        extract(table, tmp_path, out, window="full", **kw)
    with pytest.raises(CacheMismatch, match="manifest"):
        extract(table.iloc[:2], tmp_path, out, window="trim", **kw)
    assert extract(table, tmp_path, out, window="trim", **kw).already_complete
    holder = subprocess.Popen([sys.executable, "-c", "import sys; from pipeline.run_lock import exclusive\n"
                               "with exclusive(sys.argv[1], 'x'):\n print('held', flush=True); sys.stdin.read()",
                               str(out) + ".lock"], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "held\n"  # another live process holds the lock
    with pytest.raises(Locked, match=f"pid {holder.pid}"):
        extract(table, tmp_path, out, window="trim", **kw)
    holder.communicate("")
    shutil.rmtree(tmp_path / "audio")
    cache = load_cache(out, layers=[0, 4])
    assert cache.features.shape == (3, 2, 384) and cache.features.dtype == np.float16
    assert cache.table["label"].tolist() == table["label"].tolist()
    assert cache.attrs["window"] == "trim" and cache.attrs["encoder_id"] == "tiny.en"
    assert extract(table, tmp_path, out, window="trim", **kw).already_complete  # audio not needed
    with pytest.raises(AudioNotFound, match="3 of 3 files"):  # re-encoding needs the audio: stop before any work
        extract(table, tmp_path, out, window="full", overwrite=True, **kw)
    assert load_cache(out).attrs["window"] == "trim"  # the finished cache is untouched


def test_shards_merge_into_the_unsharded_cache(tmp_path, tiny):
    csv = make_corpus(tmp_path, 5, seed=9)
    table = pd.read_csv(csv, keep_default_na=False)
    kw = dict(model="tiny.en", device="cpu", window="trim", batch_size=1, progress=False, log=lambda *_: None)
    whole = extract(table, tmp_path, tmp_path / "whole.h5", **kw)
    out = tmp_path / "sharded.h5"
    extract(table, tmp_path, out, shard=(1, 2), **kw)
    assert (tmp_path / "sharded.part-1-of-2.h5").exists() and not out.exists()
    extract(table, tmp_path, out, shard=(0, 2), **kw)  # the last shard merges
    a, b = load_cache(whole.path), load_cache(out)
    assert np.array_equal(a.features, b.features) and a.fingerprint == b.fingerprint


@pytest.mark.slow
def test_ravdess_files_through_the_default_encoder(tmp_path):
    root = Path(__file__).resolve().parents[2] / "shared/corpora/ravdess"
    if not root.is_dir():
        pytest.skip(f"{root} not present")
    from data_manifests import prepare
    table = prepare("ravdess", root).iloc[[0, 700]].reset_index(drop=True)
    res = extract(table, root, tmp_path / "r.h5", window="trim", device="cpu", progress=False, log=lambda *_: None)
    cache = load_cache(res.path)
    assert cache.features.shape == (2, 7, 512) and not res.failed
    np.testing.assert_allclose(cache.table["duration"], table["duration"], atol=1e-3)
    np.testing.assert_array_equal(cache.table["num_frames"], np.ceil(np.ceil(table["duration"] * 100) / 2))
    assert cache.table["label"].tolist() == table["label"].tolist()


def test_torchrun_two_ranks_merge_into_the_single_process_cache(tmp_path, tiny):
    """The scale-out path as documented: torchrun starts one extraction per rank, each rank writes
    its part file beside the target (shared storage), the last one merges; CPU, 2 ranks."""
    csv = make_corpus(tmp_path, 5, seed=11)
    table = pd.read_csv(csv, keep_default_na=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each rank runs (OMP_NUM_THREADS=1): the same kernels, the same bits
    try:  # batches of 1: a rank's batches hold other rows than one process's, and trim batches pad
        single = extract(table, tmp_path, tmp_path / "single.h5", model="tiny.en", device="cpu", window="trim",
                         batch_size=1, progress=False, log=lambda *_: None)
    finally:
        torch.set_num_threads(threads)
    out = tmp_path / "shared" / "ranked.h5"
    torchrun = Path(sys.executable).with_name("torchrun")
    proc = subprocess.run([str(torchrun), "--nproc-per-node", "2", "--master-port", "0", str(REPO / "cli.py"),
                           "extract", "--manifest", str(csv), "--model", "tiny.en", "--window", "trim",
                           "--device", "cpu", "--workers", "0", "--batch-size", "1", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "merging into" in proc.stdout
    parts = sorted(p.name for p in out.parent.glob("ranked.part-*-of-2.h5"))
    assert parts == ["ranked.part-0-of-2.h5", "ranked.part-1-of-2.h5"]
    a, b = load_cache(single.path), load_cache(out)
    assert np.array_equal(a.features, b.features) and a.fingerprint == b.fingerprint
    assert a.table["utt_id"].tolist() == b.table["utt_id"].tolist()
    with h5py.File(out) as f:
        assert f.attrs["shard"] == "merged"


def test_pad_window_batched_equals_one_at_a_time_and_lies_between_trim_and_full(tmp_path, tiny):
    """padN clips share no mask: each batch holds one padded length, so a clip is encoded alike in
    any batch; clips of different padded lengths in one call are encoded per length."""
    clips = [make_clip(tmp_path / f"{i}.wav", s, i) for i, s in enumerate((0.6, 2.2, 1.4, 5.5))]
    batched = embed_files(clips, encoder=tiny, window="pad2", batch_size=4)
    single = np.concatenate([embed_files([c], encoder=tiny, window="pad2", batch_size=1) for c in clips])
    np.testing.assert_allclose(batched, single, atol=2e-4)
    full, trim = (embed_files(clips[:1], encoder=tiny, window=w)[0, -1] for w in ("full", "trim"))
    pad30 = embed_files(clips[:1], encoder=tiny, window="pad30")[0, -1]
    np.testing.assert_allclose(pad30, full, atol=2e-4)  # pad30 is the full window
    assert not np.allclose(batched[0, -1], full, atol=1e-3) and not np.allclose(batched[0, -1], trim, atol=1e-3)
