"""Each method of the protocol trained on one prepared fold x seed (a FoldJob, whose cfg has its
`auto` choices resolved): the warm-up first (supervised on L, SPEC 5; with pool_prior=em the pool's
class prior estimated from it), then any other method from that warm-up. `train`
(trainer/jobs.py) and `label` (trainer/label_corpus.py) both build their models here, so a recipe
field means the same in both.

`seed_of(salt)` gives the seed of one random stream of the fold x seed (trainer/jobs.job_seed).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable

import torch

from data_manifests.errors import UserError
from trainer.inputs.auto_choices import em_prior
from trainer.method.baselines import train_dino, train_pseudo_label
from trainer.method.bgrpo import BGRPO, Pool, Settings
from trainer.inputs.fold_jobs import FoldJob
from trainer.method.monitor import Monitor
from trainer.method.policy import Policy
from trainer.inputs.protocol import POOL_METHODS
from trainer.method.self_training import head_refitter
from trainer.method.source_assignment import source_priors
from trainer.method.supervised import fit_supervised, new_policy
from trainer.method.teachers import teacher_for

METHOD_ORDER = ("supervised", "bgrpo", "pseudo-label", "dino", "topline")


def monitored_epochs(method: str, cfg) -> int:
    """How many epochs (or rounds) a method's Monitor watches."""
    return {"supervised": cfg.warmup_epochs, "pseudo-label": cfg.pl_rounds, "topline": cfg.warmup_epochs,
            "bgrpo": cfg.refit_rounds if cfg.update == "refit" else cfg.epochs}.get(method, cfg.epochs)


def _generator(seed_of: Callable[[str], int], salt: str) -> torch.Generator:
    return torch.Generator().manual_seed(seed_of(salt))


def _fresh_head(job: FoldJob, seed_of: Callable[[str], int]) -> Policy:
    data = job.data
    return new_policy(job.cfg, data.standardizer, data.n_classes, seed_of("init"), data.x_lab.device)


def warm_up(job: FoldJob, seed_of: Callable[[str], int], monitor: Monitor) -> tuple[Policy, FoldJob]:
    """(the warm-up on the labelled rows, the job the other methods train from). That job is a copy
    (`job` is left as it is): its prior is the labelled subset's, or with pool_prior=em the pool's
    prior estimated label-free from the warm-up's predictions, and its choice records the prior used."""
    cfg, data = job.cfg, job.data
    warm = fit_supervised(_fresh_head(job, seed_of), data.x_lab, data.y_lab, cfg, _generator(seed_of, "supervised"),
                          monitor)
    prior = em_prior(data.x_unl.map(warm.probs), data.prior) if cfg.pool_prior == "em" and len(data.x_unl) \
        else data.prior
    choice = {**job.choice, "pool_prior": prior.cpu().tolist()}
    priors = None
    if data.pool_source is not None and bool((data.pool_source > 0).any()):  # unlabeled_cache: one prior per source
        priors = source_priors(cfg.source_prior, prior, data.pool_source, lambda: data.x_unl.map(warm.probs))
        choice["source_priors"] = priors.cpu().tolist()
    return warm, replace(job, data=replace(data, prior=prior, source_priors=priors), choice=choice)


def train_method(method: str, warm: Policy | None, job: FoldJob, seed_of: Callable[[str], int],
                 monitor: Monitor) -> Policy:
    """`method` (bgrpo: its teacher, then the refit or GRPO update; pseudo-label; dino; topline: the
    warm-up recipe on every training label) trained from `warm` (unused by topline). With an empty
    pool (every training row labelled) the pool methods have nothing to learn from: `warm` itself."""
    cfg, data = job.cfg, job.data
    torch.manual_seed(seed_of(method))  # dropout's global stream: each method its own
    if method in POOL_METHODS and not len(data.x_unl):
        return warm
    if method == "bgrpo":
        teacher = teacher_for(cfg, warm, job, seed_of("teacher"))
        generator = _generator(seed_of, "bgrpo")  # actions, pool order and the refits share one stream
        bgrpo = BGRPO(
            Settings.of(cfg), head_refitter(cfg, data, generator, seed_of("refit")), teacher, monitor.end_round
        )
        policy = bgrpo.fit(warm, Pool.of(data), generator).policy_
        monitor.finish(policy)
        return policy
    if method == "pseudo-label":
        return train_pseudo_label(warm, data, cfg, seed_of("pl"), _generator(seed_of, "pseudo-label"), monitor)
    if method == "dino":
        return train_dino(warm, data, cfg, _generator(seed_of, "dino"), monitor)
    if method == "topline":
        return fit_supervised(_fresh_head(job, seed_of), data.x_train_all[:], data.y_train_all, cfg,
                              _generator(seed_of, "topline"), monitor)
    raise UserError(f"unknown method {method!r}: use {', '.join(METHOD_ORDER)}")
