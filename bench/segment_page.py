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


def build_sessions(corpus: str, folder: Path, seed: int = 0, noise_dbfs: float | None = NOISE_DBFS) -> pd.DataFrame:
    """One FLAC session per speaker under `folder` and the truth table (recording, utt, clip and
    speech spans in session seconds, label path); written once, reused when present. `noise_dbfs`
    None: the same sessions without their noise."""
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
        noise_std = 0.0 if noise_dbfs is None else 10 ** (noise_dbfs / 20)  # drawn either way: the same pauses
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


GRID = {"threshold": [0.4, 0.5, 0.65], "min_silence": [0.15, 0.2, 0.25, 0.3], "padding": [0.1, 0.2, 0.3],
        "min_speech": [0.25], "min_segment": [0.5, 0.8], "max_segment": [20.0]}


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


def labelled_segments(segments: Path, truth: pd.DataFrame, clip_cache: Path, out: Path) -> dict:
    """The segment manifest with each segment labelled as the utterance whose clip it overlaps most
    (segments overlapping none dropped), with that utterance's prompt (text_id: the clips' content
    normalisation gets the same information) and the clip cache's fold of its speaker: the same folds."""
    from data_manifests.home import manifest_root, write_manifest_root
    from data_manifests.storage import write_manifest
    from pipeline.cache import open_checked, read_table

    table = read_manifest(segments)
    with open_checked(clip_cache) as f:
        clips = read_table(f, ["path", "label", "speaker", "fold", "text_id"]).set_index("path")
    labels, folds, texts = [], [], []
    for row in table.itertuples():
        spans = truth[truth["recording"] == row.recording]
        ov = overlaps(np.array([[row.start, row.end]]), spans[["clip_start", "clip_end"]].to_numpy())[0]
        clip = spans["clip"].iloc[int(np.argmax(ov))] if ov.max() > 0 else None
        labels.append(clips.loc[clip, "label"] if clip else "")
        folds.append(int(clips.loc[clip, "fold"]) if clip else -1)
        texts.append(clips.loc[clip, "text_id"] if clip else "")
    table = table.assign(label=labels, raw_label=labels, fold=folds, text_id=texts)
    kept = table[table["label"] != ""].copy()
    by_speaker = kept.groupby("speaker")["fold"].agg(lambda f: f.mode()[0])
    kept["fold"] = kept["speaker"].map(by_speaker)
    write_manifest(kept, out)
    write_manifest_root(out, manifest_root(segments))
    return {"segments": len(table), "labelled": len(kept), "without_utterance": int((table["label"] == "").sum())}


def macro_f1(run_dir: Path) -> dict:
    methods = json.loads((run_dir / "results.json").read_text())["methods"]
    return {name: {"mean": m["macro_f1"]["mean"], "std": m["macro_f1"]["std"], "n": m["macro_f1"]["n"]}
            for name, m in methods.items()}


def train_run(cache: Path, run_dir: Path) -> dict:
    """`train --labeled-fraction 0.1` (every fold x 3 seeds, one worker) unless done: macro-F1 of each method."""
    if not (run_dir / "results.json").is_file():
        subprocess.run([sys.executable, str(REPO / "cli.py"), "train", "--cache", str(cache), "--labeled-fraction",
                        "0.1", "--workers", "1", "--out", str(run_dir)], check=True, cwd=REPO)
    return macro_f1(run_dir)


def extract_and_train(labelled: Path, cache: Path, run_dir: Path) -> tuple[dict, float]:
    """`extract --window trim` of a labelled segment manifest (resumed when done), then train_run:
    (macro-F1 of each method, extract seconds)."""
    t0 = time.time()
    subprocess.run([sys.executable, str(REPO / "cli.py"), "extract", "--manifest", str(labelled), "--window", "trim",
                    "--out", str(cache)], check=False, cwd=REPO)
    seconds = time.time() - t0
    return train_run(cache, run_dir), seconds


