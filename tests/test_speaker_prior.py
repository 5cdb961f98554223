"""The speaker prior: a lone file's speaker mean shrunk toward the training speakers' (random-effects
estimate), so predicting one file does not zero it."""
import numpy as np
import pytest

from trainer import BGRPOClassifier
from trainer.inputs.feature_store import policy_rows
from trainer.inputs.speaker_prior import SpeakerPrior
from trainer.method.policy import speaker_prior_tensors, stored_speaker_prior


def one_dim(values):
    return np.asarray(values, np.float16).reshape(-1, 1, 1)


def test_fit_on_a_hand_computed_case():
    # speakers a: 0, 2 (mean 1) and b: 4, 6 (mean 5): mu = 3; within = (1+1+1+1)/(4-2) = 2;
    # between = var([1, 5], ddof=1) - within * mean(1/n) = 8 - 1 = 7; k = 2/7
    prior = SpeakerPrior.fit(one_dim([0, 2, 4, 6, 100]), ["a", "a", "b", "b", "test"], np.arange(4))
    assert prior.mean == pytest.approx([3.0]) and prior.weight == pytest.approx([2 / 7])
    # a lone file at 10: its mean (10 + 2/7 * 3) / (1 + 2/7) = 76/9, so it is centred to 10 - 76/9, not 0
    x = policy_rows(one_dim([10]), ["new"], "0", True, prior)
    assert x.rows(np.arange(1))[0, 0, 0] == pytest.approx(10 - 76 / 9, abs=1e-3)
    # two files at 10 and 12: (22 + 6/7) / (2 + 2/7) = 10
    assert policy_rows(one_dim([10, 12]), ["new"] * 2, "0", True, prior).rows(np.arange(2))[:, 0, 0] == \
        pytest.approx([0, 2], abs=1e-2)


def test_speakers_that_do_not_differ_give_the_population_mean_and_one_speaker_none():
    same = SpeakerPrior.fit(one_dim([0, 2, 0, 2]), ["a", "a", "b", "b"], np.arange(4))
    assert same.mean == pytest.approx([1.0]) and np.isinf(same.weight).all()
    assert policy_rows(one_dim([5, 7]), ["new"] * 2, "0", True, same).rows(np.arange(2))[:, 0, 0] == \
        pytest.approx([4.0, 6.0])
    assert SpeakerPrior.fit(one_dim([0, 2]), ["a", "a"], np.arange(2)) is None


def test_many_files_keep_close_to_their_own_mean():
    rng = np.random.default_rng(0)
    spk = np.repeat(np.arange(6), 30)
    raw = (rng.normal(size=(6, 1, 4))[spk] * 3 + rng.normal(size=(180, 1, 4))).astype(np.float16)
    prior = SpeakerPrior.fit(raw, spk, np.arange(180))
    own = policy_rows(raw, spk, "0", True).rows(np.arange(180))
    shrunk = policy_rows(raw, spk, "0", True, prior).rows(np.arange(180))
    assert np.abs(shrunk - own).max() < 0.05 * np.abs(own).max()
    lone = policy_rows(raw[:1], ["x"], "0", True, prior).rows(np.arange(1))
    assert np.abs(lone).max() > 0.1  # not centred to zero


def test_the_prior_round_trips_through_the_saved_tensors():
    prior = SpeakerPrior(np.array([1.0, 2.0]), np.array([0.5]))
    back = stored_speaker_prior(speaker_prior_tensors("p", prior), "p")
    np.testing.assert_array_equal(back.mean, prior.mean)
    np.testing.assert_array_equal(back.weight, prior.weight)
    assert stored_speaker_prior({}, "p") is None  # a run saved before the prior


def speaker_blobs(n_speakers=6, per=24, dim=6, seed=0):
    """Three classes, and a strong offset per speaker in half of the dimensions (what speaker
    centring removes; the prior learns which dimensions those are)."""
    rng = np.random.default_rng(seed)
    means = 3 * rng.normal(size=(3, dim))
    y = np.tile(np.repeat(np.arange(3), per // 3), n_speakers)
    groups = np.repeat(np.arange(n_speakers), per)
    offsets = 3 * rng.normal(size=(n_speakers, dim)) * (np.arange(dim) < dim // 2)
    X = means[y] + offsets[groups] + rng.normal(size=(len(y), dim))
    return X, y, groups


def test_one_row_at_a_time_is_not_a_constant_answer_and_matches_all_at_once():
    X, y, groups = speaker_blobs()
    semi = np.where(np.arange(len(y)) % 3 == 0, y, -1)
    train = groups < 4
    est = BGRPOClassifier(refit_rounds=1, speaker_norm=True).fit(X[train], semi[train], groups=groups[train])
    test = np.flatnonzero(~train)
    alone = np.concatenate([est.predict_proba(X[[i]], groups=groups[[i]]) for i in test])
    # one file alone: its own answer (not one constant class), well above chance (1/3) though below
    # its speaker's rows together (0.98 here; 0.69 alone): one file cannot tell its speaker's offset from its class
    assert len(np.unique(alone.argmax(1))) >= 2 and (alone.argmax(1) == y[test]).mean() > 0.6
    # rows without groups are each alone: the same answers whatever else is in the batch
    np.testing.assert_allclose(est.predict_proba(X[test]), alone, atol=1e-6)
    # a speaker's rows together: close to its own-mean centring (train's way) and at least as accurate alone
    together = est.predict(X[test], groups=groups[test])
    own = est.predict(X[test], groups=groups[test], speaker_means="own")
    assert (together == own).mean() >= 0.95
