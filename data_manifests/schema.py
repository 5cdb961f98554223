"""The manifest contract every adapter fills: column names, dtypes, the label vocabulary and validation.

One table shape for every corpus lets the extraction and training stages ignore where the audio came
from. Validation runs on every adapter's output so a bad corpus fails here, with the files named, and
not hours later in training.
"""
from __future__ import annotations

import re

import pandas as pd

from data_manifests.errors import UserError

CANONICAL_LABELS: tuple[str, ...] = (
    "neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised",
    "boredom", "contempt", "excited", "frustrated", "other",
)

MANIFEST_COLUMNS: tuple[str, ...] = (
    "utt_id", "path", "speaker", "gender", "language", "label", "raw_label",
    "fold", "split", "duration", "corpus", "sample_rate", "channels", "text_id",
)
# Columns a manifest may lack (older manifests, corpora without the information): filled with "".
# text_id: what was said, the same id wherever the same prompt (sentence, word) is spoken; empty
# where unknown (natural speech, where no prompt repeats). The trainer's text_norm reads it.
OPTIONAL_COLUMNS: tuple[str, ...] = ("text_id",)
# Segments of a longer recording (`cli.py segment`): the span [start, end) in seconds of the source
# file `path`, and the recording it belongs to (a fold keeps a recording whole). Present together or
# not at all, and never added to a manifest of clips; `channel` (the source channel read, for
# `segment --channels split`) is optional among them. The label of a segment may be "" (unlabelled).
SEGMENT_COLUMNS: tuple[str, ...] = ("recording", "start", "end")
CHANNEL_COLUMN = "channel"
UNLABELLED = ""
REQUIRED_COLUMNS = tuple(column for column in MANIFEST_COLUMNS if column not in OPTIONAL_COLUMNS)

TEXT_COLUMNS = ("utt_id", "path", "speaker", "gender", "language", "label", "raw_label", "split", "corpus", "text_id")
SPLITS = ("train", "valid", "test")

# Common spellings of the canonical labels across corpora and user folder names (lower case).
LABEL_SYNONYMS: dict[str, str] = {
    **{label: label for label in CANONICAL_LABELS},
    "neu": "neutral", "neutrality": "neutral", "normal": "neutral",
    "calmness": "calm",
    "happiness": "happy", "hap": "happy", "joy": "happy", "joyful": "happy",
    "sadness": "sad", "sadd": "sad",
    "anger": "angry", "ang": "angry", "mad": "angry",
    "fear": "fearful", "fea": "fearful", "afraid": "fearful", "scared": "fearful",
    "disgusted": "disgust", "dis": "disgust",
    "surprise": "surprised", "sur": "surprised", "ps": "surprised",
    "pleasant_surprise": "surprised", "pleasant_surprised": "surprised",
    "bored": "boredom", "boring": "boredom",
    "contemptuous": "contempt",
    "excitement": "excited", "exc": "excited",
    "frustration": "frustrated", "fru": "frustrated",
    "oth": "other", "others": "other",
}


class ManifestError(UserError):
    """A corpus or manifest problem the user can fix; the message names the files and what to do."""


class ManifestWarning(UserWarning):
    """Something the user should know about a manifest that still got made (files skipped, fewer folds)."""


def _key(raw: str) -> str:
    return re.sub(r"[\s\-]+", "_", str(raw).strip().lower())


def parse_label_map(text: str | dict[str, str] | None) -> dict[str, str]:
    """`a=b,c=d` (or a dict) -> {normalised raw: canonical}; targets must be canonical labels."""
    if not text:
        return {}
    pairs = text.items() if isinstance(text, dict) else (
        item.split("=", 1) if "=" in item else (item, "") for item in str(text).split(",") if item.strip())
    mapping = {}
    for raw, target in pairs:
        target_key = _key(target)
        canonical = LABEL_SYNONYMS.get(target_key)
        if not raw.strip() or canonical is None:
            raise ManifestError(
                f"label map entry {raw!r}={target!r} is not of the form raw=label with label one of "
                f"{', '.join(CANONICAL_LABELS)}; fix --label-map (e.g. 'anxious=fearful,joy=happy').")
        mapping[_key(raw)] = canonical
    return mapping


def canonical_label(raw: str, label_map: dict[str, str] | None = None) -> str | None:
    """Map a corpus or folder label onto the vocabulary (user map first, then synonyms); None if unknown."""
    key = _key(raw)
    if label_map and key in label_map:
        return label_map[key]
    return LABEL_SYNONYMS.get(key)


def _listing(items, limit: int = 10) -> str:
    items = list(items)
    shown = "\n  ".join(str(item) for item in items[:limit])
    more = f"\n  ... and {len(items) - limit} more" if len(items) > limit else ""
    return f"\n  {shown}{more}"


def listed_error(problem: str, items, remedy: str) -> ManifestError:
    """'problem:' + the first offending items (one per line, with the count of the rest) + what to do."""
    return ManifestError(f"{problem}:{_listing(items)}\n{remedy}")


