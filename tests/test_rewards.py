"""Rewards E2a-E3c, reward specs and the Sinkhorn assignment on tiny hand-computed cases."""
import math

import pytest
import torch

from trainer.method.actions import select_actions, sinkhorn
from trainer.method.rewards import compute_reward, parse_reward

P_OLD = torch.tensor([[0.7, 0.2, 0.1], [1 / 3, 1 / 3, 1 / 3]], dtype=torch.float64)
ACTIONS = torch.tensor([0, 2])
TEACHER = torch.tensor([[0.1, 0.8, 0.1], [0.2, 0.2, 0.6]], dtype=torch.float64)


def reward(spec, assign=None):
    return compute_reward(parse_reward(spec), P_OLD, ACTIONS, TEACHER, assign).tolist()


def test_r1_is_probability_of_the_action():
    assert reward("r1") == pytest.approx([0.7, 1 / 3])


def test_r2_is_normalised_negative_entropy():
    h = -(0.7 * math.log(0.7) + 0.2 * math.log(0.2) + 0.1 * math.log(0.1))
    assert reward("r2") == pytest.approx([1 - h / math.log(3), 0.0], abs=1e-12)


def test_r3_is_teacher_argmax_agreement():
    assert reward("r3") == [0.0, 1.0]  # teacher argmax 1 != action 0; 2 == action 2


def test_r4_is_teacher_probability_of_the_action():
    assert reward("r4") == pytest.approx([0.1, 0.6])


def test_r5_is_exp_minus_kl_teacher_to_policy():
    kl0 = 0.1 * math.log(0.1 / 0.7) + 0.8 * math.log(0.8 / 0.2) + 0.1 * math.log(0.1 / 0.1)
    kl1 = 0.2 * math.log(0.2 * 3) * 2 + 0.6 * math.log(0.6 * 3)
    assert reward("r5") == pytest.approx([math.exp(-kl0), math.exp(-kl1)])


def test_specs_expand_and_average_terms():
    assert parse_reward("self") == ("r1", "r2")
    assert parse_reward("teacher") == ("r3", "r4", "r5")
    assert parse_reward("self+teacher") == ("r1", "r2", "r3", "r4", "r5")
    assert parse_reward("r1+r4+r1") == ("r1", "r4")
    assert reward("r1+r4") == pytest.approx([(0.7 + 0.1) / 2, (1 / 3 + 0.6) / 2])
    five = [reward(t) for t in ("r1", "r2", "r3", "r4", "r5")]
    assert reward("self+teacher") == pytest.approx([sum(col) / 5 for col in zip(*five)])
    plan = torch.tensor([[0.9, 0.05, 0.05], [0.3, 0.3, 0.4]], dtype=torch.float64)  # actions are 0 and 2
    assert reward("assign", assign=plan) == pytest.approx([0.9, 0.4])


@pytest.mark.parametrize("bad", ["r6", "self+x", "", "teachers"])
def test_unknown_reward_terms_are_rejected(bad):
    with pytest.raises(ValueError, match="reward term"):
        parse_reward(bad)


def test_teacher_terms_need_a_teacher():
    with pytest.raises(ValueError, match="teacher"):
        compute_reward(("r4",), P_OLD, ACTIONS, None)


def test_sinkhorn_matches_row_and_group_column_marginals():
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(3 * torch.randn(12, 3, generator=g, dtype=torch.float64), 1)
    prior = torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64)
    q = sinkhorn(probs, prior, iters=500)
    assert q.sum(1).tolist() == pytest.approx([1.0] * 12)
    assert q.sum(0).tolist() == pytest.approx([6.0, 3.0, 3.0], abs=1e-6)
    groups = torch.tensor([7] * 8 + [3] * 4)
    qg = sinkhorn(probs, prior, groups, iters=500)
    assert qg[:8].sum(0).tolist() == pytest.approx([4.0, 2.0, 2.0], abs=1e-6)
    assert qg[8:].sum(0).tolist() == pytest.approx([2.0, 1.0, 1.0], abs=1e-6)


def test_sinkhorn_of_uniform_probabilities_is_the_prior():
    prior = torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64)
    q = sinkhorn(torch.full((5, 3), 1 / 3, dtype=torch.float64), prior, iters=5)
    assert torch.allclose(q, prior.expand(5, 3))


def test_balanced_actions_follow_the_prior_even_when_the_policy_prefers_one_class():
    # Every sample prefers class 0, but a little more or less: balancing spreads the actions.
    p0 = torch.linspace(0.5, 0.9, 8, dtype=torch.float64)
    probs = torch.stack([p0, (1 - p0) * torch.linspace(0.2, 0.8, 8, dtype=torch.float64),
                         (1 - p0) * torch.linspace(0.8, 0.2, 8, dtype=torch.float64)], 1)
    prior = torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64)
    actions = select_actions(probs, "balanced", plan=sinkhorn(probs, prior, iters=200, temp=0.1))
    assert torch.bincount(actions, minlength=3).tolist() == [4, 2, 2]
    assert actions[4:].eq(0).all()  # the most confident class-0 samples keep class 0
    assert actions[:2].eq(2).all() and actions[2:4].eq(1).all()  # the rest go where their runner-up mass is
    assert select_actions(probs, "greedy").eq(0).all()