def train_against_clips(corpus: str, work: Path, clip_cache: Path) -> dict:
    """segments -> extract (trim) -> train (10% labels, every fold x 3 seeds, one worker), and the
    same train on the corpus's clip cache: macro-F1 of each method on both."""
    labelled = work / "manifests" / f"{corpus}-labelled.csv"
    counts = labelled_segments(work / "manifests" / f"{corpus}.csv", pd.read_csv(work / "sessions" / corpus /
                                                                                 "truth.csv"), clip_cache, labelled)
    segments, counts["extract_s"] = extract_and_train(labelled, work / "cache" / f"{corpus}-segments-trim.h5",
                                                      work / "runs" / f"{corpus}-segments")
    clips = train_run(clip_cache, work / "runs" / f"{corpus}-clips")
    return {**counts, "macro_f1": {"segments": segments, "clips": clips}}


TRUE_SPANS = {"clip spans": ("clip_start", "clip_end"), "speech spans": ("start", "end")}


def true_span_manifest(corpus: str, work: Path, clip_cache: Path, which: str) -> Path:
    """A labelled segment manifest of the sessions cut at each utterance's true span (TRUE_SPANS:
    its clip's own samples, or its speech only), with the clip's label, prompt and fold."""
    from data_manifests.home import write_manifest_root
    from data_manifests.storage import write_manifest
    from pipeline.cache import open_checked, read_table

    truth = pd.read_csv(work / "sessions" / corpus / "truth.csv")
    with open_checked(clip_cache) as f:
        clips = read_table(f, ["path", "label", "fold", "text_id"]).set_index("path").loc[truth["clip"]]
    a, b = (truth[c].round(4).to_numpy() for c in TRUE_SPANS[which])
    table = pd.DataFrame({"utt_id": [f"{r}@{round(s * 1000)}" for r, s in zip(truth["recording"], a)],
                          "path": truth["recording"] + ".flac", "speaker": truth["recording"], "gender": "",
                          "language": "", "label": clips["label"].to_numpy(), "raw_label": clips["label"].to_numpy(),
                          "fold": clips["fold"].astype(int).to_numpy(), "split": "", "duration": (b - a).round(4),
                          "corpus": corpus, "sample_rate": SAMPLE_RATE, "channels": 1,
                          "text_id": clips["text_id"].to_numpy(), "recording": truth["recording"], "start": a,
                          "end": b})
    out = work / "manifests" / f"{corpus}-{which.replace(' ', '-')}.csv"
    write_manifest(table, out)
    write_manifest_root(out, work / "sessions" / corpus)
    return out


def train_true_spans(corpus: str, work: Path, clip_cache: Path) -> dict:
    """extract -> train on the sessions cut at the true spans: which of noise or cut silence costs;
    with each run's macro-F1 minus the clips' on the same fold and seed (and the segments' run's)."""
    out = {}
    for which in TRUE_SPANS:
        name = f"{corpus}-{which.replace(' ', '-')}"
        out[which], _ = extract_and_train(true_span_manifest(corpus, work, clip_cache, which),
                                          work / "cache" / f"{name}-trim.h5", work / "runs" / name)
    clips = per_run(work / "runs" / f"{corpus}-clips")
    out["paired"] = {}
    for which in (*TRUE_SPANS, "segments"):
        diff = per_run(work / "runs" / f"{corpus}-{which.replace(' ', '-')}") - clips
        out["paired"][which] = {m: {"mean": float(d.mean()), "below": int((d < 0).sum()), "n": int(d.notna().sum())}
                                for m, d in diff.groupby(level="method")}
    return out


def per_run(run_dir: Path) -> pd.Series:
    """macro-F1 of each (method, fold, seed) of a run."""
    return pd.read_csv(run_dir / "results.csv", dtype={"fold": str}).set_index(["method", "fold", "seed"])["macro_f1"]


TARGETS = {"found_pct": ">= 97", "two_or_more_pct": "<= 3", "segments_per_utterance": "<= 1.1",
           "x_real_time": ">= 100"}
MEASURES = (("found_pct", "found %", "{:.2f}"), ("two_or_more_pct", "segments with 2+ utterances %", "{:.2f}"),
            ("segments_per_utterance", "segments per utterance", "{:.3f}"),
            ("boundary_median_s", "boundary error, median s", "{:.3f}"),
            ("boundary_p90_s", "boundary error, 90th pct s", "{:.3f}"), ("x_real_time", "x real time", "{:.0f}"))


