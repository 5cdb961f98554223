"""Predicting one file at a time against all of a speaker's files at once (issue 37): macro-F1 on the
test speakers of every fold x seed, 10% labels, through BGRPOClassifier (train's code path).

Scored ways, from one fitted speaker_norm model (unless said):
- together (own mean): each test speaker's rows centred by their own mean, as `train` scores them;
- together (shrunk): the same rows grouped by speaker, means shrunk toward the speaker prior (predict's default);
- alone (shrunk): every row by itself (the default of predict, load_run and the estimator without groups);
- alone (population mean): every row minus the training speakers' mean alone (the prior with k = infinity);
- alone (no centring): every row as it is, given to the same model;
- alone (own mean): every row minus itself (what `predict` did before the prior: one constant answer);
- alone, second policy: a model trained without speaker centring (speaker_norm=false), every row by itself.

    python bench/predict_alone.py --cache /work/cache/ravdess/whisper-base-trim.h5 [--inner] [--seeds 0,1,2]

`--inner` scores each run on the next fold's speakers with the test fold removed (choose there);
the outer folds only report. Prints one table and writes it as JSON beside --out.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.cache import load_cache
from trainer import BGRPOClassifier
from trainer.inputs.protocol import fold_names, make_split
from trainer.inputs.speaker_prior import SpeakerPrior
from trainer.method.policy import speaker_prior_tensors, stored_speaker_prior
from trainer.metrics import scores

WAYS = ("together (own mean)", "together (shrunk)", "alone (shrunk)", "alone (population mean)",
        "alone (no centring)", "alone (own mean)", "alone, second policy")


def with_meta(est: BGRPOClassifier, **change):
    """A shallow copy of a fitted estimator whose stored choices / prior are changed (bench-only variants)."""
    twin = BGRPOClassifier(**est.get_params())
    twin.__dict__.update(est.__dict__)
    twin._meta = {
        **est._meta,
        "choices": {k: {**v, **change.get("choice", {})} for k, v in est._meta["choices"].items()},
        "extra": {**est._meta["extra"], **change.get("extra", {})},
    }
    return twin


def one_run(cache, fold: str, seed: int, inner: bool, fraction: float) -> dict:
    table = cache.table
    split = make_split(table, fold, seed, fraction, inner=inner)
    y = np.full(len(table), -1, dtype=object)
    y[split.labeled] = table["label"].to_numpy()[split.labeled]
    spk = table["speaker"].astype(str).to_numpy()
    text = table["text_id"].astype(str).to_numpy() if "text_id" in table else None
    train, test = split.train, split.test

    def fit(**params):
        return BGRPOClassifier(fold=fold, random_state=seed, **params).fit(
            cache.features[train], y[train], groups=spk[train], text_ids=None if text is None else text[train])

    est = fit(speaker_norm=True)
    X, g, t = cache.features[test], spk[test], None if text is None else text[test]
    prior = stored_speaker_prior(est._meta["extra"], "bgrpo")
    population = SpeakerPrior(prior.mean, np.array([np.inf]))  # mu alone
    preds = {
        "together (own mean)": est.predict(X, g, t, speaker_means="own"),
        "together (shrunk)": est.predict(X, g, t),
        "alone (shrunk)": est.predict(X, None, t),
        "alone (population mean)": with_meta(est, extra=speaker_prior_tensors("bgrpo", population)).predict(X, None, t),
        "alone (no centring)": with_meta(est, choice={"speaker_norm": False}).predict(X, None, t),
        "alone (own mean)": np.concatenate([est.predict(X[[i]], None, None if t is None else t[[i]],
                                                        speaker_means="own") for i in range(len(X))]),
        "alone, second policy": fit(speaker_norm=False).predict(X, None, t),
    }
    truth = table["label"].to_numpy()[test]
    classes = sorted(set(table["label"]))
    code = {c: i for i, c in enumerate(classes)}
    row = {"fold": fold, "seed": seed}
    for way, p in preds.items():
        row[way] = scores(np.array([code[v] for v in truth]), np.array([code[v] for v in p]), len(classes))["macro_f1"]
    row["agree alone vs together"] = float(np.mean(preds["alone (shrunk)"] == preds["together (shrunk)"]))
    row["agree together shrunk vs own"] = float(np.mean(preds["together (shrunk)"] == preds["together (own mean)"]))
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", required=True)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--folds", default=None, help="comma list (default: all)")
    ap.add_argument("--inner", action="store_true", help="score on the next fold's speakers, test fold removed")
    ap.add_argument("--labeled-fraction", type=float, default=0.1)
    ap.add_argument("--out", default=None, help="JSON to write (default: print only)")
    args = ap.parse_args()
    cache = load_cache(args.cache)
    folds = args.folds.split(",") if args.folds else fold_names(cache.table)
    if args.inner and len(fold_names(cache.table)) < 3:
        raise SystemExit(f"--inner needs 3 or more folds, {args.cache} has {len(fold_names(cache.table))}")
    rows = [one_run(cache, f, int(s), args.inner, args.labeled_fraction)
            for f in folds for s in args.seeds.split(",")]
    frame = pd.DataFrame(rows)
    summary = {k: {"mean": round(float(frame[k].mean()), 2), "std": round(float(frame[k].std()), 2)}
               for k in frame.columns if k not in ("fold", "seed")}
    print(f"{args.cache} ({'inner' if args.inner else 'outer'} folds, {len(rows)} runs, "
          f"{args.labeled_fraction:.0%} labels): macro-F1 %")
    for k, v in summary.items():
        print(f"  {k:<32}{v['mean']:>8.2f} +- {v['std']:.2f}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"cache": args.cache, "inner": args.inner, "summary": summary,
                                              "runs": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
