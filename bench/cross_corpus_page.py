"""docs/CROSS_CORPUS.md: labels from public corpora for a corpus with none (issue 35), regenerated
by one command from the JSON it stores.

    python bench/cross_corpus_page.py [--cache-dir /work/cache] [--workers 1] [--only NAME,...] [--render-only]

Per pair (source corpora -> target) and setting, every fold x seed of the target (seeds 0, 1, 2),
`train --cache TARGET --source S1[,S2] --labeled-fraction 0 --classes angry,happy,neutral,sad`,
inductive, methods supervised (the source-only model), bgrpo, pseudo-label and topline (the
target's own training labels); plus a floor for the source-only model: scikit-learn's plain
LogisticRegression (C = 1) on the same labelled rows (each corpus centred and standardised on its
own audio) as the run, predicting the same test rows. Inner-validation runs (`inner_validation=true`,
the outer test fold dropped) are stored beside them: the only runs a method choice may look at.
A run whose stored JSON has the same config and cache fingerprints is not run again.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.external_page import _num, _signed  # noqa: E402
from bench.results_page import is_current  # noqa: E402
from data_manifests.storage import write_text_atomic  # noqa: E402
from trainer.config import TrainConfig  # noqa: E402

RESULTS = ROOT / "docs" / "results" / "cross_corpus"
METHODS = ("supervised", "bgrpo", "pseudo-label", "topline")
FOUR = ("angry", "happy", "neutral", "sad")  # the classes of EmoBox's cross-corpus track


@dataclass(frozen=True)
class PairRun:
    """Train on `sources`' labels for `target` (none of its own labels unless `fraction`)."""

    target: str
    sources: tuple[str, ...]
    inner: bool = False
    settings: tuple = field(default=())  # extra recipe fields ((name, value), ...): method variants

    @property
    def name(self) -> str:
        extra = "".join(f"-{k}={v}" for k, v in self.settings)
        return f"{'inner/' if self.inner else ''}{'+'.join(self.sources) or 'alone'}-to-{self.target}{extra}"


DEV_PAIRS = [("casia", ("ravdess",)), ("ravdess", ("casia",)), ("ravdess", ("tess",)), ("casia", ("ravdess", "tess"))]
# item 5's leads, decided on inner validation only: the target's own prompt centring (label-free: on
# whatever its labels), the target's prior estimated label-free by EM from the source-only model, and
# the pool trimmed to the half (three quarters) nearest the labelled class means (label-free open-set trimming)
VARIANTS = [(), (("text_norm", True),), (("pool_prior", "em"),), (("pool_keep", 0.5),), (("pool_keep", 0.75),),
            (("text_norm", True), ("pool_keep", 0.5))]
# a few labels of your own + public corpora: the target's 10% labels with and without a source
FEW = (("labeled_fraction", 0.1),)
FEW_PAIRS = [("ravdess", ()), ("ravdess", ("casia",)), ("casia", ()), ("casia", ("ravdess",))]
# chosen on inner validation (the best mean bgrpo over the dev pairs, better on each): the outer folds
CHOSEN = (("text_norm", True), ("pool_keep", 0.5))
PLAN = [*(PairRun(t, s) for t, s in DEV_PAIRS), *(PairRun(t, s, settings=CHOSEN) for t, s in DEV_PAIRS),
        *(PairRun(t, s, inner=True, settings=v) for v in VARIANTS for t, s in DEV_PAIRS),
        *(PairRun(t, s, settings=FEW) for t, s in FEW_PAIRS)]


def run_config(run: PairRun, caches: dict[str, Path], workers: int) -> TrainConfig:
    inner = {"inner_validation": True} if run.inner else {}
    return TrainConfig(**{"methods": METHODS, "source_corpora": ",".join(str(caches[s]) for s in run.sources) or None,
                          "labeled_fraction": 0.0, "classes": FOUR, "workers": workers, "threads": 1,
                          "save_models": False, **inner, **dict(run.settings)})


