"""data_manifests: corpus adapters that turn a corpus in its native layout into a manifest table.

`prepare("ravdess", root)` -> validated DataFrame with MANIFEST_COLUMNS (paths relative to root,
speaker-independent 0-based `fold`, or `split` where the corpus has an official one);
`write_manifest` / `read_manifest` store it as CSV (with `write_manifest_root` / `manifest_root`: the
corpus folder its paths are relative to); `summarize` describes it; `default_root` is the data home.
"""
from __future__ import annotations

import inspect

import pandas as pd

from .adapters import ADAPTERS
from .home import audio_root, default_root, manifest_root, write_manifest_root
from .schema import CANONICAL_LABELS, MANIFEST_COLUMNS, ManifestError, ManifestWarning
from .storage import read_manifest, write_manifest
from .subset import check_trainable, keep_speakers, refold
from .summary import summarize


def prepare(corpus: str, root, speakers: str | None = None, **options) -> pd.DataFrame:
    """Run the named adapter on root; options not given (None) fall back to the adapter's defaults.

    `speakers` keeps those speakers (a part of the corpus); `n_folds` on a corpus with standard
    folds (RAVDESS, IEMOCAP) re-splits the speakers kept into that many folds."""
    adapter = ADAPTERS.get(corpus)
    if adapter is None:
        raise ManifestError(f"unknown corpus {corpus!r}; choose one of {', '.join(sorted(ADAPTERS))}.")
    accepted = inspect.signature(adapter.prepare).parameters
    options = {name: value for name, value in options.items() if value is not None}
    n_folds = options.pop("n_folds") if "n_folds" in options and "n_folds" not in accepted else None
    unexpected = sorted(set(options) - set(accepted))
    if unexpected:
        def flags(names):
            return ", ".join(f"--{name.replace('_', '-')}" for name in names) or "none"
        allowed = [name for name in accepted if name != "root"]
        raise ManifestError(f"corpus {corpus!r} does not take {flags(unexpected)}; it takes {flags(allowed)}.")
    table = adapter.prepare(root, **options)
    table = keep_speakers(table, speakers) if speakers is not None else table
    return refold(table, n_folds, corpus) if n_folds is not None else table


__all__ = [
    "ADAPTERS",
    "CANONICAL_LABELS",
    "MANIFEST_COLUMNS",
    "ManifestError",
    "ManifestWarning",
    "audio_root",
    "check_trainable",
    "default_root",
    "manifest_root",
    "prepare",
    "read_manifest",
    "summarize",
    "write_manifest",
    "write_manifest_root",
]
