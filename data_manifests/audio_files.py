"""Finding a corpus's audio files and reading their headers (duration, rate, channels) without decoding."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from .home import broken_link
from .schema import ManifestError, ManifestWarning, _listing

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".mp3", ".m4a")


def check_root(root) -> Path:
    """The corpus root as an existing directory, or a ManifestError saying what was given."""
    path = Path(root).expanduser()
    if broken_link(path):
        raise ManifestError(f"corpus root {broken_link(path)}")
    if not path.is_dir():
        what = "is a file, not a folder" if path.exists() else "does not exist"
        raise ManifestError(f"corpus root {path} {what}; pass --root the folder that holds the corpus.")
    return path


def files_under(root: Path):
    """Every file under root, following symlinked folders (a subset made of links to a corpus's
    speaker folders), each real folder once (a link back up the tree cannot loop)."""
    seen = set()
    for folder, subfolders, names in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            subfolders.clear()
            continue
        seen.add(real)
        yield from (Path(folder) / name for name in names)


def audio_files_under(folder: Path) -> list[Path]:
    """Audio files under an existing folder, relative to it and sorted; skips hidden files and macOS
    `__MACOSX`/`._` debris."""
    return sorted(
        path.relative_to(folder) for path in files_under(folder)
        if path.suffix.lower() in AUDIO_SUFFIXES and path.is_file()
        and not any(part.startswith(".") or part == "__MACOSX" for part in path.relative_to(folder).parts))


def find_audio(root, corpus: str = "corpus") -> list[Path]:
    """A corpus's audio files (`audio_files_under` its root), or a ManifestError saying why there are none."""
    root = check_root(root)
    files = audio_files_under(root)
    if not files:
        videos = sum(1 for path in files_under(root) if path.suffix.lower() in VIDEO_SUFFIXES)
        hint = (f"it holds {videos} video/compressed files ({'/'.join(VIDEO_SUFFIXES)}): extract their audio to "
                "16 kHz mono wav with the same stem first, e.g. `ffmpeg -i X.mp4 -ac 1 -ar 16000 X.wav`"
                if videos else "pass --root the folder that holds the corpus")
        raise ManifestError(f"no audio ({'/'.join(AUDIO_SUFFIXES)}) found under {root} for {corpus}; {hint}.")
    return files


def check_unmatched(unmatched: list, fitting: int, corpus: str, scheme: str, root, strict: bool = False) -> None:
    """Files off the corpus's naming scheme: skipped with one warning listing them, so a stray readme
    clip or a duplicate does not block a real corpus; an error when `strict`, or when they are as many
    as the files that fit (then --root or --corpus is probably wrong, and guessing would mislabel)."""
    if not unmatched:
        return
    total = len(unmatched) + fitting
    message = (f"{len(unmatched)} of {total} audio files under {root} do not match the {corpus} scheme "
               f"{scheme}:{_listing(unmatched)}")
    if strict or len(unmatched) >= fitting:
        why = ("--strict" if len(unmatched) < fitting else "no file fits" if not fitting
               else "as many files are off the scheme as on it")
        raise ManifestError(f"{message}\nStopped ({why}): check --root and --corpus, move the files out of the "
                            "corpus root, or use --corpus folders / --corpus csv for a custom layout.")
    warnings.warn(ManifestWarning(f"{message}\nSkipped them (pass --strict to stop instead)."), stacklevel=3)


def read_headers(root, paths: list) -> pd.DataFrame:
    """duration (s), sample_rate, channels per file from the header; unreadable files raise ManifestError."""
    import soundfile as sf  # here, not at the top: the package's readers of caches need no audio library

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
