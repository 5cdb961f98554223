"""Pools kept float16 and z-scored a chunk at a time: the same bits as the in-memory path, whatever
the chunking; streamed statistics and PCA equal their one-shot forms."""
from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA

from trainer.inputs.feature_store import (CenteredCache, FeatureRows, SpilledRows, add_rows_by_group, policy_rows,
                                          states_to_read)
from trainer.inputs.features import sequential_sum
from trainer.inputs.features import Standardizer
from trainer.method.lda_teacher import LDATeacher, principal_axes


def raw_cache(n=50, states=3, dim=4, seed=0):
    rng = np.random.default_rng(seed)
    raw = (rng.normal(size=(n, states, dim)) * 3 + rng.normal(size=(1, states, dim))).astype(np.float16)
    speakers = np.array([f"s{i % 7}" for i in range(n)])
    return raw, speakers


def test_states_to_read():
    assert states_to_read("middle", 7) == [3] and states_to_read("-1", 7) == [6] and states_to_read("2", 7) == [2]
    assert states_to_read("weighted", 3) == [0, 1, 2] == states_to_read("concat", 3)
    with pytest.raises(ValueError, match="0..6"):
        states_to_read("7", 7)


@pytest.mark.parametrize("layer, read", [("1", [1]), ("weighted", [0, 1, 2]), ("concat", [0, 1, 2])])
@pytest.mark.parametrize("speaker_norm", [True, False])
def test_policy_rows_are_the_layer_minus_its_speaker_mean(layer, read, speaker_norm):
    """By hand: the states `layer` names as float32 (concat: side by side), minus each speaker's
    mean over all that speaker's rows (np.add.at in float64, one row after the other); any chunk size."""
    raw, speakers = raw_cache()
    x = raw[:, read].astype(np.float32)
    x = x.reshape(len(x), 1, -1) if layer == "concat" else x
    if speaker_norm:
        _, inv = np.unique(speakers, return_inverse=True)
        flat = x.reshape(len(x), -1)
        sums = np.zeros((inv.max() + 1, flat.shape[1]))
        np.add.at(sums, inv, flat)
        x = (flat - (sums / np.bincount(inv)[:, None])[inv]).astype(np.float32).reshape(x.shape)
    rows = np.array([5, 0, 49, 12, 12])
    for cache in (policy_rows(raw, speakers, layer, speaker_norm),
                  CenteredCache(raw[:, read], speakers, layer, speaker_norm, chunk_rows=8),
                  CenteredCache(spilled(raw[:, read]), speakers, layer, speaker_norm, chunk_rows=8)):
        assert cache.rows(rows).dtype == np.float32
        np.testing.assert_array_equal(cache.rows(rows), x[rows])
        assert cache.rows(np.zeros(0, np.int64)).shape == (0, *x.shape[1:])
    with pytest.raises(ValueError, match="hidden states 0..2"):
        policy_rows(raw, speakers, "3", speaker_norm)


def spilled(a: np.ndarray) -> SpilledRows:
    rows = SpilledRows(a.shape, a.dtype)
    rows[:3], rows[3:] = a[:3], a[3:]  # written in blocks, as pipeline.cache.read_layers does
    return rows


def resident_kb(address: int) -> int:
    """Resident kB of this process's mapping that holds `address` (/proc/self/smaps)."""
    mine = False
    for line in open("/proc/self/smaps"):
        head = line.split()[0]
        if "-" in head and not head.endswith(":"):  # a mapping's header: start-end perms ...
            start, end = (int(a, 16) for a in head.split("-"))
            mine = start <= address < end
        elif mine and line.startswith("Rss:"):
            return int(line.split()[1])
    raise AssertionError(f"no mapping holds {address:#x}")


