"""Turning an adapter's parsed rows into a validated manifest: labels mapped, folds made, headers read."""
from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Callable

import pandas as pd

from .audio_files import check_unmatched, find_audio, read_headers
from .folds import speaker_folds
from .schema import (
    ManifestError,
    ManifestWarning,
    _listing,
    canonical_label,
    listed_error,
    parse_label_map,
    validate_manifest,
)


def parse_files(root, corpus: str, pattern: re.Pattern, scheme: str,
                parse: Callable[[Path, re.Match], dict | None | bool], on_path: bool = False,
                strict: bool = False) -> pd.DataFrame:
    """Rows for corpora whose labels are coded in file names: `pattern` is searched in each audio file's
    stem (or its relative path when on_path) and `parse` turns the match into a row (None = skip the
    file, False = it does not fit the scheme after all). Files that do not fit are never guessed at:
    they are skipped with one warning, or stop the run (see `check_unmatched`)."""
    rows, unmatched, chosen_out = [], [], 0
    for rel in find_audio(root, corpus):
        match = pattern.search(rel.as_posix() if on_path else rel.stem)
        row = False if match is None else parse(rel, match)
        if row is False:
            unmatched.append(rel.as_posix())
        elif row is None:
            chosen_out += 1
        else:
            rows.append({"path": rel.as_posix(), **row})
    check_unmatched(unmatched, len(rows) + chosen_out, corpus, scheme, root, strict)
    return pd.DataFrame(rows)


def map_labels(rows: pd.DataFrame, corpus: str, label_map=None) -> pd.Series:
    """Canonical label per row from raw_label; unknown raw labels raise ManifestError naming the files."""
    mapping = parse_label_map(label_map)
    labels = rows["raw_label"].map(lambda raw: canonical_label(raw, mapping))
    unknown = rows[labels.isna()]
    if len(unknown):
        raise listed_error(
            f"{corpus}: {len(unknown)} files with labels not in the vocabulary "
            f"({sorted(unknown['raw_label'].unique())[:10]})",
            [f"{row.path}: {row.raw_label!r}" for row in unknown.itertuples()],
            "Map them with --label-map raw=label (e.g. 'anxious=fearful').")
    return labels


def missing_audio(rows: pd.DataFrame, root, corpus: str, allow_missing: bool) -> pd.DataFrame:
    """Rows whose `path` is not a file under root: an error naming them, or dropped when allow_missing."""
    root = Path(root)
    absent = ~rows["path"].map(lambda path: (root / path).is_file())
    if absent.any() and not allow_missing:
        raise ManifestError(
            f"{corpus}: {int(absent.sum())} annotated utterances have no audio under {root}:"
            f"{_listing(rows.loc[absent, 'path'])}\nRestore the files, or pass --allow-missing to drop them.")
    return rows[~absent]


def build_manifest(rows: pd.DataFrame, root, corpus: str, language: str | None = None,
                   label_map=None, n_folds: int | None = None) -> pd.DataFrame:
    """Map labels (unless given), add speaker folds (when n_folds), read headers, fill defaults, validate."""
    if rows.empty:
        raise ManifestError(f"{corpus}: no utterances selected under {root}; check --root and the options.")
    rows = rows.reset_index(drop=True)
    if "label" not in rows.columns:
        rows["label"] = map_labels(rows, corpus, label_map)
    if language is not None:
        rows["language"] = language
    if n_folds is not None:
        if int(n_folds) < 2:
            raise ManifestError(f"{corpus}: --n-folds must be at least 2, got {n_folds}.")
        speakers = rows["speaker"].nunique()
        if speakers < int(n_folds):
            warnings.warn(ManifestWarning(
                f"{corpus}: {speakers} speakers, so {speakers} leave-one-speaker-out folds instead of the "
                f"{n_folds} asked for (--n-folds); a fold never splits a speaker."), stacklevel=3)
        rows["fold"] = speaker_folds(rows["speaker"], int(n_folds))
    headers = read_headers(root, rows["path"].tolist())
    df = pd.concat([rows.drop(columns=[c for c in headers.columns if c in rows.columns]), headers], axis=1)
    df["corpus"] = corpus
    for column, default in (("gender", ""), ("split", ""), ("fold", pd.NA), ("speaker", ""), ("language", "")):
        if column not in df.columns:
            df[column] = default
    return validate_manifest(df, source=corpus)
