"""Label-only automatic choices: speaker normalisation off on a speaker-confounded set,
on on a balanced multi-speaker set; the utterances-per-speaker guard; EM prior adaptation."""
import numpy as np
import pytest
import torch

from trainer.inputs.auto_choices import (
    choose,
    em_prior,
    grouped_cv_macro_f1,
    resolve_auto,
    speaker_groups,
    speaker_label_dependence,
)
from trainer.config import TrainConfig
from trainer.inputs.feature_store import policy_rows
from trainer.inputs.protocol import Split


def make_set(confounded: bool, n_speakers=12, per_speaker=24, n_classes=4, dim=12, seed=0):
    """Embeddings = class mean + a speaker offset (as large as the class signal) + noise, 3 hidden states
    (signal in 1 and 2).

    confounded: like a natural corpus, most speakers show one emotion: 5/6 of speaker s's utterances
    are class s % C, the rest cycle over all classes; otherwise every speaker says every emotion
    equally often. (Speakers showing two emotions half and half keep their contrast after centring.)"""
    rng = np.random.default_rng(seed)
    means = 1.5 * rng.normal(size=(n_classes, dim))
    raw, y, spk = [], [], []
    for s in range(n_speakers):
        offset = 1.5 * rng.normal(size=dim)
        for k in range(per_speaker):
            c = s % n_classes if confounded and k % 6 else k % n_classes
            z = offset + means[c] + rng.normal(size=dim)
            raw.append([rng.normal(size=dim), z, z + 0.5 * rng.normal(size=dim)])
            y.append(c)
            spk.append(f"spk{s:02d}")
    return np.asarray(raw, np.float16), np.asarray(y), np.asarray(spk)


def labelled_half(y, seed=0):
    return np.sort(np.random.default_rng(seed).choice(len(y), size=len(y) // 2, replace=False))


@pytest.mark.parametrize("confounded, expected", [(True, False), (False, True)])
def test_auto_speaker_norm_off_when_confounded_on_when_balanced(confounded, expected):
    raw, y, spk = make_set(confounded)
    lab = labelled_half(y)
    c = choose(raw, spk, lab, y[lab], 4, "middle", "auto", l2=10.0)
    assert c.speaker_norm is expected, c
    assert (c.speaker_label_p < 0.01) if confounded else (c.speaker_label_p > 0.05)
    # and the choice is the right one: held-out-speaker CV on the same set agrees
    groups = speaker_groups(spk[lab])
    on, off = (
        grouped_cv_macro_f1(policy_rows(raw, spk, "1", norm).rows(lab), y[lab], groups, 4, 10.0)
        for norm in (True, False)
    )
    assert (off > on + 10) if confounded else (on > off + 5)


def test_speaker_label_dependence_hand_cases():
    mi, p = speaker_label_dependence(["a"] * 10 + ["b"] * 10, ["x"] * 10 + ["y"] * 10, n_perm=200)
    assert mi == pytest.approx(np.log(2)) and p < 0.02  # perfect dependence: almost no shuffle reaches it
    mi, p = speaker_label_dependence(["a", "a", "b", "b"] * 5, ["x", "y"] * 10, n_perm=200)
    assert mi == pytest.approx(0.0, abs=1e-12) and p == 1.0


def test_auto_layer_skips_the_uninformative_state():
    raw, y, spk = make_set(False)
    lab = labelled_half(y)
    c = choose(raw, spk, lab, y[lab], 4, "auto", True, l2=10.0)
    assert c.layer in ("1", "2") and set(c.cv_macro_f1) == {"1", "2"}


def test_few_utterances_per_speaker_turn_speaker_norm_off_without_cross_validation():
    raw, y, spk = make_set(False, n_speakers=48, per_speaker=4)
    lab = labelled_half(y)
    c = choose(raw, spk, lab, y[lab], 4, "middle", "auto", l2=10.0)
    assert c.speaker_norm is False and "median utterances per speaker 4.0" in c.reason


def test_speaker_groups_keep_each_speaker_in_one_group():
    spk = np.array(["b", "a", "c", "a", "e", "d", "b", "e", "f"])
    g = speaker_groups(spk, max_groups=4)
    for s in set(spk):
        assert len(set(g[spk == s])) == 1
    assert sorted(set(g)) == [0, 1, 2, 3]


def test_resolve_auto_reads_only_the_labelled_rows_labels():
    raw, y, spk = make_set(True)
    lab = labelled_half(y)
    rest = np.setdiff1d(np.arange(len(y)), lab)
    split = Split("0", 0, lab, np.zeros(0, int), rest[: len(rest) // 2], rest[len(rest) // 2:], lab, 0)
    cache = type("C", (), {"features": raw, "table": __import__("pandas").DataFrame({"speaker": spk}),
                           "attrs": {"num_hidden_states": raw.shape[1]}})
    cfg = TrainConfig(layer="auto", speaker_norm="auto")
    shuffled = y.copy()
    shuffled[rest] = np.random.default_rng(1).permutation(y[rest])
    a, b = resolve_auto(cfg, cache, split, y, 4), resolve_auto(cfg, cache, split, shuffled, 4)
    assert a[1] == b[1] and a[0].layer == a[1]["layer"] and a[0].speaker_norm == a[1]["speaker_norm"]
    assert resolve_auto(TrainConfig(layer="3", speaker_norm=False), cache, split, y, 4)[1]["reason"] == "fixed"


def test_em_prior_fixed_points_and_recovery():
    # one-hot posteriors: the pool prior is the class frequencies
    p = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    assert torch.allclose(em_prior(p, torch.tensor([0.5, 0.5])), torch.tensor([0.75, 0.25]), atol=1e-6)
    # posteriors equal to the training prior carry no evidence: the prior stays
    flat = torch.tensor([[0.3, 0.7]] * 5)
    assert torch.allclose(em_prior(flat, torch.tensor([0.3, 0.7])), torch.tensor([0.3, 0.7]), atol=1e-6)
    # x ~ N(+-1, 1) with pool prior 0.8 / 0.2; Bayes posterior under a uniform training prior = sigmoid(2x)
    g = torch.Generator().manual_seed(0)
    cls = (torch.rand(40000, generator=g) < 0.2).long()
    x = torch.randn(40000, generator=g) + torch.where(cls == 0, 1.0, -1.0)
    p0 = torch.sigmoid(2 * x)
    est = em_prior(torch.stack([p0, 1 - p0], 1), torch.tensor([0.5, 0.5]))
    assert abs(float(est[0]) - 0.8) < 0.02


def test_config_speaker_norm_values():
    assert TrainConfig(speaker_norm="on").speaker_norm is True
    assert TrainConfig(speaker_norm="off").speaker_norm is False
    assert TrainConfig().speaker_norm == "auto" and TrainConfig().layer == "middle"
    with pytest.raises(ValueError, match="speaker_norm = 'sometimes': choose from True, False, auto"):
        TrainConfig(speaker_norm="sometimes")
    with pytest.raises(ValueError, match="pool_prior = 'uniform'"):
        TrainConfig(pool_prior="uniform")


def test_a_fixed_layer_needs_only_the_number_of_hidden_states():
    """speaker_norm=auto with a fixed layer: the run never loads every hidden state (large caches)."""
    raw, y, spk = make_set(True)
    lab = labelled_half(y)
    full = choose(raw, spk, lab, y[lab], 4, "middle", "auto", l2=10.0)
    shape_only = choose(raw[:, :0], spk, lab, y[lab], 4, "middle", "auto", l2=10.0, n_states=raw.shape[1])
    assert full.to_dict() == shape_only.to_dict() and shape_only.layer == str(raw.shape[1] // 2)

