"""`predict` on a long recording against `predict` on its utterances as clips -> docs/SEGMENTS.md.

A RAVDESS session of bench/segment_page.py (one speaker's utterances in a seeded order joined by
0.2-1.5 s pauses, -60 dBFS noise, boundaries known), cut after the last utterance ending within
`--minutes`, is labelled three ways with one trained run, every answer centred as one speaker (the
recording; for the clips: their speaker, `predict --speaker-regex`):
  segments: `predict SESSION` as a user runs it (the VAD's segments, one row each);
  clips: `predict` on the corpus clips of the same utterances;
  true spans: the session cut at each utterance's clip span (its own samples, plus the noise),
  an upper bound for any segmentation.
A segment is compared with the utterance whose clip span it overlaps most (segments overlapping
none are counted apart). Agreement: segments whose label equals that utterance's clip label. Also
the clips predicted each alone (`predict` without a speaker, the default) and accuracy against
the corpus labels, for reference. The run's fold x seed ensemble saw some of the speaker's
utterances (10% labels) in the folds it was not tested in; the agreement compares the same run's
two answers, so that does not favour either.

    python bench/predict_session.py --run RUN --speakers Actor_01,Actor_05 --paddings 0.2,1.0
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.segment_page import CORPORA, NOISE_DBFS, build_sessions, overlaps, page  # noqa: E402
from data_manifests.storage import write_text_atomic  # noqa: E402
from pipeline.audio import SAMPLE_RATE, Span  # noqa: E402
from pipeline.segment import SegmentSettings  # noqa: E402
from trainer.predict import load_run, predict_features  # noqa: E402
from trainer.timeline import write_timeline  # noqa: E402


def cut_session(session: Path, truth: pd.DataFrame, minutes: float, out: Path) -> pd.DataFrame:
    """The session's first utterances (those whose clip ends within `minutes`, then 0.5 s) as `out`."""
    kept = truth[truth["clip_end"] <= minutes * 60].copy()
    end = int((kept["clip_end"].max() + 0.5) * SAMPLE_RATE)
    audio, rate = sf.read(session, frames=end, dtype="float32")
    sf.write(out, audio, rate, subtype="PCM_16")
    return kept


def compare(segments: pd.DataFrame, truth: pd.DataFrame, clip_labels: pd.Series) -> dict:
    """Each segment against the utterance whose clip span it overlaps most: agreement counts."""
    ov = overlaps(segments[["start", "end"]].to_numpy(), truth[["clip_start", "clip_end"]].to_numpy())
    matched = ov.max(1) > 0
    utt = truth["clip"].to_numpy()[ov.argmax(1)][matched]
    agree = segments["label"].to_numpy()[matched] == clip_labels.loc[utt].to_numpy()
    return {"segments": len(segments), "matched": int(matched.sum()), "agree": int(agree.sum()),
            "utterances_with_a_segment": int(len(set(utt)))}


def _share(counts: dict) -> float:
    return counts["agree"] / max(counts["matched"], 1)


