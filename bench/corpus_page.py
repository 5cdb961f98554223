"""docs/CORPORA.md: one default on every corpus. Rows = corpora (real caches, the demo
cache, the stress corpora derived from the real ones), columns = methods, outer test folds with
the defaults of `train`, inductive and transductive, rel and G, beside published numbers.

    python bench/corpus_page.py --cache ravdess-trim=/work/caches/ravdess-base-trim.h5 \
        --cache casia-trim=/work/caches/casia-base-trim.h5 --stress ravdess-trim,casia-trim \
        [--fractions 0.1] [--modes inductive,transductive] [--seeds 0,1,2] [--workers 2] [--render-only]

Every inductive run also runs once with `text_norm=false` (the default before content normalisation,
<corpus>-f<F>-inductive-text-off/), for the old-vs-new table.
Runs are kept (results.json, results.csv) under docs/results/corpora/<corpus>-f<F>-<mode>/ and
skipped when their config and cache fingerprint are unchanged (bench/results_page.py's rule).
The development evidence (inner validation, bench/dev_corpora.py) is linked, not re-run here.
"""
from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.results_page import (
    RunSpec,
    cell,
    ensure_runs,
    git_head,
    load_results,
    signed,
)
from data_manifests.storage import write_text_atomic
from pipeline.stress_corpora import KINDS
from trainer.config import TrainConfig

METHODS = ("supervised", "pseudo-label", "bgrpo", "topline")
MODES = ("inductive", "transductive")
# Cited, not measured here: EmoBox (SPEC 7; CASIA: ../shared/corpora/README.md), Whisper large-v3,
# all labels; the B-GRPO paper (SPEC 1), variant unknown. Macro-F1 %.
PUBLISHED = {"ravdess": "EmoBox 75.19", "casia": "EmoBox 56.27; paper 37.0"}


def published(corpus: str) -> str:
    """Published all-label numbers for a real corpus ('casia', 'casia-full'); none for stress corpora."""
    if any(kind in corpus for kind in KINDS):
        return ""
    return PUBLISHED.get(corpus.split("-")[0], "")


TEXT_OFF = "-text-off"  # name suffix of the runs with the default before content normalisation


def plan(corpora: list[str], fractions: list[float], modes=MODES) -> list[RunSpec]:
    return [RunSpec(f"{c}-f{f}-{mode}", c, {"methods": list(METHODS), "labeled_fraction": f,
                                            "transductive": mode == "transductive"})
            for c in corpora for f in fractions for mode in modes]


def text_off_plan(corpora: list[str], fractions: list[float]) -> list[RunSpec]:
    """The inductive runs again with text_norm=false: the old default, for the old-vs-new table."""
    return [RunSpec(f"{c}-f{f}-inductive{TEXT_OFF}", c, {"methods": list(METHODS), "labeled_fraction": f,
                                                           "text_norm": False})
            for c in corpora for f in fractions]


def choice_summary(run: dict) -> str:
    """How often each auto choice was made over the run's folds x seeds, e.g. 'norm on 16/18; layers 3:9 4:9'."""
    choices = run.get("choices", [])
    if not choices:
        return ""
    on = sum(1 for c in choices if c.get("speaker_norm") is True)
    text = sum(1 for c in choices if c.get("text_norm") is True)
    layers = {}
    for c in choices:
        layers[c["layer"]] = layers.get(c["layer"], 0) + 1
    text_note = (
        f"; text on {text}/{len(choices)}" if any("text_norm" in c for c in choices) else "; run before text_norm"
    )
    return f"norm on {on}/{len(choices)}; layer " + " ".join(f"{k}:{v}" for k, v in sorted(layers.items())) + text_note