def quieter_section(q: dict) -> list[str]:
    """The same checks on sessions with a quieter noise floor (results["quieter"]), and predict's padding."""
    vad = q["vad"]
    out = [f"## The same sessions at {q['noise_dbfs']:g} dBFS noise, and predict's padding", "",
           "The -60 dBFS white noise above is not neutral for Whisper: the true speech spans cut from those sessions "
           f"give bgrpo {q['diagnostics']['true speech spans +-0.2 s cut from the -60 dBFS sessions']:.1f} on RAVDESS "
           "(as the VAD's segments), the clips cut to the same spans without the noise "
           f"{q['diagnostics']['clips cut to their speech span +-0.2 s, no noise']:.1f} (clips 76.6). The sessions "
           f"rebuilt with the noise at {q['noise_dbfs']:g} dBFS (everything else as above; "
           "`segment_page.build_sessions(noise_dbfs=...)`, `predict_session.py --noise-dbfs`):", "",
           "| measure | target | " + " | ".join(vad) + " |", "|---|---|" + "---|" * len(vad)]
    for key, name, fmt in MEASURES[:5]:
        out.append(f"| {name} | {TARGETS.get(key, '')} | " + " | ".join(fmt.format(vad[c][key]) for c in vad) + " |")
    out += ["", "| segments -> extract -> train, macro-F1 % | supervised | bgrpo "
            "| bgrpo vs clips (target: within 1.5) |", "|---|---|---|---|"]
    for corpus, t in q["train"].items():
        for name in ("segments", "clips"):
            diff = t[name]["bgrpo"]["mean"] - t["clips"]["bgrpo"]["mean"]
            out.append(f"| {corpus} {name} | {t[name]['supervised']['mean']:.2f} | {t[name]['bgrpo']['mean']:.2f} | "
                       + (f"{diff:+.2f}" if name == "segments" else "") + " |")
    share = lambda c: f"{100 * c['agree'] / c['matched']:.1f}% ({c['agree']}/{c['matched']})"  # noqa: E731
    out += ["", "`predict` on 4-minute sessions: segments whose label is the clip's (target >= 90%), by padding "
            "of predict's segments. Chosen on the sessions of " + q["choose_speakers"] + ", reported on "
            + q["report_speakers"] + "; predict's default is now 1 s (`trainer.predict.PREDICT_SEGMENTS`; "
            "`segment` keeps 0.2 s):", "", "| padding s | chosen on | reported on |", "|---|---|---|"]
    for key in q["predict_choose"]:
        label = key if key == "true spans" else f"{float(key):g}"
        rep = q["predict_report"].get(key)
        out.append(f"| {label} | {share(q['predict_choose'][key])} | {share(rep) if rep else ''} |")
    return out


