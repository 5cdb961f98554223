"""Recordings -> utterance-sized segments (`cli.py segment`): a voice-activity detector over long audio.

Three layers, each testable alone:
  the segment maths (pure functions on per-frame speech probabilities: hysteresis threshold ->
  short silences closed -> short bursts dropped -> long runs split at their quietest point ->
  padding -> segments too short for an emotion dropped), `segments_from_probs`;
  the detector: Silero VAD's sequence ONNX model from the `silero-vad` wheel (offline, run by
  onnxruntime; the `silero_vad` package itself is never imported: it imports torch and sets its
  thread count to 1), fed a stream block by block with its state carried (`SileroVAD`);
  the reading: a file decoded `BLOCK_SECONDS` at a time, downmixed (or one stream per channel),
  resampled to 16 kHz as a stream (`read_blocks`): memory does not grow with the file's length.
The run (`segment_files`) writes one manifest row per segment, resumable and sharded: each shard
appends a line per finished recording to its part file (`<out>.part-i-of-n.jsonl`), and the
shard that finishes last merges the parts into the manifest (folds keep a recording whole).
"""
from __future__ import annotations

import functools
import importlib.util
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
import soxr
from tqdm import tqdm

from data_manifests.adapters.folders import _field, compile_speaker_regex
from data_manifests.errors import UserError
from data_manifests.folds import speaker_folds
from data_manifests.home import write_manifest_root
from data_manifests.schema import CHANNEL_COLUMN, UNLABELLED
from data_manifests.storage import read_manifest, write_manifest, write_text_atomic
from pipeline.audio import SAMPLE_RATE, WINDOW_SAMPLES, BadAudio

FRAME = 512  # samples per VAD frame at 16 kHz (32 ms), the model's input
CONTEXT = 64  # samples of the previous frame the model sees before each frame
FRAME_SECONDS = FRAME / SAMPLE_RATE
BLOCK_SECONDS = 60.0  # audio decoded at a time: 60 s of 48 kHz stereo is 23 MB
MODEL_FILE = "silero_vad_16k_sequence.onnx"
STATE_SHAPE = (1, 1, 128)
SOUND_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".au", ".caf", ".w64", ".rf64")
MAX_WINDOW = WINDOW_SAMPLES / SAMPLE_RATE  # 30 s: one Whisper input


@dataclass(frozen=True)
class SegmentSettings:
    """What counts as a segment, in seconds (probabilities for the threshold)."""

    threshold: float = 0.5  # speech starts where the VAD's probability reaches this
    min_speech: float = 0.25  # shorter bursts of speech are dropped (clicks, breaths)
    min_silence: float = 0.25  # shorter pauses do not end a segment
    padding: float = 0.2  # added before and after each segment (at most half the pause to the next)
    min_segment: float = 0.5  # shorter segments (after padding) are dropped: too short for an emotion
    max_segment: float = 20.0  # longer runs are split at their quietest point (<= 30 s: one encoder input)

    def check(self) -> "SegmentSettings":
        """The settings, or a UserError naming the one out of range."""
        limits = {"threshold": (0.0, 1.0), "min_speech": (0.0, MAX_WINDOW), "min_silence": (0.0, MAX_WINDOW),
                  "padding": (0.0, 5.0), "min_segment": (0.0, MAX_WINDOW), "max_segment": (1.0, MAX_WINDOW)}
        for name, (low, high) in limits.items():
            value = getattr(self, name)
            if not low <= value <= high:
                raise UserError(f"--{name.replace('_', '-')} {value:g} is outside [{low:g}, {high:g}]")
        if self.min_segment >= self.max_segment:
            raise UserError(f"--min-segment {self.min_segment:g} must be under --max-segment {self.max_segment:g}")
        return self