def test_spilled_rows_read_back_the_array_and_keep_no_pages():
    """Any index reads the array's values bit for bit; a reshape shares the file; after reads and
    writes the process holds none of the file's pages (they wait in the system's file cache)."""
    raw, _ = raw_cache(n=3000, states=3, dim=64)
    rows = spilled(raw)
    assert len(rows) == 3000 and rows.shape == raw.shape and rows.ndim == 3 and rows.dtype == np.float16
    scattered = np.random.default_rng(0).permutation(3000)[:1500]
    for idx in (slice(None), slice(10, 2000, 7), np.array([2999, 0, 5, 5, -1]), scattered, 17, (slice(None), [1])):
        np.testing.assert_array_equal(rows[idx], raw[idx])
    np.testing.assert_array_equal(np.asarray(rows), raw)
    flat = rows.reshape(len(rows), 1, -1)
    np.testing.assert_array_equal(flat[:], raw.reshape(3000, 1, -1))
    flat[:1] = np.zeros((1, 1, 192), np.float16)  # the same file
    assert not rows[0].any()
    if not Path("/proc/self/smaps").exists():
        pytest.skip("no /proc/self/smaps to read resident pages from")
    address = rows._array.__array_interface__["data"][0]
    rows._array[:] = 1  # written without SpilledRows: the pages stay with the process
    assert resident_kb(address) >= raw.nbytes // 1024
    rows[:] = raw
    assert resident_kb(address) == 0
    np.testing.assert_array_equal(rows[scattered], raw[scattered])
    assert resident_kb(address) == 0
    with pytest.raises(IndexError):
        rows[np.array([0, 3000])]


def test_spilled_rows_stay_in_memory_with_a_warning_where_tmpdir_has_no_room(monkeypatch):
    """A full $TMPDIR is found when the file's blocks are reserved (a write into an unreserved mapping
    of a full disk would kill the process): the rows then wait in shared memory, values unchanged."""
    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    raw, _ = raw_cache(n=500, states=3, dim=16)
    with pytest.warns(UserWarning, match="no room for .* MB of feature rows .*No space left on device.*TMPDIR"):
        rows = spilled(raw)
    scattered = np.random.default_rng(1).permutation(500)[:200]
    np.testing.assert_array_equal(rows[scattered], raw[scattered])  # read again after the pages were released
    np.testing.assert_array_equal(np.asarray(rows), raw)


def test_feature_rows_index_and_map_across_parts_and_chunks():
    raw, speakers = raw_cache(n=40)
    ext_raw, ext_spk = raw_cache(n=9, seed=1)
    a = CenteredCache(raw[:, [1]], speakers, "1", True)
    b = CenteredCache(ext_raw[:, [1]], ext_spk, "1", True)
    st = Standardizer().fit(a.rows(np.arange(40)))
    rows_a = np.array([3, 30, 7, 8, 21])
    whole = np.concatenate([a.rows(rows_a), b.rows(np.arange(9))])
    expected = torch.as_tensor(st.transform(whole))
    for chunk in (2, 3, 100):
        pool = FeatureRows([(a, rows_a), (b, np.arange(9))], st, chunk_rows=chunk)
        assert len(pool) == 14 and pool.shape == (14, 1, 4)
        assert torch.equal(pool[:], expected)
        assert torch.equal(pool.map(lambda z: z.sum(2)), expected.sum(2))
        pick = torch.tensor([13, 0, 6, 5, 4])  # crosses the parts, any order
        assert torch.equal(pool[pick], expected[pick])
        mask = torch.arange(14) % 3 == 0
        assert torch.equal(pool[mask], expected[mask])
        seen = pool.map_indexed(lambda z, pos: pos.to(z.dtype))
        assert torch.equal(seen, torch.arange(14, dtype=torch.float32))
        both = pool.map_indexed(lambda z, pos: (z.sum(2), pos))
        assert torch.equal(both[0], expected.sum(2)) and torch.equal(both[1], torch.arange(14))
        np.testing.assert_array_equal(np.concatenate(list(pool.centered_chunks())), whole)
        head = torch.ones(2, 1, 4)
        assert torch.equal(pool.after(head, pick), torch.cat([head, expected[pick]]))