def lr_floor(cfg: TrainConfig, cache: Path, folds: list[str]) -> list[dict]:
    """Macro-F1 per fold x seed of a plain logistic regression (scikit-learn defaults, C = 1) fitted
    on the run's labelled rows (the sources', per-domain centred and standardised) and scored on its
    test rows: the floor the source-only model should not fall below."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from trainer.inputs.fold_jobs import prepare_fold
    from trainer.metrics import scores

    out = []
    for fold in folds:
        for seed in cfg.seeds:
            job = prepare_fold(cfg, str(cache), fold, seed, "cpu")
            x = job.data.x_lab.reshape(len(job.data.x_lab), -1).numpy()
            model = LogisticRegression(max_iter=2000).fit(x, job.data.y_lab.numpy())
            pred = model.predict(job.data.x_test[:].reshape(len(job.data.x_test), -1).numpy())
            out.append({"fold": fold, "seed": seed,
                        **scores(job.data.y_test.numpy(), pred, len(job.classes)),
                        "recall": [float(np.mean(pred[job.data.y_test.numpy() == c] == c))
                                   for c in range(len(job.classes))]})
    return out


def is_stored(keep: Path, cfg: TrainConfig, target: Path, sources: list[Path]) -> bool:
    """A stored run of the same config on the same target and source caches (fingerprints)."""
    from pipeline.cache import load_cache

    stored = json.loads(keep.read_text()).get("source_corpora", []) if keep.exists() else []
    return is_current(keep, cfg, load_cache(target).fingerprint) and \
        [s["fingerprint"] for s in stored] == [load_cache(p).fingerprint for p in sources]


def ensure_runs(plan: list[PairRun], caches: dict[str, Path], workers: int, out_dir: Path = RESULTS) -> None:
    """Train each run that is missing or stale; keep its results.json (+ the floor) as <name>.json."""
    from trainer.run import train

    with tempfile.TemporaryDirectory(prefix="cross-corpus-") as scratch:
        for run in plan:
            cfg, keep = run_config(run, caches, workers), out_dir / f"{run.name}.json"
            fresh = not is_stored(keep, cfg, caches[run.target], [caches[s] for s in run.sources])
            print(f"[cross-corpus] {run.name}: {'training' if fresh else 'up to date'}", flush=True)
            if fresh:
                t0, run_dir = time.perf_counter(), Path(scratch) / run.name
                summary = train(cfg, caches[run.target], run_dir)
                folds = sorted({c["fold"] for c in summary["choices"]})
                summary["lr_floor"] = lr_floor(cfg, caches[run.target], folds)
                keep.parent.mkdir(parents=True, exist_ok=True)
                write_text_atomic(keep, json.dumps(summary, indent=2))
                shutil.rmtree(run_dir, ignore_errors=True)
                print(f"[cross-corpus] {run.name}: {time.perf_counter() - t0:.0f} s", flush=True)


# ---------------------------------------------------------------- rendering (pure: JSON in, text out)

def recall(res: dict, method: str) -> list[float]:
    """Per-class recall (%) of a method from its confusion matrix summed over folds x seeds."""
    conf = res["methods"][method]["confusion"]
    return [100 * row[i] / max(sum(row), 1) for i, row in enumerate(conf)]


def floor_f1(res: dict) -> float:
    runs = res["lr_floor"]
    return sum(r["macro_f1"] for r in runs) / len(runs)


def pair_table(results: dict[str, dict], inner: bool = False) -> str:
    """One row per pair: the floor, each method's macro-F1, bgrpo - supervised and G."""
    head = ("| sources -> target | setting | runs | LR floor | supervised (source only) | bgrpo | pseudo-label "
            "| topline (target labels) | bgrpo - sup | G (bgrpo) | sup - floor |")
    out = [head, "|---|---|---|---|---|---|---|---|---|---|---|"]
    for run in [r for r in PLAN if r.inner == inner and r.settings != FEW]:
        res = results.get(run.name)
        if res is None:
            continue
        m = res["methods"]
        f1 = {k: m[k]["macro_f1"]["mean"] for k in METHODS}
        floor = floor_f1(res)
        setting = ", ".join(f"{k}={v}" for k, v in run.settings) or "recipe"
        out.append(f"| {' + '.join(run.sources)} -> {run.target} | {setting} | {m['bgrpo']['macro_f1']['n']} | "
                   f"{_num(floor)} | "
                   f"{_num(f1['supervised'])} | **{_num(f1['bgrpo'])}** | {_num(f1['pseudo-label'])} | "
                   f"{_num(f1['topline'])} | {_signed(f1['bgrpo'] - f1['supervised'])} | "
                   f"{_num(m['bgrpo'].get('gap_recovered'), 2)} | {_signed(f1['supervised'] - floor)} |")
    return "\n".join(out) if len(out) > 2 else "_No runs yet._"


