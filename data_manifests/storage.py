"""Writing and reading manifests as CSV, atomically and with dtypes that survive the round trip."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pandas as pd

from .schema import MANIFEST_COLUMNS, ManifestError, validate_manifest


def write_manifest(df: pd.DataFrame, path) -> Path:
    """Validate and write CSV via a temp file + os.replace, so a crash never leaves a half-written manifest."""
    df = validate_manifest(df, source=str(path))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as handle:
            df.to_csv(handle, index=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_manifest(path) -> pd.DataFrame:
    """Read a manifest CSV back with the same dtypes and rows as written (validated)."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest {path} does not exist; create it with `python cli.py manifest`.")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise ManifestError(f"manifest {path} is not a readable CSV ({error}); regenerate it.") from error
    missing = [column for column in MANIFEST_COLUMNS if column not in df.columns]
    if missing:
        raise ManifestError(f"manifest {path} lacks columns {missing}; regenerate it with `python cli.py manifest`.")
    df["duration"] = pd.to_numeric(df["duration"])
    df["duration"] = df["duration"].astype("float64")
    return validate_manifest(df, source=str(path))
