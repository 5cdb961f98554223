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
       a_i and weight A_i / mean(A of the selected), the teacher is refitted on them, and the head
       is refitted (the fit itself: trainer/method/self_training.py, shared with pseudo-labelling).
  update=grpo (SPEC 5), per group, mu Adam steps on
  E6   rho_i = pi_theta(a_i|x_i) / pi_old(a_i|x_i)
  E7   KL_i = sum_c pi_theta(c|x_i) (log pi_theta(c|x_i) - log pi_ref(c|x_i)), pi_ref = the warm-up
  E8   loss = -(1/G) sum_i [min(rho_i A_i, clip(rho_i, 1-eps, 1+eps) A_i) - beta KL_i]
       (+ ce_weight x labelled cross-entropy). Dropout is off, so pi_theta = pi_old at the first step.

`BGRPO(settings, refit_head, teacher).fit(warm, pool, generator)` runs it, one round read top to
bottom in `_refit` (E1-E5 in `score_rows`, then the refit) or `_grpo` (E1-E8 per group). Its input is
narrow: `Pool` (the labelled subset, the pool's rows, speakers and sources, the prior) and
`Settings` (only the recipe fields read here); it never sees hidden labels or test rows. Progress
goes to the `on_round` callback (trainer/method/monitor.py records curves from it); the results are
the fitted attributes policy_, n_selected_ and selection_.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Callable

import torch
import torch.nn.functional as F

from trainer.method.actions import select_actions, sinkhorn
from trainer.inputs.feature_store import FeatureRows
from trainer.inputs.fold_data import FoldData
from trainer.method.policy import Policy
from trainer.method.rewards import compute_reward, parse_reward
from trainer.method.self_training import Selection
from trainer.method.source_assignment import per_source_plan


# --- the narrow input ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Settings:
    """The recipe fields B-GRPO reads (trainer/config.py documents each)."""

    update: str
    reward: str
    action: str
    act_on: str
    balance_scope: str
    baseline: str
    adv_std: bool
    batch_size: int
    sinkhorn_iters: int
    sinkhorn_temp: float
    source_prior: str
    refit_rounds: int
    epochs: int
    mu: int
    eps: float
    beta: float
    lr: float
    ce_weight: float

    @classmethod
    def of(cls, cfg) -> "Settings":
        return cls(**{f.name: getattr(cfg, f.name) for f in fields(cls)})


@dataclass(frozen=True)
class Pool:
    """What B-GRPO learns from: the labelled subset, the pool's rows with their speakers (and, with
    external pools, their source ids and each source's prior), the labelled class prior."""

    x_lab: torch.Tensor  # [n_L, L, D] standardised
    y_lab: torch.Tensor  # [n_L]
    x_unl: FeatureRows  # [n_U, L, D] the pool, z-scored a chunk at a time
    speaker: torch.Tensor  # [n_U] speaker ids (balance_scope=speaker)
    prior: torch.Tensor  # [C]
    n_classes: int
    source: torch.Tensor | None = None  # [n_U] 0 = own pool, k = k-th unlabeled_cache; None: no external source
    source_priors: torch.Tensor | None = None  # [sources + 1, C]

    @classmethod
    def of(cls, data: FoldData) -> "Pool":
        external = data.pool_source is not None and bool((data.pool_source > 0).any())
        return cls(data.x_lab, data.y_lab, data.x_unl, data.group_speaker, data.prior, data.n_classes,
                   data.pool_source if external else None, data.source_priors if external else None)


# --- E1-E5: pure functions of probabilities ---------------------------------------------------
def acting_distribution(p_old: torch.Tensor, p_teacher: torch.Tensor | None) -> torch.Tensor:
    """E1's distribution: pi_old, or with a teacher's probabilities their normalised geometric mean
    sqrt(pi_old * T) (a class needs both views' support to be chosen)."""
    if p_teacher is None:
        return p_old
    g = torch.sqrt(p_old.clamp_min(1e-12) * p_teacher.clamp_min(1e-12))
    return g / g.sum(1, keepdim=True)


def balanced_assignment(p_act: torch.Tensor, pool: Pool, scope: torch.Tensor | None, s: Settings,
                        source: torch.Tensor | None = None) -> torch.Tensor:
    """E1 (balanced) / SPEC 8: Sinkhorn plan Q of p_act to n_scope * prior within each scope; with
    external sources (their ids `source`, aligned with p_act) and source_prior != joint, one plan per
    source towards its own prior (trainer/method/source_assignment.py)."""
    if pool.source_priors is None or source is None or s.source_prior == "joint" or not bool((source > 0).any()):
        return sinkhorn(p_act, pool.prior, scope, s.sinkhorn_iters, s.sinkhorn_temp)
    return per_source_plan(p_act, pool.source_priors, source, scope, s.sinkhorn_iters, s.sinkhorn_temp)


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

    def selection(self) -> Selection:
        """Rows with A > 0, labelled with their action, weighted by A / mean(A of the selected)."""
        keep = self.adv > 0
        w = self.adv[keep]
        return Selection(self.rows[keep], self.actions[keep], w / w.mean() if keep.any() else w)


def _probabilities(policy: Policy, teacher, pool: Pool, rows: torch.Tensor | None):
    """(pi_old, T or None) on pool `rows`, or on every pool row (rows=None) a chunk at a time, one
    pass for both views (the pool is never gathered whole)."""
    if rows is not None:
        x = pool.x_unl[rows]
        return policy.probs(x), (teacher.probs(x, rows) if teacher is not None else None)
    if teacher is None:
        return pool.x_unl.map(policy.probs), None
    return pool.x_unl.map_indexed(lambda z, seen: (policy.probs(z), teacher.probs(z, seen)))


def score_rows(policy: Policy, pool: Pool, rows: torch.Tensor, s: Settings, teacher,
               generator: torch.Generator) -> Scored:
    """One B-GRPO round's E1-E5 for pool `rows` under pi_old = policy; consecutive runs of G rows are
    the groups. A balanced assignment over the pool (or per speaker) is computed on every pool row
    and read at `rows`; with balance_scope=batch each group is its own scope."""
    terms = parse_reward(s.reward)
    groups = torch.arange(len(rows), device=rows.device) // s.batch_size
    needs_plan = s.action == "balanced" or "assign" in terms
    pool_wide = needs_plan and s.balance_scope != "batch"
    p_old, p_teacher = _probabilities(policy, teacher, pool, None if pool_wide else rows)
    # E1: the acting distribution
    p_act = acting_distribution(p_old, p_teacher if s.act_on == "mix" else None)
    # E1 (balanced) / SPEC 8: the assignment Q of p_act to the prior within each scope
    plan = None
    if needs_plan:
        scope = (pool.speaker if s.balance_scope == "speaker" else None) if pool_wide else groups
        source = None if pool.source is None else (pool.source if pool_wide else pool.source[rows])
        plan = balanced_assignment(p_act, pool, scope, s, source)
    if pool_wide:
        p_old, p_act, plan = p_old[rows], p_act[rows], plan[rows]
        p_teacher = p_teacher[rows] if p_teacher is not None else None
    # E1: the actions
    actions = select_actions(p_act, s.action, generator if rows.device.type == "cpu" else None, plan)
    # E2-E3: the reward
    r = compute_reward(terms, p_old, actions, p_teacher, plan)
    # E4-E5: the advantage
    adv = advantage(r, groups, s.adv_std, actions if s.baseline == "class" else None, pool.n_classes)
    return Scored(rows, p_old, actions, r, adv)


# --- the estimator: one round, top to bottom --------------------------------------------------------
RefitHead = Callable[[Policy, torch.Tensor, torch.Tensor, torch.Tensor, int], Policy]
OnRound = Callable[[Policy, int, Scored], None]


class BGRPO:
    """B-GRPO fitted on a Pool from a warm-up policy.

    refit_head(policy, x, y, weight, round) -> the head fitted on labelled + selected rows
    (update=refit; trainer/method/self_training.head_refitter); teacher: T or None
    (trainer/method/teachers.py); on_round(policy, round, scored): called after every round
    (refit) or epoch (grpo).
    Fitted attributes: policy_ (the trained head, eval mode), n_selected_ (rows with A > 0 per
    round or epoch), selection_ (the last round's Selection: pool rows, actions, weights).
    """

    def __init__(self, settings: Settings, refit_head: RefitHead | None = None, teacher=None,
                 on_round: OnRound | None = None):
        self.settings, self.refit_head, self.teacher = settings, refit_head, teacher
        self.on_round = on_round or (lambda policy, rnd, scored: None)

    def fit(self, warm: Policy, pool: Pool, generator: torch.Generator) -> "BGRPO":
        self.n_selected_ = []
        fit = self._refit if self.settings.update == "refit" else self._grpo
        self.policy_ = fit(warm, pool, generator).eval()
        return self

    def _select(self, scored: Scored) -> Selection:
        """The round's selection (A > 0), recorded."""
        chosen = self.selection_ = scored.selection()
        self.n_selected_.append(len(chosen.rows))
        return chosen

    def _refit(self, warm: Policy, pool: Pool, generator: torch.Generator) -> Policy:
        """update=refit: each round E1-E5 over every group of the pool, then a refit on L + selected."""
        policy = warm
        for rnd in range(self.settings.refit_rounds):
            rows = torch.randperm(len(pool.x_unl), generator=generator).to(pool.x_unl.device)
            scored = score_rows(policy, pool, rows, self.settings, self.teacher, generator)  # E1-E5
            x, y, weights = self._select(scored).labelled_plus_selected(pool)
            if self.teacher is not None:
                self.teacher.end_round(x, y)
            policy = self.refit_head(policy, x, y, weights, rnd)  # SPEC 8
            del x, y, weights  # the round's largest tensor, gone before the next round builds its own
            self.on_round(policy, rnd, scored)
        return policy

    def _grpo(self, warm: Policy, pool: Pool, generator: torch.Generator) -> Policy:
        """update=grpo: epochs passes over the pool in groups of G, mu clipped steps (E6-E8) each."""
        s, dev = self.settings, pool.x_unl.device
        policy = warm.frozen_copy()
        for p in policy.parameters():
            p.requires_grad_(True)
        ref = warm.frozen_copy()
        logp_ref_pool = pool.x_unl.map(lambda z: F.log_softmax(ref(z), 1).detach())  # pi_ref is frozen: once
        opt = torch.optim.Adam(policy.parameters(), lr=s.lr, foreach=False, fused=True)
        for epoch in range(s.epochs):
            parts = []
            for rows in torch.randperm(len(pool.x_unl), generator=generator).to(dev).split(s.batch_size):
                with torch.no_grad():
                    scored = score_rows(policy, pool, rows, s, self.teacher, generator)  # E1-E5
                x, logp_old = pool.x_unl[rows], torch.log(scored.p_old.clamp_min(1e-12))
                for _ in range(s.mu):  # E6-E8
                    loss = bgrpo_loss(F.log_softmax(policy(x), 1), logp_old, logp_ref_pool[rows], scored.actions,
                                      scored.adv, s.eps, s.beta)
                    if s.ce_weight > 0:
                        lab = torch.randint(len(pool.x_lab), (min(s.batch_size, len(pool.x_lab)),),
                                            generator=generator).to(dev)
                        loss = loss + s.ce_weight * F.cross_entropy(policy(pool.x_lab[lab]), pool.y_lab[lab])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    if self.teacher is not None:
                        self.teacher.update(policy)
                parts.append(scored)
            scored = Scored.cat(parts)
            chosen = self._select(scored)
            if self.teacher is not None:
                self.teacher.end_round(*chosen.labelled_plus_selected(pool)[:2])
            self.on_round(policy, epoch, scored)
        return policy
