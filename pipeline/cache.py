"""The HDF5 embedding cache: one file per (corpus, encoder, window), read by the trainer.

Layout (row i = utterance i, in manifest order; failed rows keep their place, ok=False):
  /embeddings   float16 [N, L+1, D]  mean over real-audio frames of every hidden state, stored in
                chunks of CHUNK_ROWS rows x 1 hidden state x D, so that reading one layer (what a
                run uses) reads only that layer's bytes; caches written before this layout have
                chunks of rows x every hidden state (still read, 1/(L+1) as efficiently; `rechunk`)
  /num_frames   int32   [N]          encoder frames pooled (0 for failed rows)
  /duration     float32 [N]          seconds
  /fold         int16   [N]          speaker-independent fold, -1 where the corpus has a split
  /ok           bool    [N]          False = skipped; /error says why
  /utt_id /label /speaker /split /corpus /path /gender /language /error   utf-8 strings [N]
  /text_id      utf-8   [N]          the prompt said (empty = unknown); absent in older caches, and
                                     outside the fingerprint: `set_annotation` adds or updates it
  /row          int32   [N]          row in the manifest (orders shard part files for `merge`)
  /recording /start /end (/channel)  utf-8, float64 s, float64 s (int16): only in caches of segment
                                     manifests (`cli.py segment`); a clip cache has none of them
  attrs: encoder_id, weights_sha256, window, sample_rate, manifest_sha256, package_version,
         created, num_hidden_states, hidden_size, complete, fingerprint (+ shard,
         num_failed, audio_seconds where `extract` wrote the file)
`fingerprint` = sha256 of the identity attributes (all but the VOLATILE_ATTRS bookkeeping),
the utterance ids and the vectors: equal vectors from equal inputs give equal fingerprints.
"""
from __future__ import annotations

import contextlib
import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from data_manifests.errors import UserError
from data_manifests.storage import atomic_path, temp_path
from data_manifests.summary import prompt_line

STR = h5py.string_dtype("utf-8")
STRING_COLUMNS = ("utt_id", "label", "speaker", "split", "corpus", "path", "gender", "language", "error", "text_id")
# table columns that describe utterances without changing their vectors: updated in place, no re-encoding
ANNOTATION_COLUMNS = ("text_id",)
NUMERIC_COLUMNS = {"num_frames": np.int32, "duration": np.float32, "fold": np.int16, "ok": np.bool_,
                   "row": np.int32}
# bookkeeping, not identity: two caches with equal vectors from equal inputs share a fingerprint
VOLATILE_ATTRS = ("created", "package_version", "fingerprint", "complete", "shard", "num_failed",
                  "audio_seconds")
# the segment columns, written only when the table has them (SEGMENT_COLUMNS in data_manifests.schema)
SEGMENT_DATASETS = {"recording": STR, "start": np.float64, "end": np.float64, "channel": np.int16}
CHUNK_ROWS = 256
READ_ROWS = 64 * CHUNK_ROWS  # rows per block when reading layers: memory = output + one block
# what a cache was made from: caches (and shard parts) with different values never mix
IDENTITY_KEYS = ("encoder_id", "weights_sha256", "window", "sample_rate", "manifest_sha256")
# (device, inode, size, mtime) of the cache files whose fingerprint this process has checked:
# a run opens its cache several times (table, layer, each speaker_norm) and hashes it once
_VERIFIED: set[tuple] = set()


class CacheError(UserError):
    """A file given as a cache that cannot be used as one; the message names it and says what to do."""


READ_REMEDY = "pass a cache .h5 written by `python cli.py extract` (`python cli.py info FILE` describes one)"


def check_cache_file(path, remedy: str = READ_REMEDY) -> Path:
    """`path` as an HDF5 file laid out as a cache, or FileNotFoundError / CacheError saying what it
    is instead and `remedy` (what to do)."""
    path = Path(path)
    if not path.exists():
        beside = sorted(p.name for p in path.parent.glob("*.h5") if ".part-" not in p.name)
        held = f" ({path.parent}/ holds {', '.join(beside)})" if beside else ""
        raise FileNotFoundError(f"cache {path} does not exist{held}: run `python cli.py extract` first, or {remedy}")
    if path.is_dir():
        found = sorted(p.name for p in path.glob("*.h5"))
        raise CacheError(
            f"cache {path} is a folder, not a file "
            f"({'it holds ' + ', '.join(found) if found else 'no .h5 in it'}); {remedy}"
        )
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
        raise CacheError(
            f"{path} is an HDF5 file but not a bgrpo-ser cache (it has no {', '.join('/' + m for m in missing)}); "
            f"{remedy}"
        )
    return path


