"""A short human-readable summary of a manifest, printed by the CLI after writing it."""
from __future__ import annotations

import pandas as pd


def summarize(df: pd.DataFrame) -> str:
    """Utterances per label, speakers, folds/splits, total hours and sample rates seen."""
    corpus = ", ".join(sorted(df["corpus"].unique()))
    labels = df["label"].value_counts()
    lines = [
        f"corpus: {corpus}",
        f"utterances: {len(df)}",
        f"labels: {len(labels)} ({', '.join(f'{label} {count}' for label, count in labels.sort_index().items())})",
        f"speakers: {df.loc[df['speaker'] != '', 'speaker'].nunique()}",
    ]
    folds = df["fold"].dropna()
    if len(folds):
        per_fold = folds.value_counts().sort_index()
        lines.append(f"folds: {len(per_fold)} ({', '.join(f'{int(fold)}: {count}' for fold, count in per_fold.items())})")
    splits = df.loc[df["split"] != "", "split"].value_counts()
    if len(splits):
        lines.append(f"splits: {', '.join(f'{split} {splits[split]}' for split in ('train', 'valid', 'test') if split in splits)}")
    lines.append(prompt_line(df))
    lines.append(f"total hours: {df['duration'].sum() / 3600:.2f}")
    rates = df["sample_rate"].value_counts().sort_index()
    lines.append(f"sample rates: {', '.join(f'{rate} Hz ({count})' for rate, count in rates.items())}")
    channels = df["channels"].value_counts().sort_index()
    lines.append(f"channels: {', '.join(f'{ch} ({count})' for ch, count in channels.items())}")
    return "\n".join(lines)


def prompt_line(df: pd.DataFrame) -> str:
    """How many prompts (text_id) and utterances per prompt: what text normalisation can work with."""
    ids = df["text_id"] if "text_id" in df else pd.Series("", index=df.index)
    known = ids[ids != ""]
    if known.empty:
        return "prompts: none known (no text_id)"
    per = known.value_counts()
    return (f"prompts: {len(per)} ({len(known)} of {len(df)} utterances with a text_id; utterances per prompt "
            f"min {per.min()}, median {per.median():g}, max {per.max()})")
