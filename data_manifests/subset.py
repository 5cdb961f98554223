"""Trying part of a corpus: keeping some speakers, re-splitting a corpus's standard folds over the
speakers kept, and refusing at `manifest` time a table that `train` could not use (one fold)."""
from __future__ import annotations

import warnings

import pandas as pd

from .folds import speaker_folds
from .schema import ManifestError, ManifestWarning


def keep_speakers(table: pd.DataFrame, speakers: str) -> pd.DataFrame:
    """The rows of the comma-listed speakers (as in the manifest's speaker column); unknown names stop it."""
    wanted = [s.strip() for s in speakers.split(",") if s.strip()]
    present = sorted(table["speaker"].astype(str).unique())
    unknown = [s for s in wanted if s not in present]
    if unknown or not wanted:
        raise ManifestError(f"--speakers: {', '.join(unknown) or 'no speaker given'} not in this corpus; its speakers "
                            f"are {', '.join(present)}.")
    return table[table["speaker"].astype(str).isin(wanted)].reset_index(drop=True)


def refold(table: pd.DataFrame, n_folds: int, corpus: str) -> pd.DataFrame:
    """The corpus's standard folds replaced by `n_folds` speaker-balanced ones (a fold never splits a speaker,
    nor a recording's segments)."""
    if table["fold"].isna().all():
        raise ManifestError(
            f"corpus {corpus!r} has an official train/test split, not folds: it does not take --n-folds."
        )
    if int(n_folds) < 2:
        raise ManifestError(f"{corpus}: --n-folds must be at least 2, got {n_folds}.")
    warnings.warn(ManifestWarning(
        f"{corpus}: --n-folds {n_folds} replaces the corpus's standard folds with speaker-balanced ones: scores are "
        "not comparable with results on the standard folds."), stacklevel=3)
    return table.assign(fold=speaker_folds(table["speaker"], int(n_folds), table.get("recording")))


def check_trainable(table: pd.DataFrame, corpus: str) -> None:
    """A ManifestError saying what to do when `train` could not test on unseen speakers: one fold, no split."""
    folds = sorted(int(f) for f in table["fold"].dropna().unique())
    if len(folds) != 1 or (table["split"].astype(str) == "test").any():
        return
    speakers = sorted(table["speaker"].astype(str).unique())
    raise ManifestError(
        f"{corpus}: these {len(table)} utterances of {len(speakers)} speaker(s) ({', '.join(speakers[:8])}"
        f"{', ...' if len(speakers) > 8 else ''}) all fall in one fold ({folds[0]}), but `train` needs at least 2 "
        "speaker folds (each is the test fold once, unseen in training). Add speakers from another fold "
        f"(e.g. --root the whole corpus with --speakers A,B,...), or pass --n-folds 2 to split these speakers"
        f"{' (needs 2 or more)' if len(speakers) < 2 else ''}.")
