"""Features from any encoder into a cache: a folder of per-utterance .npy files (EmoBox's layout,
one array per utterance named `<utt_id>.npy`) plus a table of the utterances -> the HDF5 cache that
`train`, `ablate` and `label` read (pipeline/cache.py), with a fingerprint and the `encoder_id` the
user names (`cli.py cache-import`).

An array is [D] (one pooled vector), [T, D] (frames: mean-pooled here, as `extract` pools) or
[layers, D] (one pooled vector per hidden state; `first_axis="layers"`). Every file must give the
same [layers, D]; the first that does not is named and refused.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from data_manifests.errors import UserError
from data_manifests.folds import speaker_folds
from data_manifests.storage import read_csv_strings
from pipeline.cache import check_output, write_cache

REQUIRED = ("utt_id", "label", "speaker")
FIRST_AXES = ("frames", "layers")
BLOCK_ROWS = 256  # files per block written: memory = one block of vectors


class FeatureImportError(UserError):
    """A feature folder or its table that cannot become a cache; the message names the file."""


def read_utterances(manifest) -> pd.DataFrame:
    """The table of the utterances to import: a CSV (a `manifest` CSV, or any CSV) with at least
    utt_id, label, speaker; fold / split / text_id / gender / language / corpus / path / duration
    are kept where present. Without fold and split, speaker folds are made (5, data_manifests/folds.py)."""
    table = read_csv_strings(manifest, FeatureImportError, "table", f": give a CSV with columns {', '.join(REQUIRED)}")
    missing = [c for c in REQUIRED if c not in table]
    if missing:
        raise FeatureImportError(
            f"table {manifest} lacks column(s) {', '.join(missing)} (it needs {', '.join(REQUIRED)})"
        )
    dup = table["utt_id"][table["utt_id"].duplicated()]
    if len(dup):
        raise FeatureImportError(
            f"table {manifest}: utt_id {dup.iloc[0]!r} appears more than once ({len(dup)} repeats)"
        )
    has_fold = "fold" in table and (table["fold"] != "").all()
    table["fold"] = pd.to_numeric(table["fold"]) if has_fold else -1
    if not has_fold and not ("split" in table and (table["split"] == "test").any()):
        table["fold"] = speaker_folds(table["speaker"]).astype(int)
    if "duration" in table:
        table["duration"] = pd.to_numeric(table["duration"].replace("", "0"))
    return table


def pooled_vectors(array: np.ndarray, first_axis: str) -> np.ndarray:
    """The [layers, D] vectors of one file's array (see the module docstring)."""
    if array.ndim == 1:
        return array[None, :]
    if array.ndim == 2 and first_axis == "frames":
        return array.mean(0, dtype=np.float64)[None, :]
    if array.ndim == 2:
        return array
    raise ValueError(f"an array of shape {array.shape}: expected [D], [T, D] or [layers, D]")


def load_vectors(path: Path, first_axis: str) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
        return pooled_vectors(np.asarray(array, dtype=np.float32), first_axis)
    except (OSError, ValueError) as error:
        raise FeatureImportError(f"{path}: not a readable feature array ({error}); save one [D], [T, D] or "
                           "[layers, D] numeric array per utterance with numpy.save") from error


def import_npy(folder, manifest, out, encoder_id: str, first_axis: str = "frames", weights_sha256: str = "",
               overwrite: bool = False) -> Path:
    """Write the cache `out` from `folder`/<utt_id>.npy for every utterance of `manifest`.

    Refused (UserError naming the file): an existing `out` unless `overwrite` (a cache trained on
    is never replaced by a slip of --out), a table utterance without its .npy, a .npy the table does
    not name, an array of another shape than the first one's, a non-numeric file."""
    if Path(out).exists() and not overwrite:
        raise FeatureImportError(f"{out} already exists: pass another --out, or --overwrite (overwrite=True) "
                                 "to replace it")
    if not encoder_id:
        raise FeatureImportError("name the encoder that made the features (--encoder-id, e.g. emotion2vec_base): "
                           "caches of different encoders never mix")
    if first_axis not in FIRST_AXES:
        raise FeatureImportError(f"--first-axis {first_axis!r}: choose {' or '.join(FIRST_AXES)}")
    folder = Path(folder)
    if not folder.is_dir():
        raise FeatureImportError(f"feature folder {folder} does not exist or is not a folder")
    table = read_utterances(manifest)
    files = [folder / f"{u}.npy" for u in table["utt_id"]]
    absent = [f for f in files if not f.is_file()]
    if absent:
        raise FeatureImportError(f"{len(absent)} utterance(s) of {manifest} have no feature file, e.g. {absent[0]}: "
                           "save one <utt_id>.npy per utterance, or drop those rows from the table")
    extra = sorted(set(p.name for p in folder.glob("*.npy")) - set(f.name for f in files))
    if extra:
        raise FeatureImportError(f"{len(extra)} .npy file(s) in {folder} are not utterances of {manifest}, e.g. "
                           f"{folder / extra[0]}: add them to the table or move them out of the folder")
    shape = load_vectors(files[0], first_axis).shape
    digest = hashlib.sha256(f"{encoder_id}\n{first_axis}\n".encode())
    digest.update(table[[c for c in table if c != "path"]].astype(str).to_csv(index=False).encode())

    def blocks():
        for start in range(0, len(files), BLOCK_ROWS):
            vecs = []
            for i in range(start, min(start + BLOCK_ROWS, len(files))):
                v = load_vectors(files[i], first_axis)
                if v.shape != shape:
                    raise FeatureImportError(
                        f"{files[i]}: pooled to {list(v.shape)}, but {files[0]} gives {list(shape)} "
                        "([layers, D]): every utterance needs features of the same encoder and layers"
                    )
                vecs.append(v)
            yield np.arange(start, start + len(vecs)), np.stack(vecs)

    check_output(out, "cache-import")
    table = table.assign(ok=True, corpus=table.get("corpus", encoder_id), row=np.arange(len(table)))
    attrs = {"encoder_id": encoder_id, "weights_sha256": weights_sha256, "window": "imported", "sample_rate": 0,
             "manifest_sha256": digest.hexdigest(), "first_axis": first_axis}
    return write_cache(out, table, attrs, shape, blocks())
