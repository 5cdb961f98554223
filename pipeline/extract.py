"""Encode a corpus once into an HDF5 cache: resumable, crash-safe, shardable.

How a run is kept safe: the utterances are cut into a fixed plan of length-sorted batches
(stored in `<cache>.partial/plan.json`); each finished batch is written atomically as one .npz
in that folder, so `kill -9` loses at most the batch in flight and the same command skips the
finished batches.  Because the batches are the same, the finished cache holds exactly the
vectors of an uninterrupted run.  At the end the batches are streamed into the HDF5 cache
(temp file + rename) and the folder is removed.  Each batch file carries the sha256 of its
bytes in its name, so a truncated or damaged batch is re-encoded, never merged.  A `<cache>.lock`
(pipeline.run_lock: a record lock, released by the kernel even on kill -9 and never held by a
DataLoader worker) keeps a second writer out, and the workers die with the main process.

Pooling: every hidden state is averaged over the encoder frames of real audio (ceil(mel/2),
about 50 per second), never over padding.  Clips over 30 s are cut into 30 s windows and their
window means are combined weighted by frame count, i.e. the mean over all the clip's frames.
"""
from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from data_manifests.storage import atomic_path, write_text_atomic
from data_manifests.summary import manifest_changes
from pipeline.audio import SAMPLE_RATE, AudioDataset, BadAudio, Item, collate, load_audio, log_mel_windows
from pipeline.cache import check_output, open_checked, read_table, write_cache
from pipeline.encoder import Encoder, EncoderError, encoder_frames, load_encoder, pooled_hidden_states, resolve_model
from pipeline.run_lock import die_with_parent, exclusive

WINDOWS = ("full", "trim")
IDENTITY_KEYS = ("encoder_id", "weights_sha256", "window", "sample_rate", "manifest_sha256")
MANIFEST_KEYS = ("utt_id", "path", "label", "speaker", "gender", "language", "fold", "split", "corpus")


class CacheMismatch(ValueError):
    """An existing cache or partial run made with another encoder, window or manifest."""


class AudioNotFound(ValueError):
    """Most of a manifest's files are not under the given root: nothing is worth encoding."""


class NothingEncoded(ValueError):
    """Every file of a run failed: no cache is written (a cache without vectors is never complete)."""


def check_audio_present(table: pd.DataFrame, root) -> int:
    """Pre-flight before the encoder loads: the number of missing files, or AudioNotFound when they are
    half or more of the manifest (a wrong --root, not a few lost files) with the root and a hint."""
    root = Path(root)
    missing = [p for p in table["path"] if not (root / p).is_file()]
    if missing and 2 * len(missing) >= len(table):
        raise AudioNotFound(
            f"{len(missing)} of {len(table)} files of the manifest are not under {root} (e.g. {root / missing[0]}); "
            "nothing was encoded. The manifest's paths are relative to the corpus folder: pass --root that "
            "folder (the one given to `manifest --root`), or re-run `python cli.py manifest`.")
    return len(missing)


@dataclass
class ExtractResult:
    path: Path
    total: int
    failed: dict = field(default_factory=dict)  # utt_id -> reason
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0
    already_complete: bool = False
    encoded: int = 0  # utterances encoded by this call (0 for a no-op)
    encode_seconds: float = 0.0  # the decode + encode loop alone (no model load, no final write)

    def final_line(self) -> str:
        if self.already_complete:
            return (f"nothing encoded: the cache was already complete "
                    f"({self.total} utterances, {len(self.failed)} failed)")
        rtf = self.wall_seconds / self.audio_seconds if self.audio_seconds else float("nan")
        rate = self.encoded / self.encode_seconds if self.encode_seconds else float("nan")
        return (f"{self.encoded} utterances encoded ({len(self.failed)} failed of {self.total}), "
                f"{self.audio_seconds / 3600:.3f} h audio in {self.wall_seconds:.1f} s wall "
                f"({rate:.2f} utt/s while encoding), real-time factor {rtf:.4f} "
                f"({1 / rtf if rtf else float('nan'):.1f}x real time)")


def package_version() -> str:
    try:
        from importlib.metadata import version
        return version("bgrpo-ser")
    except Exception:  # not pip-installed: running from the checkout
        return "0.1.0+checkout"


def cache_path(cache_dir, corpus: str, tag: str, window: str) -> Path:
    """`<cache-dir>/<corpus>/<encoder-tag>-<window>.h5`, e.g. cache/ravdess/whisper-base-full.h5."""
    return Path(cache_dir) / corpus / f"{tag}-{window}.h5"


