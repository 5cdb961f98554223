"""Supervised training of the policy: the warm-up (= `supervised`, pi_ref and B-GRPO's start,
SPEC 5) and, on all training labels, the `topline` (SPEC 6).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from trainer.features import Standardizer
from trainer.monitor import Monitor
from trainer.policy import Policy


def new_policy(cfg, standardizer: Standardizer, n_classes: int, seed: int, device) -> Policy:
    """A fresh head (seeded init) carrying the fold's standardisation statistics."""
    torch.manual_seed(seed)
    n_layers, dim = standardizer.mean_.shape
    pol = Policy(n_layers, dim, n_classes, cfg.head, cfg.hidden, cfg.dropout)
    pol.set_standardizer(standardizer.mean_, standardizer.std_)
    return pol.to(device)


def fit_supervised(policy: Policy, x: torch.Tensor, y: torch.Tensor, cfg, generator: torch.Generator,
                   monitor: Monitor | None = None, sample_weight: torch.Tensor | None = None) -> Policy:
    """Adam on (weighted) cross-entropy, mini-batches of --batch-size, --warmup-epochs passes."""
    opt = torch.optim.Adam(policy.parameters(), lr=cfg.warmup_lr, weight_decay=cfg.weight_decay, foreach=False, fused=True)
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