def recall_table(results: dict[str, dict]) -> str:
    """Per-class recall of the floor, the source-only model and bgrpo (cross-corpus models collapse
    onto classes: this shows onto which)."""
    out = [f"| sources -> target | setting | model | {' | '.join(FOUR)} |", "|---|---|---|" + "---|" * len(FOUR)]
    for run in [r for r in PLAN if not r.inner and r.settings != FEW]:
        res = results.get(run.name)
        if res is None:
            continue
        floor = [100 * sum(r["recall"][i] for r in res["lr_floor"]) / len(res["lr_floor"]) for i in range(len(FOUR))]
        for name, values in (("LR floor", floor), ("supervised", recall(res, "supervised")),
                             ("bgrpo", recall(res, "bgrpo"))):
            setting = ", ".join(f"{k}={v}" for k, v in run.settings) or "recipe"
            out.append(f"| {' + '.join(run.sources)} -> {run.target} | {setting} | {name} | "
                       f"{' | '.join(_num(v, 0) for v in values)} |")
    return "\n".join(out) if len(out) > 2 else "_No runs yet._"


def variant_table(results: dict[str, dict]) -> str:
    """Inner validation, per setting: mean bgrpo macro-F1 over the dev pairs it has run on, its change
    against the recipe on the same pairs, and on how many of them it is better (what a choice reads)."""
    out = ["| setting | pairs | bgrpo (mean) | vs recipe | pairs better |", "|---|---|---|---|---|"]
    for settings in VARIANTS:
        pairs = [(PairRun(t, s, inner=True, settings=settings).name, PairRun(t, s, inner=True).name)
                 for t, s in DEV_PAIRS]
        pairs = [(v, r) for v, r in pairs if v in results and r in results]
        if not pairs:
            continue
        f1 = [(results[v]["methods"]["bgrpo"]["macro_f1"]["mean"], results[r]["methods"]["bgrpo"]["macro_f1"]["mean"])
              for v, r in pairs]
        mean, base = sum(a for a, _ in f1) / len(f1), sum(b for _, b in f1) / len(f1)
        name = ", ".join(f"{k}={v}" for k, v in settings) or "recipe"
        out.append(f"| {name} | {len(f1)} | {_num(mean)} | {_signed(mean - base)} | {sum(a > b for a, b in f1)} |")
    return "\n".join(out) if len(out) > 2 else "_No runs yet._"


