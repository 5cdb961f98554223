"""Windows as frame arithmetic, and batches planned by a frame budget (with length buckets)."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.batch_encode import plan_batches
from pipeline.window import batch_width, check_window, clip_cost, seen_mel_frames


def test_window_names():
    for ok in ("full", "trim", "pad1", "pad10", "pad30"):
        assert check_window(ok) == ok
    for bad in ("pad0", "pad31", "pad", "pad5s", "Full", "10"):
        with pytest.raises(ValueError, match="choose full, trim, or padN"):
            check_window(bad)


def test_frames_seen_per_window():
    real = np.array([1, 371, 1000, 1001, 2999, 3000])
    assert seen_mel_frames("full", real).tolist() == [3000] * 6
    assert seen_mel_frames("trim", real).tolist() == real.tolist()
    assert seen_mel_frames("pad10", real).tolist() == [1000, 1000, 1000, 2000, 3000, 3000]
    assert seen_mel_frames("pad20", real).tolist() == [2000, 2000, 2000, 2000, 3000, 3000]
    assert batch_width("trim", [371, 200]) == 384  # rounded up to 128 frames
    assert batch_width("trim", [2999]) == 3000  # never past Whisper's window


def test_clip_cost_counts_30s_pieces_and_unknown_durations_as_full():
    # 3.7 s -> 370 frames; 45 s -> a full piece + 15 s; unknown -> one full window
    assert clip_cost("trim", [3.7, 45.0, 0.0, np.nan]).tolist() == [370, 4500, 3000, 3000]
    assert clip_cost("pad10", [3.7, 45.0]).tolist() == [1000, 3000 + 2000]
    assert clip_cost("full", [3.7, 45.0]).tolist() == [3000, 6000]


def test_plan_respects_the_budget_sorts_longest_first_and_covers_every_row_once():
    rng = np.random.default_rng(0)
    seconds = rng.uniform(0.5, 12, 200)
    for window in ("full", "trim", "pad5", "pad10"):
        plan = plan_batches(seconds, (0, 1), window, 20_000)
        rows = [r for b in plan for r in b]
        assert sorted(rows) == list(range(200))
        assert np.all(np.diff(seconds[rows]) <= 0)  # longest first
        for b in plan:
            cost = clip_cost(window, seconds[b])
            frames = len(b) * batch_width("trim", cost) if window == "trim" else cost.sum()
            assert frames <= 20_000 or len(b) == 1
            if window.startswith("pad"):
                assert len(set(cost.tolist())) == 1  # one padded length per batch: no masking needed
    # short clips make bigger batches than full windows under the same budget
    assert len(plan_batches(seconds, (0, 1), "trim", 20_000)) < len(plan_batches(seconds, (0, 1), "full", 20_000))


def test_plan_caps_items_and_splits_shards():
    seconds = np.full(50, 2.0)
    assert max(map(len, plan_batches(seconds, (0, 1), "trim", 10**9, max_items=8))) == 8
    a, b = (plan_batches(seconds, (i, 2), "trim", 10**9) for i in range(2))
    rows_a, rows_b = sum(a, []), sum(b, [])
    assert not set(rows_a) & set(rows_b) and len(rows_a) + len(rows_b) == 50
