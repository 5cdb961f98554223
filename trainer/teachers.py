"""Teachers T(c|x) for the teacher-rewards r3-r5 (SPEC 4) and for `--act-on mix`: an EMA of the
policy (tau 0.99), the frozen warm-up, a shrinkage-LDA class model refitted on each round's
selection (trainer/lda_teacher.py), or a classifier trained on another encoder's cache of the same
utterances (a second view, e.g. Whisper tiny.en vs base).

Every teacher has probs(x, pool_idx), update(policy) after each policy step, and
end_round(x, y) after each epoch/round with the labelled rows plus the round's selected actions.
"""
from __future__ import annotations

import numpy as np
import torch

from trainer.lda_teacher import LDATeacher
from trainer.policy import Policy


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


def build_teacher(spec: str, warm: Policy, tau: float, cache_probs: torch.Tensor | None = None,
                  data=None, cfg=None, seed: int = 0):
    if spec == "ema":
        return EMATeacher(warm, tau)
    if spec == "frozen":
        return FrozenTeacher(warm)
    if spec == "lda":  # PCA fitted label-free on the rows the learner sees: labelled, validation and pool
        return LDATeacher([data.x_lab, data.x_val, data.x_unl], data.n_classes, cfg.lda_components,
                          seed).fit(data.x_lab, data.y_lab)
    if cache_probs is None:
        raise ValueError(f"teacher {spec!r} needs its pool probabilities (computed by the run from the other cache)")
    return FixedProbsTeacher(cache_probs)


def cache_teacher_probs(cfg, teacher_cache, utt_lab, y_lab, utt_pool, n_classes: int, seed: int, device) -> torch.Tensor:
    """Train the warm-up recipe on another cache's vectors of the labelled utterances and return its
    probabilities for the pool's utterances (matched by utt_id)."""
    from trainer.run import prepared_cache  # late import: run builds on this module
    from trainer.feature_store import FeatureRows
    from trainer.features import Standardizer
    from trainer.supervised import fit_supervised, new_policy

    x, table = prepared_cache(teacher_cache, cfg.layer, cfg.speaker_norm)[:2]
    pos = {u: i for i, u in enumerate(table["utt_id"])}
    missing = [u for u in list(utt_lab) + list(utt_pool) if u not in pos]
    if missing:
        raise ValueError(f"teacher cache {teacher_cache} lacks {len(missing)} utterance(s) of this run "
                         f"(e.g. {missing[0]}): extract the same manifest with the teacher's encoder")
    rows_lab = np.array([pos[u] for u in utt_lab], np.int64)
    rows_pool = np.array([pos[u] for u in utt_pool], np.int64)
    st = Standardizer().fit(x.rows(np.concatenate([rows_lab, rows_pool])))
    model = new_policy(cfg, st, n_classes, seed, device)
    gen = torch.Generator().manual_seed(seed)
    x_lab = torch.as_tensor(st.transform(x.rows(rows_lab)), device=device)
    model = fit_supervised(model, x_lab, torch.as_tensor(y_lab, device=device), cfg, gen)
    return FeatureRows([(x, rows_pool)], st, device).map(model.probs)
