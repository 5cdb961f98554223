"""The benchmarks' own logic: file picking, frame counts, vector agreement, ratios, per-epoch
arithmetic, synthetic caches - and one tiny real per-epoch measurement through a child process."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bench import extract_speed as es
from bench import train_speed as ts


def test_pick_files_spreads_and_is_deterministic():
    paths = [f"Actor_{a:02d}/f{i}.flac" for a in range(1, 25) for i in range(60)]
    picked = es.pick_files(reversed(paths), 4)
    # sorted positions round(linspace(0, 1439, 4)) = 0, 480, 959, 1439 (f-numbers sort as text)
    assert picked == ["Actor_01/f0.flac", "Actor_09/f0.flac", "Actor_16/f9.flac", "Actor_24/f9.flac"]
    assert picked == es.pick_files(paths, 4)
    assert len(set(p.split("/")[0] for p in es.pick_files(paths, 24))) >= 20
    assert es.pick_files(paths[:3], 10) == sorted(paths[:3])
    with pytest.raises(ValueError):
        es.pick_files([], 3)


@pytest.mark.parametrize("samples, frames", [(16000, 50), (161, 1), (320, 1), (321, 2), (16000 * 40, 1500)])
def test_real_frames(samples, frames):
    # 160-sample hop -> ceil(samples/160) mel frames (max 3000), conv2 stride 2 -> ceil(mel/2)
    assert es.real_frames(samples) == frames


def test_compare_measures_fp16_agreement():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(5, 7, 16)).astype(np.float32) * 10
    same = es.compare(a, a.copy())
    assert same["max_abs_diff"] == 0 and same["within_fp16"] and same["last_layer_mean_cos"] == pytest.approx(1)
    rounded = es.compare(a, a.astype(np.float16).astype(np.float32))  # what a float16 cache does
    assert rounded["within_fp16"] and rounded["max_abs_diff"] == pytest.approx(rounded["fp16_rounding_max_abs"])
    off = a.copy()
    off[2, 3, 4] += 0.05 * abs(off[2, 3, 4]) + 0.01  # 5% off: far beyond one fp16 ulp
    worse = es.compare(a, off)
    assert not worse["within_fp16"] and worse["max_abs_diff"] == pytest.approx(0.05 * abs(a[2, 3, 4]) + 0.01, rel=1e-4)


def test_summarize_ratios_flops_and_table():
    vec = np.ones((2, 3, 4), np.float32)
    common = {"model": "base", "dtype": "float32", "wall_s": 2.0}
    runs = [
        {
            "name": "usual",
            "method": "usual",
            "utt_per_s": 2.0,
            "rtf": 0.5,
            "peak_rss_mb": 900.0,
            "flops": 4e12,
            **common,
        },
        {
            "name": "ours-full",
            "method": "full",
            "utt_per_s": 3.0,
            "rtf": 0.3,
            "peak_rss_mb": 950.0,
            "flops": 6e12,
            **common,
        },
        {
            "name": "ours-trim",
            "method": "trim",
            "utt_per_s": 16.0,
            "rtf": 0.06,
            "peak_rss_mb": 800.0,
            "flops": 4e12,
            **common,
        },
    ]
    rows = es.summarize(runs, {"usual": vec, "ours-full": vec, "ours-trim": vec * 1.5}, {"float32": 10.0})
    assert [r["ratio_vs_usual"] for r in rows] == [1.0, 1.5, 8.0]
    assert [r["tflops"] for r in rows] == [2.0, 3.0, 2.0] and rows[1]["share_of_peak"] == 0.3
    assert rows[1]["within_fp16"] and not rows[2]["within_fp16"]
    table = es.format_table(rows)
    assert "ours-trim" in table and "8.00" in table and "30.0%" in table


def test_trim_check_flags_a_trim_row_slower_than_full():
    rows = [{"model": "base", "method": m, "dtype": d, "utt_per_s": v}
            for m, d, v in [("full", "float16", 100.0), ("trim", "float16", 90.0),
                            ("full", "float32", 50.0), ("trim", "float32", 400.0)]]
    assert es.trim_not_slower(rows) == ["base float16: trim 90.0 < full 100.0 utt/s"]
    assert es.trim_not_slower(rows[2:]) == []


def test_encoder_flops_formula():
    """Whisper base at 30 s: conv 3.10 GFLOP + 6 layers x 14.04 GFLOP = 87.4 GFLOP; large-v3 2.27 TFLOP."""
    assert es.encoder_flops(3000, 80, 512, 2048, 6) == pytest.approx(87.37e9, rel=1e-3)
    assert es.encoder_flops(3000, 128, 1280, 5120, 32) == pytest.approx(2.274e12, rel=1e-3)
    # one layer by hand at F = 2 frames, d = 1, f = 1: 8*2 + 4*4 + 4*2 = 40; conv1 2*4*3*1 + conv2 2*2*3 = 36
    assert es.encoder_flops(4, 1, 1, 1, 1) == 76


def test_variants_cover_dtypes_and_large_on_gpu_only():
    assert [v[0] for v in es.variants_for(False)] == ["usual", "ours-full", "ours-trim"]
    gpu = es.variants_for(True)
    assert len(gpu) == 14 and {d for _, _, m, d in gpu if m == "trim"} == {"float16", "bfloat16", "float32"}
    assert gpu[0] == ("usual", "base", "usual", "float32") and gpu[7] == (
        "large-usual",
        "large-v3-dims",
        "usual",
        "float32",
    )
    assert [v[0] for v in es.variants_for(False, ("pad10",))] == ["usual", "ours-pad10"]


def test_per_epoch_seconds():
    assert ts.per_epoch_seconds(12.0, 2.0, 5) == 2.0
    assert ts.per_epoch_seconds(1.0, 1.2, 2) == 0.0  # timing noise never gives negative time
    with pytest.raises(ValueError):
        ts.per_epoch_seconds(1.0, 0.5, 0)


def test_synthetic_cache_content():
    table = ts.synthetic_table(2000, n_speakers=20, n_folds=5)
    assert table["utt_id"].is_unique and len(table) == 2000
    assert table.groupby("speaker")["fold"].nunique().max() == 1  # speaker-independent folds
    assert set(table["fold"]) == set(range(5))
    emb = ts.synthetic_embeddings(table, shape=(3, 8), chunk=300)
    assert emb.shape == (2000, 3, 8) and emb.dtype == np.float16
    np.testing.assert_array_equal(emb, ts.synthetic_embeddings(table, shape=(3, 8), chunk=700))
    means = [emb[(table["label"] == c).to_numpy()].astype(np.float32).mean(0) for c in sorted(set(table["label"]))]
    assert np.abs(means[0] - means[1]).max() > 0.2  # classes carry signal


def test_pool_size():
    table = ts.synthetic_table(100, n_speakers=10, n_folds=5)
    n_train = int((table["fold"] != 1).sum())
    assert ts.pool_size(table, 1, 0.1) == n_train - round(0.1 * n_train)


def test_epoch_row_on_a_tiny_cache(tmp_path):
    from pipeline.cache import write_cache_arrays

    table = ts.synthetic_table(400, n_speakers=8, n_folds=4)
    cache = write_cache_arrays(tmp_path / "tiny.h5", ts.synthetic_embeddings(table, shape=(2, 16)), table,
                               {"encoder_id": "synthetic", "window": "trim", "sample_rate": 16000})
    base = {"folds": ["0"], "seeds": [0], "device": "cpu", "warmup_epochs": 3, "hidden": 16}
    row = ts.epoch_row(tmp_path, "tiny", cache, 2, base, 400, ts.pool_size(table, 0, 0.1), timeout=240)
    assert row["wall_s"] > row["warmup_s"] > 0
    assert row["s_per_epoch"] > 0 and row["peak_rss_mb"] > 50  # two B-GRPO rounds cost time over the warm-up
    assert row["us_per_utt_epoch"] == pytest.approx(1e6 * row["s_per_epoch"] / row["pool"])
    assert "tiny" in ts.format_table([row, {"name": "slow", "utterances": 1, "timeout": 5}])


def test_growth_compares_round_cost_with_pool_size():
    rows = [{"utterances": 10, "pool": 100, "s_per_epoch": 1.0}, {"utterances": 100, "pool": 1000, "s_per_epoch": 20.0},
            {"utterances": 1000, "pool": 10000, "timeout": 5}]
    out = ts.growth(rows)
    assert out[0]["growth_vs_linear"] is None and out[1]["growth_vs_linear"] == pytest.approx(2.0)
    assert out[2]["growth_vs_linear"] is None
    table = ts.format_pool_table([dict(r, wall_s=3.0, warmup_s=1.0, peak_rss_mb=500.0) for r in out[:2]] + out[2:])
    assert "2.00" in table and "timed out after 5 s" in table


def test_synthetic_pool_cache_is_streamed_in_the_real_shape_and_reused(tmp_path):
    import h5py

    from pipeline.cache import load_cache

    path = ts.synthetic_pool_cache(tmp_path / "p.h5", 300)
    c = load_cache(path, layers=[3])
    assert c.features.shape == (300, 1, 512) and c.table["speaker"].nunique() <= 50
    np.testing.assert_array_equal(c.features, ts.synthetic_embeddings(ts.synthetic_table(300), chunk=128)[:, [3]])
    with h5py.File(path) as f:
        assert f["embeddings"].chunks[1] == 1  # one hidden state per chunk
    stamp = path.stat().st_mtime_ns
    assert ts.synthetic_pool_cache(path, 300) == path and path.stat().st_mtime_ns == stamp  # complete: reused


def test_devices_side_by_side():
    """--device cpu,cuda: a device this machine lacks is dropped with a note; each measurement
    prints every device's figure, the speed-up over the first one and its macro-F1."""
    devices, notes = ts.usable_devices("cpu, cuda:0" if not torch.cuda.is_available() else "cpu")
    assert devices == ["cpu"] and (torch.cuda.is_available() or "cuda:0: no CUDA device" in notes[0])
    rows = [ts.named({"name": "pool 1000", "utterances": 1000, "pool": 700, "device": d, "s_per_epoch": s,
                      "wall_s": 3.0, "warmup_s": 1.0, "peak_rss_mb": 500.0, "macro_f1": {"bgrpo": 50.0}}, d)
            for d, s in (("cpu", 2.0), ("cuda", 0.5))]
    rows.append(
        ts.named({"name": "RAVDESS protocol", "device": "cpu", "wall_s": 20.0, "macro_f1": {"bgrpo": 76.2}}, "cpu")
    )
    rows.append(ts.named({"name": "RAVDESS protocol", "device": "cuda", "failed": 1}, "cuda"))
    lines = ts.device_comparison(rows)
    assert lines[0] == ("pool 1000: cpu 2.000 s/round (macro-F1 bgrpo 50.00); cuda 0.500 s/round, speed-up 4.00x "
                        "over cpu (macro-F1 bgrpo 50.00)")
    assert lines[1] == "RAVDESS protocol: cpu 20.000 s wall (macro-F1 bgrpo 76.20); cuda failed (exit 1)"
    assert "cuda" in ts.format_pool_table(ts.growth(rows[:2])).splitlines()[-1]
