"""B-GRPO (SPEC 4-5, 8) as the code implements it. The unlabelled pool is cut into groups of G =
batch_size rows (consecutive rows of a random permutation); pi_old is the current policy and
T the teacher (trainer/method/teachers.py).

  E1   acting distribution  pi_act = pi_old, or (act_on mix) sqrt(pi_old * T) renormalised;
       actions  a_i ~ pi_act (sample) | argmax pi_act (greedy) | argmax_c Q_ic (balanced), where Q
       is the Sinkhorn assignment of pi_act to the labelled class prior: within each scope (the
       pool, a group, a speaker) its column sums match n_scope * prior (trainer/method/actions.py).
  E2a  r1 = pi_old(a_i|x_i)           E2b  r2 = 1 - H(pi_old(.|x_i)) / log C
  E3a  r3 = 1[argmax T(.|x_i) = a_i]  E3b  r4 = T(a_i|x_i)      E3c  r5 = exp(-KL(T || pi_old))
       assign = Q_i(a_i) (the assignment's confidence); r_i = mean of the reward terms
       (trainer/method/rewards.py).
  E4   b_i = mean of r over i's group (baseline=class: over the group's rows with action a_i).
  E5   A_i = max(r_i - b_i, 0), with adv_std divided by the group's reward std + 1e-6 first.
       "Selected" = A_i > 0.
  update=refit (default, SPEC 8): each round the selected rows join the labelled set with label
       a_i and weight A_i / mean(A of the selected), and the head is refitted
       (trainer/method/self_training.py, the loop pseudo-labelling uses too).
  update=grpo (SPEC 5), per group, mu Adam steps on
  E6   rho_i = pi_theta(a_i|x_i) / pi_old(a_i|x_i)
  E7   KL_i = sum_c pi_theta(c|x_i) (log pi_theta(c|x_i) - log pi_ref(c|x_i)), pi_ref = the warm-up
  E8   loss = -(1/G) sum_i [min(rho_i A_i, clip(rho_i, 1-eps, 1+eps) A_i) - beta KL_i]
       (+ ce_weight x labelled cross-entropy). Dropout is off, so pi_theta = pi_old at the first step.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from trainer.method.actions import select_actions, sinkhorn
from trainer.inputs.fold_data import FoldData
from trainer.method.monitor import Monitor, selection_diagnostics
from trainer.method.policy import Policy
from trainer.method.rewards import compute_reward, parse_reward
from trainer.method.self_training import Selection, self_train
from trainer.method.source_assignment import per_source_plan, selection_by_source


# --- E1-E5: pure functions of probabilities ---------------------------------------------------
def acting_distribution(p_old: torch.Tensor, p_teacher: torch.Tensor | None) -> torch.Tensor:
    """E1's distribution: pi_old, or with a teacher's probabilities their normalised geometric mean
    sqrt(pi_old * T) (a class needs both views' support to be chosen)."""
    if p_teacher is None:
        return p_old
    g = torch.sqrt(p_old.clamp_min(1e-12) * p_teacher.clamp_min(1e-12))
    return g / g.sum(1, keepdim=True)


def balanced_assignment(p_act: torch.Tensor, data: FoldData, scope: torch.Tensor | None, cfg,
                        source: torch.Tensor | None = None) -> torch.Tensor:
    """E1 (balanced) / SPEC 8: Sinkhorn plan Q of p_act to n_scope * prior within each scope; with
    external sources (their ids `source`, aligned with p_act) and source_prior != joint, one plan per
    source towards its own prior (trainer/method/source_assignment.py)."""
    if data.source_priors is None or source is None or cfg.source_prior == "joint" or not bool((source > 0).any()):
        return sinkhorn(p_act, data.prior, scope, cfg.sinkhorn_iters, cfg.sinkhorn_temp)
    return per_source_plan(p_act, data.source_priors, source, scope, cfg.sinkhorn_iters, cfg.sinkhorn_temp)


def _scatter_mean(v: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """Per row, the mean of v over the rows sharing its key."""
    _, inv = torch.unique(key, return_inverse=True)
    sums = torch.zeros(int(inv.max()) + 1, dtype=v.dtype, device=v.device).index_add_(0, inv, v)
    return (sums / torch.bincount(inv).to(v.dtype))[inv]


def advantage(r: torch.Tensor, groups: torch.Tensor | None = None, adv_std: bool = False,
              actions: torch.Tensor | None = None, n_classes: int = 0) -> torch.Tensor:
    """E4-E5 for every group at once: A_i = max(r_i - b_i, 0), b_i the group's mean reward (with
    `actions`, baseline=class: the mean over the group's rows with the same action, so every
    class competes only with itself); adv_std divides by the group's population std + 1e-6."""
    groups = torch.zeros_like(r, dtype=torch.long) if groups is None else groups
    key = groups if actions is None else groups * n_classes + actions
    a = r - _scatter_mean(r, key)
    if adv_std:
        a = a / (_scatter_mean((r - _scatter_mean(r, groups)) ** 2, groups).sqrt() + 1e-6)
    return a.clamp_min(0.0)


def exact_kl(logp: torch.Tensor, logp_ref: torch.Tensor) -> torch.Tensor:
    """E7: KL_i = sum_c pi_theta(c|x_i) (log pi_theta - log pi_ref), exact over the C classes."""
    return (logp.exp() * (logp - logp_ref)).sum(1)


def bgrpo_loss(logp, logp_old, logp_ref, actions, adv, eps: float, beta: float) -> torch.Tensor:
    """E6 + E8: -(1/G) sum_i [min(rho_i A_i, clip(rho_i, 1-eps, 1+eps) A_i) - beta KL_i]."""
    rho = torch.exp(logp.gather(1, actions[:, None]) - logp_old.gather(1, actions[:, None])).squeeze(1)
    surrogate = torch.minimum(rho * adv, rho.clamp(1 - eps, 1 + eps) * adv)
    return -(surrogate - beta * exact_kl(logp, logp_ref)).mean()


# --- one pass of E1-E5 over pool rows -------------------------------------------------------------
@dataclass
class Scored:
    """Pool rows with pi_old, their actions, rewards and advantages (E1-E5)."""

    rows: torch.Tensor
    p_old: torch.Tensor
    actions: torch.Tensor
    reward: torch.Tensor
    adv: torch.Tensor

    @classmethod
    def cat(cls, parts: list["Scored"]) -> "Scored":
        return cls(*(torch.cat(v) for v in zip(*(vars(p).values() for p in parts))))

    def selection(self, data: FoldData) -> Selection:
        """Rows with A > 0, labelled with their action, weighted by A / mean(A of the selected)."""
        keep = self.adv > 0
        w = self.adv[keep]
        hidden = data.y_unl_hidden[self.rows]
        diagnostics = selection_diagnostics(self.actions, self.adv, self.reward, hidden, self.p_old, data.n_classes)
        if data.pool_source is not None and bool((data.pool_source > 0).any()):
            diagnostics.update(selection_by_source(self.rows, keep, self.actions, hidden, data.pool_source))
        return Selection(self.rows[keep], self.actions[keep], w / w.mean() if keep.any() else w, diagnostics)


def _probabilities(policy: Policy, teacher, data: FoldData, rows: torch.Tensor | None):
    """(pi_old, T or None) on pool `rows`, or on every pool row (rows=None) a chunk at a time, one
    pass for both views (the pool is never gathered whole)."""
    if rows is not None:
        x = data.x_unl[rows]
        return policy.probs(x), (teacher.probs(x, rows) if teacher is not None else None)
    if teacher is None:
        return data.x_unl.map(policy.probs), None
    return data.x_unl.map_indexed(lambda z, seen: (policy.probs(z), teacher.probs(z, seen)))


def score_rows(policy: Policy, data: FoldData, rows: torch.Tensor, cfg, terms, teacher,
               generator: torch.Generator) -> Scored:
    """One B-GRPO round's E1-E5 for pool `rows` under pi_old = policy; consecutive runs of G rows are
    the groups. A balanced assignment over the pool (or per speaker) is computed on every pool row
    and read at `rows`; with balance_scope=batch each group is its own scope."""
    groups = torch.arange(len(rows), device=rows.device) // cfg.batch_size
    needs_plan = cfg.action == "balanced" or "assign" in terms
    pool_wide = needs_plan and cfg.balance_scope != "batch"
    p_old, p_teacher = _probabilities(policy, teacher, data, None if pool_wide else rows)
    # E1: the acting distribution
    p_act = acting_distribution(p_old, p_teacher if cfg.act_on == "mix" else None)
    # E1 (balanced) / SPEC 8: the assignment Q of p_act to the prior within each scope
    plan = None
    if needs_plan:
        scope = (data.group_speaker if cfg.balance_scope == "speaker" else None) if pool_wide else groups
        source = None if data.pool_source is None else (data.pool_source if pool_wide else data.pool_source[rows])
        plan = balanced_assignment(p_act, data, scope, cfg, source)
    if pool_wide:
        p_old, p_act, plan = p_old[rows], p_act[rows], plan[rows]
        p_teacher = p_teacher[rows] if p_teacher is not None else None
    # E1: the actions
    actions = select_actions(p_act, cfg.action, generator if rows.device.type == "cpu" else None, plan)
    # E2-E3: the reward
    r = compute_reward(terms, p_old, actions, p_teacher, plan)
    # E4-E5: the advantage
    adv = advantage(r, groups, cfg.adv_std, actions if cfg.baseline == "class" else None, data.n_classes)
    return Scored(rows, p_old, actions, r, adv)


# --- the two updates ------------------------------------------------------------------------------
def train_bgrpo_refit(warm: Policy, data: FoldData, cfg, teacher, generator: torch.Generator,
                      monitor: Monitor, seed: int) -> Policy:
    """update=refit: self-training whose selection is E1-E5 over every group of the pool."""
    terms = parse_reward(cfg.reward)

    def select(policy: Policy, rnd: int) -> Selection:
        rows = torch.randperm(len(data.x_unl), generator=generator).to(data.x_unl.device)
        chosen = score_rows(policy, data, rows, cfg, terms, teacher, generator).selection(data)
        if teacher is not None:
            teacher.end_round(*chosen.labelled_plus_selected(data)[:2])
        return chosen

    return self_train(warm, data, cfg, select, cfg.refit_rounds, generator, monitor, seed)


def train_bgrpo(warm: Policy, data: FoldData, cfg, teacher, generator: torch.Generator,
                monitor: Monitor) -> Policy:
    """update=grpo: epochs passes over the pool in groups of G, mu clipped steps (E6-E8) each."""
    policy = warm.frozen_copy()
    for p in policy.parameters():
        p.requires_grad_(True)
    ref = warm.frozen_copy()
    logp_ref_pool = data.x_unl.map(lambda z: F.log_softmax(ref(z), 1).detach())  # pi_ref is frozen: once
    opt = torch.optim.Adam(policy.parameters(), lr=cfg.lr, foreach=False, fused=True)
    terms = parse_reward(cfg.reward)
    dev = data.x_unl.device
    for epoch in range(cfg.epochs):
        parts = []
        for rows in torch.randperm(len(data.x_unl), generator=generator).to(dev).split(cfg.batch_size):
            with torch.no_grad():
                s = score_rows(policy, data, rows, cfg, terms, teacher, generator)
            x, logp_old = data.x_unl[rows], torch.log(s.p_old.clamp_min(1e-12))
            for _ in range(cfg.mu):
                loss = bgrpo_loss(F.log_softmax(policy(x), 1), logp_old, logp_ref_pool[rows], s.actions, s.adv,
                                  cfg.eps, cfg.beta)
                if cfg.ce_weight > 0:
                    lab = torch.randint(len(data.x_lab), (min(cfg.batch_size, len(data.x_lab)),), generator=generator).to(dev)
                    loss = loss + cfg.ce_weight * F.cross_entropy(policy(data.x_lab[lab]), data.y_lab[lab])
                opt.zero_grad()
                loss.backward()
                opt.step()
                if teacher is not None:
                    teacher.update(policy)
            parts.append(s)
        chosen = Scored.cat(parts).selection(data)
        if teacher is not None:
            teacher.end_round(*chosen.labelled_plus_selected(data)[:2])
        monitor.end_epoch(policy, epoch, **chosen.diagnostics)
    monitor.finish(policy)
    return policy.eval()