def page(results: dict, command: str) -> str:
    """docs/SEGMENTS.md from the bench's results."""
    corpora = results["corpora"]
    lines = ["# Segments: long recordings cut into utterances", "", "Back to the [README](../README.md).", "",
             "Generated by `bench/segment_page.py` (numbers in `docs/segments.json`):", "", f"    {command}", "",
             SEGMENT_TEXT, "## Sessions with known boundaries", "", SESSION_TEXT,
             "| measure | target | " + " | ".join(corpora) + " |", "|---|---|" + "---|" * len(corpora)]
    for key, name, fmt in MEASURES:
        lines.append(f"| {name} | {TARGETS.get(key, '')} | " + " | ".join(fmt.format(corpora[c][key]) for c in corpora)
                     + " |")
    for key, name in (("utterances", "utterances"), ("segments", "segments"), ("recordings", "recordings")):
        lines.append(f"| {name} | | " + " | ".join(str(corpora[c][key]) for c in corpora) + " |")
    lines.append("| audio h (wall s) | | " + " | ".join(f"{corpora[c]['audio_hours']:.2f} ({corpora[c]['wall_s']:.1f})"
                                                         for c in corpora) + " |")
    lines += ["", "The command's own last line, per corpus (its clock starts after the interpreter and imports):", ""]
    lines += [f"- {c}: `{corpora[c]['summary']}`" for c in corpora]
    if "long_file" in results:
        lf = results["long_file"]
        lines += ["", f"**A {lf['hours']:g}-hour file** (16 kHz mono FLAC, the RAVDESS sessions repeated), "
                  f"`/usr/bin/time -v python cli.py segment FILE`: maximum resident set size "
                  f"**{lf['peak_rss_mib']:.0f} MiB** (target < 500 MB), {lf['wall_s']:.1f} s wall "
                  f"({lf['x_real_time']:.0f}x real time); `{lf['summary']}`."]
    if "tune_top" in results:
        keys = list(GRID)
        lines += ["", "## Choosing the defaults", "", TUNE_TEXT, "",
                  "| " + " | ".join(keys) + " | RAVDESS found / 2+ / per utt | CASIA found / 2+ / per utt |",
                  "|" + "---|" * (len(keys) + 2)]
        for row in results["tune_top"] + [dict(r, threshold=f"**{r['threshold']:g}**") for r in
                                          results.get("tune_defaults", [])]:
            lines.append("| " + " | ".join(row[k] if isinstance(row[k], str) else f"{row[k]:g}" for k in keys)
                         + " | " + " | ".join(
                f"{row[f'{c}_found_pct']:.2f} / {row[f'{c}_two_or_more_pct']:.2f} / "
                f"{row[f'{c}_segments_per_utterance']:.3f}" for c in ("ravdess", "casia")) + " |")
    if "train" in results:
        lines += ["", "## Segments -> extract -> train, against the clips", "", TRAIN_TEXT, "",
                  "| corpus | method | segments | clips | difference |", "|---|---|---|---|---|"]
        for corpus, r in results["train"].items():
            for method in r["macro_f1"]["clips"]:
                seg, clip = r["macro_f1"]["segments"][method], r["macro_f1"]["clips"][method]
                lines.append(f"| {corpus} | {method} | {seg['mean']:.2f} ± {seg['std']:.2f} | {clip['mean']:.2f} ± "
                             f"{clip['std']:.2f} | {seg['mean'] - clip['mean']:+.2f} |")
        lines.append("")
        for corpus, r in results["train"].items():
            gap = r["macro_f1"]["segments"]["bgrpo"]["mean"] - r["macro_f1"]["clips"]["bgrpo"]["mean"]
            verdict = "met" if gap >= -1.5 else f"missed by {-gap - 1.5:.2f}"
            lines.append(f"- {corpus}: {r['segments']} segments, {r['labelled']} labelled, {r['without_utterance']} "
                         f"overlapping no utterance (dropped); target (bgrpo within 1.5 of the clips): {verdict}.")
    if "true_spans" in results:
        lines += ["", TRUE_SPANS_TEXT, "",
                  "| corpus | method | clips | true clip spans | true speech spans | segments |", "|" + "---|" * 6]
        for corpus, r in results["true_spans"].items():
            runs = {"clips": results["train"][corpus]["macro_f1"]["clips"], **{k: r[k] for k in TRUE_SPANS},
                    "segments": results["train"][corpus]["macro_f1"]["segments"]}
            for method in runs["clips"]:
                paired = [r["paired"][k][method] for k in (*TRUE_SPANS, "segments")]
                lines.append(f"| {corpus} | {method} | " + " | ".join(
                    f"{m[method]['mean']:.2f} ± {m[method]['std']:.2f}" for m in runs.values()) + " |")
                lines.append("| | paired with the clips | | " + " | ".join(
                    f"{p['mean']:+.2f} ({p['below']} of {p['n']} below)" for p in paired) + " |")
        for corpus, r in results["true_spans"].items():
            noise, cut, seg = (r["paired"][k]["bgrpo"]["mean"] for k in (*TRUE_SPANS, "segments"))
            lines += ["", f"{corpus}, bgrpo: the session's noise alone moves macro-F1 by {noise:+.2f} (true clip "
                      "spans), "
                      f"cutting the clips' own silence by a further {cut - noise:+.2f} (true speech spans); the "
                      f"segments ({seg:+.2f}; their padding keeps part of the silence) lie between."]
        if "true_spans_command" in results:
            lines += ["", f"    {results['true_spans_command']}"]
    if "predict" in results:
        lines += ["", *predict_section(results["predict"], results.get("predict_quiet"))]
    if "quieter" in results:
        lines += ["", *quieter_section(results["quieter"])]
    lines += ["", NOT_DONE_TEXT]
    return "\n".join(lines) + "\n"