def part_path(path: Path, shard: tuple[int, int]) -> Path:
    i, n = shard
    return path if n == 1 else path.with_name(f"{path.stem}.part-{i}-of-{n}.h5")


def manifest_sha256(table: pd.DataFrame) -> str:
    """Digest of what the cache depends on in the manifest (ids, paths, labels, folds...)."""
    cols = [c for c in MANIFEST_KEYS if c in table]
    return hashlib.sha256(table[cols].astype(str).to_csv(index=False).encode()).hexdigest()


def parse_shard(text: str | None) -> tuple[int, int]:
    """'i/n' -> (i, n); None -> RANK/WORLD_SIZE under torchrun, else (0, 1)."""
    if text is None:
        if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
            return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        return 0, 1
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard {text!r}: expected i/n, e.g. 0/4") from None
    if not 0 <= i < n:
        raise ValueError(f"--shard {text!r}: need 0 <= i < n")
    return i, n


def plan_batches(durations: np.ndarray, shard: tuple[int, int], batch_size: int) -> list[list[int]]:
    """Deterministic length-sorted batches (longest first) of this shard's rows.

    Sorting by length keeps padding small in trim mode; shard i takes every n-th row of the
    sorted order, so shards get similar amounts of audio.
    """
    order = np.argsort(-np.nan_to_num(np.asarray(durations, np.float64), nan=0.0), kind="stable")
    mine = order[shard[0]::shard[1]].tolist()
    return [mine[i:i + batch_size] for i in range(0, len(mine), batch_size)]


def encode_batch(enc: Encoder, batch, window: str):
    """One collated batch -> per item (pooled [L+1, D] float32, encoder frames).

    Windows of one clip (> 30 s) are combined weighted by their frame counts.
    """
    items, mel, num_mel, owner = batch
    good = [it for it in items if not it.error]
    out = {}
    if mel is None:
        return out
    pooled = pooled_hidden_states(enc, mel, num_mel, window)
    n_enc = encoder_frames(num_mel).to(torch.float32)
    total = torch.zeros(len(good)).index_add_(0, owner, n_enc)
    combined = torch.zeros(len(good), *pooled.shape[1:]).index_add_(0, owner, pooled * n_enc[:, None, None])
    combined = (combined / total[:, None, None]).numpy()
    return {it.index: (combined[k], int(total[k])) for k, it in enumerate(good)}


def _holds_manifest(target: Path, table: pd.DataFrame, window: str) -> bool:
    """A complete cache of this manifest and window is already there (its audio may be gone by now)."""
    if not target.is_file():
        return False
    found = _identity_of_file(target)
    return bool(found.get("complete")) and found.get("window") == window \
        and found.get("manifest_sha256") == manifest_sha256(table)


def _identity_of_file(path: Path) -> dict:
    with open_checked(path) as f:
        return {k: (f.attrs[k].item() if hasattr(f.attrs[k], "item") else f.attrs[k])
                for k in list(IDENTITY_KEYS) + ["complete"] if k in f.attrs}


def _mismatch(found: dict, wanted: dict, manifest_change: str = "") -> list[str]:
    """The identity keys that differ, in words; a manifest's digests are replaced by what changed
    (`manifest_change`, when the old table is at hand)."""
    what = manifest_change or "its ids, paths, labels, speakers or folds"
    return [f"the manifest is not the one it was made from: {what}" if k == "manifest_sha256"
            else f"{k}: cache has {found.get(k)!r}, this run {wanted[k]!r}"
            for k in IDENTITY_KEYS if str(found.get(k, "")) != str(wanted[k])]


def _prepare_workdir(work: Path, identity: dict, plan: list, overwrite: bool) -> list:
    """Create or reuse `<cache>.partial/`; returns the batch plan to follow (the stored one on resume)."""
    plan_file = work / "plan.json"
    if work.exists() and plan_file.exists() and not overwrite:
        stored = json.loads(plan_file.read_text())
        problems = _mismatch(stored["identity"], identity)
        if problems:
            raise CacheMismatch(f"{work} holds an unfinished extraction with another setup ("
                                + "; ".join(problems) + "): re-run it as it was, or pass --overwrite")
        return stored["plan"]
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    write_text_atomic(plan_file, json.dumps({"identity": identity, "plan": plan}))
    return plan


