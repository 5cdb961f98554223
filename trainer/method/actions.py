"""Actions of B-GRPO (E1): sampled, greedy, or distribution-aligned ("balanced", SPEC 8).

Balanced actions come from a Sinkhorn assignment of pi_old's probabilities to the class prior of
the labelled subset: within each group (the whole pool, each batch, or each speaker) the plan's
column masses match n_group x prior, so the actions cannot pile onto the classes the warm-up
already favours. Groups are handled in one vectorised pass with scatter sums.
"""
from __future__ import annotations

import torch


def group_sums(q: torch.Tensor, gid: torch.Tensor, n_groups: int) -> torch.Tensor:
    """[n_groups, C] column sums of q's rows per group id: rows added in order on the CPU; on an
    accelerator one group is a plain reduction (atomic adds of every row into one row serialise).
    A kernel choice of the device, not a code path: both are the same sum up to rounding."""
    if n_groups == 1 and q.device.type != "cpu":
        return q.sum(0, keepdim=True)
    return torch.zeros(n_groups, q.shape[1], dtype=q.dtype, device=q.device).index_add_(0, gid, q)


def sinkhorn(probs: torch.Tensor, prior: torch.Tensor, groups: torch.Tensor | None = None,
             iters: int = 50, temp: float = 1.0) -> torch.Tensor:
    """Plan Q [N, C] with rows summing to 1 and, per group g, column sums ~= n_g * prior.

    probs: [N, C] >= 0; prior: [C] summing to 1; groups: [N] int64 group ids (None = one group).
    Starts from probs^(1/temp) (temp < 1 makes the plan closer to a hard assignment, so that its
    argmax follows the prior). Ends with the row step: each row is the sample's assignment.
    """
    n = len(probs)
    groups = torch.zeros(n, dtype=torch.long, device=probs.device) if groups is None else groups
    _, gid = torch.unique(groups, return_inverse=True)
    n_groups = int(gid.max()) + 1
    sizes = torch.bincount(gid, minlength=n_groups).to(probs.dtype)  # [Gr]
    target = sizes[:, None] * prior[None, :].to(probs.dtype)  # [Gr, C]
    logq = torch.log(probs.clamp_min(1e-12)) / temp
    q = torch.softmax(logq, 1)
    for _ in range(iters):
        col = group_sums(q, gid, n_groups)
        q = q * (target / col)[gid]
        q = q / q.sum(1, keepdim=True)
    return q


def select_actions(p_old: torch.Tensor, mode: str, generator: torch.Generator | None = None,
                   plan: torch.Tensor | None = None) -> torch.Tensor:
    """E1: a_i ~ pi_old (sample), argmax pi_old (greedy), or argmax of the Sinkhorn plan (balanced)."""
    if mode == "sample":
        return torch.multinomial(p_old, 1, generator=generator).squeeze(1)
    if mode == "greedy":
        return p_old.argmax(1)
    if mode == "balanced":
        if plan is None:
            raise ValueError("balanced actions need the Sinkhorn plan")
        return plan.argmax(1)
    raise ValueError(f"unknown action mode {mode!r}")