def predict_section(r: dict, quiet: dict | None = None) -> list[str]:
    """The page's `predict` part, from bench/predict_session.py's results (`quiet`: its run on the
    sessions without noise)."""
    lines = ["## `predict` on long files", "", PREDICT_TEXT, "", "Generated by:", "", f"    {r['command']}", "",
             f"Run: `{r['run']}`. Agreement % with the clips' labels (agreeing / compared):", ""]
    table, total = agreement_table(r)
    pads = [f"{p:g}" for p in r["paddings"]]
    main_agree = total[pads[0]][0] / max(total[pads[0]][1], 1)
    extra = sum(s["padding"][pads[0]]["segments"] - s["padding"][pads[0]]["matched"] for s in r["sessions"].values())
    accuracy = {k: np.mean([s["accuracy"][k] for s in r["sessions"].values()]) for k in ("clips", "true_spans")}
    seg_acc = np.mean([s["padding"][pads[0]]["accuracy"] for s in r["sessions"].values()])
    lines += [*table, "", f"Target (segments at the default padding {pads[0]} s agree with the clips for >= 90%): "
              f"{'met' if main_agree >= 0.9 else 'not met'} ({100 * main_agree:.1f}%); {extra} segment(s) overlapped "
              f"no utterance. Accuracy against the corpus labels (mean over sessions): clips "
              f"{100 * accuracy['clips']:.1f}%, true clip spans {100 * accuracy['true_spans']:.1f}%, segments "
              f"{100 * seg_acc:.1f}%."]
    if quiet is not None:
        lines += ["", QUIET_TEXT, "", f"    {quiet['command']}", "", *agreement_table(quiet)[0]]
    return lines + ["", f"![emotions over time]({r['timeline']})", "",
                    f"`{r['timeline']}`: the sessions' `predict --timeline` figure (default padding)."]


def agreement_table(r: dict) -> tuple[list[str], dict]:
    """The per-session agreement table of a predict_session result, and its pooled counts."""
    pads = [f"{p:g}" for p in r["paddings"]]
    lines = ["| session | s | utterances | " + " | ".join(f"segments, padding {p} s" for p in pads)
             + " | true clip spans | clips alone |", "|---|---|---|" + "---|" * (len(pads) + 2)]
    total: dict = {}

    def cell(agree: int, n: int, key: str) -> str:
        got = total.setdefault(key, [0, 0])
        got[0], got[1] = got[0] + agree, got[1] + n
        return f"{100 * agree / max(n, 1):.1f} ({agree}/{n})"

    for speaker, s in r["sessions"].items():
        segs = [cell(s["padding"][p]["agree"], s["padding"][p]["matched"], p) for p in pads]
        lines.append(f"| {speaker} | {s['seconds']:.0f} | {s['utterances']} | " + " | ".join(segs) + " | "
                     + cell(s["true_spans_agree"], s["utterances"], "true") + " | "
                     + cell(s["alone_vs_speaker_agree"], s["utterances"], "alone") + " |")
    pooled = {k: f"**{100 * a / max(n, 1):.1f}** ({a}/{n})" for k, (a, n) in total.items()}
    lines.append(f"| all | | {sum(s['utterances'] for s in r['sessions'].values())} | "
                 + " | ".join(pooled[p] for p in pads) + f" | {pooled['true']} | {pooled['alone']} |")
    return lines, total



