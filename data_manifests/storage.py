"""Writing files atomically (every output of the project), and manifests as CSV with dtypes that survive
the round trip."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
from pathlib import Path

import pandas as pd

from .schema import REQUIRED_COLUMNS, ManifestError, validate_manifest


TEMP_SUFFIX = ".tmp"


def temp_path(path) -> Path:
    """A hidden temp name beside `path`, unique across hosts sharing a folder and across calls:
    `.<name>.<host>-<pid>-<random>.tmp` (the pid lets a lock's next holder find a dead one's files)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}{TEMP_SUFFIX}")


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temp path beside `path`; on success it replaces `path` in one rename, on any error
    (or Ctrl-C) it is removed. A crash never leaves a half-written output and a reader sees the old
    file or the new one. The file gets the mode a plain `open` would (0666 minus the umask), so a
    team can share outputs; the project's one way to write a file (or a folder) atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        yield tmp
        if tmp.is_file():
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


def remove_leftovers(folder, pid: int) -> list[Path]:
    """Delete the temp files and folders `atomic_path` left in `folder` for process `pid` of this
    host when that process was killed (kill -9 skips its cleanup); returns what was removed."""
    found = sorted(Path(folder).glob(f".*.{socket.gethostname()}-{pid}-*{TEMP_SUFFIX}"))
    for junk in found:
        shutil.rmtree(junk) if junk.is_dir() else junk.unlink()
    return found


def write_text_atomic(path, text: str) -> Path:
    """Write a text file (UTF-8) through `atomic_path`."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_manifest(df: pd.DataFrame, path) -> Path:
    """Validate and write the CSV atomically, so a crash never leaves a half-written manifest."""
    df = validate_manifest(df, source=str(path))
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, encoding="utf-8")
    return Path(path)


def read_csv_strings(path, error: type[Exception], what: str, if_missing: str, if_unreadable: str = "") -> pd.DataFrame:
    """A user's CSV table as strings (empty cells ''), or `error` naming the file: '<what> <path> does
    not exist<if_missing>' or '<what> <path> is not a readable CSV (why)<if_unreadable>'."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} {path} does not exist{if_missing}")
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as why:
        raise error(f"{what} {path} is not a readable CSV ({why}){if_unreadable}") from why


def read_manifest(path) -> pd.DataFrame:
    """Read a manifest CSV back with the same dtypes and rows as written (validated)."""
    path = Path(path)
    df = read_csv_strings(path, ManifestError, "manifest", "; create it with `python cli.py manifest`.",
                          "; regenerate it.")
    missing = [column for column in REQUIRED_COLUMNS if column not in df.columns]
    if missing:
        raise ManifestError(f"manifest {path} lacks columns {missing}; regenerate it with `python cli.py manifest`.")
    df["duration"] = pd.to_numeric(df["duration"])
    df["duration"] = df["duration"].astype("float64")
    return validate_manifest(df, source=str(path))