def check_output(path, command: str) -> Path:
    """`path` as where `command` writes a cache: absent, or a cache already (a user's other file,
    a text file or another HDF5 file, is never written over)."""
    path = Path(path)
    if path.exists():
        check_cache_file(path, f"{command} writes only over its own caches: pass another --out than {path}, "
                               "or move that file away")
    return path


class CacheMismatch(UserError):
    """An existing cache or partial run made with another encoder, window or manifest."""


def decoded_attrs(attrs, keys=None) -> dict:
    """HDF5 attributes as plain Python values (numpy scalars unwrapped): all, or those of `keys` present."""
    keys = attrs.keys() if keys is None else [k for k in keys if k in attrs]
    return {k: (attrs[k].item() if hasattr(attrs[k], "item") else attrs[k]) for k in keys}


def identity_of(path) -> dict:
    """The identity attributes of a cache file, plus whether it is complete (fingerprint checked)."""
    with open_checked(path) as f:
        return decoded_attrs(f.attrs, list(IDENTITY_KEYS) + ["complete"])


def mismatches(found: dict, wanted: dict, manifest_change: str = "") -> list[str]:
    """'key: cache has X, this run Y' for every identity key on which `found` differs from `wanted`;
    for the manifest, in words instead of two digests (`manifest_change`, when the old table is at hand)."""
    what = manifest_change or "its ids, paths, labels, speakers or folds"
    return [f"the manifest is not the one it was made from: {what}" if k == "manifest_sha256"
            else f"{k}: cache has {found.get(k)!r}, this run {wanted[k]!r}"
            for k in IDENTITY_KEYS if str(found.get(k, "")) != str(wanted[k])]


class CacheDamaged(CacheError):
    """A finished cache whose bytes changed after it was written (truncated copy, bad disk)."""


def damaged_cache(path, detail: str) -> CacheDamaged:
    return CacheDamaged(f"cache {path} is damaged ({detail}): delete it and run the same "
                        "`extract` command again to re-extract it")


@dataclass
class CacheData:
    """What training needs from a cache: pooled vectors of the ok rows and their table."""

    features: np.ndarray  # [N_ok, L, D] float16 (only the requested layers; or what load_cache's `allocate` made)
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
    defaults = {"split": "", "corpus": "", "path": "", "gender": "", "language": "", "error": "", "text_id": "",
                "num_frames": 0, "duration": 0.0, "fold": -1, "ok": True}
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        emb = f.create_dataset("embeddings", shape=(n, num_states, hidden), dtype=np.float16,
                               chunks=(min(max(n, 1), CHUNK_ROWS), 1, hidden))
        for col in STRING_COLUMNS:
            values = table[col].fillna("").astype(str) if col in table else [defaults[col]] * n
            f.create_dataset(col, data=np.asarray(list(values), dtype=object), dtype=STR)
        for col, dtype in NUMERIC_COLUMNS.items():
            if col == "row":
                values = table[col] if col in table else np.arange(n)
            else:
                values = table[col].fillna(defaults[col]) if col in table else [defaults[col]] * n
            f.create_dataset(col, data=np.asarray(values, dtype=dtype))
        for col, dtype in SEGMENT_DATASETS.items():
            if col in table:
                values = table[col].fillna(-1) if col == "channel" else table[col]
                f.create_dataset(col, data=np.asarray(list(values) if dtype is STR else values,
                                                      dtype=object if dtype is STR else dtype), dtype=dtype)
        # named like atomic_path's temp files, so a killed run's leftovers are found and removed
        stage_dir = temp_path(path.with_name(f"{path.name}.stage"))
        stage_dir.mkdir(exist_ok=True)
        try:
            write_blocks(emb, blocks, stage_dir)
        finally:
            shutil.rmtree(stage_dir, ignore_errors=True)
        identity = dict(attrs)
        identity.update(num_hidden_states=num_states, hidden_size=hidden)
        for key, value in identity.items():
            f.attrs[key] = value
        f.attrs["fingerprint"] = fingerprint_of(
            (emb[i:i + CHUNK_ROWS] for i in range(0, n, CHUNK_ROWS)), table["utt_id"], identity)
        f.attrs["complete"] = True
    return path