# --- the segment maths: per-frame probabilities -> [start, end) seconds --------------------------
def speech_runs(probs: np.ndarray, threshold: float) -> np.ndarray:
    """[k, 2] frame ranges [start, end) of speech with hysteresis: a run starts at a frame >= threshold
    and lasts until a frame falls below threshold - 0.15 (so a dip just under the threshold does
    not cut a word)."""
    low = max(threshold - 0.15, 0.01)
    runs, start = [], None
    above, below = probs >= threshold, probs < low
    for i in np.flatnonzero(above | below):
        if start is None and above[i]:
            start = i
        elif start is not None and below[i]:
            runs.append((start, i))
            start = None
    if start is not None:
        runs.append((start, len(probs)))
    return np.asarray(runs, np.int64).reshape(-1, 2)


def close_gaps(runs: np.ndarray, min_gap: int) -> np.ndarray:
    """Runs separated by fewer than `min_gap` frames joined into one."""
    if len(runs) < 2:
        return runs
    keep_break = runs[1:, 0] - runs[:-1, 1] >= min_gap
    starts = np.concatenate([runs[:1, 0], runs[1:, 0][keep_break]])
    ends = np.concatenate([runs[:-1, 1][keep_break], runs[-1:, 1]])
    return np.stack([starts, ends], 1)


