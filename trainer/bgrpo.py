"""B-GRPO (SPEC 4-5): the samples of one batch are the group, the batch-mean reward the baseline,
and the advantage is clipped at zero so that only better-than-average samples are reinforced.

Dropout is off during B-GRPO (the policy stays in eval mode) so that pi_theta = pi_old at the first
inner step, as GRPO's ratio assumes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from trainer.actions import select_actions, sinkhorn
from trainer.fold_data import FoldData
from trainer.monitor import Monitor, selection_diagnostics
from trainer.policy import Policy
from trainer.rewards import compute_reward, parse_reward


def advantage(r: torch.Tensor, adv_std: bool) -> torch.Tensor:
    """E4 b = mean_j r_j; E5 A_i = max(r_i - b, 0), optionally divided by std_j r_j + 1e-6."""
    a = r - r.mean()
    if adv_std:
        a = a / (r.std(unbiased=False) + 1e-6)
    return a.clamp_min(0.0)


def exact_kl(logp: torch.Tensor, logp_ref: torch.Tensor) -> torch.Tensor:
    """E7: KL_i = sum_c pi_theta(c|x_i) (log pi_theta - log pi_ref), exact over the C classes."""
    return (logp.exp() * (logp - logp_ref)).sum(1)


def bgrpo_loss(logp, logp_old, logp_ref, actions, adv, eps: float, beta: float) -> torch.Tensor:
    """E6 + E8: -(1/G) sum_i [min(rho_i A_i, clip(rho_i, 1-eps, 1+eps) A_i) - beta KL_i]."""
    rho = torch.exp(logp.gather(1, actions[:, None]) - logp_old.gather(1, actions[:, None])).squeeze(1)
    surrogate = torch.minimum(rho * adv, rho.clamp(1 - eps, 1 + eps) * adv)
    return -(surrogate - beta * exact_kl(logp, logp_ref)).mean()


def train_bgrpo(warm: Policy, data: FoldData, cfg, teacher, generator: torch.Generator,
                monitor: Monitor) -> Policy:
    """Run --epochs passes over the unlabelled pool in batches (groups) of --batch-size."""
    policy = warm.frozen_copy()
    for p in policy.parameters():
        p.requires_grad_(True)
    ref = warm.frozen_copy()
    opt = torch.optim.Adam(policy.parameters(), lr=cfg.lr, foreach=False, fused=True)
    terms = parse_reward(cfg.reward)
    needs_plan = cfg.action == "balanced" or "assign" in terms
    x_u, n_u, dev = data.x_unl, len(data.x_unl), data.x_unl.device
    for epoch in range(cfg.epochs):
        log = {k: [] for k in ("actions", "adv", "reward", "hidden", "p_old")}
        for idx in torch.randperm(n_u, generator=generator).to(dev).split(cfg.batch_size):
            x = x_u[idx]
            with torch.no_grad():
                plan = None
                if needs_plan and cfg.balance_scope == "batch":
                    p_old = policy.probs(x)
                    plan = sinkhorn(p_old, data.prior, None, cfg.sinkhorn_iters, cfg.sinkhorn_temp)
                elif needs_plan:  # the assignment over the whole pool (or each speaker in it)
                    p_pool = policy.probs(x_u)
                    groups = data.group_speaker if cfg.balance_scope == "speaker" else None
                    plan, p_old = sinkhorn(p_pool, data.prior, groups, cfg.sinkhorn_iters, cfg.sinkhorn_temp)[idx], p_pool[idx]
                else:
                    p_old = policy.probs(x)
                actions = select_actions(p_old, cfg.action, generator if dev.type == "cpu" else None, plan)
                conf = plan.gather(1, actions[:, None]).squeeze(1) if plan is not None else None
                p_teacher = teacher.probs(x, idx) if teacher is not None else None
                r = compute_reward(terms, p_old, actions, p_teacher, conf)
                adv = advantage(r, cfg.adv_std)
                logp_old, logp_ref = torch.log(p_old.clamp_min(1e-12)), F.log_softmax(ref(x), 1)
            for _ in range(cfg.mu):
                loss = bgrpo_loss(F.log_softmax(policy(x), 1), logp_old, logp_ref, actions, adv, cfg.eps, cfg.beta)
                if cfg.ce_weight > 0:
                    lab = torch.randint(len(data.x_lab), (min(cfg.batch_size, len(data.x_lab)),), generator=generator).to(dev)
                    loss = loss + cfg.ce_weight * F.cross_entropy(policy(data.x_lab[lab]), data.y_lab[lab])
                opt.zero_grad()
                loss.backward()
                opt.step()
                if teacher is not None:
                    teacher.update(policy)
            for k, v in zip(log, (actions, adv, r, data.y_unl_hidden[idx], p_old)):
                log[k].append(v)
        cat = {k: torch.cat(v) for k, v in log.items()}
        monitor.end_epoch(policy, epoch, **selection_diagnostics(
            cat["actions"], cat["adv"], cat["reward"], cat["hidden"], cat["p_old"], data.n_classes))
    monitor.finish(policy)
    return policy.eval()
