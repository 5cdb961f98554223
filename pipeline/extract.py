"""Encode a corpus once into an HDF5 cache: resumable, crash-safe, shardable, the device kept fed.

The orchestration: DataLoader workers decode and resample (pipeline.audio) batches planned by a
frame budget (pipeline.batch_encode); the main process copies each batch to the device, computes
its log-mel and hidden states there, and, while the device works on batch b, saves batch b-1 to
the resume store (pipeline.resume_store: `kill -9` loses at most the batches in flight, the same
command resumes and gives the uninterrupted run's vectors).  At the end the batches are streamed
into the HDF5 cache (pipeline.cache, temp file + rename) and the store is removed.  A
`<cache>.lock` (pipeline.run_lock: a record lock, released by the kernel even on kill -9 and never
held by a DataLoader worker) keeps a second writer out, and the workers die with the main process.

Pooling: every hidden state is averaged over the encoder frames of real audio (ceil(mel/2),
about 50 per second), never over padding.  Clips over 30 s are cut into 30 s windows and their
window means are combined weighted by frame count, i.e. the mean over all the clip's frames.
"""
from __future__ import annotations

import functools
import hashlib
import os
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import soundfile as sf
import torch
from tqdm import tqdm

from data_manifests.errors import UserError
from data_manifests.schema import CHANNEL_COLUMN, SEGMENT_COLUMNS, listed_error
from data_manifests.summary import manifest_changes
from pipeline.audio import SAMPLE_RATE, AudioDataset, BadAudio, Item, Span, collate, load_audio, split_windows
from pipeline.batch_encode import encode_batch, plan_batches
from pipeline.cache import (
    ANNOTATION_COLUMNS,
    CacheMismatch,
    check_output,
    identity_of,
    merge,
    mismatches,
    open_checked,
    read_table,
    set_annotation,
    write_cache,
)
from pipeline.encoder import Encoder, EncoderError, load_encoder
from pipeline.log_mel import mel_filters
from pipeline.resume_store import BatchStore
from pipeline.run_lock import die_with_parent, exclusive
from pipeline.shards import parse_shard  # noqa: F401  (`extract --shard`, where callers have found it)
from pipeline.window import FULL_MEL_FRAMES, check_window

# the segment columns (start, end, recording, channel) exist only in segment manifests: a clip
# manifest's digest, and so its cache's fingerprint, is what it was before segments existed
MANIFEST_KEYS = ("utt_id", "path", "label", "speaker", "gender", "language", "fold", "split", "corpus",
                 *SEGMENT_COLUMNS, CHANNEL_COLUMN)
# mel frames of encoder input per batch, padding included: 64 full windows on a GPU, 4 on a CPU
FRAME_BUDGET = {"cuda": 64 * FULL_MEL_FRAMES, "cpu": 4 * FULL_MEL_FRAMES}


class AudioNotFound(UserError):
    """Most of a manifest's files are not under the given root: nothing is worth encoding."""


class NothingEncoded(UserError):
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


def spans_of(table: pd.DataFrame) -> list[Span | None] | None:
    """The span of every row of a segment manifest (None for a manifest of clips)."""
    if "start" not in table:
        return None
    channels = table[CHANNEL_COLUMN] if CHANNEL_COLUMN in table else pd.Series(pd.NA, index=table.index)
    return [Span(float(a), float(b), None if pd.isna(c) else int(c))
            for a, b, c in zip(table["start"], table["end"], channels)]


def check_spans(table: pd.DataFrame, root) -> None:
    """Pre-flight of a segment manifest: every span inside its source file (read from the headers);
    a UserError naming the files and segments that run past the end (a manifest of other audio)."""
    if "end" not in table:
        return
    root = Path(root)
    ends = table.groupby("path")["end"].max()
    past = []
    for path, end in ends.items():
        try:
            info = sf.info(str(root / path))
        except (RuntimeError, OSError, sf.LibsndfileError):
            continue  # a missing or unreadable file is recorded as failed, as for clips
        length = info.frames / info.samplerate
        if end > length + 0.5 / info.samplerate:
            rows = table[(table["path"] == path) & (table["end"] > length)]
            past.append(f"{root / path}: {len(rows)} segments end after its {length:.3f} s "
                        f"(e.g. {rows['utt_id'].iloc[0]} ends at {rows['end'].iloc[0]:.3f} s)")
    if past:
        raise listed_error(f"{len(past)} source files are shorter than the segments the manifest reads from them", past,
                           "The manifest was made from other audio: re-run `python cli.py segment` on these files.")


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


