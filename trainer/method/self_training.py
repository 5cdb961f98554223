"""What the two self-training loops share (SPEC 6, SPEC 8): a round's Selection of pool rows and
the refit of the head on the labelled rows plus the selection.

Pseudo-labelling (trainer/method/baselines.py) selects confident predictions; B-GRPO's refit update
(trainer/method/bgrpo.py) the actions with a positive advantage, weighted by it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from trainer.inputs.fold_data import FoldData
from trainer.method.monitor import Monitor
from trainer.method.policy import Policy
from trainer.method.supervised import fit_supervised, new_policy


@dataclass
class Selection:
    """Pool rows that join the labelled set this round, with their label and sample weight."""

    rows: torch.Tensor  # [k] indices into the pool (x_unl)
    labels: torch.Tensor  # [k] class indices (a prediction or an action, never a hidden label)
    weights: torch.Tensor | None = None  # [k]; None = weight 1
    diagnostics: dict = field(default_factory=dict)  # per-round curves (trainer/method/monitor.py)

    def labelled_plus_selected(self, data) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x, y, weight): the labelled rows (data.x_lab, y_lab) with weight 1, then the selected
        pool rows (data.x_unl) as one float32 tensor: the largest a round makes (a million-row pool
        can select 2 GB of it), so a loop builds it once per round and drops it before the next."""
        ones = torch.ones(len(data.x_lab), device=data.x_lab.device)
        w = torch.ones(len(self.rows), device=ones.device) if self.weights is None else self.weights
        return data.x_unl.after(data.x_lab, self.rows), torch.cat([data.y_lab, self.labels]), torch.cat([ones, w])


def head_refitter(cfg, data: FoldData, generator: torch.Generator, seed: int):
    """refit(policy, x, y, weight, round) -> the head fitted on (x, y, weight). The fit starts from
    a fresh head (seeded per round); with solver=lbfgs from the current policy instead: the
    penalised objective of a linear head is strictly convex, so the optimum is the same and it is
    reached in fewer steps."""
    def refit(policy: Policy, x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor, rnd: int) -> Policy:
        start = policy.frozen_copy() if cfg.solver == "lbfgs" else \
            new_policy(cfg, data.standardizer, data.n_classes, seed + 7919 * (rnd + 1), data.x_unl.device)
        for p in start.parameters():
            p.requires_grad_(True)
        return fit_supervised(start, x, y, cfg, generator, sample_weight=weights)
    return refit


def self_train(warm: Policy, data: FoldData, select: Callable[[Policy, int], Selection], rounds: int,
               refit, monitor: Monitor) -> Policy:
    """`rounds` of select -> refit on labelled + selected (pseudo-labelling)."""
    policy = warm
    for rnd in range(rounds):
        chosen = select(policy, rnd)
        policy = refit(policy, *chosen.labelled_plus_selected(data), rnd)  # the union is freed on return
        monitor.end_epoch(policy, rnd, **chosen.diagnostics)
    monitor.finish(policy)
    return policy
