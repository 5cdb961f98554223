"""The HDF5 embedding cache: one file per (corpus, encoder, window), read by the trainer.

Layout (row i = utterance i, in manifest order; failed rows keep their place, ok=False):
  /embeddings   float16 [N, L+1, D]  mean over real-audio frames of every hidden state
  /num_frames   int32   [N]          encoder frames pooled (0 for failed rows)
  /duration     float32 [N]          seconds
  /fold         int16   [N]          speaker-independent fold, -1 where the corpus has a split
  /ok           bool    [N]          False = skipped; /error says why
  /utt_id /label /speaker /split /corpus /path /gender /language /error   utf-8 strings [N]
  attrs: encoder_id, weights_sha256, window, sample_rate, manifest_sha256, package_version,
         created, num_hidden_states, hidden_size, complete, fingerprint
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

STRING_COLUMNS = ("utt_id", "label", "speaker", "split", "corpus", "path", "gender", "language", "error")
NUMERIC_COLUMNS = {"num_frames": np.int32, "duration": np.float32, "fold": np.int16, "ok": np.bool_}
STR = h5py.string_dtype("utf-8")


@dataclass
class CacheData:
    """What training needs from a cache: pooled vectors of the ok rows and their table."""

    features: np.ndarray  # [N_ok, L, D] float16 (only the requested layers)
    table: pd.DataFrame  # one row per ok utterance, same order as `features`
    attrs: dict
    fingerprint: str
    path: Path


def fingerprint_of(embeddings: np.ndarray, utt_ids, identity: dict) -> str:
    """sha256 over the cache's identity attributes, its utterance ids and its vectors."""
    h = hashlib.sha256()
    for key in sorted(identity):
        h.update(f"{key}={identity[key]}\n".encode())
    h.update("\n".join(map(str, utt_ids)).encode())
    h.update(np.ascontiguousarray(embeddings, dtype=np.float16).tobytes())
    return h.hexdigest()


def write_cache_arrays(path, embeddings: np.ndarray, table: pd.DataFrame, attrs: dict) -> Path:
    """Write a complete cache in one go (synthetic caches, tests, benchmarks, merges).

    `table` needs utt_id, label, speaker; other columns get defaults. Written to a temp
    file and renamed, so a crash never leaves a half-written cache under `path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = len(table)
    embeddings = np.asarray(embeddings, dtype=np.float16)
    if embeddings.ndim != 3 or embeddings.shape[0] != n:
        raise ValueError(f"embeddings must be [N, L, D] with N={n}, got {embeddings.shape}")
    defaults = {"split": "", "corpus": "", "path": "", "gender": "", "language": "", "error": "",
                "num_frames": 0, "duration": 0.0, "fold": -1, "ok": True}
    tmp = path.with_name(path.name + ".tmp")
    with h5py.File(tmp, "w") as f:
        f.create_dataset("embeddings", data=embeddings, chunks=(min(max(n, 1), 256), *embeddings.shape[1:]))
        for col in STRING_COLUMNS:
            values = table[col].fillna("").astype(str) if col in table else [defaults[col]] * n
            f.create_dataset(col, data=np.asarray(list(values), dtype=object), dtype=STR)
        for col, dtype in NUMERIC_COLUMNS.items():
            values = table[col].fillna(defaults[col]) if col in table else [defaults[col]] * n
            f.create_dataset(col, data=np.asarray(values, dtype=dtype))
        identity = dict(attrs)
        identity.update(num_hidden_states=embeddings.shape[1], hidden_size=embeddings.shape[2], complete=True)
        for key, value in identity.items():
            f.attrs[key] = value
        f.attrs["fingerprint"] = fingerprint_of(embeddings, table["utt_id"], attrs)
    os.replace(tmp, path)
    return path


def read_table(f: h5py.File) -> pd.DataFrame:
    """All rows (ok and failed) of an open cache as a DataFrame."""
    cols = {c: f[c].asstr()[...] for c in STRING_COLUMNS if c in f}
    cols.update({c: f[c][...] for c in NUMERIC_COLUMNS if c in f})
    return pd.DataFrame(cols)


def load_cache(path, layers=None) -> CacheData:
    """Read the ok rows of a cache. `layers` (list of hidden-state indices) limits what is read.

    Reads go through h5py's chunked I/O, so only the requested layers are pulled from disk.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"cache {path} does not exist: run `python cli.py extract` first")
    with h5py.File(path, "r") as f:
        if not f.attrs.get("complete", False):
            raise ValueError(f"cache {path} is incomplete: re-run the same `extract` command to finish it")
        table = read_table(f)
        ok = table["ok"].to_numpy(bool)
        idx = np.flatnonzero(ok)
        dset = f["embeddings"]
        if layers is None:
            feats = dset[...][idx] if len(idx) != len(ok) else dset[...]
        else:
            layers = sorted(int(i) for i in layers)
            feats = np.stack([dset[:, i, :] for i in layers], axis=1)[idx]
        attrs = {k: (v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items()}
    return CacheData(features=feats, table=table[ok].reset_index(drop=True), attrs=attrs,
                     fingerprint=str(attrs.get("fingerprint", "")), path=path)
