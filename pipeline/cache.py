"""The HDF5 embedding cache: one file per (corpus, encoder, window), read by the trainer.

Layout (row i = utterance i, in manifest order; failed rows keep their place, ok=False):
  /embeddings   float16 [N, L+1, D]  mean over real-audio frames of every hidden state
  /num_frames   int32   [N]          encoder frames pooled (0 for failed rows)
  /duration     float32 [N]          seconds
  /fold         int16   [N]          speaker-independent fold, -1 where the corpus has a split
  /ok           bool    [N]          False = skipped; /error says why
  /utt_id /label /speaker /split /corpus /path /gender /language /error   utf-8 strings [N]
  /row          int32   [N]          row in the manifest (orders shard part files for `merge`)
  attrs: encoder_id, weights_sha256, window, sample_rate, manifest_sha256, package_version,
         created, num_hidden_states, hidden_size, complete, fingerprint (+ shard,
         num_failed, audio_seconds where `extract` wrote the file)
`fingerprint` = sha256 of the identity attributes (all but the VOLATILE_ATTRS bookkeeping),
the utterance ids and the vectors: equal vectors from equal inputs give equal fingerprints.
"""
from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from data_manifests.storage import atomic_path

STRING_COLUMNS = ("utt_id", "label", "speaker", "split", "corpus", "path", "gender", "language", "error")
NUMERIC_COLUMNS = {"num_frames": np.int32, "duration": np.float32, "fold": np.int16, "ok": np.bool_,
                   "row": np.int32}
# bookkeeping, not identity: two caches with equal vectors from equal inputs share a fingerprint
VOLATILE_ATTRS = ("created", "package_version", "fingerprint", "complete", "shard", "num_failed",
                  "audio_seconds")
CHUNK_ROWS = 256
STR = h5py.string_dtype("utf-8")


class CacheError(ValueError):
    """A file given as a cache that cannot be used as one; the message names it and says what to do."""


def check_cache_file(path) -> Path:
    """`path` as an HDF5 file laid out as a cache, or FileNotFoundError / CacheError saying what it is instead."""
    path = Path(path)
    remedy = "pass a cache .h5 written by `python cli.py extract` (`python cli.py info FILE` describes one)"
    if not path.exists():
        raise FileNotFoundError(f"cache {path} does not exist: run `python cli.py extract` first, or {remedy}")
    if path.is_dir():
        found = sorted(p.name for p in path.glob("*.h5"))
        raise CacheError(f"cache {path} is a folder, not a file ({'it holds ' + ', '.join(found) if found else 'no .h5 in it'}); {remedy}")
    if not h5py.is_hdf5(path):
        with open(path, "rb") as handle:
            head = handle.read(512)
        kind = "empty" if not head else "a text file" if b"\0" not in head else "not HDF5 (binary data of another kind)"
        raise CacheError(f"{path} is not a cache: it is {kind}, not an HDF5 file; {remedy}")
    try:
        with h5py.File(path, "r") as f:
            missing = [name for name in ("embeddings", "ok", "utt_id") if name not in f]
    except OSError as error:
        raise damaged_cache(path, f"unreadable: {str(error).splitlines()[0]}") from error
    if missing:
        raise CacheError(f"{path} is an HDF5 file but not a bgrpo-ser cache (it has no {', '.join('/' + m for m in missing)}); "
                         f"{remedy}")
    return path


class CacheDamaged(CacheError):
    """A finished cache whose bytes changed after it was written (truncated copy, bad disk)."""


def damaged_cache(path, detail: str) -> CacheDamaged:
    return CacheDamaged(f"cache {path} is damaged ({detail}): delete it and run the same "
                        "`extract` command again to re-extract it")


@dataclass
class CacheData:
    """What training needs from a cache: pooled vectors of the ok rows and their table."""

    features: np.ndarray  # [N_ok, L, D] float16 (only the requested layers)
    table: pd.DataFrame  # one row per ok utterance, same order as `features`
    attrs: dict
    fingerprint: str
    path: Path


def fingerprint_of(embeddings, utt_ids, identity: dict) -> str:
    """sha256 over the cache's identity attributes, its utterance ids and its vectors.

    `embeddings` is an array or an iterable of row blocks (in row order), so that caches
    larger than RAM are hashed chunk by chunk with the same result.
    """
    h = hashlib.sha256()
    for key in sorted(identity):
        if key not in VOLATILE_ATTRS:
            h.update(f"{key}={identity[key]}\n".encode())
    h.update("\n".join(map(str, utt_ids)).encode())
    for block in ([embeddings] if isinstance(embeddings, np.ndarray) else embeddings):
        h.update(np.ascontiguousarray(block, dtype=np.float16).tobytes())
    return h.hexdigest()


def write_cache_arrays(path, embeddings: np.ndarray, table: pd.DataFrame, attrs: dict) -> Path:
    """Write a complete cache in one go (synthetic caches, tests, benchmarks, merges).

    `table` needs utt_id, label, speaker; other columns get defaults. Written to a temp
    file and renamed, so a crash never leaves a half-written cache under `path`.
    """
    embeddings = np.asarray(embeddings, dtype=np.float16)
    if embeddings.ndim != 3 or embeddings.shape[0] != len(table):
        raise ValueError(f"embeddings must be [N, L, D] with N={len(table)}, got {embeddings.shape}")
    rows = np.arange(len(table))
    return write_cache(path, table, attrs, embeddings.shape[1:], [(rows, embeddings)])