SEGMENT_TEXT = """`python cli.py segment INPUT... --out manifests/NAME.csv` (files or folders; any format soundfile
reads: wav, flac, ogg, mp3, 8-48 kHz, mono or stereo) runs Silero VAD (the `silero-vad` wheel's
sequence ONNX model, offline, on onnxruntime; `pip install -e '.[segment]'`) over each file and writes
one unlabelled manifest row per speech segment: `path` (relative to the inputs' common folder, recorded
in `NAME.csv.root` as `manifest` does), `recording` (the path without its suffix), `start`, `end`
(seconds), `utt_id` = `<recording>@<start in ms>` (the same on every run, so labels keyed by it
survive), `speaker` = the recording (or `--speaker-regex` over the file name), `duration` = end -
start, an empty `label`, and folds that keep a recording whole. `--channels split` (calls) gives each
channel its own stream and speaker (`<speaker>:ch<c>`, utt_id `<recording>:ch<c>@<ms>`, a `channel`
column; a recording's channels stay in one fold).

The segment maths (`pipeline/segment.py`, pure functions on the per-frame probabilities, 32 ms frames):
a run of speech starts where the probability reaches `--threshold` (0.5) and ends where it falls
under threshold - 0.15; pauses shorter than `--min-silence` (0.25 s) are closed; bursts shorter than
`--min-speech` (0.25 s) dropped; runs longer than `--max-segment` (20 s, at most 30: one encoder
input) cut at their quietest point (smoothed probability, the middle half of the run) until they fit;
`--padding` (0.2 s) added on both sides but never past half the pause to the neighbour; segments
shorter than `--min-segment` (0.5 s) dropped.

Files are read 60 s at a time (downmix, streaming resample to 16 kHz, the VAD's state carried
between blocks: the probabilities are bit-identical to one pass over the whole file), so memory does
not grow with the file. Each recording's rows are appended (and fsynced) to a part file
`NAME.csv.part-i-of-n.jsonl` as it finishes; the same command resumes (a line cut by a kill is
redone), skips recordings already in `NAME.csv` and adds new files to it (settings recorded in
`NAME.csv.segment.json`; other settings are refused). `--shard i/n` (or torchrun's RANK/WORLD_SIZE)
takes every n-th file; the shard that finishes last writes the manifest. A file without speech: one
line, no rows, exit 0; an unreadable file: named, skipped, exit 1 at the end.

`extract --manifest NAME.csv` reads each segment in place (seek to its first sample, read its
samples: exact for wav/flac/ogg, tested against the slice of the whole file; mp3 as libsndfile seeks
it), refuses a manifest whose spans run past a file's end (naming the files), and the cache keeps
`recording`, `start`, `end` (and `channel`); a clip manifest's digest and its cache's fingerprint are
what they were (tested against the digests of the code before segments).
"""

SESSION_TEXT = """Each speaker of a corpus becomes one recording: all its utterances in a seeded random order,
joined by pauses drawn uniformly from 0.2-1.5 s, white noise at -60 dBFS under everything. An
utterance's true span is where its clean clip has speech (first to last 10 ms frame within 35 dB of
the clip's loudest; the clips carry up to a second of their own silence). Found: the span's midpoint
inside a segment. 2+ utterances: segments overlapping two or more spans by >= 0.1 s each. Segments
per utterance: segments overlapping a found utterance's span by >= 0.1 s, mean. Boundary error:
|segment start - span start| and |segment end - span end| where a segment and an utterance are each
other's only match (the 0.2 s padding included). x real time: audio seconds / wall seconds of the
whole command in a fresh process (interpreter start, decoding, resampling, VAD, manifest write) on
this machine's 2 cores, shared with other sessions' work while it ran. Defaults of the table above;
RAVDESS and CASIA chose them, TESS is only reported.
"""

TUNE_TEXT = """The segment maths over a grid of settings on the VAD probabilities of the RAVDESS and CASIA
sessions (computed once), sorted by the worst corpus's distance from the targets (found >= 97, 2+ <=
3, per utterance <= 1.1), then by the boundary error: the first rows, and the defaults' row last (in
bold). `--min-speech` 0.25 and `--max-segment` 20 (no utterance is that long) were fixed. The
defaults were chosen by reading this table, not by a rule: they meet every target on both corpora
with no segment holding two utterances; the rows with fewer segments per utterance either close
CASIA's shortest pauses (`--min-silence` 0.3: 0.6-0.7% of segments hold two utterances) or use
threshold 0.65, which finds fewer RAVDESS utterances (98.1-98.2% against 98.9%); `--min-segment`
0.8 would drop short words of natural speech."""