def _holds_manifest(target: Path, table: pd.DataFrame, window: str) -> bool:
    """A complete cache of this manifest and window is already there (its audio may be gone by now)."""
    if not target.is_file():
        return False
    found = identity_of(target)
    return bool(found.get("complete")) and found.get("window") == window \
        and found.get("manifest_sha256") == manifest_sha256(table)


def default_workers(device: torch.device) -> int:
    """DataLoader workers (decode + resample only): every core but the main process's on a GPU
    machine (one core decodes ~600 files/s; the encoder wants thousands), one on a CPU."""
    if device.type != "cuda":
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 2
    return max(1, min(cores - 1, 32))


def extract(table: pd.DataFrame, root, out_path, model: str | None = None, window: str = "full",
            device: str = "auto", batch_size: int | None = None, workers: int | None = None,
            shard: tuple[int, int] = (0, 1), overwrite: bool = False, progress: bool = True, log=print,
            frame_budget: int | None = None, dtype: str = "auto", encoder: Encoder | None = None) -> ExtractResult:
    """Encode every row of a manifest table into `out_path` (or its shard part file).

    Batches hold about `frame_budget` mel frames (default FRAME_BUDGET of the device) and at most
    `batch_size` utterances. `encoder` (already loaded) replaces model/device/dtype. The last shard
    to finish merges all part files into `out_path`.
    """
    check_window(window)
    t0 = time.time()
    out_path = Path(out_path)
    target = part_path(out_path, shard)
    if not overwrite:
        check_output(target, "extract")
    if overwrite or not _holds_manifest(target, table, window):
        check_audio_present(table, root)  # before any file is made: a wrong --root leaves nothing behind
        check_spans(table, root)
    target.parent.mkdir(parents=True, exist_ok=True)
    store = BatchStore(target.with_name(target.name + ".partial"))
    with exclusive(target.with_name(target.name + ".lock"), f"cache {target}", log, (target.parent, store.folder)):
        enc = encoder or load_encoder(model, device, dtype)
        identity = {"encoder_id": enc.encoder_id, "weights_sha256": enc.weights_sha256, "window": window,
                    "sample_rate": SAMPLE_RATE, "manifest_sha256": manifest_sha256(table)}
        result = None if overwrite else _finished(target, identity, table, log)
        if result is not None:
            sync_annotations(target, table, log)
        else:
            budget = frame_budget or FRAME_BUDGET["cuda" if enc.device.type == "cuda" else "cpu"]
            workers = default_workers(enc.device) if workers is None else workers
            durations = table["duration"].to_numpy(np.float64) if "duration" in table else np.zeros(len(table))
            plan = store.start(identity, plan_batches(durations, shard, window, budget, batch_size), overwrite)
            paths = [str(Path(root) / p) for p in table["path"]]
            writing = store.folder
            try:
                secs, encoded, t_loop = _encode_plan(enc, paths, spans_of(table), store, plan, window, workers,
                                                     progress, target.stem, log)
                writing = target
                result = _finalize(table, store, target, plan, identity, shard, enc, log)
            except (KeyboardInterrupt, OSError) as error:
                store.note_resume(error, plan, writing, _bytes_per_row(enc))
                raise
            result.encoded, result.encode_seconds = encoded, t_loop
            result.audio_seconds = secs if encoded else result.audio_seconds
        result.wall_seconds = time.time() - t0
    if shard[1] > 1:
        parts = [part_path(out_path, (i, shard[1])) for i in range(shard[1])]
        if all(p.exists() and identity_of(p).get("complete") for p in parts):
            log(f"all {shard[1]} shards done: merging into {out_path}")
            merge(parts, out_path)
    return result


