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
from trainer.lda_teacher import mix_probs
from trainer.monitor import Monitor, selection_diagnostics
from trainer.policy import Policy
from trainer.rewards import compute_reward, parse_reward


def advantage(r: torch.Tensor, adv_std: bool, actions: torch.Tensor | None = None, n_classes: int = 0) -> torch.Tensor:
    """E4 b = mean_j r_j; E5 A_i = max(r_i - b, 0), optionally divided by std_j r_j + 1e-6.

    With `actions` (--baseline class) b_i is the mean reward of the batch samples that took the
    same action, so every class competes only with itself (a class-balanced selection).
    """
    if actions is None:
        b = r.mean()
    else:
        sums = torch.zeros(n_classes, dtype=r.dtype, device=r.device).index_add_(0, actions, r)
        b = (sums / torch.bincount(actions, minlength=n_classes).clamp_min(1).to(r.dtype))[actions]
    a = r - b
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


def act_and_reward(policy: Policy, data: FoldData, idx: torch.Tensor, cfg, terms, teacher,
                   generator: torch.Generator):
    """E1-E5 for pool rows idx under pi_old = the current policy: probabilities, actions, rewards
    and advantages. Consecutive runs of --batch-size rows of idx are the groups (E4).

    A pool-wide assignment works on the pool's [N, C] probabilities, computed chunk by chunk; the
    pool's features are never gathered whole (idx may be the entire pool)."""
    mixed = cfg.act_on == "mix"
    dev = data.x_unl.device
    group = torch.arange(len(idx), device=dev) // cfg.batch_size
    plan = p_teacher = None
    if (cfg.action == "balanced" or "assign" in terms) and cfg.balance_scope != "batch":
        # the assignment over the whole pool (or each speaker in it); this call's rows are kept
        groups = data.group_speaker if cfg.balance_scope == "speaker" else None
        if teacher is None:
            p_pool = data.x_unl.map(policy.probs)
        else:  # both views from one pass over the pool
            p_pool, p_teacher = data.x_unl.map_indexed(lambda z, rows: (policy.probs(z), teacher.probs(z, rows)))
        p_pool_act = mix_probs(p_pool, p_teacher) if mixed else p_pool
        plan = sinkhorn(p_pool_act, data.prior, groups, cfg.sinkhorn_iters, cfg.sinkhorn_temp)
        plan, p_old, p_act = plan[idx], p_pool[idx], p_pool_act[idx]
        p_teacher = p_teacher[idx] if p_teacher is not None else None
    else:
        x = data.x_unl[idx]
        p_old = policy.probs(x)
        p_teacher = teacher.probs(x, idx) if teacher is not None else None
        p_act = mix_probs(p_old, p_teacher) if mixed else p_old
        if cfg.action == "balanced" or "assign" in terms:  # each group balanced on its own
            plan = sinkhorn(p_act, data.prior, group, cfg.sinkhorn_iters, cfg.sinkhorn_temp)
    actions = select_actions(p_act, cfg.action, generator if dev.type == "cpu" else None, plan)
    conf = plan.gather(1, actions[:, None]).squeeze(1) if plan is not None else None
    r = compute_reward(terms, p_old, actions, p_teacher, conf)
    adv = torch.cat([advantage(r[g], cfg.adv_std, actions[g] if cfg.baseline == "class" else None, data.n_classes)
                     for g in torch.arange(len(idx), device=dev).split(cfg.batch_size)])  # E4-E5 per group
    return p_old, actions, r, adv