TRAIN_TEXT = """Each session's segments labelled as the utterance whose clip they overlap most, with that
utterance's prompt (`text_id`) and the folds of the clip cache (speaker = the session = the corpus
speaker), then `extract --window trim` (Whisper base) and `train --labeled-fraction 0.1 --workers 1`
(every fold x 3 seeds, the recipe's methods, `text_norm=auto`); the same `train` on
`/work/cache/<corpus>/whisper-base-trim.h5` (the clips). Macro-F1 %, mean ± std over folds x seeds.
The labelled subsets are drawn from different rows (segments, clips), so the comparison is of
pipelines on the same folds, not of paired runs. A first CASIA run gave the segments no `text_id`
(what `segment` writes for unknown speech): bgrpo 46.6 ± 4.0, supervised 46.2 ± 4.2, 6.4 points under
the clips, which have prompts and so content normalisation; the prompts, not the cutting, made that
gap. On RAVDESS the segments stay under the clips; more context is not why: the same run with
`segment --padding 0.5` (1482 segments, found 99.38%) gave bgrpo 72.1 ± 5.7, supervised 67.0 ± 6.3
(the clips' run repeated gave the same 76.60 / 71.35), and neither are the extra pieces: the cache
cut to the 1382 segments that are their utterance's only segment gave bgrpo 72.7 ± 4.6, supervised
66.4 ± 5.0. What the segments lack or add against the clips (their own second of recorded silence on
each side, cut by the VAD and only partly restored by the padding; the session's noise) is measured
next."""

TRUE_SPANS_TEXT = """Where the gap comes from (`--true-spans`): the same sessions cut at each utterance's true span
instead of the detector's segments, labelled, extracted and trained alike. True clip spans: the clip's
own samples (its recorded silence included) with the session's -60 dBFS noise over them, so against
the clips only the noise differs. True speech spans: the clip's speech only (first to last 10 ms frame
within 35 dB of its loudest, as the bench's truth), so against the clip spans only the cut silence
differs. Macro-F1 %, mean ± std over folds x seeds (segments and clips: the table above); below each
row, its difference from the clips' run on the same fold and seed (mean, and how many of the folds x
seeds are below the clips). The segments already carry the clips' prompts (`text_id`) and speakers
(the session is the speaker), so neither differs."""

PREDICT_TEXT = """`python cli.py predict FILE... --run RUN` cuts a file longer than 30 s (every file with
`--segment`) into speech segments with `segment`'s detector and defaults, and labels each segment:
one row per segment with its `start` and `end` (seconds; a short file keeps one row, start 0, end its
duration, its label and probabilities as before). A recording's segments are centred as one speaker
(the recording, with the run's speaker prior as for any speaker; `--speaker-regex` or a table's
speaker column name another); a segment's prompt is unknown. A file without speech: one line on
stderr, no rows. A segment manifest (`segment`'s CSV, rows with start/end) is labelled row by row,
as its spans, its speakers from its speaker column. `--timeline OUT.png` draws each segmented
file's class probabilities over time (a stacked bar per segment, silence blank, a strip in the
predicted label's colour above); the same in Python: `load_run(RUN).predict_proba(paths)` and
`trainer.timeline.write_timeline`.

The check: 4-minute sessions (the first utterances of a RAVDESS speaker's session above, cut after
the last one ending within 4 minutes), one speaker of each of the run's six folds, labelled by
`predict` as a user runs it (segments), against `predict` on the same utterances as corpus clips
(centred as their speaker, as the segments are: `--speaker-regex`). A segment is compared with the
utterance whose clip it overlaps most. As an upper bound for any cutting, the session cut at each
clip's own span (true clip spans), and for scale, the clips predicted each alone (the default without
a speaker) against the clips as their speaker. The run: `train --method bgrpo,supervised` on the
RAVDESS clip cache (10% labels, its 6 folds x 3 seeds an ensemble; each speaker's labelled 10% was
seen by the folds that did not test it, alike for clips and segments)."""

