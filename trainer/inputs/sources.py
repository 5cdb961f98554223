"""External unlabelled sources (`unlabeled_cache=A.h5,B.h5`): other corpora whose audio joins the
pool without labels, each kept apart from the labelled corpus and from the others.

Why: a pool from elsewhere differs in speakers, prompts, channel and class proportions. Mixed in as
if it were the labelled corpus's own rows it moved the standardisation (so even `supervised`
changed) and the pool-wide balanced assignment forced the labelled prior onto the union, so a
foreign corpus's bias bent the in-domain rows' actions too (docs/EXTERNAL.md measures it). Here:
- a source never changes the labelled rows: the standardisation is fitted on the labelled
  corpus's own rows (trainer/inputs/fold_data.py), and a source only adds pool rows;
- per-source centring: each source is speaker-centred on its own speakers (when the run centres),
  prompt-centred on its own prompts (when the run removes prompt means and the source repeats
  them), then shifted so that its mean is the labelled corpus's mean (`centred_source`);
- per-source assignment (trainer/method/source_assignment.py): the Sinkhorn plan is computed
  within each source separately, the own pool towards the labelled prior, an external source
  towards its own prior (`source_prior`: the labelled one, or EM-estimated from the warm-up's
  predictions on that source, label-free);
- test speakers stay out: rows of a source from the labelled corpus itself (a channel-shifted
  copy) whose speaker the run must not see are dropped (`unseen_speaker_rows`);
- the gate (trainer/method/source_gate.py) decides per fold x seed whether a source is used at all:
  another corpus must show on L that it helps, a copy of the labelled corpus that it does not hurt.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from data_manifests.errors import UserError
from trainer.inputs.prompt_norm import MIN_UTTERANCES_PER_PROMPT, PromptCentered, prompt_codes, row_sums_by_group

OWN = 0  # source id of the labelled corpus's own pool rows; external source k (1-based) has id k


def source_paths(setting) -> list[str]:
    """The comma list of `unlabeled_cache` (None or '' = none)."""
    return [p.strip() for p in str(setting or "").split(",") if p.strip()]


def check_source(path: str, attrs: dict, row_shape, train_attrs: dict, train_row_shape,
                 field: str = "unlabeled_cache") -> None:
    """Refuse a source (of the recipe `field`) whose vectors do not live in the training cache's
    space: another encoder, another window (trim / full / padding) or another layer shape."""
    for key, what in (("encoder_id", "encoder"), ("window", "window")):
        if attrs.get(key) != train_attrs.get(key):
            raise UserError(f"{field} {path}: its {what} is {attrs.get(key)!r}, the training cache's "
                            f"{train_attrs.get(key)!r}; its vectors are not comparable (same encoder required): "
                            f"extract that corpus with the same encoder and window (`extract --window "
                            f"{train_attrs.get('window')}`)")
    if tuple(row_shape) != tuple(train_row_shape):
        raise UserError(f"{field} {path} holds features {tuple(row_shape)}, the training cache "
                        f"{tuple(train_row_shape)}: extract it with the same encoder (and use the same layer)")


def mean_row(x, rows: np.ndarray) -> np.ndarray:
    """Float64 mean [D'] of the (centred) rows `rows` of x."""
    sums, counts = row_sums_by_group(x, np.asarray(rows, np.int64), np.zeros(len(rows), np.int64), 1)
    return sums[0] / max(int(counts[0]), 1)


def shifted(x, offset: np.ndarray) -> PromptCentered:
    """x's rows minus one vector (all rows share one 'prompt' whose mean is `offset`)."""
    return PromptCentered(x, np.zeros(len(x), np.int64), offset[None, :], np.array(["source"]), np.array([True]))


def centred_source(x_ext, text_ids, text_norm: bool, target_mean: np.ndarray, rows: np.ndarray):
    """Per-source centring of an external cache's features x_ext (already speaker-centred on its
    own speakers when the run centres): its own prompt means removed when the run removes prompt
    means and the source's prompts repeat (median >= MIN_UTTERANCES_PER_PROMPT), then shifted so
    that its mean equals `target_mean` (the labelled corpus's rows' mean). The means are taken over
    `rows`, the source's rows the run may see: a copy of the labelled corpus never lends its test
    speakers' audio to them, as the corpus's own prompt means never see the test fold."""
    rows = np.asarray(rows, np.int64)
    x_ext = own_prompts_centred(x_ext, text_ids, text_norm, rows)
    return shifted(x_ext, mean_row(x_ext, rows) - target_mean)


def own_prompts_centred(x, text_ids, text_norm: bool, rows: np.ndarray):
    """x with its own prompt means (over `rows`) removed when the run removes prompt means and the
    corpus's prompts repeat (median >= MIN_UTTERANCES_PER_PROMPT); else x itself. Another corpus's
    prompts are its own: its means never come from the training cache's."""
    if text_norm and text_ids is not None:
        _, codes = prompt_codes(text_ids)
        codes = codes[rows]
        counts = np.bincount(codes[codes >= 0]) if (codes >= 0).any() else np.zeros(0)
        if len(counts) and np.median(counts[counts > 0]) >= MIN_UTTERANCES_PER_PROMPT:
            return PromptCentered.fit(x, text_ids, rows)
    return x


def is_copy(table_ext, table) -> bool:
    """Is a source a copy of the labelled corpus: every row one of the corpus's own utterances (same
    corpus id, speaker and utt_id), as `cli.py shift` writes them (another channel or speed)? The gate's
    burden of proof differs for copies. Names decide: an unrelated corpus whose ids all coincide with
    the labelled corpus's would pass for a copy (corpus ids alone would not do: every corpus read by the
    `folders` adapter is called "folders")."""
    names = ["corpus", "speaker", "utt_id"]  # what names an utterance across caches
    ext, own = (pd.MultiIndex.from_frame(t[names].astype(str)) for t in (table_ext, table))
    return bool(len(ext)) and bool(ext.isin(own).all())


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