def _finished(target: Path, identity: dict, table: pd.DataFrame, log) -> ExtractResult | None:
    """The result of an earlier complete run with the same identity; refuses a different one."""
    if not target.exists():
        return None
    found = identity_of(target)
    change = ""
    if str(found.get("manifest_sha256", "")) != identity["manifest_sha256"]:
        with open_checked(target) as f:
            change = manifest_changes(read_table(f), table, [c for c in MANIFEST_KEYS if c in table])
    problems = mismatches(found, identity, change)
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


def sync_annotations(target: Path, table: pd.DataFrame, log) -> list[str]:
    """Copy the manifest's annotation columns (text_id) into a complete cache of the same manifest
    when they differ (a manifest re-made with prompt ids): no re-encoding, same fingerprint."""
    with h5py.File(target, "r") as f:
        cached = read_table(f, ["row", *ANNOTATION_COLUMNS])
    rows = cached["row"].to_numpy() if "row" in cached else np.arange(len(cached))
    changed = []
    for column in ANNOTATION_COLUMNS:
        wanted = table[column].fillna("").astype(str).to_numpy()[rows] if column in table else None
        if wanted is None or (column in cached and (cached[column].to_numpy() == wanted).all()):
            continue
        set_annotation(target, column, wanted)
        changed.append(column)
        log(f"{target}: {column} updated from the manifest ({len(set(wanted) - {''})} distinct; vectors unchanged)")
    return changed


def _bytes_per_row(enc: Encoder) -> int:
    """Disk bytes of one utterance in a batch file or the cache: its float16 vectors."""
    return enc.num_hidden_states * enc.hidden_size * 2


@dataclass
class _InFlight:
    """A batch whose vectors are still being computed / copied back while the next one starts."""

    b: int
    items: list
    good: list
    vectors: torch.Tensor | None  # [n_ok, L+1, D] float32 on the host (pinned on a GPU)
    frames: np.ndarray | None
    ready: object  # a CUDA event, or None on the CPU


def _launch(enc: Encoder, filters, batch, window: str, b: int) -> _InFlight:
    """Queue batch b on the device and its copy back; returns without waiting for either."""
    pooled, frames, good = encode_batch(enc, filters, batch, window)
    ready = None
    if pooled is not None and enc.device.type == "cuda":
        host = torch.empty(pooled.shape, dtype=pooled.dtype, pin_memory=True)
        host.copy_(pooled, non_blocking=True)
        ready = torch.cuda.Event()
        ready.record()
        pooled = host
    return _InFlight(b, batch[0], good, pooled, frames, ready)


def _encode_plan(enc, paths, spans, store: BatchStore, plan, window, workers, progress, name, log):
    """Run the batches of `plan` not yet in the store; returns (audio seconds, utterances, loop seconds).
    While batch b runs on the device, batch b-1 is saved and the workers decode the next ones."""
    done = store.done(log)
    todo = [b for b in range(len(plan)) if b not in done]
    if done:
        log(f"resuming: {len(done)} of {len(plan)} batches already done")
    loader = torch.utils.data.DataLoader(
        AudioDataset(paths, spans), batch_sampler=[plan[b] for b in todo], collate_fn=collate, num_workers=workers,
        pin_memory=enc.device.type == "cuda", prefetch_factor=2 if workers else None,
        worker_init_fn=functools.partial(die_with_parent, os.getpid()))
    filters = mel_filters(enc.feature_extractor, enc.device)
    totals = {"secs": 0.0, "encoded": 0}
    t_loop = time.time()
    with tqdm(total=sum(len(plan[b]) for b in todo), unit="utt", disable=not progress, file=sys.stderr,
              desc=name) as bar:

        def finish(flight: _InFlight) -> None:
            if flight.ready is not None:
                flight.ready.synchronize()
            errors = {it.index: it.error for it in flight.items if it.error}
            for index, reason in errors.items():
                bar.write(f"warning: skipping {paths[index]}: {reason}")
            vectors = None if flight.vectors is None else flight.vectors.numpy()
            store.save(flight.b, plan[flight.b], [it.index for it in flight.good], vectors, flight.frames,
                       errors, {it.index: it.seconds for it in flight.items})
            totals["secs"] += sum(it.seconds for it in flight.items)
            totals["encoded"] += len(flight.good)
            bar.update(len(flight.items))
            bar.set_postfix(audio_h=f"{totals['secs'] / 3600:.2f}")

        flight = None
        for b, batch in zip(todo, loader):
            queued = _launch(enc, filters, batch, window, b)
            if flight is not None:
                finish(flight)
            flight = queued
        if flight is not None:
            finish(flight)
    return totals["secs"], totals["encoded"], time.time() - t_loop