def few_labels_table(results: dict[str, dict]) -> str:
    """The target's 10% labels alone against the same labels + a source corpus (outer folds)."""
    out = ["| target (10% of its labels) | labels | supervised | bgrpo | topline | bgrpo vs alone |",
           "|---|---|---|---|---|---|"]
    for target in dict.fromkeys(t for t, _ in FEW_PAIRS):
        alone = results.get(PairRun(target, (), settings=FEW).name)
        for t, sources in [p for p in FEW_PAIRS if p[0] == target]:
            res = results.get(PairRun(t, sources, settings=FEW).name)
            if res is None:
                continue
            f1 = {k: res["methods"][k]["macro_f1"]["mean"] for k in ("supervised", "bgrpo", "topline")}
            base = None if alone is None or not sources else alone["methods"]["bgrpo"]["macro_f1"]["mean"]
            out.append(f"| {t} | {' + '.join(('own 10%', *sources))} | {_num(f1['supervised'])} | "
                       f"**{_num(f1['bgrpo'])}** | {_num(f1['topline'])} | "
                       f"{_signed(None if base is None else f1['bgrpo'] - base)} |")
    return "\n".join(out) if len(out) > 2 else "_No runs yet._"


def render(results: dict[str, dict]) -> str:
    return f"""# Labels from public corpora: a corpus with no labels of its own

Generated by `python bench/cross_corpus_page.py` from docs/results/cross_corpus/*.json (do not edit by
hand). Back to the [README](../README.md); the protocol: [METHOD.md](METHOD.md#labels-from-other-corpora).

`train --cache TARGET.h5 --source S1.h5[,S2.h5] --labeled-fraction 0 --classes {','.join(FOUR)}`: the
labelled rows are the source corpora's rows of the 4 classes (EmoBox's cross-corpus track), the pool is
*every* row of the target's training fold (its hidden labels never read, its other classes included),
the score is on the target's test fold, rows of its other classes left out. Whisper base, trim window,
middle layer; every fold of the target x seeds 0, 1, 2; macro-F1 %. supervised = the source-only model
(the warm-up, no adaptation); topline = the recipe's head on every training label of the target; G =
(bgrpo - supervised) / (topline - supervised); LR floor = scikit-learn's LogisticRegression (C = 1) on the
same labelled rows. Each corpus is centred on its own speakers (and prompts, when the run removes prompt
means) and z-scored on all of its own audio; the target's class prior is taken as uniform. The setting
`text_norm=True, pool_keep=0.5` (each corpus's own prompt means removed; the pool methods learn from the
half of the pool nearest a labelled class mean) was chosen on inner validation (last table) before its
outer rows were run.

## Outer test folds

{pair_table(results)}

## Per-class recall (outer test folds, %)

{recall_table(results)}

## A few labels of your own + public corpora (outer test folds)

`--labeled-fraction 0.1`: a stratified 10% of the target's training-fold labels of the 4 classes, alone or
with a source corpus's labels; the pool, the test rows and the topline as above.

{few_labels_table(results)}

## Inner validation (the outer test fold dropped; the next fold's speakers scored)

The only runs a choice of method may look at. TESS as a target has 2 speaker folds, too few for it.

{pair_table(results, inner=True)}

Per setting, over the dev pairs (bgrpo; the recipe's own row compares it with itself):

{variant_table(results)}
"""


def load_results(out_dir: Path = RESULTS) -> dict[str, dict]:
    return {str(p.relative_to(out_dir).with_suffix("")): json.loads(p.read_text())
            for p in sorted(out_dir.rglob("*.json"))}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache-dir", default="/work/cache", help="Caches as <dir>/<corpus>/whisper-base-trim.h5.")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--only", default=None, help="Comma list of run names to (re)run.")
    ap.add_argument("--render-only", action="store_true")
    args = ap.parse_args(argv)
    caches = {c: Path(args.cache_dir) / c / "whisper-base-trim.h5" for c in ("ravdess", "casia", "tess")}
    if not args.render_only:
        plan = [r for r in PLAN if not args.only or r.name in args.only.split(",")]
        ensure_runs(plan, caches, args.workers)
    write_text_atomic(ROOT / "docs" / "CROSS_CORPUS.md", render(load_results()))
    print(f"wrote {ROOT / 'docs' / 'CROSS_CORPUS.md'}")


if __name__ == "__main__":
    main()
