"""Label-free rewards of B-GRPO (SPEC 4, E2a-E3c) and '+'-joined reward specs.

Every reward is a pure function of pi_old's probabilities, the actions, and (for r3-r5) the
teacher's probabilities; all are in [0, 1] so that averaging terms keeps them comparable.
`assign` is the confidence of the distribution-aligned (Sinkhorn) assignment (SPEC 8).
"""
from __future__ import annotations

import torch

from data_manifests.errors import UserError
from trainer.metrics import normalised_entropy

SELF_TERMS = ("r1", "r2")
TEACHER_TERMS = ("r3", "r4", "r5")
ALIASES = {"self": SELF_TERMS, "teacher": TEACHER_TERMS}
TERMS = SELF_TERMS + TEACHER_TERMS + ("assign",)


def parse_reward(spec: str) -> tuple[str, ...]:
    """'self+teacher' -> ('r1','r2','r3','r4','r5'); 'r1+r4' -> ('r1','r4'). Order kept, no repeats."""
    terms: list[str] = []
    for part in str(spec).replace(" ", "").split("+"):
        expanded = ALIASES.get(part, (part,))
        for t in expanded:
            if t not in TERMS:
                raise UserError(
                    f"invalid config: reward term {part!r}: use self, teacher, {', '.join(TERMS)} joined by '+'"
                )
            if t not in terms:
                terms.append(t)
    return tuple(terms)


def needs_teacher(terms) -> bool:
    return any(t in TEACHER_TERMS for t in terms)


def r1_confidence(p_old: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """E2a: pi_old(a_i | x_i)."""
    return p_old.gather(1, actions[:, None]).squeeze(1)


def r2_certainty(p_old: torch.Tensor) -> torch.Tensor:
    """E2b: 1 - H(pi_old(.|x_i)) / log C (0 = uniform, 1 = one-hot)."""
    return 1.0 - normalised_entropy(p_old)


def r3_agreement(p_teacher: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """E3a: 1[argmax_c T(c|x_i) = a_i]."""
    return (p_teacher.argmax(1) == actions).to(p_teacher.dtype)


def r4_teacher_prob(p_teacher: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """E3b: T(a_i | x_i)."""
    return p_teacher.gather(1, actions[:, None]).squeeze(1)


def r5_distribution_agreement(p_teacher: torch.Tensor, p_old: torch.Tensor) -> torch.Tensor:
    """E3c: exp(-KL(T(.|x_i) || pi_old(.|x_i)))."""
    kl = (p_teacher * (torch.log(p_teacher.clamp_min(1e-12)) - torch.log(p_old.clamp_min(1e-12)))).sum(1)
    return torch.exp(-kl)


def assign_confidence(plan: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """SPEC 8: Q_i(a_i), the balanced assignment's confidence in the action."""
    return plan.gather(1, actions[:, None]).squeeze(1)


def compute_reward(terms, p_old, actions, p_teacher=None, plan=None) -> torch.Tensor:
    """E2-E3: the mean of the requested terms, one reward per sample [G]; `plan` = the assignment Q."""
    parts = []
    for t in terms:
        if t in TEACHER_TERMS and p_teacher is None:
            raise UserError(f"reward {t} needs a teacher")
        if t == "r1":
            parts.append(r1_confidence(p_old, actions))
        elif t == "r2":
            parts.append(r2_certainty(p_old))
        elif t == "r3":
            parts.append(r3_agreement(p_teacher, actions))
        elif t == "r4":
            parts.append(r4_teacher_prob(p_teacher, actions))
        elif t == "r5":
            parts.append(r5_distribution_agreement(p_teacher, p_old))
        else:  # assign
            if plan is None:
                raise UserError("reward 'assign' needs the balanced (Sinkhorn) assignment")
            parts.append(assign_confidence(plan, actions))
    return torch.stack(parts).mean(0)