def _finalize(table, store: BatchStore, target: Path, plan, identity, shard, enc, log):
    """Stream the finished batches into the HDF5 cache (rows in manifest order), drop the store."""
    batches = [p for _, p in sorted(store.done(log).items())]
    if len(batches) != len(plan):
        raise RuntimeError(f"{store.folder}: {len(batches)} of {len(plan)} batches present; re-run to finish")
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
        z = store.load(p)
        pos = position[z["rows"]]
        sub.loc[pos, "ok"], sub.loc[pos, "error"] = z["ok"], z["error"]
        sub.loc[pos, "num_frames"], sub.loc[pos, "duration"] = z["num_frames"], z["duration"]
    failed = dict(zip(sub.loc[~sub["ok"], "utt_id"], sub.loc[~sub["ok"], "error"]))
    if not sub["ok"].any():
        store.remove()  # nothing to resume: the next run starts afresh
        reasons = "".join(f"\n  {utt}: {why}" for utt, why in list(failed.items())[:5])
        raise NothingEncoded(f"all {len(sub)} files failed, so no cache was written to {target}:{reasons}\n"
                             "Fix the audio (or --root) and run the same command again.")
    audio_seconds = float(sub["duration"].sum())
    attrs = dict(identity, package_version=package_version(), num_failed=len(failed),
                 created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                 audio_seconds=audio_seconds, shard=f"{shard[0]}/{shard[1]}")

    def blocks():
        for p in batches:
            z = store.load(p)
            ok_rows = z["rows"][z["ok"]]
            if len(ok_rows):
                yield position[ok_rows], z["embeddings"]

    write_cache(target, sub, attrs, (enc.num_hidden_states, enc.hidden_size), blocks())
    store.remove()
    return ExtractResult(target, len(sub), failed, audio_seconds)


def embed_files(paths, model: str | None = None, window: str = "full", device: str = "auto",
                batch_size: int = 8, encoder: Encoder | None = None,
                weights_sha256: str | None = None, unreadable: dict | None = None, spans=None) -> np.ndarray:
    """Pooled hidden states [n, L+1, D] float32 of audio files (or of their `spans`, one Span or
    None per path: segments of a long file read in place), processed exactly as in a cache.

    To match a cache: model=attrs["encoder_id"], window=attrs["window"], and
    weights_sha256=attrs["weights_sha256"] to refuse other weights. Raises BadAudio naming the file,
    or, given an `unreadable` dict, records path -> reason there and returns the other files' rows.
    """
    check_window(window)
    enc = encoder or load_encoder(model, device)
    if weights_sha256 and enc.weights_sha256 != weights_sha256:
        raise EncoderError(f"encoder {enc.encoder_id!r} now has weights {enc.weights_sha256[:12]}..., but the "
                           f"vectors were made with weights {weights_sha256[:12]}...: a different encoder gives "
                           "different vectors; use the same model files, or re-extract and retrain")
    filters = mel_filters(enc.feature_extractor, enc.device)
    spans = [None] * len(paths) if spans is None else list(spans)
    out = []
    for start in range(0, len(paths), batch_size):
        items = []
        for p, span in zip(paths[start:start + batch_size], spans[start:start + batch_size]):
            try:
                audio = load_audio(p, span)
            except BadAudio as exc:
                if unreadable is None:
                    raise BadAudio(f"{p}: {exc}") from exc
                unreadable[p] = str(exc)
                continue
            items.append(Item(len(items), split_windows(audio), len(audio) / SAMPLE_RATE))
        if not items:
            continue
        pooled, _, _ = encode_batch(enc, filters, collate(items), window)
        out.append(pooled.cpu().numpy())
    hidden = (enc.num_hidden_states, enc.hidden_size)
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, *hidden), np.float32)