def write_blocks(emb: h5py.Dataset, blocks, stage_dir: Path) -> None:
    """Rows of `blocks` (rows, [b, L, D]) into `emb`. A block that is a run of rows is one
    hyperslab write; scattered rows (extraction batches are sorted by length, shards interleave)
    go to a float16 staging file first and reach HDF5 in row order at the end: written straight,
    each scattered row would rewrite one whole chunk per hidden state."""
    staged = mask = None
    for rows, block in blocks:
        rows = np.asarray(rows)
        if not len(rows):
            continue
        order = np.argsort(rows)
        rows_sorted, values = rows[order], np.asarray(block, dtype=np.float16)[order]
        if rows_sorted[-1] - rows_sorted[0] + 1 == len(rows_sorted):
            emb[rows_sorted[0]:rows_sorted[-1] + 1] = values
            continue
        if staged is None:
            staged = np.memmap(stage_dir / "rows.f16", np.float16, "w+", shape=emb.shape)
            mask = np.zeros(len(emb), bool)
        staged[rows_sorted], mask[rows_sorted] = values, True
    for start in range(0, len(emb) if staged is not None else 0, READ_ROWS):
        here = mask[start:start + READ_ROWS]
        if here.all():
            emb[start:start + len(here)] = staged[start:start + len(here)]
        elif here.any():  # where staged rows meet rows written straight
            idx = np.flatnonzero(here) + start
            emb[idx] = staged[idx]
    del staged


@contextlib.contextmanager
def open_checked(path):
    """A cache opened for reading, verified against its fingerprint when complete: a truncated or
    damaged file raises CacheDamaged naming it and saying to re-extract, never wrong vectors.
    Each version of a file (same inode, size and mtime) is hashed once per process."""
    path = Path(path)
    try:
        st = path.stat()
        version = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        with h5py.File(path, "r") as f:
            if version not in _VERIFIED and f.attrs.get("complete", False) and "fingerprint" in f.attrs:
                emb = f["embeddings"]
                found = fingerprint_of((emb[i:i + CHUNK_ROWS] for i in range(0, len(emb), CHUNK_ROWS)),
                                       f["utt_id"].asstr()[...], {k: v for k, v in f.attrs.items()})
                if found != f.attrs["fingerprint"]:
                    raise damaged_cache(path, "its vectors no longer match the fingerprint written with them")
                _VERIFIED.add(version)
            yield f
    except (OSError, KeyError) as error:
        if isinstance(error, FileNotFoundError) or not path.is_file() or not h5py.is_hdf5(path):
            raise  # not a damaged cache but no cache at all: the caller says so
        raise damaged_cache(path, f"unreadable: {str(error).splitlines()[0]}") from error


def read_table(f: h5py.File, columns=None) -> pd.DataFrame:
    """All rows (ok and failed) of an open cache as a DataFrame: every column, or `columns` (plus
    `ok`; a million rows of text columns take about 60 MB each)."""
    wanted = None if columns is None else set(columns) | {"ok"}
    cols = {c: f[c].asstr()[...] for c in STRING_COLUMNS if c in f and (wanted is None or c in wanted)}
    cols.update({c: f[c][...] for c in NUMERIC_COLUMNS if c in f and (wanted is None or c in wanted)})
    cols.update({c: f[c].asstr()[...] if dtype is STR else f[c][...] for c, dtype in SEGMENT_DATASETS.items()
                 if c in f and (wanted is None or c in wanted)})
    return pd.DataFrame(cols)


def set_annotation(path, column: str, values) -> Path:
    """Write an annotation column (one string per row, all rows) into a cache, atomically (a copy
    is changed, then renamed over it): vectors, identity and fingerprint stay as they were."""
    if column not in ANNOTATION_COLUMNS:
        raise ValueError(f"{column!r} is not an annotation column ({', '.join(ANNOTATION_COLUMNS)})")
    path = Path(path)
    values = np.asarray([str(v) for v in values], dtype=object)
    with atomic_path(path) as tmp:
        shutil.copy2(path, tmp)
        with h5py.File(tmp, "r+") as f:
            if len(values) != len(f["utt_id"]):
                raise ValueError(f"{column}: {len(values)} values for the {len(f['utt_id'])} rows of {path}")
            if column in f:
                del f[column]
            f.create_dataset(column, data=values, dtype=STR)
    return path