def _save_batch(work: Path, b: int, rows, results: dict, errors: dict, durations: dict) -> None:
    """One finished batch -> batch-<b>.<sha256 of its bytes, 16 hex>.npz, via a temp name (atomic)."""
    rows = list(rows)
    ok = [r for r in rows if r in results]
    d = {"rows": np.asarray(rows, np.int64),
         "ok": np.asarray([r in results for r in rows]),
         "error": np.asarray([errors.get(r, "") for r in rows], dtype=str),
         "duration": np.asarray([durations.get(r, 0.0) for r in rows], np.float32),
         "num_frames": np.asarray([results[r][1] if r in results else 0 for r in rows], np.int32)}
    if ok:
        d["embeddings"] = np.stack([results[r][0] for r in ok]).astype(np.float16)
    buffer = io.BytesIO()
    np.savez(buffer, **d)
    data = buffer.getvalue()
    with atomic_path(work / f"batch-{b:06d}.{hashlib.sha256(data).hexdigest()[:16]}.npz") as tmp, \
            open(tmp, "wb") as handle:
        handle.write(data)


def _done_batches(work: Path, log=print) -> dict[int, Path]:
    """Finished batches by number. A kill during a write leaves only a hidden temp file (ignored);
    a batch whose bytes do not match the checksum in its name (truncated, damaged, or from an
    older version) is deleted with a warning, so it is encoded again rather than merged."""
    done = {}
    for p in sorted(work.glob("batch-*.npz")):
        name = p.name.split(".")
        if len(name) == 3 and hashlib.sha256(p.read_bytes()).hexdigest()[:16] == name[1]:
            done[int(name[0][len("batch-"):])] = p
        else:
            log(f"warning: {p} is damaged (checksum mismatch): encoding that batch again")
            p.unlink()
    return done


def _load_batch(path: Path) -> dict:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def extract(table: pd.DataFrame, root, out_path, model: str | None = None, window: str = "full",
            device: str = "auto", batch_size: int | None = None, workers: int | None = None,
            shard: tuple[int, int] = (0, 1), overwrite: bool = False,
            progress: bool = True, log=print) -> ExtractResult:
    """Encode every row of a manifest table into `out_path` (or its shard part file).

    The last shard to finish merges all part files into `out_path`.
    """
    if window not in WINDOWS:
        raise ValueError(f"--window {window!r}: choose full or trim")
    t0 = time.time()
    out_path = Path(out_path)
    target = part_path(out_path, shard)
    if not overwrite:
        check_output(target, "extract")
    if overwrite or not _holds_manifest(target, table, window):
        check_audio_present(table, root)  # before any file is made: a wrong --root leaves nothing behind
    target.parent.mkdir(parents=True, exist_ok=True)
    work = target.with_name(target.name + ".partial")
    with exclusive(target.with_name(target.name + ".lock"), f"cache {target}", log, (target.parent, work)):
        encoder_id, _, _ = resolve_model(model)
        enc = load_encoder(model, device)
        identity = {"encoder_id": encoder_id, "weights_sha256": enc.weights_sha256, "window": window,
                    "sample_rate": SAMPLE_RATE, "manifest_sha256": manifest_sha256(table)}
        result = None if overwrite else _finished(target, identity, table, log)
        if result is None:
            if batch_size is None:
                batch_size = 16 if window == "trim" or enc.device.type == "cuda" else 4
            if workers is None:
                workers = 4 if enc.device.type == "cuda" else 1
            durations = table["duration"].to_numpy(np.float64) if "duration" in table else np.zeros(len(table))
            plan = _prepare_workdir(work, identity, plan_batches(durations, shard, batch_size), overwrite)
            paths = [str(Path(root) / p) for p in table["path"]]
            writing = work
            try:
                secs, encoded, t_loop = _encode_plan(enc, paths, work, plan, window, workers, progress, target.stem, log)
                writing = target
                result = _finalize(table, work, target, plan, identity, shard, enc, log)
            except (KeyboardInterrupt, OSError) as error:
                _note_resume(error, work, plan, writing, _bytes_per_row(enc))
                raise
            result.encoded, result.encode_seconds = encoded, t_loop
            result.audio_seconds = secs if encoded else result.audio_seconds
        result.wall_seconds = time.time() - t0
    if shard[1] > 1:
        parts = [part_path(out_path, (i, shard[1])) for i in range(shard[1])]
        if all(p.exists() and _identity_of_file(p).get("complete") for p in parts):
            log(f"all {shard[1]} shards done: merging into {out_path}")
            merge(parts, out_path)
    return result


