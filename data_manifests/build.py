"""Turning an adapter's parsed rows into a validated manifest (headers read, corpus column set)."""
from __future__ import annotations

import pandas as pd

from .audio_files import read_headers
from .schema import ManifestError, _listing, canonical_label, validate_manifest


def map_labels(rows: pd.DataFrame, corpus: str, label_map: dict | None = None) -> pd.Series:
    """Canonical label per row from raw_label; unknown raw labels raise ManifestError naming the files."""
    labels = rows["raw_label"].map(lambda raw: canonical_label(raw, label_map))
    unknown = rows[labels.isna()]
    if len(unknown):
        pairs = [f"{row.path}: {row.raw_label!r}" for row in unknown.itertuples()]
        raise ManifestError(
            f"{corpus}: {len(unknown)} files with labels not in the vocabulary "
            f"({sorted(unknown['raw_label'].unique())[:10]}):{_listing(pairs)}\n"
            "Map them with --label-map raw=label (e.g. 'anxious=fearful').")
    return labels


def build_manifest(rows: pd.DataFrame, root, corpus: str) -> pd.DataFrame:
    """Add duration/sample_rate/channels from the headers, fill defaults, validate."""
    rows = rows.reset_index(drop=True)
    headers = read_headers(root, rows["path"].tolist())
    df = pd.concat([rows.drop(columns=[c for c in headers.columns if c in rows.columns]), headers], axis=1)
    df["corpus"] = corpus
    for column, default in (("gender", ""), ("split", ""), ("fold", pd.NA), ("speaker", "")):
        if column not in df.columns:
            df[column] = default
    df["path"] = df["path"].map(lambda path: str(path).replace("\\", "/"))
    return validate_manifest(df, source=corpus)