def text_norm_table(results: dict[str, dict], corpora: list[str], fractions: list[float]) -> str:
    """Old default (text_norm=false) vs the default, inductive, per corpus and labelled share."""
    head = ["corpus", "labels", "supervised old -> new", "bgrpo old -> new", "bgrpo change", "topline old -> new",
            "text norm chosen"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in corpora:
        for f in fractions:
            new, old = results.get(f"{c}-f{f}-inductive"), results.get(f"{c}-f{f}-inductive{TEXT_OFF}")
            if new is None or old is None:
                continue
            f1 = lambda run, m: run["methods"][m]["macro_f1"]["mean"]  # noqa: E731
            text = sum(1 for ch in new.get("choices", []) if ch.get("text_norm") is True)
            out.append(
                f"| {c} | {f:.0%} | {f1(old, 'supervised'):.1f} -> {f1(new, 'supervised'):.1f} | "
                f"{f1(old, 'bgrpo'):.1f} -> **{f1(new, 'bgrpo'):.1f}** | {f1(new, 'bgrpo') - f1(old, 'bgrpo'):+.1f} | "
                f"{f1(old, 'topline'):.1f} -> {f1(new, 'topline'):.1f} | {text}/{len(new.get('choices', []))} |"
            )
    return "\n".join(out) if len(out) > 2 else "_No runs yet._"


def corpus_table(results: dict[str, dict], corpora: list[str], fraction: float, mode: str) -> str:
    head = [
        "corpus",
        *METHODS,
        "bgrpo rel",
        "bgrpo G",
        "bgrpo >= sup & >= PL",
        "collapsed",
        "auto choices",
        "published (all labels)",
    ]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    rels = []
    for c in corpora:
        run = results.get(f"{c}-f{fraction}-{mode}")
        if run is None:
            continue
        m = run["methods"]
        b = m["bgrpo"]
        ok = b["macro_f1"]["mean"] >= m["supervised"]["macro_f1"]["mean"] and \
            b["macro_f1"]["mean"] >= m["pseudo-label"]["macro_f1"]["mean"]
        rels.append(b.get("rel_macro_f1_vs_supervised"))
        collapsed = sum(d["collapsed_runs"] for d in m.values())
        out.append(f"| {c} | " + " | ".join(cell(m[k], "macro_f1") for k in METHODS) +
                   f" | {signed(b.get('rel_macro_f1_vs_supervised'), '%')} | {signed(b.get('gap_recovered'), '', 2)} | "
                   f"{'yes' if ok else '**no**'} | {collapsed} | {choice_summary(run)} | "
                   f"{published(c)} |")
    if len(out) == 2:
        return "_No runs yet._"
    if rels:
        out.append(f"\nMean relative gain of bgrpo over supervised across these corpora: "
                   f"**{sum(rels) / len(rels):+.1f}%**.")
    return "\n".join(out)


def render(results: dict[str, dict], corpora: list[str], fractions: list[float], command: str, revision: str,
           date: str) -> str:
    d = TrainConfig()
    parts = ["# Results per corpus: one default on every corpus", "",
             (f"Generated by `{command}` at git `{revision}` on {date}. Macro-F1 % (mean ± std over all outer "
              "test folds x seeds), defaults of `cli.py train` "
              f"(`layer={d.layer}`, `speaker_norm={d.speaker_norm}`, `text_norm={d.text_norm}`, "
              f"`pool_prior={d.pool_prior}`); rel = relative "
              "macro-F1 of bgrpo vs supervised, G = (bgrpo - supervised) / (topline - supervised). "
              "Stress corpora are derived from the real caches by `python cli.py stress` "
              "(pipeline/stress_corpora.py): `confounded` (each speaker keeps two emotions, >= 80% of its "
              "utterances), `unbalanced` (neutral 40%, one class 4%), `few-per-speaker` (pseudo-speakers of 4 "
              "utterances), `text-confounded` (each prompt keeps two emotions, >= 80% of its utterances), "
              "`unique-text` (every utterance its own prompt). The transductive rows are the quality of "
              "`python cli.py label`."), "",
             ("The defaults were chosen on inner validation over the development corpora "
              "([docs/results/dev/dev.md](results/dev/dev.md)), never on these test folds."), ""]
    for f in fractions:
        for mode in MODES:
            table = corpus_table(results, corpora, f, mode)
            if table != "_No runs yet._":
                parts += [f"## {f:.0%} labels, {mode}", "", table, ""]
    table = text_norm_table(results, corpora, fractions)
    if table != "_No runs yet._":
        parts += ["## Content normalisation: the old default (`text_norm=false`) vs the default", "",
                  ("Inductive, the same folds x seeds; `text norm chosen` = runs in which `text_norm=auto` "
                   "removed the prompt means (trainer/inputs/auto_choices.py; its reasons are in each run's "
                   "results.json, `choices`). Macro-F1 %."), "", table, ""]
    return "\n".join(parts)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", action="append", default=[], help="NAME=PATH; repeat")
    ap.add_argument("--stress", default="", help="comma list of cache NAMEs whose stress corpora join the page")
    ap.add_argument("--stress-dir", default="runs/stress", help="where the derived stress caches are written")
    ap.add_argument("--fractions", default="0.1")
    ap.add_argument(
        "--modes", default=",".join(MODES), help="inductive,transductive (runs to make; all kept ones render)"
    )
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--results", default=str(ROOT / "docs/results/corpora"))
    ap.add_argument("--scratch", default="runs/corpus-page")
    ap.add_argument("--out", default=str(ROOT / "docs/CORPORA.md"))
    ap.add_argument("--render-only", action="store_true")
    args = ap.parse_args(argv)
    from bench.dev_corpora import development_caches

    real = dict(c.split("=", 1) for c in args.cache)
    stress_of = {k: v for k, v in real.items() if k in args.stress.split(",")}
    caches = (
        {**real, **{k: v for k, v in development_caches(stress_of, Path(args.stress_dir)).items() if k not in real}}
        if stress_of and not args.render_only
        else dict(real)
    )
    fractions = [float(f) for f in args.fractions.split(",")]
    results_dir = Path(args.results)
    if not args.render_only:
        specs = plan(list(caches), fractions, args.modes.split(","))
        if "inductive" in args.modes.split(","):
            specs += text_off_plan(list(caches), fractions)
        ensure_runs(specs, {k: Path(v) for k, v in caches.items()}, results_dir,
                    Path(args.scratch), [int(s) for s in args.seeds.split(",")], None, args.workers)
    results = load_results(results_dir)
    corpora = sorted(dict.fromkeys(n.rsplit("-f", 1)[0] for n in results if not n.endswith(TEXT_OFF)),
                     key=lambda c: (published(c) == "", c))
    command = "python bench/corpus_page.py " + " ".join(argv if argv is not None else sys.argv[1:])
    page = render(results, corpora, fractions, command, git_head(), dt.date.today().isoformat())
    write_text_atomic(Path(args.out), page)
    print(page)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
