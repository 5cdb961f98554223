"""External unlabelled sources (`unlabeled_cache=A.h5,B.h5`): other corpora whose audio joins the
pool without labels, each kept apart from the labelled corpus and from the others.

Why: a pool from elsewhere differs in speakers, prompts, channel and class proportions. Mixed in as
if it were the labelled corpus's own rows it moved the standardisation (so even `supervised`
changed) and the pool-wide balanced assignment forced the labelled prior onto the union, so a
foreign corpus's bias bent the in-domain rows' actions too (docs/EXTERNAL.md measures it). Here:
- a source never changes the labelled rows: the standardisation is fitted on the labelled
  corpus's own rows (trainer/fold_data.py), and a source only adds pool rows;
- per-source centring: each source is speaker-centred on its own speakers (when the run centres),
  prompt-centred on its own prompts (when the run removes prompt means and the source repeats
  them), then shifted so that its mean is the labelled corpus's mean (`centred_source`);
- per-source assignment: the Sinkhorn plan is computed within each source separately, the own
  pool towards the labelled prior, an external source towards its own prior (`source_prior`:
  the labelled one, or EM-estimated from the warm-up's predictions on that source, label-free);
- test speakers stay out: rows of a source from the labelled corpus itself (a channel-shifted
  copy) whose speaker the run must not see are dropped (`unseen_speaker_rows`);
- the gate (trainer/source_gate.py) decides per fold x seed whether a source is used at all.
"""
from __future__ import annotations

import numpy as np
import torch

from data_manifests.errors import UserError
from trainer.actions import sinkhorn
from trainer.auto_choices import em_prior
from trainer.prompt_norm import MIN_UTTERANCES_PER_PROMPT, PromptCentered, prompt_codes, row_sums_by_group

OWN = 0  # source id of the labelled corpus's own pool rows; external source k (1-based) has id k


def source_paths(setting) -> list[str]:
    """The comma list of `unlabeled_cache` (None or '' = none)."""
    return [p.strip() for p in str(setting or "").split(",") if p.strip()]


def check_source(path: str, attrs: dict, row_shape, train_attrs: dict, train_row_shape) -> None:
    """Refuse a source whose vectors do not live in the labelled cache's space: another encoder,
    another window (trim / full / padding) or another layer shape."""
    for key, what in (("encoder_id", "encoder"), ("window", "window")):
        if attrs.get(key) != train_attrs.get(key):
            raise UserError(f"unlabeled_cache {path}: its {what} is {attrs.get(key)!r}, the training cache's "
                            f"{train_attrs.get(key)!r}; its vectors are not comparable (same encoder required): "
                            f"extract that corpus with the same encoder and window (`extract --window "
                            f"{train_attrs.get('window')}`)")
    if tuple(row_shape) != tuple(train_row_shape):
        raise UserError(f"unlabeled_cache {path} holds features {tuple(row_shape)}, the training cache "
                        f"{tuple(train_row_shape)}: extract it with the same encoder (and use the same layer)")


def mean_row(x, rows: np.ndarray) -> np.ndarray:
    """Float64 mean [D'] of the (centred) rows `rows` of x."""
    sums, counts = row_sums_by_group(x, np.asarray(rows, np.int64), np.zeros(len(rows), np.int64), 1)
    return sums[0] / max(int(counts[0]), 1)


def shifted(x, offset: np.ndarray) -> PromptCentered:
    """x's rows minus one vector (all rows share one 'prompt' whose mean is `offset`)."""
    return PromptCentered(x, np.zeros(len(x), np.int64), offset[None, :], np.array(["source"]), np.array([True]))


def centred_source(x_ext, text_ids, text_norm: bool, target_mean: np.ndarray):
    """Per-source centring of an external cache's features x_ext (already speaker-centred on its
    own speakers when the run centres): its own prompt means removed when the run removes prompt
    means and the source's prompts repeat (median >= MIN_UTTERANCES_PER_PROMPT), then shifted so
    that its mean equals `target_mean` (the labelled corpus's rows' mean)."""
    rows = np.arange(len(x_ext))
    if text_norm and text_ids is not None:
        _, codes = prompt_codes(text_ids)
        counts = np.bincount(codes[codes >= 0]) if (codes >= 0).any() else np.zeros(0)
        if len(counts) and np.median(counts[counts > 0]) >= MIN_UTTERANCES_PER_PROMPT:
            x_ext = PromptCentered.fit(x_ext, text_ids, rows)
    return shifted(x_ext, mean_row(x_ext, rows) - target_mean)


def unseen_speaker_rows(table_ext, corpus: str, speakers_unseen) -> np.ndarray:
    """Boolean mask of a source's rows that come from the labelled corpus (same corpus id) and from a
    speaker the run must not see (the test fold's, the outer fold's in inner validation): a
    channel-shifted copy of the corpus would otherwise put the test speakers' audio in the pool."""
    same = table_ext["corpus"].astype(str).to_numpy() == str(corpus)
    return same & np.isin(table_ext["speaker"].astype(str).to_numpy(), np.asarray(speakers_unseen, dtype=str))


def hidden_labels(table_ext, classes: list[str]) -> np.ndarray:
    """A source's labels as indices of the labelled corpus's classes, -1 where absent: diagnostics
    only (selection precision on the pool's hidden labels), never trained on."""
    lookup = {c: i for i, c in enumerate(classes)}
    return table_ext["label"].astype(str).map(lambda c: lookup.get(c, -1)).to_numpy().astype(np.int64)


def source_priors(mode: str, prior: torch.Tensor, pool_source: torch.Tensor, pool_probs) -> torch.Tensor:
    """[n_sources + 1, C] class prior each source's assignment aims at: row OWN the labelled prior;
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


def selection_by_source(rows: torch.Tensor, selected: torch.Tensor, actions: torch.Tensor, hidden: torch.Tensor,
                        pool_source: torch.Tensor) -> dict:
    """Per external source k: rows selected (`selected_src{k}`) and the share whose action is the
    hidden label (`precision_src{k}`, nan without hidden labels): diagnostics only."""
    src = pool_source[rows]
    out = {}
    for k in range(1, int(pool_source.max()) + 1):
        sel = selected & (src == k)
        known = sel & (hidden >= 0)
        out[f"selected_src{k}"] = int(sel.sum())
        out[f"precision_src{k}"] = float(((actions == hidden) & known).sum() / known.sum()) if known.any() else float("nan")
    return out