class EpochLog:
    """Collects one epoch's groups for the selection diagnostics."""

    def __init__(self, data: FoldData):
        self.data, self.parts = data, []

    def add(self, idx, p_old, actions, r, adv) -> None:
        self.parts.append((idx, p_old, actions, r, adv))

    def cat(self) -> tuple[torch.Tensor, ...]:
        """(idx, p_old, actions, r, adv) of the whole epoch."""
        return tuple(torch.cat(v) for v in zip(*self.parts))

    def labelled_plus_selected(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x, y, weight): the labelled rows (weight 1) and the selected pool rows (A > 0) with their
        action as label, weighted by A / mean(A of the selected)."""
        d = self.data
        idx, _, actions, _, adv = self.cat()
        keep = adv > 0
        ones = torch.ones(len(d.x_lab), device=d.x_lab.device)
        weights = torch.cat([ones, adv[keep] / adv[keep].mean()]) if keep.any() else ones
        return d.x_unl.after(d.x_lab, idx[keep]), torch.cat([d.y_lab, actions[keep]]), weights

    def diagnostics(self) -> dict:
        idx, p_old, actions, r, adv = self.cat()
        return selection_diagnostics(actions, adv, r, self.data.y_unl_hidden[idx], p_old, self.data.n_classes)


def train_bgrpo(warm: Policy, data: FoldData, cfg, teacher, generator: torch.Generator,
                monitor: Monitor) -> Policy:
    """--update grpo: --epochs passes over the pool in groups of --batch-size, mu clipped steps each."""
    policy = warm.frozen_copy()
    for p in policy.parameters():
        p.requires_grad_(True)
    ref = warm.frozen_copy()
    logp_ref_pool = data.x_unl.map(lambda z: F.log_softmax(ref(z), 1).detach())  # pi_ref is frozen: once
    opt = torch.optim.Adam(policy.parameters(), lr=cfg.lr, foreach=False, fused=True)
    terms = parse_reward(cfg.reward)
    dev = data.x_unl.device
    for epoch in range(cfg.epochs):
        log = EpochLog(data)
        for idx in torch.randperm(len(data.x_unl), generator=generator).to(dev).split(cfg.batch_size):
            with torch.no_grad():
                p_old, actions, r, adv = act_and_reward(policy, data, idx, cfg, terms, teacher, generator)
            x, logp_old = data.x_unl[idx], torch.log(p_old.clamp_min(1e-12))
            for _ in range(cfg.mu):
                loss = bgrpo_loss(F.log_softmax(policy(x), 1), logp_old, logp_ref_pool[idx], actions, adv, cfg.eps, cfg.beta)
                if cfg.ce_weight > 0:
                    lab = torch.randint(len(data.x_lab), (min(cfg.batch_size, len(data.x_lab)),), generator=generator).to(dev)
                    loss = loss + cfg.ce_weight * F.cross_entropy(policy(data.x_lab[lab]), data.y_lab[lab])
                opt.zero_grad()
                loss.backward()
                opt.step()
                if teacher is not None:
                    teacher.update(policy)
            log.add(idx, p_old, actions, r, adv)
        if teacher is not None:
            teacher.end_round(*log.labelled_plus_selected()[:2])
        monitor.end_epoch(policy, epoch, **log.diagnostics())
    monitor.finish(policy)
    return policy.eval()


def train_bgrpo_refit(warm: Policy, data: FoldData, cfg, teacher, generator: torch.Generator,
                      monitor: Monitor, seed: int) -> Policy:
    """--update refit (SPEC 8, prototype form): each round, E1-E5 over the pool's groups under the
    current policy; selected samples (A > 0) join the labelled set with their action as label,
    weighted by A / mean(A of the selected), and a fresh head is trained on the union. With
    --solver lbfgs the fit starts from the current policy instead: the penalised objective of a
    linear head is strictly convex, so the optimum is the same and it is reached in fewer steps."""
    from trainer.supervised import fit_supervised, new_policy  # late import: supervised imports monitor

    terms = parse_reward(cfg.reward)
    policy, dev = warm, data.x_unl.device
    for rnd in range(cfg.refit_rounds):
        log = EpochLog(data)  # the policy is fixed within a round: every group in one call
        idx = torch.randperm(len(data.x_unl), generator=generator).to(dev)
        log.add(idx, *act_and_reward(policy, data, idx, cfg, terms, teacher, generator))
        x_fit, y_fit, weights = log.labelled_plus_selected()
        start = policy.frozen_copy() if cfg.solver == "lbfgs" else \
            new_policy(cfg, data.standardizer, data.n_classes, seed + 7919 * (rnd + 1), dev)
        for p in start.parameters():
            p.requires_grad_(True)
        policy = fit_supervised(start, x_fit, y_fit, cfg, generator, sample_weight=weights)
        if teacher is not None:
            teacher.end_round(x_fit, y_fit)
        monitor.end_epoch(policy, rnd, **log.diagnostics())
    monitor.finish(policy)
    return policy
