"""Features made by another tool (EmoBox, emotion2vec, s3prl, ...) as a cache: one `.npy` per
utterance beside a manifest, written through the cache writer (so it has a fingerprint and the
trainer reads it like an extracted cache) under an `encoder_id` the user names.

Each file holds one utterance's features:
  [D]            one vector (one hidden state);
  [T, D]         frames (`rows="time"`, the default): mean over T;
  [L, D]         hidden states (`rows="layers"`): kept as they are;
  [L, T, D]      hidden states x frames: mean over T.
Every file must give the same [L, D]; the first file sets it and any other is refused by name.
The file of a manifest row is <folder>/<its path with .npy for the audio suffix> (EmoBox's layout),
else <folder>/<utt_id>.npy.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from data_manifests.errors import UserError
from pipeline.cache import CHUNK_ROWS, CacheMismatch, check_output, identity_of, manifest_rows, write_cache
from pipeline.extract import manifest_sha256

ROW_KINDS = ("time", "layers")
IMPORTED_WINDOW = "imported"  # no audio window: the vectors came from elsewhere (`predict` cannot re-encode)


def npy_file(folder: Path, row) -> Path | None:
    """The .npy of one manifest row, or None when neither place holds it."""
    for candidate in (folder / Path(str(row["path"])).with_suffix(".npy"), folder / f"{row['utt_id']}.npy"):
        if candidate.is_file():
            return candidate
    return None


def pooled_states(array: np.ndarray, rows: str, path: Path) -> np.ndarray:
    """One file's array as [L, D] (time mean-pooled), or a UserError naming the file."""
    if rows not in ROW_KINDS:
        raise UserError(f"rows={rows!r}: choose {' or '.join(ROW_KINDS)} (what the first axis of a 2-D array is)")
    if not np.issubdtype(array.dtype, np.number) or array.size == 0:
        raise UserError(f"{path}: holds {array.dtype} data of shape {array.shape}, not numeric features")
    array = np.asarray(array, dtype=np.float32)
    if array.ndim == 1:
        return array[None]
    if array.ndim == 2:
        return array.mean(0, keepdims=True) if rows == "time" else array
    if array.ndim == 3:
        return array.mean(1)
    raise UserError(f"{path}: shape {array.shape}; a feature file is [D], [T, D], [layers, D] or [layers, T, D]")


def read_states(path: Path, rows: str, shape, first: Path) -> np.ndarray:
    """[L, D] of one file, refused by name when unreadable or when its shape is not `shape` (None: any)."""
    try:
        states = pooled_states(np.load(path, allow_pickle=False), rows, path)
    except ValueError as error:  # not a .npy numpy can read (pickled objects, text, truncated)
        raise UserError(f"{path}: not a readable .npy file ({error})") from error
    if shape is not None and states.shape != shape:
        raise UserError(f"{path}: features of shape {states.shape} (as [layers, D]), but {first} has {shape}: "
                        "every file must come from the same encoder and layers")
    return states


def import_npy(table: pd.DataFrame, folder, out_path, encoder_id: str, rows: str = "time",
               overwrite: bool = False) -> Path:
    """Write the cache of `table`'s rows from their .npy files in `folder` (see the module docstring).

    Refused with a UserError naming the file: a row without a file, a .npy no row names, a file
    whose [L, D] differs from the first, an `out_path` cache made with another encoder_id or
    manifest (unless `overwrite`)."""
    folder, out_path = Path(folder), Path(out_path)
    if not encoder_id or not str(encoder_id).strip():
        raise UserError("name the encoder the features came from (--encoder-id, e.g. emotion2vec-base)")
    if not folder.is_dir():
        raise UserError(f"feature folder {folder} does not exist or is not a folder")
    files = [npy_file(folder, row) for _, row in table.iterrows()]
    missing = [str(r) for r, f in zip(table["utt_id"], files) if f is None]
    if missing:
        raise UserError(f"{len(missing)} manifest row(s) have no .npy in {folder}, e.g. {missing[0]} "
                        f"(looked for <path>.npy and {missing[0]}.npy): give the folder the features were saved to")
    unnamed = sorted(set(folder.rglob("*.npy")) - set(files))
    if unnamed:
        raise UserError(f"{len(unnamed)} .npy file(s) in {folder} belong to no manifest row, e.g. {unnamed[0]}: "
                        "their ids do not match the manifest's; give the manifest the features were made from")
    identity = {"encoder_id": str(encoder_id), "weights_sha256": "", "window": IMPORTED_WINDOW, "sample_rate": 0,
                "manifest_sha256": manifest_sha256(table)}
    check_output(out_path, "cache import")
    if out_path.exists() and not overwrite:
        found = identity_of(out_path)
        if any(str(found.get(k, "")) != str(identity[k]) for k in ("encoder_id", "manifest_sha256")):
            raise CacheMismatch(f"{out_path} holds {found.get('encoder_id')!r} features of another manifest or "
                                f"encoder than {encoder_id!r}: pass another --out, or --overwrite to replace it")
    first = read_states(files[0], rows, None, files[0])

    def blocks():  # CHUNK_ROWS rows per write: one HDF5 chunk per hidden state, written once
        for start in range(0, len(files), CHUNK_ROWS):
            block = [read_states(path, rows, first.shape, files[0]) for path in files[start:start + CHUNK_ROWS]]
            yield np.arange(start, start + len(block)), np.stack(block)

    return write_cache(out_path, manifest_rows(table), identity, first.shape, blocks())