def split_long(runs: np.ndarray, probs: np.ndarray, max_frames: int) -> np.ndarray:
    """Runs longer than `max_frames` cut at their quietest frame (probability smoothed over 5
    frames; the middle of a tie) within the run's middle half, again until every piece fits."""
    smooth = np.convolve(probs, np.ones(5) / 5, mode="same") if len(probs) else probs
    out, todo = [], [tuple(r) for r in runs[::-1]]
    while todo:
        start, end = todo.pop()
        length = end - start
        if length <= max_frames:
            out.append((start, end))
            continue
        lo, hi = start + length // 4, end - length // 4
        quietest = np.flatnonzero(smooth[lo:hi] <= smooth[lo:hi].min() + 1e-6)
        cut = lo + int(quietest[len(quietest) // 2])  # the middle of a flat minimum
        todo += [(cut, end), (start, cut)]
    return np.asarray(out, np.int64).reshape(-1, 2)


def pad_segments(bounds: np.ndarray, padding: float, total: float) -> np.ndarray:
    """[k, 2] seconds widened by `padding` on each side, never past half the pause to a neighbour
    (two segments never overlap) nor outside [0, total]."""
    if not len(bounds):
        return bounds
    gaps = bounds[1:, 0] - bounds[:-1, 1]
    before = np.minimum(padding, np.concatenate([[np.inf], gaps / 2]))
    after = np.minimum(padding, np.concatenate([gaps / 2, [np.inf]]))
    return np.stack([np.maximum(bounds[:, 0] - before, 0.0), np.minimum(bounds[:, 1] + after, total)], 1)


def segments_from_probs(probs: np.ndarray, settings: SegmentSettings, total: float | None = None,
                        frame_seconds: float = FRAME_SECONDS) -> np.ndarray:
    """[k, 2] segments [start, end) in seconds from per-frame speech probabilities (frame i covers
    [i, i+1) * frame_seconds; `total`: the audio's length, default the frames')."""
    probs = np.asarray(probs, np.float32)
    total = len(probs) * frame_seconds if total is None else float(total)
    runs = speech_runs(probs, settings.threshold)
    runs = close_gaps(runs, math.ceil(settings.min_silence / frame_seconds - 1e-9))
    runs = runs[(runs[:, 1] - runs[:, 0]) * frame_seconds >= settings.min_speech - 1e-9]
    runs = split_long(runs, probs, int((settings.max_segment - 2 * settings.padding) / frame_seconds + 1e-9))
    bounds = np.minimum(runs.astype(np.float64) * frame_seconds, total)
    bounds = pad_segments(bounds, settings.padding, total)
    return bounds[bounds[:, 1] - bounds[:, 0] >= settings.min_segment - 1e-9]


# --- the detector ------------------------------------------------------------------------------
def model_path() -> Path:
    """The sequence ONNX model inside the installed silero-vad wheel (found without importing it)."""
    spec = importlib.util.find_spec("silero_vad")
    path = Path(spec.origin).parent / "data" / MODEL_FILE if spec and spec.origin else None
    if path is None or not path.is_file():
        raise UserError("`segment` needs the silero-vad package (its model ships in the wheel): "
                        "pip install 'bgrpo-ser[segment]' (or pip install 'silero-vad>=6.2.3' onnxruntime)")
    return path


@functools.lru_cache(maxsize=1)
def onnx_session(threads: int = 1):
    """The process's onnxruntime session of the VAD (one thread: the model is a recurrent stream,
    frame after frame); a SileroVAD per stream shares it."""
    try:
        import onnxruntime as ort
    except ImportError as error:
        raise UserError("`segment` needs onnxruntime: pip install 'bgrpo-ser[segment]'") from error
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = threads
    return ort.InferenceSession(str(model_path()), sess_options=options, providers=["CPUExecutionProvider"])


class SileroVAD:
    """One audio stream's speech probability per 32 ms frame, fed in blocks of any length: the
    model's recurrent state and the previous frame's last samples are carried between blocks, so
    the probabilities equal those of the whole stream at once (silero's SileroVADSequence)."""

    def __init__(self, session, frames_per_call: int = 128):
        self.session, self.frames_per_call = session, frames_per_call
        self.hidden = np.zeros(STATE_SHAPE, np.float32)
        self.cell = np.zeros(STATE_SHAPE, np.float32)
        self.context = np.zeros(CONTEXT, np.float32)
        self.rest = np.zeros(0, np.float32)

    def feed(self, audio: np.ndarray, last: bool = False) -> np.ndarray:
        """Probabilities of the whole frames now available (with `last`: the final frame, zero-padded)."""
        audio = np.concatenate([self.rest, np.asarray(audio, np.float32)])
        n = -(-len(audio) // FRAME) if last else len(audio) // FRAME
        frames = np.zeros((n, FRAME), np.float32)
        frames.reshape(-1)[:min(len(audio), n * FRAME)] = audio[:n * FRAME]
        self.rest = audio[n * FRAME:]
        out = []
        for first in range(0, n, self.frames_per_call):
            block = frames[first:first + self.frames_per_call]
            contexts = np.concatenate([self.context[None], block[:-1, -CONTEXT:]])
            self.context = block[-1, -CONTEXT:].copy()
            probs, self.hidden, self.cell = self.session.run(
                ["speech_probs", "hn", "cn"],
                {"input": np.concatenate([contexts, block], 1), "h": self.hidden, "c": self.cell})
            out.append(np.asarray(probs, np.float32).reshape(-1))
        return np.concatenate(out) if out else np.zeros(0, np.float32)


# --- reading -----------------------------------------------------------------------------------
def read_blocks(path, split: bool = False, block_seconds: float = BLOCK_SECONDS):
    """Yield (source seconds read, float32 [n, c] at 16 kHz, last) blocks of a file: c = 1 (the
    downmix) or every channel (`split`). BadAudio when the file cannot be decoded or is empty."""
    try:
        handle = sf.SoundFile(str(path))
    except Exception as exc:  # soundfile raises several types (LibsndfileError, RuntimeError, ...)
        raise BadAudio(f"unreadable: {exc}".replace("\n", " ")) from exc
    with handle as f:
        rate, width = f.samplerate, f.channels if split else 1
        stream = None if rate == SAMPLE_RATE else soxr.ResampleStream(rate, SAMPLE_RATE, width, "float32", "HQ")
        step, seen = max(1, int(block_seconds * rate)), 0
        while True:
            try:
                data = f.read(step, dtype="float32", always_2d=True)
            except Exception as exc:
                raise BadAudio(f"unreadable after {seen / rate:.1f} s: {exc}".replace("\n", " ")) from exc
            seen += len(data)
            last = len(data) < step or f.tell() >= f.frames
            if not seen:
                raise BadAudio("empty: zero samples")
            if not np.isfinite(data).all():
                raise BadAudio(f"non-finite samples (NaN/inf) after {(seen - len(data)) / rate:.1f} s")
            audio = data if split else data.mean(axis=1, keepdims=True, dtype=np.float32)
            if stream is not None:
                audio = stream.resample_chunk(audio, last=last)
            yield len(data) / rate, audio, last
            if last:
                return


@dataclass
class Recording:
    """A file's segments: per stream (None: the downmix, else a channel) its [k, 2] seconds."""

    seconds: float
    rate: int
    channels: int
    streams: dict = field(default_factory=dict)


def segment_file(path, settings: SegmentSettings, session, split: bool = False, on_block=None) -> Recording:
    """The segments of one file, read block by block (BadAudio with the reason when it cannot be read)."""
    if not Path(path).is_file():
        raise BadAudio("missing: no such file")
    try:
        info = sf.info(str(path))
    except Exception as exc:  # soundfile raises several types (LibsndfileError, RuntimeError, ...)
        raise BadAudio(f"unreadable: {exc}".replace("\n", " ")) from exc
    vads, probs, samples = None, None, 0
    for seconds, audio, last in read_blocks(path, split):
        if vads is None:
            vads = [SileroVAD(session) for _ in range(audio.shape[1])]
            probs = [[] for _ in vads]
        for c, vad in enumerate(vads):
            probs[c].append(vad.feed(audio[:, c], last))
        samples += len(audio)
        if on_block is not None:
            on_block(seconds)
    total = min(samples / SAMPLE_RATE, info.frames / info.samplerate)  # no span past the source's last sample
    keys = list(range(len(vads))) if split else [None]
    return Recording(total, info.samplerate, info.channels,
                     {k: segments_from_probs(np.concatenate(p), settings, total) for k, p in zip(keys, probs)})


# --- the command: files -> manifest rows, resumable and sharded -------------------------------
def sound_files(inputs) -> list[Path]:
    """The audio files named or under the folders named (sorted, hidden files skipped); a UserError
    naming an input that does not exist or a folder without audio."""
    found = []
    for given in map(Path, inputs):
        if given.is_file():
            found.append(given)
        elif given.is_dir():
            here = sorted(p for p in given.rglob("*") if p.suffix.lower() in SOUND_SUFFIXES and p.is_file()
                          and not any(part.startswith(".") for part in p.relative_to(given).parts))
            if not here:
                raise UserError(f"{given} holds no audio file ({', '.join(SOUND_SUFFIXES)})")
            found += here
        else:
            raise UserError(f"{given} does not exist: give audio files or folders of them")
    return sorted(set(Path(os.path.abspath(p)) for p in found))


def recording_id(rel: str) -> str:
    """A recording's id: its path under the root, without the suffix (stable across runs)."""
    return Path(rel).with_suffix("").as_posix()


def rows_of(rel: str, recording: Recording, speaker: str, corpus: str, language: str) -> list[dict]:
    """One manifest row per segment of a recording; utt_id = `<recording>@<start in ms>` (with a
    channel: `<recording>:ch<c>@<ms>`, and the speaker `<speaker>:ch<c>`), unlabelled."""
    rid, rows = recording_id(rel), []
    for channel, bounds in recording.streams.items():
        tag = "" if channel is None else f":ch{channel}"
        for start, end in bounds:
            start, end = round(float(start), 4), round(float(end), 4)  # 0.1 ms
            end = end if end <= recording.seconds else math.floor(recording.seconds * 1e4) / 1e4  # inside the file
            row = {"utt_id": f"{rid}{tag}@{round(start * 1000)}", "path": rel, "speaker": speaker + tag,
                   "gender": "", "language": language, "label": UNLABELLED, "raw_label": "", "split": "",
                   "duration": round(end - start, 4), "corpus": corpus, "sample_rate": recording.rate,
                   "channels": recording.channels, "text_id": "", "recording": rid, "start": start, "end": end}
            if channel is not None:
                row[CHANNEL_COLUMN] = channel
            rows.append(row)
    return rows


@dataclass
class SegmentRun:
    """What a call did: recordings segmented now / skipped as done, those without speech, failures."""

    out: Path
    files: int = 0
    done_before: int = 0
    segmented: int = 0
    segments: int = 0
    audio_seconds: float = 0.0
    no_speech: list = field(default_factory=list)
    failed: dict = field(default_factory=dict)  # path -> reason
    merged: bool = False
    wall_seconds: float = 0.0


def part_file(out: Path, shard: tuple[int, int]) -> Path:
    i, n = shard
    return out.with_name(f"{out.name}.part-{i}-of-{n}.jsonl")


def settings_file(out: Path) -> Path:
    return out.with_name(out.name + ".segment.json")


def read_part(path: Path, header: dict) -> tuple[dict, bool]:
    """(recording -> its rows, complete) from a part file; a header other than `header` (other
    settings or root) is refused; a line cut short by a kill is skipped (that recording is redone)."""
    done, complete = {}, False
    if not path.is_file():
        return done, complete
    lines = path.read_text(encoding="utf-8").splitlines()
    for k, line in enumerate(lines):
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:  # cut short by a kill: that recording is segmented again
            continue
        if k == 0 and entry != header:
            raise UserError(f"{path} was made with other settings or inputs ({entry}, now {header}): run with the same "
                            "settings, or delete it (and the other part files) to start again")
        if "recording" in entry:
            done[entry["recording"]] = entry["rows"]
        complete = complete or entry.get("complete", False)
    return done, complete


def existing_rows(out: Path, header: dict) -> dict:
    """recording -> rows of a manifest already at `out` (new files are added to it; recordings
    without speech, listed beside it, map to no rows), refusing one made with other settings."""
    if not out.is_file():
        return {}
    recorded = settings_file(out)
    found = json.loads(recorded.read_text(encoding="utf-8")) if recorded.is_file() else {}
    if found.get("header") != header:
        raise UserError(f"{out} exists and was not made by `segment` with these settings and root "
                        f"({found.get('header')}, now {header}): pass another --out, or the same settings")
    table = read_manifest(out)
    columns = [c for c in table.columns if c != "fold"]
    rows = {rid: group[columns].to_dict("records") for rid, group in table.groupby("recording", sort=False)}
    return {**{rid: [] for rid in found.get("without_speech", [])}, **rows}


def merge_parts(out: Path, header: dict, n: int, root: Path, log=print) -> bool:
    """The manifest from every shard's part (and the rows already at `out`), once all parts are
    complete; folds made over speakers and recordings; the parts removed. False while some run."""
    parts = [part_file(out, (i, n)) for i in range(n)]
    loaded = [read_part(p, header) for p in parts]
    waiting = [str(p) for p, (_, complete) in zip(parts, loaded) if not complete]
    if waiting:
        log(f"waiting for {len(waiting)} of {n} shards ({', '.join(waiting)}): the last to finish writes {out}")
        return False
    rows = existing_rows(out, header)
    for done, _ in loaded:
        rows.update(done)
    table = pd.DataFrame([row for rid in sorted(rows) for row in rows[rid]])
    if table.empty:
        raise UserError(f"no speech found in any of the files: {out} not written (check the files, or lower "
                        "--threshold)")
    table["fold"] = speaker_folds(table["speaker"], 5, table["recording"])
    write_manifest(table, out)
    write_manifest_root(out, root)
    without = sorted(rid for rid, found in rows.items() if not found)
    write_text_atomic(settings_file(out), json.dumps({"header": header, "without_speech": without}) + "\n")
    for p in parts:
        p.unlink(missing_ok=True)
    return True


def segment_files(inputs, out, settings: SegmentSettings, split: bool = False, speaker_regex: str | None = None,
                  shard: tuple[int, int] = (0, 1), corpus: str | None = None, language: str = "",
                  root=None, progress: bool = True, log=print) -> SegmentRun:
    """Segment every file of `inputs` (files or folders) into the manifest `out` (see the module
    docstring); shard i of n takes every n-th file. Paths are stored relative to `root` (default:
    the inputs' common folder), recorded beside the manifest as `manifest` does."""
    import time

    t0 = time.time()
    settings.check()
    out = Path(out)
    files = sound_files(inputs)
    root = Path(os.path.abspath(root)) if root else Path(os.path.commonpath([p.parent for p in files]))
    outside = [p for p in files if not p.is_relative_to(root)]
    if outside:
        raise UserError(f"{outside[0]} is not under --root {root}: pass a root that holds every input")
    ids: dict[str, Path] = {}
    for path in files:
        rid = recording_id(path.relative_to(root).as_posix())
        if ids.setdefault(rid, path) != path:
            raise UserError(f"{ids[rid]} and {path} would be one recording ({rid}): rename one, or segment them "
                            "into two manifests")
    corpus = corpus or out.stem
    header = {"settings": asdict(settings), "root": str(root), "channels": "split" if split else "mix",
              "speaker_regex": speaker_regex or "", "corpus": corpus, "language": language}
    i, n = shard
    mine = files[i::n]
    part = part_file(out, shard)
    done, _ = read_part(part, header)
    done.update(existing_rows(out, header))
    run = SegmentRun(out, files=len(mine))
    todo = [p for p in mine if recording_id(p.relative_to(root).as_posix()) not in done]
    speakers = speakers_of(todo, root, speaker_regex)
    run.done_before = len(mine) - len(todo)
    if run.done_before:
        log(f"resuming: {run.done_before} of {len(mine)} recordings already segmented")
    out.parent.mkdir(parents=True, exist_ok=True)
    if not part.is_file():
        write_text_atomic(part, json.dumps(header) + "\n")
    session = onnx_session() if todo else None
    with tqdm(total=sum(map(_seconds, todo)), disable=not progress or not todo, desc=out.stem,
              bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s of audio [{elapsed}<{remaining}]") as bar, \
            open(part, "a", encoding="utf-8") as journal:
        if not part.read_bytes().endswith(b"\n"):
            journal.write("\n")  # after a line cut short by a kill
        for path in todo:
            rel = path.relative_to(root).as_posix()
            try:
                recording = segment_file(path, settings, session, split, bar.update)
            except BadAudio as why:
                run.failed[str(path)] = str(why)
                bar.write(f"skipping {path}: {why}")
                continue
            rows = rows_of(rel, recording, speakers[path], corpus, language)
            if not rows:
                run.no_speech.append(str(path))
                bar.write(f"no speech found in {path} ({recording.seconds:.1f} s): no segments")
            journal.write(json.dumps({"recording": recording_id(rel), "rows": rows}) + "\n")
            journal.flush()
            os.fsync(journal.fileno())
            run.segmented += 1
            run.segments += len(rows)
            run.audio_seconds += recording.seconds
        journal.write(json.dumps({"complete": True}) + "\n")
    run.merged = merge_parts(out, header, n, root, log)
    run.wall_seconds = time.time() - t0
    return run


def speakers_of(paths, root: Path, speaker_regex: str | None) -> dict:
    """path -> speaker: the recording id, or `--speaker-regex` over the file name (named group
    `speaker`, else the first group, as for `manifest --corpus folders`); a file it does not fit stops
    the run before any is segmented."""
    if not speaker_regex:
        return {p: recording_id(p.relative_to(root).as_posix()) for p in paths}
    pattern, speakers = compile_speaker_regex(speaker_regex), {}
    for path in paths:
        found = pattern.search(path.name)
        if found is None or not _field(found, "speaker"):
            raise UserError(f"--speaker-regex {speaker_regex!r} finds no speaker in {path.name}; fix the regex "
                            "(e.g. '^(?P<speaker>[^_]+)_' for 'spk01_call3.wav')")
        speakers[path] = _field(found, "speaker")
    return speakers


def _seconds(path: Path) -> float:
    """The file's length from its header, for the progress bar (0 when unreadable: reported when segmented)."""
    try:
        return sf.info(str(path)).duration
    except Exception:  # soundfile raises several types
        return 0.0
