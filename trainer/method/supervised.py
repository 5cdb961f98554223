"""Supervised training of the policy: the warm-up (= `supervised`, pi_ref and B-GRPO's start,
SPEC 5) and, on all training labels, the `topline` (SPEC 6).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from trainer.inputs.features import Standardizer
from trainer.method.monitor import Monitor
from trainer.method.policy import Policy


def new_policy(cfg, standardizer: Standardizer, n_classes: int, seed: int, device) -> Policy:
    """A fresh head (seeded init) carrying the fold's standardisation statistics."""
    torch.manual_seed(seed)
    n_layers, dim = standardizer.mean_.shape
    pol = Policy(n_layers, dim, n_classes, cfg.head, cfg.hidden, cfg.dropout)
    pol.set_standardizer(standardizer.mean_, standardizer.std_)
    return pol.to(device)


def fit_supervised(policy: Policy, x: torch.Tensor, y: torch.Tensor, cfg, generator: torch.Generator,
                   monitor: Monitor | None = None, sample_weight: torch.Tensor | None = None) -> Policy:
    """Weighted cross-entropy: solver=adam (mini-batches, warmup_epochs passes) or lbfgs."""
    if cfg.solver == "lbfgs":
        return fit_lbfgs(policy, x, y, cfg.l2, sample_weight, monitor)
    opt = torch.optim.Adam(
        policy.parameters(), lr=cfg.warmup_lr, weight_decay=cfg.weight_decay, foreach=False, fused=True
    )
    w = torch.ones(len(x), device=x.device) if sample_weight is None else sample_weight
    policy.train()
    for epoch in range(cfg.warmup_epochs):
        perm = torch.randperm(len(x), generator=generator).to(x.device)
        for idx in perm.split(cfg.batch_size):
            loss = (F.cross_entropy(policy(x[idx]), y[idx], reduction="none") * w[idx]).sum() / w[idx].sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
        if monitor is not None:
            monitor.end_epoch(policy, epoch)
    if monitor is not None:
        monitor.finish(policy)
    return policy.eval()


def penalised_loss(policy: Policy, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, l2: float) -> torch.Tensor:
    """sum_i w_i CE_i / sum_i w_i + l2/2 ||W||^2 / sum_i w_i over the weight matrices (not biases).

    Scaled so that l2 = 1/C matches scikit-learn's LogisticRegression(C) on a linear head.
    """
    ce = (F.cross_entropy(policy(x), y, reduction="none") * w).sum()
    penalty = sum((p ** 2).sum() for n, p in policy.head.named_parameters() if n.endswith("weight"))
    return (ce + 0.5 * l2 * penalty) / w.sum()


def fit_lbfgs(policy: Policy, x: torch.Tensor, y: torch.Tensor, l2: float,
              sample_weight: torch.Tensor | None = None, monitor: Monitor | None = None,
              max_iter: int = 500) -> Policy:
    """Full-batch L-BFGS to convergence: deterministic, no epochs to choose, and with a strong l2 a
    calibrated head, which the balanced actions and the advantage (E4-E5) rely on."""
    w = torch.ones(len(x), device=x.device) if sample_weight is None else sample_weight
    policy.eval()  # dropout off: a deterministic objective
    opt = torch.optim.LBFGS(policy.parameters(), lr=1.0, max_iter=max_iter, tolerance_grad=1e-6,
                            tolerance_change=1e-9, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = penalised_loss(policy, x, y, w, l2)
        loss.backward()
        return loss

    opt.step(closure)
    if monitor is not None:
        monitor.end_epoch(policy, 0)
        monitor.finish(policy)
    return policy.eval()
