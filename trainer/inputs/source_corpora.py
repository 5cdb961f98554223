"""Labelled source corpora (`source_corpora=A.h5,B.h5`, `train --source`): labels from public
corpora for a cache with none (or few) of its own, the cache being the *target*.

Why this shape (issue 35, docs/CROSS_CORPUS.md):
- the labelled rows are the source corpora's rows of the classes in play; the target's own labels
  enter only as `labeled_fraction` says (0 = none), and its whole training fold is the pool
  whatever its hidden label: the target's audio is unlabelled, nothing may filter it by label;
- the classes in play are named by the user (`classes`) or are the sources' classes the target's
  labels have too; target rows of other classes are neither trained on nor scored;
- each corpus keeps its own speakers, prompts and statistics: centred on its own speakers and
  prompts and z-scored on its own audio (every row of it, whatever the label, as the target's
  statistics come from all of its audio the run sees), so a corpus's channel and speaker mix
  are removed within it, not against another corpus;
- the target's class prior is unknown: uniform, or its labelled subset's when it has labels
  (`pool_prior=em`: estimated label-free from the warm-up, as without sources).
This module holds the label and class logic; trainer/inputs/fold_jobs.py reads the caches.
"""
from __future__ import annotations

import zlib

import numpy as np
import pandas as pd

from data_manifests.errors import UserError
from trainer.inputs.protocol import stratified_pick


def parse_label_map(text: str | None) -> dict[str, str]:
    """'raw=label,raw2=label2' -> {raw: label}; the format of the adapters' --label-map."""
    out = {}
    for pair in [p.strip() for p in str(text or "").split(",") if p.strip()]:
        raw, sep, label = (s.strip() for s in pair.partition("="))
        if not sep or not raw or not label:
            raise UserError(f"label_map {pair!r}: write raw=label pairs, comma separated (e.g. 'joy=happy')")
        out[raw] = label
    return out


def mapped_labels(table: pd.DataFrame, label_map: str | None) -> np.ndarray:
    """A cache's labels as strings, renamed by `label_map` (labels it does not name unchanged)."""
    lookup = parse_label_map(label_map)
    labels = table["label"].astype(str).to_numpy()
    return np.array([lookup.get(c, c) for c in labels], dtype=object) if lookup else labels


def classes_in_play(cfg, target_labels: np.ndarray, source_labels: dict[str, np.ndarray]) -> tuple[list[str], str]:
    """(the classes of the run, sorted; why). Without sources: `classes` or the target's labels.
    With them: `classes` (each must have rows in some source) or the union of the sources' classes
    intersected with the target's (the union when the target has no labels); a UserError when
    nothing is shared."""
    own = sorted({str(c) for c in target_labels if str(c)})
    union = sorted({str(c) for labels in source_labels.values() for c in labels if str(c)})
    if cfg.classes:
        missing = [c for c in cfg.classes if c not in (union if source_labels else own)]
        if missing:
            where = "source corpus" if source_labels else "cache"
            raise UserError(f"classes {', '.join(missing)}: no {where} has rows of them (the "
                            f"{where}s have {', '.join(union if source_labels else own)}); "
                            "name other classes, or map labels with --label-map raw=label")
        return sorted(cfg.classes), "given (classes)"
    if not source_labels:
        return own, "the cache's labels"
    if not own:  # a cache with no labels at all (`label --source` without --labels)
        return union, "the source corpora's classes (the cache has no labels)"
    shared = sorted(set(union) & set(own))
    if not shared:
        raise UserError(f"source corpora {', '.join(source_labels)} have classes {', '.join(union)}, the cache "
                        f"{', '.join(own)}: no class in common; map labels with --label-map raw=label or name them "
                        "with --classes")
    return shared, "the source corpora's classes that the cache's labels have too"


def class_index(labels: np.ndarray, classes: list[str]) -> np.ndarray:
    """Each label's index in `classes`, -1 for labels of classes not in play (int64)."""
    lookup = {c: i for i, c in enumerate(classes)}
    return np.array([lookup.get(str(c), -1) for c in labels], dtype=np.int64)


def source_rows(y: np.ndarray, fraction: float, seed: int, fold: str, path: str) -> np.ndarray:
    """The labelled rows a source lends to one fold x seed: its rows of the classes in play (y >= 0),
    a stratified `fraction` of them (its own seeded stream: the subset depends on seed, fold and
    source, never on which other folds run)."""
    rows = np.flatnonzero(y >= 0)
    if fraction >= 1:
        return rows
    rng = np.random.default_rng([seed, zlib.crc32(str(fold).encode()), zlib.crc32(str(path).encode())])
    return rows[stratified_pick(y[rows], fraction, rng)]


def target_prior(y_target_labelled: np.ndarray, n_classes: int) -> tuple[np.ndarray, str]:
    """(the class prior the balanced actions aim at with sources, why): the target's labelled
    subset's when it has labels of every class, else uniform (the target's prior is unknown; the
    sources' proportions are their designers', not the target's)."""
    counts = np.bincount(y_target_labelled, minlength=n_classes).astype(np.float64)
    if len(y_target_labelled) and (counts > 0).all():
        return counts / counts.sum(), "the target's labelled subset"
    return np.full(n_classes, 1.0 / n_classes), "uniform (the target's class prior is unknown)"


def source_speakers(table: pd.DataFrame, k: int) -> np.ndarray:
    """A source's speaker names, prefixed by its place and corpus id, so that they never collide
    with the target's or another source's."""
    return (f"source{k}:" + table["corpus"].astype(str) + "/" + table["speaker"].astype(str)).to_numpy()