QUIET_TEXT = """The same sessions without their -60 dBFS noise (`--without-noise`: the same order and pauses,
digital silence between the utterances), the same run:"""

NOT_DONE_TEXT = """## mp3 offsets, and what is not here

mp3 spans are read by libmpg123's seek (a throwaway check, 15 two-second spans of a 60 s noise file
each, against the slice of the whole decode, resampled alike): 16 kHz mp3 15 of 15 sample-exact;
48 kHz 7 of 15 exact, the others within 2e-7; 44.1 kHz (noise resampled from 16 kHz, then encoded)
none exact, maximum absolute difference 0.66, with libmpg123 reporting bit-reservoir errors on the
frame after the seek, while 44.1 kHz noise encoded directly seeked exactly. So an mp3 segment may
differ from the whole decode in its first decoder frame (26 ms at 44.1 kHz); convert to flac where
that matters."""


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpora", default="ravdess,casia,tess")
    parser.add_argument("--tune", default="", help="corpora whose sessions choose the defaults (grid search)")
    parser.add_argument("--work", default="/tmp/segment-bench")
    parser.add_argument("--rss-hours", type=float, default=0.0, help="also the peak RSS on a file this long")
    parser.add_argument("--train", default="", help="corpora: segments -> extract -> train against their clip caches")
    parser.add_argument("--true-spans", default="", help="corpora: only extract -> train on their sessions cut at "
                        "the true clip spans and speech spans, added to --json and the page")
    parser.add_argument("--clip-cache", default="/work/cache/{corpus}/whisper-base-trim.h5")
    parser.add_argument("--json", default=str(REPO / "docs" / "segments.json"))
    parser.add_argument("--page", default=str(REPO / "docs" / "SEGMENTS.md"))
    parser.add_argument("--page-only", action="store_true", help="rewrite the page from --json")
    args = parser.parse_args(argv)
    command = "python bench/segment_page.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.page_only:
        results = json.loads(Path(args.json).read_text())
        write_text_atomic(args.page, page(results, results.get("command", command)))
        return
    work = Path(args.work)
    if args.true_spans:  # added to the page's results, the rest as measured before
        results = json.loads(Path(args.json).read_text())
        results["true_spans"] = {c: train_true_spans(c, work, Path(args.clip_cache.format(corpus=c)))
                                 for c in args.true_spans.split(",")}
        results["true_spans_command"] = command
        print("true spans", json.dumps(results["true_spans"]))
        write_text_atomic(args.json, json.dumps(results, indent=1) + "\n")
        write_text_atomic(args.page, page(results, results.get("command", command)))
        return
    corpora = args.corpora.split(",")
    truths = {c: build_sessions(c, work / "sessions" / c) for c in corpora}
    results = {"settings": vars(SegmentSettings()), "corpora": {}, "command": command}
    if args.tune:
        tuned = tune({c: session_probs(work / "sessions" / c) for c in args.tune.split(",")}, truths)
        write_text_atomic(work / "tune.csv", tuned.to_csv(index=False))
        print(tuned.head(10).to_string())
        results["tune_top"] = tuned.head(8).to_dict("records")
        results["tune_defaults"] = tuned[np.logical_and.reduce(
            [np.isclose(tuned[k], v) for k, v in vars(SegmentSettings()).items()])].to_dict("records")
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
    if args.train:
        results["train"] = {c: train_against_clips(c, work, Path(args.clip_cache.format(corpus=c)))
                            for c in args.train.split(",")}
        print("train", json.dumps(results["train"]))
    before = json.loads(Path(args.json).read_text()) if Path(args.json).is_file() else {}
    kept = ("predict", "predict_quiet", "true_spans", "true_spans_command")
    results.update({k: before[k] for k in kept if k in before})  # measured by other commands
    write_text_atomic(args.json, json.dumps(results, indent=1) + "\n")
    write_text_atomic(args.page, page(results, command))


if __name__ == "__main__":
    main()