def _finished(target: Path, identity: dict, table: pd.DataFrame, log) -> ExtractResult | None:
    """The result of an earlier complete run with the same identity; refuses a different one."""
    if not target.exists():
        return None
    found = _identity_of_file(target)
    change = ""
    if str(found.get("manifest_sha256", "")) != identity["manifest_sha256"]:
        with open_checked(target) as f:
            change = manifest_changes(read_table(f), table, [c for c in MANIFEST_KEYS if c in table])
    problems = _mismatch(found, identity, change)
    if problems:
        raise CacheMismatch(f"{target} was made with another setup (" + "; ".join(problems)
                            + "): use another --cache-dir, or pass --overwrite to replace it")
    if not found.get("complete"):
        return None
    with h5py.File(target, "r") as f:
        t = read_table(f)
        secs = float(f.attrs.get("audio_seconds", t["duration"].sum()))
    if not t["ok"].any():
        log(f"{target} holds no encoded utterance (all {len(t)} failed in an earlier run): encoding again")
        return None
    log(f"{target} is already complete ({len(t)} utterances): nothing to do")
    failed = dict(zip(t.loc[~t["ok"], "utt_id"], t.loc[~t["ok"], "error"]))
    return ExtractResult(target, len(t), failed, secs, already_complete=True)


def _bytes_per_row(enc: Encoder) -> int:
    """Disk bytes of one utterance in a batch file or the cache: its float16 vectors."""
    return enc.num_hidden_states * enc.hidden_size * 2


def _note_resume(error: BaseException, work: Path, plan, writing: Path, row_bytes: float) -> None:
    """Tell the user (through os_faults) what an interrupted or failed run kept, how to resume,
    and, for OS errors, which path and how much space the rest of the run needs."""
    done = _done_batches(work, log=lambda *_: None) if work.exists() else {}
    error.add_note(f"kept: {len(done)} of {len(plan)} finished batches in {work}; "
                   "the same command resumes from there.")
    if isinstance(error, OSError):
        rows_left = sum(len(rows) for b, rows in enumerate(plan) if b not in done)
        rows_all = sum(len(rows) for rows in plan)
        error.bytes_needed = (rows_left + rows_all) * row_bytes  # the batches stay until the cache is written
        if error.filename is None:
            error.filename = str(writing)


def _encode_plan(enc, paths, work: Path, plan, window, workers, progress, name, log):
    """Run the batches of `plan` not yet in `work`; returns (audio seconds, utterances, loop seconds)."""
    done = _done_batches(work, log)
    todo = [b for b in range(len(plan)) if b not in done]
    if done:
        log(f"resuming: {len(done)} of {len(plan)} batches already done")
    loader = torch.utils.data.DataLoader(
        AudioDataset(paths, enc.feature_extractor, window), batch_sampler=[plan[b] for b in todo],
        collate_fn=collate, num_workers=workers, pin_memory=enc.device.type == "cuda",
        prefetch_factor=4 if workers else None, worker_init_fn=functools.partial(die_with_parent, os.getpid()))
    secs, encoded, t_loop = 0.0, 0, time.time()
    with tqdm(total=sum(len(plan[b]) for b in todo), unit="utt", disable=not progress, file=sys.stderr,
              desc=name) as bar:
        for b, batch in zip(todo, loader):
            results = encode_batch(enc, batch, window)
            items = batch[0]
            for it in items:
                if it.error:
                    bar.write(f"warning: skipping {paths[it.index]}: {it.error}")
            _save_batch(work, b, plan[b], results, {it.index: it.error for it in items if it.error},
                        {it.index: it.seconds for it in items})
            secs += sum(it.seconds for it in items)
            encoded += len(results)
            bar.update(len(items))
            bar.set_postfix(audio_h=f"{secs / 3600:.2f}")
    return secs, encoded, time.time() - t_loop


