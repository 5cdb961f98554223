"""Where corpora live by default (the data home) and where a manifest's audio lives (its corpus root).

A manifest's paths are relative to the corpus folder, so the manifest records that folder in a
sidecar `<manifest>.root` (relative to the manifest's own folder when the user gave a relative
--root, so a project can be moved as a whole); `extract --manifest` reads it back.
"""
from __future__ import annotations

import os
from pathlib import Path

from .schema import ManifestError
from .storage import write_text_atomic

DATA_HOME_VARIABLE = "BGRPO_SER_DATA"
DEFAULT_DATA_HOME = "data"


def broken_link(path) -> str:
    """What is wrong with `path` when it is a symlink to nothing (else ''): a relative target is read
    from the link's own folder, not from where `ln -s` ran, the usual way such a link dangles."""
    path = Path(path)
    if not path.is_symlink() or path.exists():
        return ""
    target = os.readlink(path)
    return (f"{path} is a symlink to {target}, which does not exist (seen from {path.parent}/, the link's folder"
            f"{'' if os.path.isabs(target) else ', where a relative target is read from'}). Recreate it with an "
            f"absolute target: ln -sfn \"$(realpath YOUR/CORPUS/FOLDER)\" {path}")


def default_root(corpus: str) -> Path:
    """`$BGRPO_SER_DATA/<corpus>` when that variable is set and the folder exists, else `data/<corpus>`;
    a ManifestError naming both places when neither exists."""
    home = os.environ.get(DATA_HOME_VARIABLE)
    candidates = ([Path(home).expanduser() / corpus] if home else []) + [Path(DEFAULT_DATA_HOME) / corpus]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
        if broken_link(candidate):
            raise ManifestError(f"no --root given, and the data home's {broken_link(candidate)}")
    looked = (f"${DATA_HOME_VARIABLE}/{corpus} ({candidates[0]})" if home
              else f"${DATA_HOME_VARIABLE}/{corpus} (${DATA_HOME_VARIABLE} is not set)")
    raise ManifestError(
        f"no --root given and no {corpus} corpus in the data home: looked for {looked} and "
        f"{DEFAULT_DATA_HOME}/{corpus} (relative to {Path.cwd()}). Pass --root DIR, put (or symlink) the corpus "
        f"at {DEFAULT_DATA_HOME}/{corpus}, or set {DATA_HOME_VARIABLE} to the folder holding your corpora.")


def audio_root(corpus: str, root) -> Path:
    """The folder a manifest's paths are relative to: the corpus folder (for `csv`: the table's folder)."""
    root = Path(root).expanduser()
    return root.parent if corpus == "csv" else root


def root_sidecar(manifest) -> Path:
    return Path(manifest).with_name(Path(manifest).name + ".root")


def write_manifest_root(manifest, root) -> Path:
    """Record the corpus root beside the manifest (relative to the manifest's folder if root is relative)."""
    root = Path(root).expanduser()
    folder = os.path.dirname(os.path.abspath(manifest))
    text = str(root) if root.is_absolute() else os.path.relpath(os.path.abspath(root), folder)
    return write_text_atomic(root_sidecar(manifest), text + "\n")


def manifest_root(manifest) -> Path:
    """The corpus root recorded beside a manifest; without a sidecar (a manifest written by hand or by an
    older version) the manifest's own folder, where such tables usually sit (`extract` checks the files
    are there before encoding and says to pass --root when they are not)."""
    sidecar = root_sidecar(manifest)
    folder = os.path.dirname(os.path.abspath(manifest))
    if not sidecar.is_file():
        return Path(folder)
    return Path(os.path.normpath(os.path.join(folder, sidecar.read_text(encoding="utf-8").strip())))
