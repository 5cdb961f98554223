"""B-GRPO maths (E4-E8) on hand-computed cases, and the collapse guard on a synthetic cache."""
import math

import pytest
import torch

from trainer.method.bgrpo import advantage, bgrpo_loss, exact_kl
from trainer.config import SPEC_FORM, TrainConfig
from trainer.jobs import run_job


def test_advantage_subtracts_batch_mean_and_clips_at_zero():
    r = torch.tensor([0.2, 0.4, 0.9], dtype=torch.float64)
    assert advantage(r, adv_std=False).tolist() == pytest.approx([0.0, 0.0, 0.4])


def test_advantage_std_normalisation_uses_the_batch_std():
    r = torch.tensor([0.2, 0.4, 0.9], dtype=torch.float64)
    std = math.sqrt((0.3**2 + 0.1**2 + 0.4**2) / 3)  # population std of the group
    assert advantage(r, adv_std=True).tolist() == pytest.approx([0.0, 0.0, 0.4 / (std + 1e-6)])


def test_class_baseline_compares_samples_with_the_same_action():
    r = torch.tensor([0.2, 0.4, 0.9, 0.5], dtype=torch.float64)
    a = advantage(r, adv_std=False, actions=torch.tensor([0, 0, 1, 1]), n_classes=3)
    assert a.tolist() == pytest.approx([0.0, 0.1, 0.2, 0.0])  # baselines 0.3 (class 0) and 0.7 (class 1)


def test_equal_rewards_select_nothing():
    assert advantage(torch.full((4,), 0.7), adv_std=True).eq(0).all()


def test_exact_kl_over_classes():
    logp = torch.log(torch.tensor([[0.5, 0.5]], dtype=torch.float64))
    logp_ref = torch.log(torch.tensor([[0.25, 0.75]], dtype=torch.float64))
    assert exact_kl(logp, logp_ref).item() == pytest.approx(0.5 * math.log(2) + 0.5 * math.log(0.5 / 0.75))
    assert exact_kl(logp, logp).item() == 0.0


def _two_sample_case(beta):
    # sample 0: pi_theta(a)=0.8 vs pi_old(a)=0.5 -> rho 1.6 (clipped at 1.2); sample 1: 0.25 vs 0.5 -> rho 0.5.
    p_new = torch.tensor([[0.8, 0.2], [0.75, 0.25]], dtype=torch.float64)
    logits = torch.log(p_new).requires_grad_(True)
    logp = torch.log_softmax(logits, 1)
    logp_old = torch.log(torch.tensor([[0.5, 0.5], [0.5, 0.5]], dtype=torch.float64))
    logp_ref = torch.log(torch.tensor([[0.5, 0.5], [0.25, 0.75]], dtype=torch.float64))
    actions = torch.tensor([0, 1])
    adv = torch.tensor([1.0, 2.0], dtype=torch.float64)
    return logits, bgrpo_loss(logp, logp_old, logp_ref, actions, adv, eps=0.2, beta=beta), logp, logp_ref


def test_ratio_clip_e6_e8():
    logits, loss, *_ = _two_sample_case(beta=0.0)
    # min(1.6*1, 1.2*1) = 1.2 ; min(0.5*2, 0.8*2) = 1.0 ; loss = -(1.2 + 1.0) / 2
    assert loss.item() == pytest.approx(-1.1)
    loss.backward()
    assert torch.allclose(logits.grad[0], torch.zeros(2, dtype=torch.float64))  # clipped: no gradient
    assert logits.grad[1].abs().sum() > 0  # below 1 - eps the unclipped term keeps its gradient


def test_kl_term_adds_beta_times_mean_kl():
    _, loss0, logp, logp_ref = _two_sample_case(beta=0.0)
    _, loss, *_ = _two_sample_case(beta=0.5)
    assert loss.item() == pytest.approx(loss0.item() + 0.5 * exact_kl(logp, logp_ref).mean().item())


@pytest.fixture(scope="module")
def weak_cache(tmp_path_factory, synthetic_cache):
    return str(synthetic_cache(tmp_path_factory.mktemp("c") / "weak.h5", n_classes=4, n_speakers=6, per_class=10,
                               n_folds=3, signal=0.5, dim=8))


def _bgrpo_run(cache, beta):
    cfg = TrainConfig(**{**SPEC_FORM, "reward": "r1"}, methods=("bgrpo",), seeds=(0,), epochs=40, warmup_epochs=30,
                      beta=beta, lr=1e-2, batch_size=16, labeled_fraction=0.2, save_models=False)
    return run_job(cfg.to_dict(), cache, "0", 0)


def test_collapse_is_detected_without_kl_and_prevented_by_beta(weak_cache):
    """Aggressive self-reward updates with beta=0 pile the pool onto few classes; the guard flags it
    (and the per-epoch action histogram shows it); a strong KL keeps predictions diverse."""
    free, anchored = _bgrpo_run(weak_cache, 0.0), _bgrpo_run(weak_cache, 1.0)
    assert free["rows"][0]["collapsed"] and free["rows"][0]["pool_pred_entropy"] < 0.75
    assert not anchored["rows"][0]["collapsed"] and anchored["rows"][0]["pool_pred_entropy"] > 0.9
    last = [c for c in free["curves"] if c["method"] == "bgrpo"][-1]
    assert last["action_entropy"] < 0.75 and last["action_hist"].count("|") == 3
    for c in [c for c in anchored["curves"] if c["method"] == "bgrpo"]:
        # A = max(r - group mean, 0): some rows of every group are above their mean, never all
        assert 0 < c["selection_rate"] < 1 and 0 < c["mean_reward"] <= 1
