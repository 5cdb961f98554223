"""The HDF5 cache: round trip, streamed == one-shot writing, fingerprints, chunked reading, info."""
from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pytest

from pipeline.cache import describe, fingerprint_of, load_cache, write_cache, write_cache_arrays


def small_cache(n=5, states=3, hidden=4, seed=0):
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((n, states, hidden)).astype(np.float16)
    table = pd.DataFrame({"utt_id": [f"u{i}" for i in range(n)], "label": ["sad", "happy"] * (n // 2) + ["sad"] * (n % 2),
                          "speaker": [f"s{i % 2}" for i in range(n)], "fold": [i % 2 for i in range(n)],
                          "ok": [i != 2 for i in range(n)], "num_frames": np.arange(n) + 1,
                          "duration": np.linspace(1, 2, n), "error": ["" if i != 2 else "empty" for i in range(n)]})
    return emb, table


def test_round_trip_keeps_ok_rows_layers_and_order(tmp_path):
    emb, table = small_cache()
    path = write_cache_arrays(tmp_path / "c.h5", emb, table, {"encoder_id": "x", "window": "trim"})
    cache = load_cache(path)
    assert cache.table["utt_id"].tolist() == ["u0", "u1", "u3", "u4"]
    np.testing.assert_array_equal(cache.features, emb[[0, 1, 3, 4]])
    part = load_cache(path, layers=[2, 0])
    np.testing.assert_array_equal(part.features, emb[[0, 1, 3, 4]][:, [0, 2]])
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
