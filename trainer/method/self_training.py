"""One self-training loop for pseudo-labelling and B-GRPO's refit update (SPEC 6, SPEC 8).

Each round: `select(policy, round)` picks pool rows and a label (and weight) for each; they join
the labelled set and the head is fitted again on the union. The methods differ only in `select`:
pseudo-labelling keeps confident predictions (trainer/method/baselines.py), B-GRPO keeps the actions with
a positive advantage, weighted by it (trainer/method/bgrpo.py).
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

    rows: torch.Tensor  # [k] indices into data.x_unl
    labels: torch.Tensor  # [k] class indices (a prediction or an action, never a hidden label)
    weights: torch.Tensor | None = None  # [k]; None = weight 1
    diagnostics: dict = field(default_factory=dict)  # per-round curves (trainer/method/monitor.py)
    _union: tuple | None = field(default=None, repr=False)

    def labelled_plus_selected(self, data: FoldData) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x, y, weight): the labelled rows with weight 1, then the selected pool rows; built once
        per round (the teacher's refit and the head's share it)."""
        if self._union is None:
            ones = torch.ones(len(data.x_lab), device=data.x_lab.device)
            w = torch.ones(len(self.rows), device=ones.device) if self.weights is None else self.weights
            self._union = (data.x_unl.after(data.x_lab, self.rows), torch.cat([data.y_lab, self.labels]),
                           torch.cat([ones, w]))
        return self._union


def self_train(warm: Policy, data: FoldData, cfg, select: Callable[[Policy, int], Selection], rounds: int,
               generator: torch.Generator, monitor: Monitor, seed: int) -> Policy:
    """`rounds` of select -> fit on labelled + selected. The fit starts from a fresh head (seeded
    per round); with solver=lbfgs from the current policy instead: the penalised objective of a
    linear head is strictly convex, so the optimum is the same and it is reached in fewer steps."""
    policy = warm
    for rnd in range(rounds):
        chosen = select(policy, rnd)
        x_fit, y_fit, weights = chosen.labelled_plus_selected(data)
        start = policy.frozen_copy() if cfg.solver == "lbfgs" else \
            new_policy(cfg, data.standardizer, data.n_classes, seed + 7919 * (rnd + 1), data.x_unl.device)
        for p in start.parameters():
            p.requires_grad_(True)
        policy = fit_supervised(start, x_fit, y_fit, cfg, generator, sample_weight=weights)
        monitor.end_epoch(policy, rnd, **chosen.diagnostics)
    monitor.finish(policy)
    return policy