def test_group_sums_over_chunks_equal_numpy_add_at():
    rng = np.random.default_rng(2)
    rows = (rng.normal(size=(500, 6)) * 1e3).astype(np.float32)
    groups = rng.integers(0, 9, 500)
    expected = np.zeros((10, 6))
    np.add.at(expected, groups, rows)
    got = np.zeros((10, 6))
    for start in range(0, 500, 37):
        add_rows_by_group(got, groups[start:start + 37], rows[start:start + 37])
    assert np.array_equal(got, expected)


def test_sequential_sum_over_chunks_equals_the_one_shot_sum():
    x = (np.random.default_rng(3).normal(size=(1000, 2, 5)) * 1e4).astype(np.float32)
    acc = None
    for block in np.split(x, [1, 17, 400, 999]):
        acc = sequential_sum(acc, block, "cpu")
    assert np.array_equal(acc, x.sum(0, dtype=np.float64))


def test_standardizer_from_blocks_equals_one_shot_fit():
    x = (np.random.default_rng(4).normal(size=(301, 2, 6)) * 5 + 2).astype(np.float32)
    one = Standardizer().fit(x)
    np.testing.assert_array_equal(one.mean_, x.mean(0, dtype=np.float64).astype(np.float32))
    np.testing.assert_array_equal(one.std_, x.std(0, dtype=np.float64).astype(np.float32))
    blocks = Standardizer().fit_blocks(lambda: np.split(x, [10, 11, 200]))
    np.testing.assert_array_equal(blocks.mean_, one.mean_)
    np.testing.assert_array_equal(blocks.std_, one.std_)
    with pytest.raises(ValueError, match="2 training rows"):
        Standardizer().fit_blocks(lambda: [x[:1], x[:0]])


def test_streamed_pca_spans_the_covariance_eigh_axes():
    """Above ten rows per feature the PCA comes from X^T X summed over chunks: the axes of
    scikit-learn's covariance_eigh solver (same sign convention), so the same projections."""
    rng = np.random.default_rng(5)
    scales = np.array([5.0, 4.0, 3.0, 2.0, 1.0, 0.5, 0.3, 0.2])
    x = (rng.normal(size=(400, 8)) * scales @ np.linalg.qr(rng.normal(size=(8, 8)))[0] + 3).astype(np.float32)
    streamed = principal_axes(lambda: np.split(x, [50, 51, 300]), 400, 3, seed=0)
    ref = PCA(3, svd_solver="covariance_eigh").fit(x)
    np.testing.assert_allclose(streamed.components_, ref.components_, atol=1e-4)
    np.testing.assert_allclose(streamed.transform(x), ref.transform(x), atol=1e-3)
    small = principal_axes(lambda: [x[:60]], 60, 3, seed=0)  # fewer rows: scikit-learn's own choice
    np.testing.assert_allclose(small.transform(x[:60]), PCA(3, random_state=0).fit(x[:60]).transform(x[:60]), atol=1e-5)


def test_lda_teacher_reads_feature_rows_like_the_tensor_they_hold():
    raw, speakers = raw_cache(n=200, states=1, dim=6)
    labels = torch.tensor(np.arange(200) % 3)
    cache = CenteredCache(raw, speakers, "0", False)
    st = Standardizer().fit(cache.rows(np.arange(200)))
    rows = FeatureRows([(cache, np.arange(200))], st, chunk_rows=16)
    dense = rows[:]
    a = LDATeacher([dense[:20], rows], 3, n_components=4).fit(dense[:20], labels[:20])
    b = LDATeacher(torch.cat([dense[:20], dense]), 3, n_components=4).fit(dense[:20], labels[:20])
    assert torch.allclose(a.probs(dense), b.probs(dense), atol=1e-5)
    assert torch.allclose(rows.map_indexed(a.probs), a.probs(dense), atol=1e-6)
