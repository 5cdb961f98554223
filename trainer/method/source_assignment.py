"""The balanced assignment per external source (`source_prior`, trainer/inputs/sources.py): one
Sinkhorn plan per source, each towards its own class prior (the selection counted per source is a
diagnostic: trainer/method/monitor.py).
"""
from __future__ import annotations

import torch

from trainer.inputs.auto_choices import em_prior
from trainer.method.actions import sinkhorn


def source_priors(mode: str, prior: torch.Tensor, pool_source: torch.Tensor, pool_probs) -> torch.Tensor:
    """[n_sources + 1, C] class prior each source's assignment aims at: row OWN (0) the labelled prior;
    an external source's row the labelled prior (mode labelled) or its EM-estimated prior from the
    warm-up's pool probabilities (mode em; `pool_probs()` gives them, computed only then)."""
    n_src = int(pool_source.max()) + 1 if len(pool_source) else 1
    priors = prior[None, :].repeat(n_src, 1)
    if mode == "em" and n_src > 1:
        probs = pool_probs()
        for k in range(1, n_src):
            mine = pool_source == k
            if mine.any():
                priors[k] = em_prior(probs[mine], prior)
    return priors


def per_source_plan(p_act: torch.Tensor, priors: torch.Tensor, source: torch.Tensor, scope: torch.Tensor | None,
                    iters: int, temp: float) -> torch.Tensor:
    """E1 (balanced) per source: the Sinkhorn plan of each source's rows to n_rows x its own prior
    (within `scope`'s groups inside the source), so one source's bias cannot bend another's actions.
    A class a source lacks (prior 0) gets a vanishing target (1e-6): an exact 0 would divide 0 by 0."""
    plan = torch.empty_like(p_act)
    for k in torch.unique(source).tolist():
        mine = source == k
        prior = priors[k].clamp_min(1e-6)
        plan[mine] = sinkhorn(p_act[mine], prior / prior.sum(), None if scope is None else scope[mine], iters, temp)
    return plan

