"""The project's default recipe: LDA teacher, mixed actions, L-BFGS head fits, inner validation."""
import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from trainer.config import TrainConfig
from trainer.inputs.feature_store import policy_rows
from trainer.method.bgrpo import acting_distribution
from trainer.method.lda_teacher import LDATeacher
from trainer.method.policy import Policy
from trainer.inputs.protocol import fold_masks, make_split
from trainer.jobs import run_job
from trainer.method.supervised import fit_lbfgs


def test_mixed_acting_distribution_is_the_normalised_geometric_mean():
    p = torch.tensor([[0.5, 0.5, 0.0], [0.8, 0.1, 0.1]])
    t = torch.tensor([[0.5, 0.0, 0.5], [0.2, 0.4, 0.4]])
    g = acting_distribution(p, t)
    assert acting_distribution(p, None) is p  # act_on=policy: pi_old itself
    # row 0: only class 0 has support from both views
    assert g[0, 0] == pytest.approx(1.0, abs=1e-5)
    # row 1: sqrt(.16), sqrt(.04), sqrt(.04) = .4, .2, .2 -> .5, .25, .25
    assert g[1].tolist() == pytest.approx([0.5, 0.25, 0.25], abs=1e-6)


def test_lda_teacher_learns_separable_classes_and_is_uniform_when_it_cannot_fit():
    rng = np.random.default_rng(0)
    means = rng.normal(size=(3, 10)) * 4
    y = np.repeat(np.arange(3), 20)
    x = torch.tensor(means[y] + rng.normal(size=(60, 10)), dtype=torch.float32)
    teacher = LDATeacher(x, 4, n_components=5).fit(x, torch.tensor(y))
    p = teacher.probs(x)  # a fourth class never seen: probability 0
    assert p.shape == (60, 4) and torch.allclose(p.sum(1), torch.ones(60), atol=1e-5)
    assert (p.argmax(1).numpy() == y).mean() > 0.95 and float(p[:, 3].max()) == 0.0
    tiny = LDATeacher(x, 3, n_components=5).fit(x[[0, 20, 40]], torch.tensor([0, 1, 2]))
    assert torch.allclose(tiny.probs(x[:4]), torch.full((4, 3), 1 / 3))


def test_lbfgs_head_matches_scikit_learn_logistic_regression():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(80, 6)).astype(np.float32)
    y = (x @ rng.normal(size=(6, 3)) + 0.5 * rng.normal(size=(80, 3))).argmax(1)
    w = rng.uniform(0.5, 2.0, size=80)
    ref = LogisticRegression(C=0.5, max_iter=5000, tol=1e-10).fit(x, y, sample_weight=w)
    pol = Policy(1, 6, 3, head="linear", dropout=0.0)
    fit_lbfgs(
        pol, torch.tensor(x)[:, None], torch.tensor(y), l2=2.0, sample_weight=torch.tensor(w, dtype=torch.float32)
    )
    ours = pol.probs(torch.tensor(x)[:, None]).numpy()
    assert np.abs(ours - ref.predict_proba(x)).max() < 2e-3


def test_inner_validation_drops_the_test_fold_and_scores_the_next_one():
    table = pd.DataFrame({"fold": np.repeat([0, 1, 2, 3], 5), "speaker": np.repeat(list("abcd"), 5),
                          "label": ["x", "y", "x", "y", "x"] * 4})
    train, test = fold_masks(table, "3", inner=True)
    assert set(table.fold[test]) == {0} and set(table.fold[train]) == {1, 2}
    split = make_split(table, "1", 0, 0.5, inner=True)
    used = np.concatenate([split.labeled, split.unlabeled, split.test])
    assert 1 not in set(table.fold.iloc[used]) and set(table.fold.iloc[split.test]) == {2}


def test_middle_layer_is_half_the_depth():
    raw = np.arange(2 * 7 * 3, dtype=np.float32).reshape(2, 7, 3)
    assert np.array_equal(policy_rows(raw, None, "middle", False).rows(np.arange(2)), raw[:, [3]])


def test_default_recipe_gains_over_supervised_on_clustered_data(tmp_path, synthetic_cache):
    """With few labels and a pool that carries the class clusters, the default B-GRPO recipe must
    beat its own warm-up; the per-round diagnostics show balanced, mostly correct selections."""
    path = synthetic_cache(tmp_path / "c.h5", n_classes=4, n_speakers=9, per_class=12, n_folds=3,
                           dim=24, signal=0.6, seed=3)
    gains = []
    for fold in ("0", "1", "2"):
        cfg = TrainConfig(methods=("supervised", "bgrpo"), seeds=(0,), labeled_fraction=0.1, save_models=False,
                          lda_components=16)
        out = run_job(cfg.to_dict(), str(path), fold, 0)
        f1 = {r["method"]: r["macro_f1"] for r in out["rows"]}
        gains.append(f1["bgrpo"] - f1["supervised"])
        last = [c for c in out["curves"] if c["method"] == "bgrpo"][-1]
        assert 0 < last["selection_rate"] < 1 and last["selection_precision"] > 0.5
    assert np.mean(gains) > 2.0, gains