def layer_chunked(dset: h5py.Dataset) -> bool:
    """True when one chunk holds a single hidden state (this version's layout), so that a layer
    is read without the others; False for caches whose chunks hold every hidden state of a row."""
    return dset.chunks is not None and dset.chunks[1] == 1 or dset.shape[1] == 1


def read_layers(dset: h5py.Dataset, layers, ok: np.ndarray, block_rows: int = READ_ROWS, allocate=np.empty):
    """[sum(ok), len(layers), D] float16: the chosen hidden states of the ok rows, read block by
    block straight into the output (peak memory = the output + one block, never the whole cache).
    `allocate(shape, dtype)` makes the output: an array, or anything that takes `out[a:b] = block`
    (the trainer's rows spilled to a file, trainer/inputs/feature_store.SpilledRows)."""
    layers = list(layers)
    n_ok = int(ok.sum())
    out = allocate((n_ok, len(layers), dset.shape[2]), np.float16)
    if not layers:  # the table alone
        return out
    pos = 0
    for start in range(0, dset.shape[0], block_rows):
        keep = ok[start:start + block_rows]
        if not keep.any():
            continue
        block = dset[start:start + len(keep), layers, :] if len(layers) < dset.shape[1] else \
            dset[start:start + len(keep)]
        out[pos:pos + int(keep.sum())] = block if keep.all() else block[keep]
        pos += int(keep.sum())
    return out


def cache_shape(path) -> tuple[int, int, int]:
    """(utterances, hidden states, width) of a cache, without reading its vectors."""
    with h5py.File(path, "r") as f:
        return tuple(int(x) for x in f["embeddings"].shape)


def load_cache(path, layers=None, columns=None, allocate=np.empty) -> CacheData:
    """Read the ok rows of a cache. `layers` (hidden-state indices, or a function of the number of
    hidden states that returns them) limits what is read: with this version's chunk layout only
    those layers' bytes leave the disk; the result stays float16. `columns` limits the table;
    `allocate` makes the features' container (read_layers)."""
    path = check_cache_file(path)
    with open_checked(path) as f:
        if not f.attrs.get("complete", False):
            raise CacheError(f"cache {path} is incomplete (an extraction stopped before writing it all): re-run "
                             "the same `extract` command to finish it")
        table = read_table(f, columns)
        ok = table["ok"].to_numpy(bool)
        if not ok.any():
            errors = read_table(f, ["utt_id", "error"])
            reasons = "".join(f"\n  {u}: {e}" for u, e in zip(errors["utt_id"][:5], errors["error"][:5]))
            raise CacheError(f"cache {path} holds no encoded utterance: all {len(ok)} files failed when it was "
                             f"extracted:{reasons}\nFix the audio (or the --root of `extract`) and re-run "
                             "`python cli.py extract` with --overwrite.")
        dset = f["embeddings"]
        states = dset.shape[1]
        layers = layers(states) if callable(layers) else layers
        bad = [i for i in ([] if layers is None else layers) if not -states <= int(i) < states]
        if bad:
            raise UserError(f"cache {path} has hidden states 0..{states - 1}, not {bad[0]}")
        chosen = list(range(states)) if layers is None else sorted({int(i) % states for i in layers})
        feats = read_layers(dset, chosen, ok, allocate=allocate)
        attrs = decoded_attrs(f.attrs)
    return CacheData(features=feats, table=table[ok].reset_index(drop=True), attrs=attrs,
                     fingerprint=str(attrs.get("fingerprint", "")), path=path)


