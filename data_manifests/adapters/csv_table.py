"""Bring-your-own table: a CSV with `path,label` and optional `speaker`, `split`, `fold`, `text_id` or
`text` (and `utt_id`, `gender`, `language`; other columns are kept).

The prompt: `text_id` as given; else, with a `text` column (the words said), one id per text after
case, punctuation and spacing are normalised ("Kids are talking!" = "kids are talking").

`root` is the table itself; paths are relative to its folder (absolute paths inside it are made
relative). Folds: the table's `fold` column if given; else its `split` (train/dev|valid|val/test);
else speaker groups from `speaker` (required then, so folds stay speaker-independent).
"""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from ..build import build_manifest, missing_audio
from ..schema import ManifestError, _listing

SPLIT_NAMES = {
    "": "",
    "train": "train",
    "dev": "valid",
    "val": "valid",
    "valid": "valid",
    "validation": "valid",
    "test": "test",
}


def _read_table(path: Path) -> pd.DataFrame:
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise ManifestError(f"csv: {path} {what}; pass --root the CSV table (columns path,label[,speaker,split,fold]).")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise ManifestError(f"csv: {path} is not a readable UTF-8 CSV ({error}).") from error
    table.columns = [column.strip() for column in table.columns]
    missing = [column for column in ("path", "label") if column not in table.columns]
    if missing:
        raise ManifestError(f"csv: {path} lacks column(s) {missing}; it needs path,label and optionally "
                            f"speaker, split, fold (it has {list(table.columns)}).")
    return table.drop(
        columns=[c for c in ("duration", "sample_rate", "channels", "corpus", "raw_label") if c in table.columns]
    )


def _relative(paths: pd.Series, base: Path, table: Path) -> pd.Series:
    def relative(text: str) -> str | None:
        path = Path(text.strip())
        if not path.is_absolute():
            return path.as_posix()
        try:
            return path.resolve().relative_to(base.resolve()).as_posix()
        except ValueError:
            return None
    relative_paths = paths.map(relative)
    outside = paths[relative_paths.isna() | (paths.str.strip() == "")]
    if len(outside):
        raise ManifestError(f"csv: {len(outside)} paths in {table} are empty or outside its folder {base}:"
                            f"{_listing(outside)}\nWrite paths relative to the table's folder.")
    return relative_paths


def normalised_text(text: str) -> str:
    """Lower case, punctuation dropped, runs of spaces as one: spellings of one prompt meet."""
    return " ".join(re.sub(r"[^\w\s]", " ", str(text).lower()).split())


def prepare(root, label_map=None, n_folds: int = 5, allow_missing: bool = False, language: str = "") -> pd.DataFrame:
    table_path = Path(root).expanduser()
    table = _read_table(table_path)
    base = table_path.parent
    rows = table.rename(columns={"label": "raw_label"})
    rows["path"] = _relative(table["path"], base, table_path)
    given_ids = rows["utt_id"].str.strip() if "utt_id" in rows.columns else pd.Series("", index=rows.index)
    rows["utt_id"] = given_ids.where(
        given_ids != "", rows["path"].map(lambda p: Path(p).with_suffix("").as_posix().replace("/", "__"))
    )
    if "text_id" not in rows.columns and "text" in rows.columns:
        rows["text_id"] = rows["text"].map(normalised_text)
    if "language" not in rows.columns or (rows["language"] == "").all():
        rows["language"] = language
    if "split" in rows.columns:
        split = rows["split"].str.strip().str.lower()
        unknown = rows[~split.isin(SPLIT_NAMES)]
        if len(unknown):
            raise ManifestError(
                f"csv: {len(unknown)} rows of {table_path} have a split outside train/dev/valid/val/test:"
                f"{_listing(unknown['path'] + ': ' + unknown['split'])}"
            )
        rows["split"] = split.map(SPLIT_NAMES)
    has_folds = "fold" in rows.columns and (rows["fold"].str.strip() != "").any()
    has_splits = "split" in rows.columns and (rows["split"] != "").all()
    if has_folds:
        fold = pd.to_numeric(rows["fold"].str.strip().replace("", None), errors="coerce")
        bad = rows[fold.isna() | (fold % 1 != 0)]
        if len(bad):
            raise ManifestError(f"csv: {len(bad)} rows of {table_path} have a fold that is not an integer:"
                                f"{_listing(bad['path'] + ': ' + bad['fold'])}")
        rows["fold"] = fold.astype("Int64")
    elif "fold" in rows.columns:
        rows = rows.drop(columns="fold")
    needs_folds = not has_folds and not has_splits
    if needs_folds and ("speaker" not in rows.columns or (rows["speaker"].str.strip() == "").any()):
        raise ManifestError(f"csv: {table_path} has no fold or split column, so folds are made by speaker, but the "
                            "speaker column is missing or has empty cells; add speaker (or fold / split) to every row.")
    rows = missing_audio(rows, base, "csv", allow_missing)
    return build_manifest(rows, base, "csv", label_map=label_map, n_folds=n_folds if needs_folds else None)