def write_cache(path, table: pd.DataFrame, attrs: dict, state_shape, blocks) -> Path:
    """Stream a complete cache to `path` (temp file + rename) from blocks (rows, emb [b,L,D]).

    Blocks may come in any row order; memory use is one block.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = len(table)
    num_states, hidden = (int(x) for x in state_shape)
    defaults = {"split": "", "corpus": "", "path": "", "gender": "", "language": "", "error": "",
                "num_frames": 0, "duration": 0.0, "fold": -1, "ok": True}
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        emb = f.create_dataset("embeddings", shape=(n, num_states, hidden), dtype=np.float16,
                               chunks=(min(max(n, 1), CHUNK_ROWS), num_states, hidden))
        for col in STRING_COLUMNS:
            values = table[col].fillna("").astype(str) if col in table else [defaults[col]] * n
            f.create_dataset(col, data=np.asarray(list(values), dtype=object), dtype=STR)
        for col, dtype in NUMERIC_COLUMNS.items():
            if col == "row":
                values = table[col] if col in table else np.arange(n)
            else:
                values = table[col].fillna(defaults[col]) if col in table else [defaults[col]] * n
            f.create_dataset(col, data=np.asarray(values, dtype=dtype))
        for rows, block in blocks:
            rows = np.asarray(rows)
            if len(rows):
                order = np.argsort(rows)  # h5py fancy indexing wants increasing indices
                emb[rows[order]] = np.asarray(block, dtype=np.float16)[order]
        identity = dict(attrs)
        identity.update(num_hidden_states=num_states, hidden_size=hidden)
        for key, value in identity.items():
            f.attrs[key] = value
        f.attrs["fingerprint"] = fingerprint_of(
            (emb[i:i + CHUNK_ROWS] for i in range(0, n, CHUNK_ROWS)), table["utt_id"], identity)
        f.attrs["complete"] = True
    return path


@contextlib.contextmanager
def open_checked(path):
    """A cache opened for reading, verified against its fingerprint when complete: a truncated or
    damaged file raises CacheDamaged naming it and saying to re-extract, never wrong vectors."""
    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("complete", False) and "fingerprint" in f.attrs:
                emb = f["embeddings"]
                found = fingerprint_of((emb[i:i + CHUNK_ROWS] for i in range(0, len(emb), CHUNK_ROWS)),
                                       f["utt_id"].asstr()[...], {k: v for k, v in f.attrs.items()})
                if found != f.attrs["fingerprint"]:
                    raise damaged_cache(path, "its vectors no longer match the fingerprint written with them")
            yield f
    except (OSError, KeyError) as error:
        if isinstance(error, FileNotFoundError) or not path.is_file() or not h5py.is_hdf5(path):
            raise  # not a damaged cache but no cache at all: the caller says so
        raise damaged_cache(path, f"unreadable: {str(error).splitlines()[0]}") from error


def read_table(f: h5py.File) -> pd.DataFrame:
    """All rows (ok and failed) of an open cache as a DataFrame."""
    cols = {c: f[c].asstr()[...] for c in STRING_COLUMNS if c in f}
    cols.update({c: f[c][...] for c in NUMERIC_COLUMNS if c in f})
    return pd.DataFrame(cols)


def load_cache(path, layers=None) -> CacheData:
    """Read the ok rows of a cache. `layers` (list of hidden-state indices) limits what is read.

    Reads go through h5py's chunked I/O, so only the requested layers are pulled from disk.
    """
    path = check_cache_file(path)
    with open_checked(path) as f:
        if not f.attrs.get("complete", False):
            raise CacheError(f"cache {path} is incomplete (an extraction stopped before writing it all): re-run "
                             "the same `extract` command to finish it")
        table = read_table(f)
        ok = table["ok"].to_numpy(bool)
        if not ok.any():
            reasons = "".join(f"\n  {u}: {e}" for u, e in zip(table["utt_id"][:5], table["error"][:5]))
            raise CacheError(f"cache {path} holds no encoded utterance: all {len(ok)} files failed when it was "
                             f"extracted:{reasons}\nFix the audio (or the --root of `extract`) and re-run "
                             "`python cli.py extract` with --overwrite.")
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


def describe(path) -> str:
    """Human summary of a cache: shape, identity attributes, labels, failures (`cli.py info`)."""
    path = check_cache_file(path)
    with open_checked(path) as f:
        t = read_table(f)
        n, states, hidden = f["embeddings"].shape
        attrs = {k: (v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items()}
    ok = t["ok"].to_numpy(bool)
    lines = [f"{path}: {n} utterances x {states} hidden states x {hidden}"
             f" ({int(ok.sum())} ok, {int((~ok).sum())} failed)"
             + ("" if attrs.get("complete") else "  [INCOMPLETE]")]
    lines += [f"  {k}: {attrs[k]}" for k in sorted(attrs)]
    lines.append(f"  audio: {t.loc[ok, 'duration'].sum() / 3600:.3f} h")
    if ok.any():
        counts = t.loc[ok, "label"].value_counts().sort_index()
        lines.append("  labels: " + ", ".join(f"{k}={v}" for k, v in counts.items()))
        lines.append(f"  speakers: {t.loc[ok, 'speaker'].nunique()}, folds: "
                     f"{sorted(int(x) for x in set(t.loc[ok, 'fold']) if x >= 0) or 'official split'}")
    for _, row in t.loc[~ok].head(20).iterrows():
        lines.append(f"  failed {row['utt_id']}: {row['error']}")
    return "\n".join(lines)
