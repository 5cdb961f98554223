"""Stress corpora derived from an existing cache (no new audio, no new data files): the conditions
a user's corpus may have that RAVDESS and CASIA do not, for multi-corpus development.

Kinds (`python cli.py stress --kind ...`, same HDF5 format, so `train` runs on them unchanged):
  confounded       each speaker keeps every utterance of two "dominant" emotions (rotating over
                   speakers, so every emotion is dominant for some) and only enough others that
                   the dominant two are >= `share` (default 80%) of what it keeps: like natural
                   corpora where most speakers show one or two emotions.
  unbalanced       a natural-like class prior: `major` (default neutral) 40%, one rare class 4%,
                   the rest equal; as many utterances as the corpus allows at those shares.
  few-per-speaker  every speaker's utterances are dealt into pseudo-speakers of `k` (default 4)
                   utterances, e.g. a crowd-sourced corpus where each contributor gives a few
                   clips; folds stay those of the real speakers, so test speakers stay unseen.
  text-confounded  `confounded` with prompts (text_id) in place of speakers: each prompt keeps its
                   utterances of two dominant emotions and few others (dominant >= `share`), like
                   corpora whose sentences were written for some emotions (needs text_id).
  unique-text      every utterance its own prompt (text_id = utt_id), like natural speech.
The choice of rows is seeded and depends only on the table (labels, speakers, prompts), never on vectors.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from data_manifests.errors import UserError
from pipeline.cache import check_output, load_cache, write_cache_arrays

TEXT_KINDS = ("text-confounded", "unique-text")  # need a cache with prompt ids (text_id)
KINDS = ("confounded", "unbalanced", "few-per-speaker", *TEXT_KINDS)


def confounded_rows(table: pd.DataFrame, share: float = 0.8, seed: int = 0, by: str = "speaker") -> np.ndarray:
    """Row indices: per speaker (or other group: `by`), all rows of its two dominant labels plus
    floor(n_dom (1-share)/share) others spread round-robin over the remaining labels."""
    if not 0.5 <= share < 1:
        raise UserError(f"--share {share}: must be in [0.5, 1)")
    rng = np.random.default_rng(seed)
    classes = sorted(table["label"].astype(str).unique())
    labels, speakers = table["label"].astype(str).to_numpy(), table[by].astype(str).to_numpy()
    keep = []
    for i, spk in enumerate(sorted(set(speakers))):
        dominant = {classes[(2 * i) % len(classes)], classes[(2 * i + 1) % len(classes)]}
        rows = np.flatnonzero(speakers == spk)
        dom = rows[np.isin(labels[rows], list(dominant))]
        n_other = int(np.floor(len(dom) * (1 - share) / share + 1e-9))
        others = [rng.permutation(rows[labels[rows] == c]) for c in classes if c not in dominant]
        depth = max((len(o) for o in others), default=0)
        round_robin = [o[j] for j in range(depth) for o in others if j < len(o)]  # one per label in turn
        picked = np.asarray(round_robin[:n_other], dtype=int)
        keep.append(np.concatenate([dom, picked]))
    return np.sort(np.concatenate(keep))


def unbalanced_rows(table: pd.DataFrame, major: str = "neutral", major_share: float = 0.4,
                    rare: str | None = None, rare_share: float = 0.04, seed: int = 0) -> np.ndarray:
    """Row indices with class shares major_share / rare_share / the rest equal, at the largest size
    the available rows allow; `rare` defaults to the alphabetically last other label."""
    labels = table["label"].astype(str).to_numpy()
    classes = sorted(set(labels))
    if major not in classes:
        raise UserError(f"--major {major!r} is not a label of this cache ({', '.join(classes)})")
    rare = rare or [c for c in classes if c != major][-1]
    if rare not in classes or rare == major or len(classes) < 3:
        raise UserError(f"--rare {rare!r}: a label other than {major!r} (needs >= 3 labels)")
    rest = (1 - major_share - rare_share) / (len(classes) - 2)
    share = {c: major_share if c == major else rare_share if c == rare else rest for c in classes}
    avail = {c: int((labels == c).sum()) for c in classes}
    n_total = min(avail[c] / share[c] for c in classes)
    rng = np.random.default_rng(seed)
    keep = [rng.choice(np.flatnonzero(labels == c), size=max(1, round(share[c] * n_total)), replace=False)
            for c in classes]
    return np.sort(np.concatenate(keep))


def few_per_speaker(table: pd.DataFrame, k: int = 4, seed: int = 0) -> pd.Series:
    """New speaker ids: each speaker's rows (shuffled) dealt into pseudo-speakers of k rows ("spk~j")."""
    if k < 1:
        raise UserError(f"-k {k}: must be >= 1")
    rng = np.random.default_rng(seed)
    speakers = table["speaker"].astype(str).to_numpy()
    out = speakers.astype(object).copy()
    for spk in sorted(set(speakers)):
        rows = rng.permutation(np.flatnonzero(speakers == spk))
        for j, row in enumerate(rows):
            out[row] = f"{spk}~{j // k}"
    return pd.Series(out, index=table.index, name="speaker")


def derive(cache_path, kind: str, out_path, seed: int = 0, **options) -> tuple[Path, pd.DataFrame]:
    """Write the stress corpus `kind` of a cache to out_path (same format); returns (path, table)."""
    if kind not in KINDS:
        raise UserError(f"--kind {kind!r}: choose from {', '.join(KINDS)}")
    check_output(out_path, "stress")
    cache = load_cache(cache_path)
    table = cache.table.copy()
    if kind in TEXT_KINDS and (table.get("text_id", pd.Series([""])) == "").all():
        raise UserError(f"--kind {kind}: {cache_path} has no prompt ids (text_id); re-make its manifest and "
                         "run `extract` with it (the cache gains the column without re-encoding)")
    if kind == "confounded":
        rows = confounded_rows(table, seed=seed, **options)
    elif kind == "text-confounded":
        rows = confounded_rows(table[table["text_id"] != ""], seed=seed, by="text_id", **options)
        rows = np.flatnonzero(table["text_id"] != "")[rows]
    elif kind == "unique-text":
        rows = np.arange(len(table))
        table["text_id"] = table["utt_id"]
    elif kind == "unbalanced":
        rows = unbalanced_rows(table, seed=seed, **options)
    else:
        rows = np.arange(len(table))
        table["speaker"] = few_per_speaker(table, seed=seed, **options)
    sub = table.iloc[rows].reset_index(drop=True)
    sub["row"] = np.arange(len(sub))
    attrs = {k: v for k, v in cache.attrs.items() if k not in ("fingerprint", "complete")}
    attrs.update(derived_from=str(cache_path), derived_from_fingerprint=cache.fingerprint,
                 derivation=f"{kind} seed={seed} {options}")
    return write_cache_arrays(out_path, cache.features[rows], sub, attrs), sub


def describe_stress(table: pd.DataFrame) -> str:
    """One paragraph: size, label shares, utterances per speaker, dominant-two share per speaker."""
    shares = table["label"].value_counts(normalize=True).sort_index()
    per_spk = table.groupby("speaker").size()
    dom = table.groupby("speaker")["label"].apply(lambda s: s.value_counts().iloc[:2].sum() / len(s))
    return (f"{len(table)} utterances, {len(per_spk)} speakers (median {per_spk.median():.0f} utterances each); "
            f"labels: " + ", ".join(f"{c} {100 * v:.1f}%" for c, v in shares.items())
            + f"; top-2 labels per speaker: median {100 * dom.median():.0f}% of its utterances")
