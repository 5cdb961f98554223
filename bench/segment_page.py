"""How well `segment` cuts long recordings back into their utterances, measured -> docs/SEGMENTS.md.

Sessions with known boundaries: each speaker of a corpus (/work/shared/corpora layout: RAVDESS
`Actor_XX/`, CASIA `<speaker>/<emotion>/`, TESS `<SPK>_<emotion>/`) becomes one recording, its
utterances in a seeded random order joined by pauses drawn from 0.2-1.5 s, with white noise at
-60 dBFS under everything (`build_sessions`). An utterance's true span is where its clean clip has
speech: from the first to the last 10 ms frame within 35 dB of the clip's loudest frame (the clips
carry up to a second of their own silence, which no detector should keep).

Measured (`score`), from the manifest `python cli.py segment` writes:
  found: utterances whose span midpoint lies inside a segment;
  two or more: segments overlapping the spans of two or more utterances (by >= 0.1 s each);
  segments per utterance: segments overlapping a found utterance's span (by >= 0.1 s), mean;
  boundary error: |segment start - span start| and |segment end - span end| where one segment
  holds exactly one utterance (median and 90th percentile, seconds; padding included);
  speed: the whole command (interpreter start, decoding, resampling, VAD, manifest), audio
  seconds / wall seconds, with 2 cores (`taskset -c 0,1` when there are more).
`--tune`: the segment maths over a grid of settings on the probabilities of the tuning corpora's
sessions (computed once), to choose the defaults; the other corpora are only reported.

    python bench/segment_page.py --corpora ravdess,casia,tess --tune ravdess,casia --work /tmp/x --rss-hours 2
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from data_manifests.storage import read_manifest, write_text_atomic  # noqa: E402
from pipeline.audio import SAMPLE_RATE  # noqa: E402
from pipeline.segment import SegmentSettings, SileroVAD, onnx_session, segments_from_probs  # noqa: E402

CORPORA = Path("/work/shared/corpora")
PAUSE = (0.2, 1.5)
NOISE_DBFS = -60.0
SPEECH_DB = 35.0  # a clip's speech: frames within this of its loudest
MIN_OVERLAP = 0.1
SPEAKER_OF = {"ravdess": lambda rel: rel.parts[0], "casia": lambda rel: rel.parts[0],
              "tess": lambda rel: rel.parts[0].split("_")[0]}


def speech_span(clip: np.ndarray) -> tuple[float, float]:
    """Seconds [first, last] of the clip's frames (10 ms) within SPEECH_DB of its loudest."""
    hop = SAMPLE_RATE // 100
    frames = clip[: len(clip) // hop * hop].reshape(-1, hop)
    level = 10 * np.log10((frames.astype(np.float64) ** 2).mean(1) + 1e-12)
    loud = np.flatnonzero(level >= level.max() - SPEECH_DB)
    return loud[0] * hop / SAMPLE_RATE, (loud[-1] + 1) * hop / SAMPLE_RATE


def build_sessions(corpus: str, folder: Path, seed: int = 0) -> pd.DataFrame:
    """One FLAC session per speaker under `folder` and the truth table (recording, utt, clip and
    speech spans in session seconds, label path); written once, reused when present."""
    truth_csv = folder / "truth.csv"
    if truth_csv.is_file():
        return pd.read_csv(truth_csv)
    folder.mkdir(parents=True, exist_ok=True)
    root = CORPORA / corpus
    files = sorted(p.relative_to(root) for p in root.rglob("*.flac"))
    by_speaker: dict[str, list[Path]] = {}
    for rel in files:
        by_speaker.setdefault(SPEAKER_OF[corpus](rel), []).append(rel)
    rows = []
    for k, (speaker, clips) in enumerate(sorted(by_speaker.items())):
        rng = np.random.default_rng([seed, k])
        order = rng.permutation(len(clips))
        noise_std = 10 ** (NOISE_DBFS / 20)
        with sf.SoundFile(folder / f"{speaker}.flac", "w", SAMPLE_RATE, 1, subtype="PCM_16") as out:
            pos = 0
            for i in order:
                clip, rate = sf.read(root / clips[i], dtype="float32")
                assert rate == SAMPLE_RATE and clip.ndim == 1, clips[i]
                pause = np.zeros(int(rng.uniform(*PAUSE) * SAMPLE_RATE), np.float32)
                a, b = speech_span(clip)
                start = pos + len(pause)
                piece = np.concatenate([pause, clip])
                out.write(piece + noise_std * rng.standard_normal(len(piece)).astype(np.float32))
                rows.append({"recording": speaker, "clip": clips[i].as_posix(), "clip_start": start / SAMPLE_RATE,
                             "clip_end": (start + len(clip)) / SAMPLE_RATE, "start": start / SAMPLE_RATE + a,
                             "end": start / SAMPLE_RATE + b})
                pos += len(piece)
            tail = np.zeros(SAMPLE_RATE // 2, np.float32)
            out.write(tail + noise_std * rng.standard_normal(len(tail)).astype(np.float32))
    truth = pd.DataFrame(rows)
    write_text_atomic(truth_csv, truth.to_csv(index=False))
    return truth


def overlaps(segs: np.ndarray, spans: np.ndarray) -> np.ndarray:
    """[n_segs, n_spans] seconds of overlap."""
    return np.clip(np.minimum(segs[:, None, 1], spans[None, :, 1]) - np.maximum(segs[:, None, 0], spans[None, :, 0]),
                   0, None)


def score(segments: dict, truth: pd.DataFrame) -> dict:
    """The measures of the module docstring over every recording; `segments`: recording -> [k, 2]."""
    found = n_utts = n_segs = multi = 0
    per_utt, errors = [], []
    for rid, spans_table in truth.groupby("recording"):
        spans = spans_table[["start", "end"]].to_numpy()
        segs = np.asarray(segments.get(rid, np.zeros((0, 2)))).reshape(-1, 2)
        n_utts, n_segs = n_utts + len(spans), n_segs + len(segs)
        mid = spans.mean(1)
        inside = (segs[:, None, 0] <= mid[None]) & (mid[None] < segs[:, None, 1])
        hit = inside.any(0)
        found += int(hit.sum())
        ov = overlaps(segs, spans) >= MIN_OVERLAP
        multi += int((ov.sum(1) >= 2).sum())
        per_utt += ov.sum(0)[hit].tolist()
        for j in np.flatnonzero(ov.sum(1) == 1):
            u = int(np.flatnonzero(ov[j])[0])
            if ov[:, u].sum() == 1:
                errors += [abs(segs[j, 0] - spans[u, 0]), abs(segs[j, 1] - spans[u, 1])]
    errors = np.asarray(errors) if errors else np.full(1, np.nan)
    return {"utterances": n_utts, "segments": n_segs, "found_pct": 100 * found / n_utts,
            "two_or_more_pct": 100 * multi / max(n_segs, 1), "segments_per_utterance": float(np.mean(per_utt)),
            "boundary_median_s": float(np.median(errors)), "boundary_p90_s": float(np.percentile(errors, 90))}


def session_probs(folder: Path) -> dict:
    """recording -> (per-frame speech probabilities, seconds), the VAD run once per session."""
    session, out = onnx_session(), {}
    for path in sorted(folder.glob("*.flac")):
        audio = sf.read(path, dtype="float32")[0]
        out[path.stem] = (SileroVAD(session).feed(audio, last=True), len(audio) / SAMPLE_RATE)
    return out


GRID = {"threshold": [0.35, 0.5, 0.65], "min_silence": [0.1, 0.15, 0.2, 0.3], "padding": [0.05, 0.1, 0.2],
        "min_speech": [0.25], "min_segment": [0.5], "max_segment": [20.0]}


def tune(probs_by_corpus: dict, truths: dict) -> pd.DataFrame:
    """Every grid setting scored on every tuning corpus; rows sorted by the worst corpus's misses."""
    rows = []
    for values in itertools.product(*GRID.values()):
        settings = SegmentSettings(**dict(zip(GRID, values)))
        row = dict(zip(GRID, values))
        for corpus, probs in probs_by_corpus.items():
            segs = {rid: segments_from_probs(p, settings, total) for rid, (p, total) in probs.items()}
            s = score(segs, truths[corpus])
            row.update({f"{corpus}_{k}": v for k, v in s.items() if k not in ("utterances", "segments")})
        rows.append(row)
    table = pd.DataFrame(rows)
    corpora = list(probs_by_corpus)
    # a setting's cost: the worst corpus's distance from the targets (found >= 97, two <= 3, per utt <= 1.1)
    cost = np.max([np.maximum(97 - table[f"{c}_found_pct"], 0) + np.maximum(table[f"{c}_two_or_more_pct"] - 3, 0)
                   + 10 * np.maximum(table[f"{c}_segments_per_utterance"] - 1.1, 0) for c in corpora], axis=0)
    return table.assign(cost=cost).sort_values(["cost"] + [f"{c}_boundary_median_s" for c in corpora])


def run_segment(folder: Path, out: Path, extra=()) -> tuple[float, str]:
    """`cli.py segment FOLDER --out OUT` in a fresh process on 2 cores: (wall seconds, its output)."""
    for stale in out.parent.glob(out.name + "*"):
        stale.unlink()
    cores = ["taskset", "-c", "0,1"] if (os.cpu_count() or 2) > 2 and shutil.which("taskset") else []
    t0 = time.time()
    done = subprocess.run([*cores, sys.executable, str(REPO / "cli.py"), "segment", str(folder), "--out", str(out),
                           *extra], capture_output=True, text=True, cwd=REPO)
    wall = time.time() - t0
    if done.returncode:
        raise SystemExit(f"segment failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return wall, done.stdout.strip().splitlines()[-2]


def manifest_segments(out: Path) -> dict:
    table = read_manifest(out)
    return {rid: g[["start", "end"]].to_numpy() for rid, g in table.groupby("recording")}


def long_file(path: Path, hours: float, source: Path) -> Path:
    """A `hours`-long 16 kHz mono FLAC made of the source sessions repeated, written block by block."""
    if path.is_file():
        return path
    sessions = sorted(source.glob("*.flac"))
    need = int(hours * 3600 * SAMPLE_RATE)
    with sf.SoundFile(path, "w", SAMPLE_RATE, 1, subtype="PCM_16") as out:
        for session in itertools.cycle(sessions):
            with sf.SoundFile(session) as f:
                for block in f.blocks(blocksize=SAMPLE_RATE * 60, dtype="float32"):
                    out.write(block[:need])
                    need -= len(block[:need])
                    if need <= 0:
                        return path
    return path


def peak_rss(path: Path, out: Path) -> tuple[float, float, str]:
    """`/usr/bin/time -v cli.py segment FILE`: (maximum resident set size MiB, wall s, its summary line)."""
    for stale in out.parent.glob(out.name + "*"):
        stale.unlink()
    done = subprocess.run(["/usr/bin/time", "-v", sys.executable, str(REPO / "cli.py"), "segment", str(path), "--out",
                           str(out)], capture_output=True, text=True, cwd=REPO)
    if done.returncode:
        raise SystemExit(f"segment failed:\n{done.stdout}\n{done.stderr}")
    kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)[1])
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", done.stderr)[1]
    seconds = sum(float(x) * 60 ** i for i, x in enumerate(reversed(wall.split(":"))))
    return kb / 1024, seconds, done.stdout.strip().splitlines()[-2]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpora", default="ravdess,casia,tess")
    parser.add_argument("--tune", default="", help="corpora whose sessions choose the defaults (grid search)")
    parser.add_argument("--work", default="/tmp/segment-bench")
    parser.add_argument("--rss-hours", type=float, default=0.0, help="also the peak RSS on a file this long")
    parser.add_argument("--json", default=str(REPO / "docs" / "segments.json"))
    args = parser.parse_args(argv)
    work = Path(args.work)
    corpora = args.corpora.split(",")
    truths = {c: build_sessions(c, work / "sessions" / c) for c in corpora}
    results = {"settings": vars(SegmentSettings()), "corpora": {}}
    if args.tune:
        tuned = tune({c: session_probs(work / "sessions" / c) for c in args.tune.split(",")}, truths)
        write_text_atomic(work / "tune.csv", tuned.to_csv(index=False))
        print(tuned.head(10).to_string())
        results["tune_top"] = tuned.head(5).to_dict("records")
    for corpus in corpora:
        out = work / "manifests" / f"{corpus}.csv"
        wall, line = run_segment(work / "sessions" / corpus, out)
        audio = float(sum(sf.info(p).duration for p in (work / "sessions" / corpus).glob("*.flac")))
        measured = score(manifest_segments(out), truths[corpus])
        measured.update(audio_hours=audio / 3600, wall_s=wall, x_real_time=audio / wall, recordings=truths[corpus]
                        ["recording"].nunique(), summary=line)
        results["corpora"][corpus] = measured
        print(corpus, json.dumps(measured))
    if args.rss_hours:
        path = long_file(work / f"long-{args.rss_hours:g}h.flac", args.rss_hours, work / "sessions" / corpora[0])
        mib, wall, line = peak_rss(path, work / "manifests" / "long.csv")
        results["long_file"] = {"hours": args.rss_hours, "peak_rss_mib": mib, "wall_s": wall,
                                "x_real_time": args.rss_hours * 3600 / wall, "summary": line}
        print("long file", json.dumps(results["long_file"]))
    write_text_atomic(args.json, json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
