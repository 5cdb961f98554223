"""The source gate (`source_gate=cv`, trainer/inputs/sources.py): per fold x seed, is an external
unlabelled source used at all?

Evidence: the labelled subset L only. Its speakers are dealt into up to GATE_GROUPS groups; for
each group, the warm-up and B-GRPO are trained on the other groups' labels with the pool without
any external source, and with each source added; the held group's labelled rows are predicted.
A source is kept when the pooled held-out macro-F1 with it is at least GATE_MARGIN points above
the one without it: a pool that cannot be shown to help on L is dropped (with a one-line message),
never silently mixed in. The pool's hidden labels and the test fold never enter.
"""
from __future__ import annotations

import sys
from dataclasses import replace

import numpy as np
import torch

from trainer.inputs.auto_choices import speaker_groups
from trainer.inputs.feature_store import FeatureRows
from trainer.inputs.fold_data import FoldData
from trainer.inputs.fold_jobs import FoldJob
from trainer.inputs.sources import OWN, source_paths
from trainer.method.methods import train_method, warm_up
from trainer.metrics import fast_macro_f1

GATE_GROUPS = 3
GATE_MARGIN = 1.0  # macro-F1 points (held-out L) a source must gain to be kept


class QuietMonitor:
    """A Monitor that records nothing (the gate's inner fits have no test rows to watch)."""

    best_epoch = None

    def end_epoch(self, policy, epoch: int, **diag) -> None:
        pass

    def end_round(self, policy, rnd: int, scored) -> None:
        pass

    def finish(self, policy) -> None:
        return None


def restrict_pool(data: FoldData, keep: set[int]) -> FoldData:
    """`data` whose pool holds only the rows of the sources in `keep` (OWN always); source ids stay."""
    keep = set(keep) | {OWN}
    parts = [(cache, rows.cpu().numpy()) for k, (cache, rows) in enumerate(data.x_unl.parts) if k in keep]
    mask = torch.isin(data.pool_source, torch.as_tensor(sorted(keep), device=data.pool_source.device))
    return replace(data, x_unl=FeatureRows(parts, data.standardizer, data.x_unl.device),
                   y_unl_hidden=data.y_unl_hidden[mask], group_speaker=data.group_speaker[mask],
                   pool_source=data.pool_source[mask], source_priors=None)


def held_out_f1(job: FoldJob, seed_of, variants: dict[str, set[int]]) -> tuple[dict[str, float], int]:
    """({variant: pooled held-out macro-F1 (%) on L}, groups scored): B-GRPO trained on L minus one
    speaker group with the pool of each variant's sources, predicting that group."""
    data = job.data
    y = data.y_lab.cpu().numpy()
    groups = speaker_groups(job.table["speaker"].astype(str).to_numpy()[job.split.labeled], GATE_GROUPS)
    pred = {name: np.full(len(y), -1) for name in variants}
    scored = np.zeros(len(y), bool)
    for g in np.unique(groups):
        fit, held = groups != g, groups == g
        counts = np.bincount(y[fit], minlength=data.n_classes)
        if (counts == 0).any():  # a class without labels in the fit part: the LDA teacher cannot be fitted
            continue
        scored |= held
        fit_t = torch.as_tensor(np.flatnonzero(fit), device=data.x_lab.device)
        for name, keep in variants.items():
            sub = replace(restrict_pool(data, keep), x_lab=data.x_lab[fit_t], y_lab=data.y_lab[fit_t],
                          x_val=data.x_val[:0], y_val=data.y_val[:0],
                          prior=torch.as_tensor(counts / counts.sum(), dtype=data.prior.dtype, device=data.prior.device))
            warm, sub_job = warm_up(replace(job, data=sub, choice={}), seed_of, QuietMonitor())
            model = train_method("bgrpo", warm, sub_job, seed_of, QuietMonitor())
            pred[name][held] = model.probs(data.x_lab[torch.as_tensor(np.flatnonzero(held))]).argmax(1).cpu().numpy()
    if not scored.any():
        return {name: float("nan") for name in variants}, 0
    return {name: fast_macro_f1(y[scored], p[scored], data.n_classes) for name, p in pred.items()}, int(
        len(np.unique(groups[scored])))


def gate_sources(job: FoldJob, seed_of, log=lambda line: print(line, file=sys.stderr)) -> FoldJob:
    """Resolve source_gate for one fold x seed: a copy of `job` whose data keeps the sources the gate
    keeps and whose choice["sources"] records, per source, whether it is used and the evidence."""
    cfg, data = job.cfg, job.data
    paths = source_paths(cfg.unlabeled_cache)
    if not paths or data.pool_source is None:
        return job
    n_rows = torch.bincount(data.pool_source, minlength=len(paths) + 1).cpu().tolist()
    records = [{"source": p, "rows": n_rows[k], "used": True, "reason": "source_gate off"}
               for k, p in enumerate(paths, start=1)]
    if cfg.source_gate == "cv" and "bgrpo" in cfg.methods:
        variants = {"without": {OWN}, **{str(k): {OWN, k} for k in range(1, len(paths) + 1)}}
        f1, n_groups = held_out_f1(job, seed_of, variants)
        for k, rec in enumerate(records, start=1):
            gain = f1[str(k)] - f1["without"]
            rec.update(cv_macro_f1_with=f1[str(k)], cv_macro_f1_without=f1["without"], cv_groups=n_groups,
                       used=bool(gain >= GATE_MARGIN),
                       reason=f"speaker-grouped CV of bgrpo on L ({n_groups} groups): {f1[str(k)]:.1f} with, "
                              f"{f1['without']:.1f} without (keep at +{GATE_MARGIN:g})")
            if not rec["used"]:
                log(f"fold {job.split.fold} seed {job.split.seed}: unlabeled_cache {rec['source']} dropped "
                    f"({rec['reason']})")
        data = restrict_pool(data, {k for k, rec in enumerate(records, start=1) if rec["used"]})
    return replace(job, data=data, choice={**job.choice, "sources": records})