def coerce_dtypes(df: pd.DataFrame) -> pd.DataFrame:
    """Core columns in their fixed dtypes (text without NaN, fold Int64), core columns first."""
    df = df.copy()
    for column in OPTIONAL_COLUMNS:
        if column not in df.columns:
            df[column] = ""
    for column in TEXT_COLUMNS:
        df[column] = df[column].fillna("").astype(str)
    df["fold"] = pd.to_numeric(df["fold"].replace("", pd.NA)).astype("Int64")
    df["duration"] = df["duration"].astype("float64")
    df["sample_rate"] = df["sample_rate"].astype("int64")
    df["channels"] = df["channels"].astype("int64")
    if "recording" in df.columns:
        df["recording"] = df["recording"].fillna("").astype(str)
    for column in ("start", "end"):
        if column in df.columns:
            df[column] = pd.to_numeric(df[column], errors="coerce").astype("float64")
    if CHANNEL_COLUMN in df.columns:
        df[CHANNEL_COLUMN] = pd.to_numeric(df[CHANNEL_COLUMN], errors="coerce").astype("Int64")
    typed = (*MANIFEST_COLUMNS, *SEGMENT_COLUMNS, CHANNEL_COLUMN)
    extras = [column for column in df.columns if column not in MANIFEST_COLUMNS]
    for column in extras:
        if column not in typed:
            df[column] = df[column].fillna("").astype(str)
    return df[list(MANIFEST_COLUMNS) + extras].reset_index(drop=True)


def check_segments(df: pd.DataFrame, source: str) -> None:
    """Segment columns all present or all absent, each span 0 <= start < end with a recording id."""
    present = [column for column in SEGMENT_COLUMNS if column in df.columns]
    if not present:
        return
    if len(present) != len(SEGMENT_COLUMNS):
        missing = [column for column in SEGMENT_COLUMNS if column not in present]
        raise ManifestError(f"{source}: segment columns {present} without {missing}; a segment row needs "
                            f"{list(SEGMENT_COLUMNS)} (re-run `python cli.py segment`).")
    bad = df[~((df["start"] >= 0) & (df["end"] > df["start"])) | (df["recording"] == "")]
    if len(bad):
        raise listed_error(f"{source}: {len(bad)} segments without a recording or with start/end not 0 <= start < end",
                           [f"{row.utt_id}: {row.path} [{row.start}, {row.end}]" for row in bad.itertuples()],
                           "Fix the start/end columns (seconds in the source file) or re-run `python cli.py segment`.")


def validate_manifest(df: pd.DataFrame, source: str = "manifest") -> pd.DataFrame:
    """Check the contract and return the table with canonical dtypes; raise ManifestError otherwise."""
    missing = [column for column in REQUIRED_COLUMNS if column not in df.columns]
    if missing:
        raise ManifestError(f"{source}: missing columns {missing}; a manifest needs {list(REQUIRED_COLUMNS)}.")
    if df.empty:
        raise ManifestError(f"{source}: no utterances; check --root and the corpus layout.")
    df = coerce_dtypes(df)

    empty_ids = df.index[df["utt_id"] == ""]
    if len(empty_ids):
        raise ManifestError(
            f"{source}: {len(empty_ids)} rows without utt_id (paths:{_listing(df.loc[empty_ids, 'path'])})."
        )
    duplicated = df[df["utt_id"].duplicated(keep=False)].sort_values("utt_id")
    if len(duplicated):
        raise listed_error(
            f"{source}: {duplicated['utt_id'].nunique()} duplicate utt_ids (the same utterance twice, e.g. a "
            "re-pack with the corpus copied into two folders)",
            [f"{row.utt_id}: {row.path}" for row in duplicated.itertuples()],
            "Point --root at one copy or remove the duplicates.")

    check_segments(df, source)
    unknown = df[~df["label"].isin(CANONICAL_LABELS + (UNLABELLED,))]
    if len(unknown):
        raise listed_error(
            f"{source}: {len(unknown)} rows with labels outside the vocabulary ({', '.join(CANONICAL_LABELS)})",
            [f"{row.path}: {row.label!r}" for row in unknown.itertuples()], "Map them with --label-map raw=label.")

    has_fold = df["fold"].notna()
    bad_split = ~df["split"].isin(SPLITS + ("",))
    no_assignment = ~has_fold & ~df["split"].isin(SPLITS)
    if bad_split.any() or no_assignment.any():
        rows = df[bad_split | no_assignment]
        raise listed_error(
            f"{source}: {len(rows)} rows without a fold or a split in {SPLITS}",
            [f"{row.path}: fold={row.fold} split={row.split!r}" for row in rows.itertuples()],
            "Give every row an integer fold or a train/valid/test split.")
    if (df.loc[has_fold, "fold"] < 0).any():
        raise ManifestError(f"{source}: negative fold numbers; folds are 0-based integers.")

    with_speaker = df[has_fold & (df["speaker"] != "")]
    folds_per_speaker = with_speaker.groupby("speaker")["fold"].nunique()
    leaking = folds_per_speaker[folds_per_speaker > 1]
    if len(leaking):
        pairs = [
            f"{speaker}: folds {sorted(with_speaker.loc[with_speaker['speaker'] == speaker, 'fold'].unique().tolist())}"
            for speaker in leaking.index
        ]
        raise listed_error(
            f"{source}: {len(leaking)} speakers appear in more than one fold, so folds are not speaker-independent",
            pairs, "Fix the fold column (or drop it to let folds be made by speaker).")
    if "recording" in df.columns:
        split_recordings = df[has_fold].groupby("recording")["fold"].nunique()
        split_recordings = split_recordings[split_recordings > 1]
        if len(split_recordings):
            raise listed_error(
                f"{source}: {len(split_recordings)} recordings have segments in more than one fold, so a test fold "
                "would hear parts of a recording trained on", split_recordings.index,
                "Fix the fold column (or drop it to let folds be made by speaker and recording).")

    bad_audio = df[(df["duration"] <= 0) | (df["sample_rate"] <= 0) | (df["channels"] <= 0)]
    if len(bad_audio):
        raise listed_error(f"{source}: {len(bad_audio)} files with empty audio or a bad header", bad_audio["path"],
                           "Remove or re-encode them.")
    return df