def merge(parts, out_path) -> Path:
    """Join shard part files (same encoder/window/manifest) into one cache in manifest order.
    Two hosts merging the same parts at once each write their own temp file: the last rename wins
    and both leave the same cache."""
    parts = [Path(p) for p in parts]
    check_output(out_path, "merge")
    idents = [identity_of(p) for p in parts]
    for p, ident in zip(parts, idents):
        if not ident.get("complete"):
            raise UserError(f"{p} is incomplete: finish that shard first")
        problems = mismatches(ident, idents[0])
        if problems:
            raise CacheMismatch(f"{p} does not belong with {parts[0]}: " + "; ".join(problems))
    tables, shapes = [], set()
    for p in parts:
        with h5py.File(p, "r") as f:
            tables.append(read_table(f))
            shapes.add(f["embeddings"].shape[1:])
            attrs = decoded_attrs(f.attrs)
    rows = np.concatenate([t["row"].to_numpy() for t in tables])
    if len(shapes) != 1 or np.unique(rows).size != rows.size or set(rows) != set(range(rows.size)):
        raise UserError("parts do not form one cache: they overlap, miss rows, or differ in shape")
    table = pd.concat(tables, ignore_index=True).sort_values("row", kind="stable").reset_index(drop=True)
    position = np.empty(rows.size, np.int64)
    position[table["row"].to_numpy()] = np.arange(rows.size)

    def blocks():
        for p, t in zip(parts, tables):
            with h5py.File(p, "r") as f:
                yield position[t["row"].to_numpy()], f["embeddings"][...]

    attrs = {k: v for k, v in attrs.items() if k not in ("fingerprint", "complete")}
    attrs.update(shard="merged", num_failed=int((~table["ok"]).sum()),
                 audio_seconds=float(table["duration"].sum()))
    write_cache(out_path, table, attrs, next(iter(shapes)), blocks())
    return Path(out_path)


def rechunk(path) -> bool:
    """Rewrite a cache in the layer-contiguous chunk layout (same vectors, same fingerprint), in
    place and atomically; False (nothing written) when it already has that layout."""
    path = check_cache_file(path)
    with h5py.File(path, "r") as f:
        if not f.attrs.get("complete", False):
            raise UserError(f"cache {path} is incomplete: finish its `extract` before re-chunking it")
        if layer_chunked(f["embeddings"]):
            return False
        table = read_table(f)
        shape = f["embeddings"].shape[1:]
        attrs = {k: v for k, v in decoded_attrs(f.attrs).items() if k not in ("fingerprint", "complete")}
        before = str(f.attrs.get("fingerprint", ""))

        def blocks():
            emb = f["embeddings"]
            for start in range(0, len(table), READ_ROWS):
                rows = np.arange(start, min(start + READ_ROWS, len(table)))
                yield rows, emb[start:rows[-1] + 1]

        with atomic_path(path) as tmp:  # the original stays until the copy is checked
            write_cache(tmp, table, attrs, shape, blocks())
            with h5py.File(tmp, "r") as g:
                after = str(g.attrs["fingerprint"])
            if after != before:
                raise UserError(f"re-chunking {path} would change its fingerprint ({before[:12]} -> "
                                 f"{after[:12]}): its vectors do not match the recorded fingerprint; "
                                 "re-extract it instead")
    return True


def describe(path) -> str:
    """Human summary of a cache: shape, identity attributes, labels, failures (`cli.py info`)."""
    path = check_cache_file(path)
    with open_checked(path) as f:
        t = read_table(f)
        n, states, hidden = f["embeddings"].shape
        by_layer = layer_chunked(f["embeddings"])
        attrs = decoded_attrs(f.attrs)
    ok = t["ok"].to_numpy(bool)
    lines = [f"{path}: {n} utterances x {states} hidden states x {hidden}"
             f" ({int(ok.sum())} ok, {int((~ok).sum())} failed)"
             + ("" if attrs.get("complete") else "  [INCOMPLETE]")]
    lines += [f"  {k}: {attrs[k]}" for k in sorted(attrs)]
    lines.append("  layout: one hidden state per chunk (a run reads only its layer)" if by_layer else
                 f"  layout: every hidden state in each chunk (older cache: a run reads all {states} to use one;"
                 f" `python cli.py rechunk {path}` rewrites it)")
    lines.append(f"  audio: {t.loc[ok, 'duration'].sum() / 3600:.3f} h")
    if ok.any():
        counts = t.loc[ok, "label"].value_counts().sort_index()
        lines.append("  labels: " + ", ".join(f"{k}={v}" for k, v in counts.items()))
        lines.append(f"  speakers: {t.loc[ok, 'speaker'].nunique()}, folds: "
                     f"{sorted(int(x) for x in set(t.loc[ok, 'fold']) if x >= 0) or 'official split'}")
        lines.append("  " + prompt_line(t.loc[ok]))
    for _, row in t.loc[~ok].head(20).iterrows():
        lines.append(f"  failed {row['utt_id']}: {row['error']}")
    return "\n".join(lines)
