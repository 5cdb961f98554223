"""Stress corpora derived from a cache: the properties each kind promises."""
import numpy as np
import pandas as pd
import pytest

from pipeline.cache import load_cache
from pipeline.stress_corpora import (
    confounded_rows,
    derive,
    few_per_speaker,
    unbalanced_rows,
)


def corpus_table(n_speakers=8, classes=("angry", "happy", "neutral", "sad", "fearful"), per_class=10):
    rows = [{"utt_id": f"s{s}_{c}_{k}", "speaker": f"s{s}", "label": c, "fold": s % 4}
            for s in range(n_speakers) for c in classes for k in range(per_class)]
    return pd.DataFrame(rows)


def test_confounded_keeps_two_dominant_emotions_at_80_percent_per_speaker():
    t = corpus_table()
    sub = t.iloc[confounded_rows(t, share=0.8, seed=1)]
    for _, g in sub.groupby("speaker"):
        counts = g["label"].value_counts()
        assert counts.iloc[:2].sum() / len(g) >= 0.8
        assert counts.iloc[:2].sum() == 20  # every utterance of the two dominant emotions kept
        assert len(g) == 25  # floor(20 * 0.2 / 0.8) = 5 others
    dominant = {lab for _, g in sub.groupby("speaker") for lab in g["label"].value_counts().index[:2]}
    assert dominant == set(t["label"])  # every emotion is dominant for some speaker


def test_unbalanced_prior_shares():
    t = corpus_table(per_class=40)
    sub = t.iloc[unbalanced_rows(t, major="neutral", rare="sad", seed=0)]
    share = sub["label"].value_counts(normalize=True)
    assert share["neutral"] == pytest.approx(0.4, abs=0.01)
    assert share["sad"] < 0.05
    assert share[["angry", "happy", "fearful"]].tolist() == pytest.approx([0.56 / 3] * 3, abs=0.01)
    assert sub["neutral" == sub["label"]].shape[0] == 320  # all neutral rows: the limiting class
    with pytest.raises(ValueError, match="--major 'calm' is not a label"):
        unbalanced_rows(t, major="calm")


def test_few_per_speaker_pseudo_speakers_stay_inside_real_speakers():
    t = corpus_table()
    spk = few_per_speaker(t, k=4, seed=0)
    counts = spk.value_counts()
    assert counts.max() == 4 and len(counts) == 8 * 13  # 50 utterances per speaker -> 12 of 4 + 1 of 2
    real = spk.str.split("~").str[0]
    assert (real == t["speaker"]).all()
    assert t.groupby(spk)["fold"].nunique().max() == 1  # folds stay speaker-independent


def test_derive_writes_a_trainable_cache_with_the_chosen_vectors(tmp_path, synthetic_cache):
    src = synthetic_cache(tmp_path / "src.h5", n_classes=4, n_speakers=6, per_class=8, n_folds=3)
    path, table = derive(src, "confounded", tmp_path / "conf.h5", seed=0)
    orig, new = load_cache(src), load_cache(path)
    assert len(new.table) == len(table) < len(orig.table)
    pos = orig.table.set_index("utt_id").index.get_indexer(new.table["utt_id"])
    assert np.array_equal(new.features, orig.features[pos])
    assert new.attrs["derived_from_fingerprint"] == orig.fingerprint and new.fingerprint != orig.fingerprint
    assert new.table["fold"].tolist() == orig.table["fold"].to_numpy()[pos].tolist()
    with pytest.raises(ValueError, match="--kind 'noisy'"):
        derive(src, "noisy", tmp_path / "x.h5")
    assert not (tmp_path / "x.h5").exists()
