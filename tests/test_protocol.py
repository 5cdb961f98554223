"""The protocol: speaker-independent folds, stratified labelled subsets, and test labels unused."""
import numpy as np
import pandas as pd
import pytest

from pipeline.cache import load_cache, write_cache_arrays
from trainer.config import TrainConfig
from trainer.inputs.protocol import fold_names, make_split
from trainer.jobs import run_job


@pytest.fixture(scope="module")
def cache(tmp_path_factory, synthetic_cache):
    return synthetic_cache(tmp_path_factory.mktemp("p") / "syn.h5", n_classes=4, n_speakers=9, per_class=10, n_folds=3)


@pytest.fixture(scope="module")
def table(cache):
    return load_cache(cache).table


def test_folds_are_speaker_independent_and_cover_every_row_once(table):
    assert fold_names(table) == ["0", "1", "2"]
    seen = []
    for fold in fold_names(table):
        s = make_split(table, fold, 0, 0.1)
        assert s.speaker_overlap == 0
        assert not set(table.speaker.iloc[s.train]) & set(table.speaker.iloc[s.test])
        seen.extend(s.test)
    assert sorted(seen) == list(range(len(table)))


def test_labelled_subset_is_stratified_disjoint_and_per_seed(table):
    s = make_split(table, "0", 0, 0.25, val_fraction=0.34)
    labels = table.label.to_numpy()
    train_counts = pd.Series(labels[s.train]).value_counts()
    picked = pd.Series(labels[np.concatenate([s.labeled, s.val])]).value_counts()
    for c, n in train_counts.items():
        assert picked[c] == round(0.25 * n)  # 60 per class -> 15 per class
    assert pd.Series(labels[s.val]).value_counts().to_dict() == {f"class{c}": 5 for c in range(4)}
    parts = [s.labeled, s.val, s.unlabeled]
    assert sum(map(len, parts)) == len(s.train) and len(np.unique(np.concatenate(parts))) == len(s.train)
    assert not set(s.test) & set(np.concatenate(parts))
    again, other = make_split(table, "0", 0, 0.25, 0.34), make_split(table, "0", 1, 0.25, 0.34)
    assert np.array_equal(again.labeled, s.labeled) and not np.array_equal(other.labeled, s.labeled)


def test_tiny_fraction_keeps_at_least_one_per_class(table):
    s = make_split(table, "1", 3, 0.001)
    assert sorted(table.label.iloc[s.labeled]) == [f"class{c}" for c in range(4)]


def test_transductive_pool_holds_test_audio(table):
    s = make_split(table, "2", 0, 0.1, transductive=True)
    assert set(s.test) <= set(s.unlabeled)


def test_cache_without_folds_or_split_is_refused(tmp_path):
    t = pd.DataFrame({"utt_id": ["a", "b"], "label": ["x", "y"], "speaker": ["s", "t"]})
    path = write_cache_arrays(tmp_path / "nofold.h5", np.zeros((2, 1, 2)), t, {})
    with pytest.raises(ValueError, match="neither speaker folds"):
        fold_names(load_cache(path).table)


def test_official_split_is_one_fold(tmp_path):
    t = pd.DataFrame({"utt_id": list("abcd"), "label": list("xyxy"), "speaker": list("ppqq"),
                      "split": ["train", "train", "test", "test"]})
    table = load_cache(write_cache_arrays(tmp_path / "split.h5", np.zeros((4, 1, 2)), t, {})).table
    assert fold_names(table) == ["split"]
    s = make_split(table, "split", 0, 0.5)
    assert list(s.test) == [2, 3] and list(s.train) == [0, 1]


@pytest.mark.parametrize("transductive", [False, True])
def test_shuffling_test_labels_changes_no_prediction(cache, tmp_path, transductive):
    """Permute the labels of the test fold: every method's predictions must stay identical."""
    c = load_cache(cache)
    table = c.table.copy()
    test = np.flatnonzero(table.fold.to_numpy() == 1)
    table.loc[test, "label"] = np.random.default_rng(0).permutation(table.label.to_numpy()[test])
    shuffled = write_cache_arrays(tmp_path / "shuffled.h5", c.features, table, c.attrs)
    cfg = TrainConfig(methods=("supervised", "bgrpo", "pseudo-label", "dino"), seeds=(0,), epochs=3,
                      warmup_epochs=10, val_fraction=0.3, transductive=transductive, save_models=False,
                      action="balanced", reward="self+teacher+assign")
    a, b = run_job(cfg.to_dict(), str(cache), "1", 0), run_job(cfg.to_dict(), str(shuffled), "1", 0)
    for m in cfg.methods:
        assert a["predictions"][m] == b["predictions"][m], m
    assert a["predictions"]["label"] != b["predictions"]["label"]
    # every training-side diagnostic (selection, rewards, validation scores) is identical too
    ca, cb = (pd.DataFrame(r["curves"]).drop(columns="test_macro_f1") for r in (a, b))
    pd.testing.assert_frame_equal(ca, cb)
