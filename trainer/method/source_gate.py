"""The source gate (`source_gate=cv`, trainer/inputs/sources.py): per fold x seed, is an external
unlabelled source used at all?

Evidence: the labelled subset L only. Its speakers are dealt into up to GATE_GROUPS groups; for
each group, the warm-up and B-GRPO are trained on the other groups' labels with the pool without
any external source, and with each source added; the held group's labelled rows are predicted.
On the same held-out rows, b = rows right with the source and wrong without, c = the reverse, and
a one-sided exact McNemar test on these discordant rows decides, with the burden of proof set by
where the source comes from:
- another corpus must show it helps: kept when p = P(Binomial(b + c, 1/2) >= b) is below GATE_ALPHA;
- a copy of the labelled corpus (every row one of its own utterances through another channel or
  speed: `cli.py shift`; trainer/inputs/sources.is_copy) is kept unless it is shown to hurt: dropped
  when P(Binomial(b + c, 1/2) >= c) is below GATE_ALPHA.
A source that is dropped gets a one-line message, never silently mixed in. The pool's hidden labels
and the test fold never enter.

Why a paired test and not a macro-F1 margin: on ~100 held-out rows a 1-point macro-F1 gain is within
the noise of one fit, and the margin rule (+1 point) kept TESS with RAVDESS in runs where it then lost
(docs/EXTERNAL.md, "How the defaults were chosen"); the paired test uses the row-level agreement of the
two models, so the same gain on rows where both otherwise agree counts for more than a reshuffle.
Why the burden differs: with 10% labels the models with and without a source disagree on ~10 of
~120 held-out rows, so no test on L can show a gain of one point (docs/EXTERNAL.md); a foreign
corpus, whose speakers, prompts, channel and classes all differ, is dropped unless its gain is
large, while a copy has the corpus's own speakers, prompts and classes (its channel or speed alone
differs, and per-source centring removes the shift of its mean) and is kept unless it visibly
hurts. GATE_ALPHA = 0.05 is the conventional level, not tuned; both rules were chosen on inner
validation, numbers in docs/EXTERNAL.md.
"""
from __future__ import annotations

import sys
from dataclasses import replace

import numpy as np
import torch
from scipy.stats import binomtest

from trainer.inputs.auto_choices import speaker_groups
from trainer.inputs.fold_data import FoldData
from trainer.inputs.fold_jobs import FoldJob, table_cache
from trainer.inputs.sources import OWN, is_copy, source_paths
from trainer.method.methods import train_method, warm_up
from trainer.metrics import fast_macro_f1

GATE_GROUPS = 3
GATE_ALPHA = 0.05  # the level of the one-sided paired tests on held-out L (a gain: another corpus; a loss: a copy)


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
    return data.with_pool(torch.isin(data.pool_source, torch.as_tensor(sorted(keep), device=data.pool_source.device)))


def paired_gain_p(correct_with: np.ndarray, correct_without: np.ndarray) -> tuple[float, int, int]:
    """(p, b, c): one-sided exact McNemar test that the model with a source is right more often than the
    one without, on the same rows. b = rows right with and wrong without, c = the reverse; p = P(X >= b),
    X ~ Binomial(b + c, 1/2) (1.0 when the models never disagree)."""
    correct_with, correct_without = np.asarray(correct_with, bool), np.asarray(correct_without, bool)
    b = int(np.sum(correct_with & ~correct_without))
    c = int(np.sum(~correct_with & correct_without))
    p = 1.0 if b + c == 0 else float(binomtest(b, b + c, 0.5, alternative="greater").pvalue)
    return p, b, c


def held_out_predictions(job: FoldJob, seed_of, variants: dict[str, set[int]]) -> tuple[np.ndarray, dict, int]:
    """(labels, {variant: predictions}, groups scored) on the scored rows of L: B-GRPO trained on L minus
    one speaker group with the pool of each variant's sources, predicting that group."""
    data = job.data
    y = data.y_lab.cpu().numpy()
    groups = speaker_groups(job.labelled_speakers(), GATE_GROUPS)  # with source_corpora: their speakers too
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
            sub = replace(
                restrict_pool(data, keep),
                x_lab=data.x_lab[fit_t],
                y_lab=data.y_lab[fit_t],
                x_val=data.x_val[:0],
                y_val=data.y_val[:0],
                prior=torch.as_tensor(counts / counts.sum(), dtype=data.prior.dtype, device=data.prior.device),
            )
            warm, sub_job = warm_up(replace(job, data=sub, choice={}), seed_of, QuietMonitor())
            model = train_method("bgrpo", warm, sub_job, seed_of, QuietMonitor())
            pred[name][held] = model.probs(data.x_lab[torch.as_tensor(np.flatnonzero(held))]).argmax(1).cpu().numpy()
    return y[scored], {name: p[scored] for name, p in pred.items()}, int(len(np.unique(groups[scored])))


def source_evidence(y: np.ndarray, pred_with: np.ndarray, pred_without: np.ndarray, n_classes: int,
                    n_groups: int, copy: bool = False) -> dict:
    """The gate's record for one source from the held-out predictions with and without it: another
    corpus is kept when the paired test shows a gain, a copy of the labelled corpus unless it shows
    a loss."""
    burden = "a copy of the labelled corpus: kept unless shown to hurt" if copy else \
        "another corpus: kept only if shown to help"
    if not len(y):
        return {"used": copy, "copy": copy, "cv_groups": 0,
                "reason": f"no speaker group of L could be held out ({burden})"}
    p, b, c = paired_gain_p(pred_with == y, pred_without == y)
    p_loss = paired_gain_p(pred_without == y, pred_with == y)[0]
    used = p_loss >= GATE_ALPHA if copy else p < GATE_ALPHA
    f1_with, f1_without = fast_macro_f1(y, pred_with, n_classes), fast_macro_f1(y, pred_without, n_classes)
    test = (f"one-sided paired p of a loss {p_loss:.3f} (drop at p < {GATE_ALPHA:g})" if copy
            else f"one-sided paired p {p:.3f} (keep at p < {GATE_ALPHA:g})")
    return {"used": bool(used), "copy": copy, "cv_macro_f1_with": f1_with,
            "cv_macro_f1_without": f1_without, "cv_groups": n_groups, "cv_rows": int(len(y)), "gate_p": p,
            "gate_p_loss": p_loss, "right_only_with": b, "right_only_without": c,
            "reason": f"{burden}; speaker-grouped CV of bgrpo on L ({n_groups} groups, {len(y)} rows): macro-F1 "
                      f"{f1_with:.1f} with, {f1_without:.1f} without; right only with it {b}, only without {c}, {test}"}


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
        y, pred, n_groups = held_out_predictions(job, seed_of, variants)
        for k, rec in enumerate(records, start=1):
            copy = is_copy(table_cache(rec["source"]).table, job.table)
            rec.update(source_evidence(y, pred[str(k)], pred["without"], data.n_classes, n_groups, copy))
            if not rec["used"]:
                log(f"fold {job.split.fold} seed {job.split.seed}: unlabeled_cache {rec['source']} dropped "
                    f"({rec['reason']})")
        data = restrict_pool(data, {k for k, rec in enumerate(records, start=1) if rec["used"]})
    return replace(job, data=data, choice={**job.choice, "sources": records})
