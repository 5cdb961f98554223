"""The HDF5 cache: round trip, streamed == one-shot writing, fingerprints, chunked reading, info."""
from __future__ import annotations

import multiprocessing
import os
import socket

import h5py
import numpy as np
import pandas as pd
import pytest

from data_manifests.storage import temp_path
from pipeline.cache import CHUNK_ROWS, cache_shape, describe, fingerprint_of, layer_chunked, load_cache, \
    read_layers, rechunk, write_cache, write_cache_arrays


def small_cache(n=5, states=3, hidden=4, seed=0):
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((n, states, hidden)).astype(np.float16)
    table = pd.DataFrame(
        {
            "utt_id": [f"u{i}" for i in range(n)],
            "label": ["sad", "happy"] * (n // 2) + ["sad"] * (n % 2),
            "speaker": [f"s{i % 2}" for i in range(n)],
            "fold": [i % 2 for i in range(n)],
            "ok": [i != 2 for i in range(n)],
            "num_frames": np.arange(n) + 1,
            "duration": np.linspace(1, 2, n),
            "error": ["" if i != 2 else "empty" for i in range(n)],
        }
    )
    return emb, table


def test_round_trip_keeps_ok_rows_layers_and_order(tmp_path):
    emb, table = small_cache()
    path = write_cache_arrays(tmp_path / "c.h5", emb, table, {"encoder_id": "x", "window": "trim"})
    cache = load_cache(path)
    assert cache.table["utt_id"].tolist() == ["u0", "u1", "u3", "u4"]
    np.testing.assert_array_equal(cache.features, emb[[0, 1, 3, 4]])
    part = load_cache(path, layers=[2, 0])
    np.testing.assert_array_equal(part.features, emb[[0, 1, 3, 4]][:, [0, 2]])
    assert part.features.dtype == np.float16 and cache_shape(path) == (5, 3, 4)
    assert list(load_cache(path, [0], columns=["utt_id", "fold"]).table.columns) == ["utt_id", "fold", "ok"]
    np.testing.assert_array_equal(load_cache(path, layers=[-1]).features, emb[[0, 1, 3, 4]][:, [2]])
    middle = load_cache(path, layers=lambda n_states: [n_states // 2]).features
    np.testing.assert_array_equal(middle, emb[[0, 1, 3, 4]][:, [1]])
    with pytest.raises(ValueError, match="hidden states 0..2"):
        load_cache(path, layers=[3])
    assert not list(tmp_path.glob("*.tmp*"))  # temp file renamed away
    text = describe(path)
    assert "5 utterances x 3 hidden states x 4 (4 ok, 1 failed)" in text and "failed u2: empty" in text


def test_streamed_blocks_in_any_order_equal_one_shot_write(tmp_path):
    emb, table = small_cache(n=7)
    attrs = {"encoder_id": "x", "created": "now"}
    a = write_cache_arrays(tmp_path / "a.h5", emb, table, attrs)
    blocks = [(np.array([5, 1, 6]), emb[[5, 1, 6]]), (np.array([0, 4, 2, 3]), emb[[0, 4, 2, 3]])]
    b = write_cache(tmp_path / "b.h5", table, dict(attrs, created="later"), (3, 4), blocks)
    with h5py.File(a) as fa, h5py.File(b) as fb:
        np.testing.assert_array_equal(fa["embeddings"][...], fb["embeddings"][...])
        assert fa.attrs["fingerprint"] == fb.attrs["fingerprint"]  # creation time is not identity


def test_fingerprint_is_chunk_invariant_and_sensitive():
    emb, table = small_cache(n=6)
    ident = {"window": "full"}
    whole = fingerprint_of(emb, table["utt_id"], ident)
    assert whole == fingerprint_of((emb[i:i + 4] for i in range(0, 6, 4)), table["utt_id"], ident)
    changed = emb.copy()
    changed[3, 1, 2] += np.float16(0.5)
    assert whole != fingerprint_of(changed, table["utt_id"], ident)
    assert whole != fingerprint_of(emb, table["utt_id"], {"window": "trim"})


def test_incomplete_or_missing_cache_is_refused(tmp_path):
    emb, table = small_cache()
    path = write_cache_arrays(tmp_path / "c.h5", emb, table, {})
    with h5py.File(path, "a") as f:
        f.attrs["complete"] = False
    with pytest.raises(ValueError, match="incomplete"):
        load_cache(path)
    with pytest.raises(FileNotFoundError, match="extract"):
        load_cache(tmp_path / "nope.h5")


def old_layout_copy(src, dst):
    """The chunk layout caches had before this version: rows x every hidden state x D per chunk."""
    with h5py.File(src, "r") as f, h5py.File(dst, "w") as g:
        for name in f:
            if name != "embeddings":
                f.copy(name, g)
        emb = f["embeddings"]
        g.create_dataset("embeddings", data=emb[...], chunks=(min(len(emb), CHUNK_ROWS), *emb.shape[1:]))
        g.attrs.update(f.attrs)
    return dst


def test_new_caches_store_one_layer_per_chunk_and_blocks_skip_failed_rows(tmp_path):
    emb, table = small_cache(n=11, states=4, hidden=3)
    path = write_cache_arrays(tmp_path / "c.h5", emb, table, {})
    ok = table["ok"].to_numpy()
    with h5py.File(path) as f:
        assert f["embeddings"].chunks == (11, 1, 3) and layer_chunked(f["embeddings"])
        # blocks of 4 rows (the failed row 2 falls in the first block) give the same rows as one read
        np.testing.assert_array_equal(read_layers(f["embeddings"], [1, 3], ok, block_rows=4), emb[ok][:, [1, 3]])
        empty = read_layers(f["embeddings"], [0], np.zeros(11, bool), block_rows=4)
    assert empty.shape == (0, 1, 3)


def test_old_layout_is_read_alike_and_rechunked_only_on_request(tmp_path):
    emb, table = small_cache(n=9, states=3, hidden=4)
    new = write_cache(tmp_path / "new.h5", table, {"encoder_id": "x"}, (3, 4), [(np.arange(9), emb)])
    old = old_layout_copy(new, tmp_path / "old.h5")
    for layers in (None, [1], [0, 2]):  # the slower layout, same numbers
        np.testing.assert_array_equal(load_cache(old, layers).features, load_cache(new, layers).features)
    with h5py.File(old) as f:
        assert not layer_chunked(f["embeddings"])
    assert "cli.py rechunk" in describe(old) and "one hidden state per chunk" in describe(new)
    before = load_cache(old).fingerprint
    assert rechunk(old) is True
    with h5py.File(old) as f:
        assert layer_chunked(f["embeddings"]) and f.attrs["fingerprint"] == before
    np.testing.assert_array_equal(load_cache(old).features, load_cache(new).features)
    assert rechunk(old) is False  # already in the layout: nothing written
    assert not list(tmp_path.glob(".*tmp*"))


def test_rechunk_refuses_a_cache_whose_vectors_do_not_match_its_fingerprint(tmp_path):
    emb, table = small_cache(n=6)
    old = old_layout_copy(write_cache_arrays(tmp_path / "a.h5", emb, table, {}), tmp_path / "old.h5")
    with h5py.File(old, "a") as f:
        f["embeddings"][0, 0, 0] += np.float16(1.0)
    original = old.read_bytes()
    with pytest.raises(ValueError, match="fingerprint"):
        rechunk(old)
    assert old.read_bytes() == original and not list(tmp_path.glob(".*tmp*"))


def test_rechunk_command(tmp_path):
    from typer.testing import CliRunner

    from cli import app
    emb, table = small_cache(n=6)
    old = old_layout_copy(write_cache_arrays(tmp_path / "a.h5", emb, table, {}), tmp_path / "old.h5")
    first = CliRunner().invoke(app, ["rechunk", str(old)])
    again = CliRunner().invoke(app, ["rechunk", str(old)])
    missing = CliRunner().invoke(app, ["rechunk", str(tmp_path / "nope.h5")])
    assert first.exit_code == 0 and "rewrote" in first.output
    assert again.exit_code == 0 and "nothing to do" in again.output
    assert missing.exit_code == 2 and "nope.h5" in missing.output


def test_scattered_and_contiguous_blocks_mix_into_the_same_cache(tmp_path):
    """Runs of rows go straight to HDF5, scattered rows through the staging file: same cache."""
    emb, table = small_cache(n=40)
    one = write_cache_arrays(tmp_path / "one.h5", emb, table, {})
    perm = np.random.default_rng(1).permutation(np.arange(10, 40))
    blocks = [(np.arange(0, 10), emb[:10])] + [(perm[i:i + 7], emb[perm[i:i + 7]]) for i in range(0, 30, 7)]
    mixed = write_cache(tmp_path / "mixed.h5", table, {}, (3, 4), blocks[::-1])
    with h5py.File(one) as a, h5py.File(mixed) as b:
        np.testing.assert_array_equal(a["embeddings"][...], b["embeddings"][...])
        assert a.attrs["fingerprint"] == b.attrs["fingerprint"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mixed.h5", "one.h5"]  # staging removed



def test_a_cache_is_hashed_once_per_version_and_again_when_rewritten(tmp_path, monkeypatch):
    import pipeline.cache as cache_module

    emb, table = small_cache()
    path = write_cache_arrays(tmp_path / "c.h5", emb, table, {"encoder_id": "x", "window": "trim"})
    calls = []
    real = cache_module.fingerprint_of
    monkeypatch.setattr(cache_module, "fingerprint_of", lambda *a, **k: calls.append(1) or real(*a, **k))
    load_cache(path)
    load_cache(path, layers=[0])
    describe(path)
    assert len(calls) == 1  # a run's several opens of one file: one check
    write_cache_arrays(path, emb[::-1].copy(), table, {"encoder_id": "x", "window": "trim"})  # a new file
    calls.clear()
    np.testing.assert_array_equal(load_cache(path).features, emb[::-1][[0, 1, 3, 4]])
    assert len(calls) == 1  # the new file (another inode) is checked again


def _merge_at_barrier(barrier, parts, out):
    from pipeline.cache import merge

    barrier.wait()
    merge(parts, out)


def test_two_merges_into_one_folder_at_once_leave_one_good_cache(tmp_path):
    """Two nodes finishing the last shards at the same moment both merge into the same path on
    shared storage: their temp files never collide and the cache is the one merge's result."""

    emb, table = small_cache(n=400, states=3, hidden=64)
    table["row"] = np.arange(len(table))
    attrs = {"encoder_id": "x", "weights_sha256": "w", "window": "trim", "sample_rate": 16000, "manifest_sha256": "m"}
    parts = [write_cache(tmp_path / f"c.part-{i}-of-2.h5", table.iloc[i::2].reset_index(drop=True), attrs,
                         emb.shape[1:], [(np.arange(len(emb[i::2])), emb[i::2])]) for i in range(2)]
    out = tmp_path / "c.h5"
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_merge_at_barrier, args=(barrier, parts, out)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    merged = load_cache(out)
    assert merged.table["utt_id"].tolist() == table.loc[table["ok"], "utt_id"].tolist()
    np.testing.assert_array_equal(merged.features, emb[table["ok"].to_numpy()])
    assert not list(tmp_path.glob(".*")), "no temp file is left behind"
    names = {temp_path(out).name for _ in range(50)}
    assert len(names) == 50 and all(n.startswith(".c.h5.") and n.endswith(".tmp") for n in names)
    assert f".c.h5.{socket.gethostname()}-{os.getpid()}-" in next(iter(names))


def test_a_missing_cache_names_the_caches_beside_it(tmp_path):
    """`info cache/ravdess/whisper-base-full.h5` when only the trim cache was extracted: the message
    names the cache that is there (shard part files are not caches to read)."""
    emb, table = small_cache()
    write_cache_arrays(tmp_path / "whisper-base-trim.h5", emb, table, {"encoder_id": "x", "window": "trim"})
    (tmp_path / "whisper-base-full.part-0-of-2.h5").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=rf"cache {tmp_path}/whisper-base-full.h5 does not exist "
                                                rf"\({tmp_path}/ holds whisper-base-trim.h5\): run"):
        describe(tmp_path / "whisper-base-full.h5")
    with pytest.raises(FileNotFoundError, match=r"nowhere/c.h5 does not exist: run"):
        describe(tmp_path / "nowhere/c.h5")