def session_result(run, speaker: str, sessions: Path, truth: pd.DataFrame, labels: pd.Series, minutes: float,
                   work: Path, device: str, paddings: list[float]) -> tuple[dict, pd.DataFrame]:
    """The answers for one speaker's session (see the module docstring), and the segment table of
    the first padding (the default's)."""
    path = work / f"{speaker}-{minutes:g}min.flac"
    utts = cut_session(sessions / f"{speaker}.flac", truth[truth["recording"] == speaker], minutes, path)
    clips = [str(CORPORA / "ravdess" / c) for c in utts["clip"]]
    as_speaker = run.predict_proba(clips, speakers=[speaker] * len(clips), device=device)
    alone = run.predict_proba(clips, device=device)
    clip_label = pd.Series(as_speaker["label"].to_numpy(), index=utts["clip"].to_numpy())
    gold = labels.loc[utts["clip"]].to_numpy()
    embed = run.embedder(device)
    spans = [Span(a, b) for a, b in utts[["clip_start", "clip_end"]].to_numpy()]
    recording = [str(path)] * len(spans)
    true = predict_features(run.policies, run.meta, embed(recording, spans, None), recording)
    true_labels = np.asarray(run.classes)[true.argmax(1)]
    result = {"seconds": float(sf.info(path).duration), "utterances": len(utts),
              "true_spans_agree": int((true_labels == clip_label.to_numpy()).sum()),
              "alone_vs_speaker_agree": int((alone["label"].to_numpy() == clip_label.to_numpy()).sum()),
              "accuracy": {"clips": float((clip_label.to_numpy() == gold).mean()),
                           "true_spans": float((true_labels == gold).mean())}, "padding": {}}
    tables = []
    for padding in paddings:
        segments = run.predict_proba([str(path)], device=device, segment_settings=SegmentSettings(padding=padding))
        result["padding"][f"{padding:g}"] = {**compare(segments, utts, clip_label),
                                             "accuracy": _share(compare(segments, utts, labels))}
        tables.append(segments)
    return result, tables[0]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", required=True, help="a run trained on the RAVDESS clip cache")
    parser.add_argument("--speakers", default="Actor_01", help="comma list of RAVDESS speakers (one session each)")
    parser.add_argument("--minutes", type=float, default=4.0)
    parser.add_argument("--paddings", default=f"{SegmentSettings().padding:g}",
                        help="comma list of `segment` paddings (s) for predict's segments; the first is the main one")
    parser.add_argument("--work", default="/tmp/segment-bench")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--clip-cache", default="/work/cache/ravdess/whisper-base-trim.h5", help="the corpus labels")
    parser.add_argument("--without-noise", action="store_true", help="the same sessions without their noise "
                        "(stored apart; no timeline)")
    parser.add_argument("--noise-dbfs", type=float, default=NOISE_DBFS, help="the sessions' white noise level")
    parser.add_argument("--json", default=str(REPO / "docs" / "segments.json"))
    parser.add_argument("--page", default=str(REPO / "docs" / "SEGMENTS.md"))
    parser.add_argument("--timeline", default=str(REPO / "docs" / "predict-timeline.png"))
    args = parser.parse_args(argv)
    from pipeline.cache import open_checked, read_table

    work = Path(args.work)
    sessions = work / "sessions" / ("ravdess-without-noise" if args.without_noise else "ravdess")
    truth = build_sessions("ravdess", sessions, noise_dbfs=None if args.without_noise else args.noise_dbfs)
    with open_checked(args.clip_cache) as f:
        labels = read_table(f, ["path", "label"]).set_index("path")["label"]
    run = load_run(args.run)
    paddings = [float(p) for p in args.paddings.split(",")]
    cut = work / ("predict-without-noise" if args.without_noise else "predict")
    cut.mkdir(parents=True, exist_ok=True)
    per, tables = {}, []
    for speaker in args.speakers.split(","):
        per[speaker], table = session_result(run, speaker, sessions, truth, labels, args.minutes, cut, args.device,
                                             paddings)
        tables.append(table)
        print(speaker, json.dumps(per[speaker]))
    command = "python bench/predict_session.py " + " ".join(argv if argv is not None else sys.argv[1:])
    results = json.loads(Path(args.json).read_text())
    found = {"command": command, "run": str(args.run), "minutes": args.minutes, "sessions": per, "paddings": paddings}
    if args.without_noise:
        results["predict_quiet"] = found
    else:
        both = pd.concat(tables, ignore_index=True)
        both.attrs["segmented"] = sorted(set(both["file"]))
        write_timeline(both, run.classes, args.timeline)
        print(f"wrote {args.timeline}")
        results["predict"] = {**found, "timeline": Path(args.timeline).name}
    write_text_atomic(args.json, json.dumps(results, indent=1) + "\n")
    write_text_atomic(args.page, page(results, results.get("command", command)))


if __name__ == "__main__":
    main()