def _finalize(table, work: Path, target: Path, plan, identity, shard, enc, log):
    """Stream the finished batches into the HDF5 cache (rows in manifest order), drop the work dir."""
    batches = [p for _, p in sorted(_done_batches(work, log).items())]
    if len(batches) != len(plan):
        raise RuntimeError(f"{work}: {len(batches)} of {len(plan)} batches present; re-run to finish")
    rows_all = np.sort(np.asarray([r for batch in plan for r in batch], np.int64))
    position = np.full(len(table), -1, np.int64)
    position[rows_all] = np.arange(len(rows_all))
    sub = table.iloc[rows_all].reset_index(drop=True).copy()
    sub["row"] = rows_all
    sub["ok"], sub["error"] = True, ""
    sub["num_frames"], sub["duration"] = 0, 0.0
    if "fold" in sub:
        sub["fold"] = sub["fold"].astype("Int64").fillna(-1).astype(np.int16)
    for p in batches:
        z = _load_batch(p)
        pos = position[z["rows"]]
        sub.loc[pos, "ok"], sub.loc[pos, "error"] = z["ok"], z["error"]
        sub.loc[pos, "num_frames"], sub.loc[pos, "duration"] = z["num_frames"], z["duration"]
    failed = dict(zip(sub.loc[~sub["ok"], "utt_id"], sub.loc[~sub["ok"], "error"]))
    if not sub["ok"].any():
        shutil.rmtree(work)  # nothing to resume: the next run starts afresh
        reasons = "".join(f"\n  {utt}: {why}" for utt, why in list(failed.items())[:5])
        raise NothingEncoded(f"all {len(sub)} files failed, so no cache was written to {target}:{reasons}\n"
                             "Fix the audio (or --root) and run the same command again.")
    audio_seconds = float(sub["duration"].sum())
    attrs = dict(identity, package_version=package_version(), num_failed=len(failed),
                 created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                 audio_seconds=audio_seconds, shard=f"{shard[0]}/{shard[1]}")

    def blocks():
        for p in batches:
            z = _load_batch(p)
            ok_rows = z["rows"][z["ok"]]
            if len(ok_rows):
                yield position[ok_rows], z["embeddings"]

    write_cache(target, sub, attrs, (enc.num_hidden_states, enc.hidden_size), blocks())
    shutil.rmtree(work)
    return ExtractResult(target, len(sub), failed, audio_seconds)


def merge(parts, out_path) -> Path:
    """Join shard part files (same encoder/window/manifest) into one cache in manifest order."""
    parts = [Path(p) for p in parts]
    check_output(out_path, "merge")
    idents = [_identity_of_file(p) for p in parts]
    for p, ident in zip(parts, idents):
        if not ident.get("complete"):
            raise ValueError(f"{p} is incomplete: finish that shard first")
        problems = _mismatch(ident, idents[0])
        if problems:
            raise CacheMismatch(f"{p} does not belong with {parts[0]}: " + "; ".join(problems))
    tables, shapes = [], set()
    for p in parts:
        with h5py.File(p, "r") as f:
            tables.append(read_table(f))
            shapes.add(f["embeddings"].shape[1:])
            attrs = dict(f.attrs)
    rows = np.concatenate([t["row"].to_numpy() for t in tables])
    if len(shapes) != 1 or np.unique(rows).size != rows.size or set(rows) != set(range(rows.size)):
        raise ValueError("parts do not form one cache: they overlap, miss rows, or differ in shape")
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


def embed_files(paths, model: str | None = None, window: str = "full", device: str = "auto",
                batch_size: int = 8, encoder: Encoder | None = None,
                weights_sha256: str | None = None, unreadable: dict | None = None) -> np.ndarray:
    """Pooled hidden states [n, L+1, D] float32 of audio files, processed exactly as in a cache.

    To match a cache: model=attrs["encoder_id"], window=attrs["window"], and
    weights_sha256=attrs["weights_sha256"] to refuse other weights. Raises BadAudio naming the file,
    or, given an `unreadable` dict, records path -> reason there and returns the other files' rows.
    """
    enc = encoder or load_encoder(model, device)
    if weights_sha256 and enc.weights_sha256 != weights_sha256:
        raise EncoderError(f"encoder {enc.encoder_id!r} has weights {enc.weights_sha256[:12]}..., "
                           f"the cache was made with {weights_sha256[:12]}...: use the same model files")
    out = []
    for start in range(0, len(paths), batch_size):
        items = []
        for i, p in enumerate(paths[start:start + batch_size]):
            try:
                audio = load_audio(p)
            except BadAudio as exc:
                if unreadable is None:
                    raise BadAudio(f"{p}: {exc}") from exc
                unreadable[p] = str(exc)
                continue
            mels, counts = log_mel_windows(audio, enc.feature_extractor, window)
            items.append(Item(len(items), mels, counts, len(audio) / SAMPLE_RATE))
        if not items:
            continue
        res = encode_batch(enc, collate(items), window)
        out.extend(res[i][0] for i in range(len(items)))
    hidden = (enc.num_hidden_states, enc.hidden_size)
    return np.stack(out).astype(np.float32) if out else np.zeros((0, *hidden), np.float32)
