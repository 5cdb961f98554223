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
        lines.append(
            f"folds: {len(per_fold)} ({', '.join(f'{int(fold)}: {count}' for fold, count in per_fold.items())})"
        )
    splits = df.loc[df["split"] != "", "split"].value_counts()
    if len(splits):
        lines.append(
            "splits: " + ", ".join(f"{name} {splits[name]}" for name in ("train", "valid", "test") if name in splits)
        )
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


def manifest_changes(before: pd.DataFrame, after: pd.DataFrame, columns) -> str:
    """In words, how the table `after` differs from `before` in `columns` (matched by utt_id): utterances
    gone and new, then per column how many of the shared ones changed, each with one example."""
    old, new = (t.astype({c: str for c in columns if c in t}).set_index("utt_id") for t in (before, after))
    changes = [f"{len(ids)} utterance(s) {what} (e.g. {ids[0]})"
               for ids, what in ((old.index.difference(new.index), "gone"), (new.index.difference(old.index), "new"))
               if len(ids)]
    shared = old.index.intersection(new.index)
    for column in (c for c in columns if c != "utt_id" and c in old and c in new):
        differs = old.loc[shared, column] != new.loc[shared, column]
        if differs.any():
            utt = differs.idxmax()
            changes.append(f"{column} changed for {int(differs.sum())} (e.g. {utt}: {old.at[utt, column]!r} -> "
                           f"{new.at[utt, column]!r})")
    if not changes and list(old.index) != list(new.index):
        changes.append("the same utterances in another order")
    return "; ".join(changes) or "no difference in " + ", ".join(columns)
