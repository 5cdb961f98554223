"""Teachers T(c|x) for the teacher-rewards r3-r5 (SPEC 4) and for `act_on=mix`: an EMA of the
policy (tau 0.99), the frozen warm-up, a shrinkage-LDA class model refitted on each round's
selection (trainer/method/lda_teacher.py), or a classifier trained on another encoder's cache of the same
utterances (a second view, e.g. Whisper tiny.en vs base).

Every teacher has probs(x, pool_idx), update(policy) after each policy step, and
end_round(x, y) after each epoch/round with the labelled rows plus the round's selected actions.
"""
from __future__ import annotations

import numpy as np
import torch

from data_manifests.errors import UserError
from trainer.inputs.feature_store import FeatureRows
from trainer.inputs.features import Standardizer
from trainer.inputs.fold_jobs import FoldJob, prepared_cache
from trainer.method.lda_teacher import LDATeacher
from trainer.method.policy import Policy
from trainer.method.rewards import needs_teacher, parse_reward
from trainer.method.supervised import fit_supervised, new_policy


class EMATeacher:
    """theta_T <- tau theta_T + (1 - tau) theta after every policy step."""

    def __init__(self, policy: Policy, tau: float):
        self.model, self.tau = policy.frozen_copy(), tau

    def probs(self, x: torch.Tensor, pool_idx: torch.Tensor) -> torch.Tensor:
        return self.model.probs(x)

    @torch.no_grad()
    def update(self, policy: Policy) -> None:
        for t, s in zip(self.model.parameters(), policy.parameters()):
            t.lerp_(s, 1.0 - self.tau)

    def end_round(self, x: torch.Tensor, y: torch.Tensor) -> None:
        pass


class FrozenTeacher(EMATeacher):
    """The warm-up model, never updated (EMA with tau = 1)."""

    def __init__(self, policy: Policy):
        super().__init__(policy, 1.0)

    def update(self, policy: Policy) -> None:
        pass


class FixedProbsTeacher:
    """Probabilities precomputed for every pool row (a classifier on another cache)."""

    def __init__(self, pool_probs: torch.Tensor):
        self.pool_probs = pool_probs

    def probs(self, x: torch.Tensor, pool_idx: torch.Tensor) -> torch.Tensor:
        return self.pool_probs[pool_idx]

    def update(self, policy: Policy) -> None:
        pass

    def end_round(self, x: torch.Tensor, y: torch.Tensor) -> None:
        pass


def teacher_for(cfg, warm: Policy, job: FoldJob, seed: int):
    """The run's teacher, or None when neither the reward (r3-r5) nor the actions (act_on mix) use one."""
    if not (needs_teacher(parse_reward(cfg.reward)) or cfg.act_on == "mix"):
        return None
    data = job.data
    if cfg.teacher == "ema":
        return EMATeacher(warm, cfg.tau)
    if cfg.teacher == "frozen":
        return FrozenTeacher(warm)
    if cfg.teacher == "lda":  # PCA fitted label-free on the rows the learner sees: labelled, validation and pool
        return LDATeacher([data.x_lab, data.x_val, data.x_unl], data.n_classes, cfg.lda_components,
                          seed, data.placement).fit(data.x_lab, data.y_lab)
    if cfg.unlabeled_cache:
        raise UserError("teacher cache:FILE with unlabeled_cache is not supported: "
                         "the teacher cache has no vectors for the external corpus")
    utt = job.table["utt_id"].astype(str).to_numpy()
    lab, pool = job.split.labeled, job.split.unlabeled
    return FixedProbsTeacher(cache_teacher_probs(cfg, cfg.teacher[len("cache:"):], utt[lab], job.y[lab], utt[pool],
                                                 data.n_classes, seed, data.x_unl.device))


def cache_teacher_probs(
    cfg, teacher_cache, utt_lab, y_lab, utt_pool, n_classes: int, seed: int, device
) -> torch.Tensor:
    """Train the warm-up recipe on another cache's vectors of the labelled utterances and return its
    probabilities for the pool's utterances (matched by utt_id)."""
    teacher_view = prepared_cache(teacher_cache, cfg.layer, cfg.speaker_norm)
    x, table = teacher_view.features, teacher_view.table
    pos = {u: i for i, u in enumerate(table["utt_id"])}
    missing = [u for u in list(utt_lab) + list(utt_pool) if u not in pos]
    if missing:
        raise UserError(f"teacher cache {teacher_cache} lacks {len(missing)} utterance(s) of this run "
                         f"(e.g. {missing[0]}): extract the same manifest with the teacher's encoder")
    rows_lab = np.array([pos[u] for u in utt_lab], np.int64)
    rows_pool = np.array([pos[u] for u in utt_pool], np.int64)
    st = Standardizer().fit(x.rows(np.concatenate([rows_lab, rows_pool])))
    model = new_policy(cfg, st, n_classes, seed, device)
    gen = torch.Generator().manual_seed(seed)
    x_lab = torch.as_tensor(st.transform(x.rows(rows_lab)), device=device)
    model = fit_supervised(model, x_lab, torch.as_tensor(y_lab, device=device), cfg, gen)
    return FeatureRows([(x, rows_pool)], st, device).map(model.probs)
