"""Finding a corpus's audio files and reading their headers (duration, rate, channels) without decoding."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import soundfile as sf
from tqdm import tqdm

from .schema import ManifestError, _listing

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")


def check_root(root) -> Path:
    """The corpus root as an existing directory, or a ManifestError saying what was given."""
    path = Path(root).expanduser()
    if not path.is_dir():
        what = "is a file, not a folder" if path.exists() else "does not exist"
        raise ManifestError(f"corpus root {path} {what}; pass --root the folder that holds the corpus.")
    return path


def find_audio(root, corpus: str = "corpus") -> list[Path]:
    """Audio files under root, relative and sorted; skips hidden files and macOS `__MACOSX`/`._` debris."""
    root = check_root(root)
    files = sorted(
        path.relative_to(root) for path in root.rglob("*")
        if path.suffix.lower() in AUDIO_SUFFIXES and path.is_file()
        and not any(part.startswith(".") or part == "__MACOSX" for part in path.relative_to(root).parts))
    if not files:
        raise ManifestError(
            f"no audio ({'/'.join(AUDIO_SUFFIXES)}) found under {root} for {corpus}; pass --root the folder "
            "that holds the corpus (convert other formats, e.g. mp4/mp3, to wav first).")
    return files


def raise_unmatched(unmatched: list, corpus: str, scheme: str, root) -> None:
    """Stop on files that do not follow the corpus's naming scheme instead of silently guessing labels."""
    if unmatched:
        raise ManifestError(
            f"{len(unmatched)} files under {root} do not match the {corpus} scheme {scheme}:{_listing(unmatched)}\n"
            f"Move them out of the corpus root, or use --corpus folders / --corpus csv for a custom layout.")


def read_headers(root, paths: list) -> pd.DataFrame:
    """duration (s), sample_rate, channels per file from the header; unreadable files raise ManifestError."""
    root = Path(root)
    rows, unreadable = [], []
    for rel in tqdm(paths, desc="reading headers", unit="file", disable=len(paths) < 2000, leave=False):
        try:
            info = sf.info(str(root / rel))
        except (RuntimeError, OSError, sf.LibsndfileError) as error:
            unreadable.append(f"{rel}: {str(error).splitlines()[0] if str(error) else type(error).__name__}")
            rows.append((0.0, 0, 0))
            continue
        rows.append((info.frames / info.samplerate if info.samplerate else 0.0, info.samplerate, info.channels))
    if unreadable:
        raise ManifestError(f"{len(unreadable)} audio files under {root} have unreadable headers:"
                            f"{_listing(unreadable)}\nRe-encode them as wav/flac or remove them.")
    return pd.DataFrame(rows, columns=["duration", "sample_rate", "channels"])
