"""Multi-corpus development: every candidate default on every development corpus under
the inner-validation protocol (test folds dropped), and the choice made on the MEAN over corpora.

Development corpora: the real caches given (RAVDESS, CASIA, ...), the demo cache when given, and
the stress corpora derived from each real cache by pipeline/stress_corpora.py (confounded,
unbalanced, few-per-speaker). Writes to --out: caches/ (derived), <corpus>/ (ablate output per
corpus), dev.csv (variant x corpus x method), dev.md (per variant: the corpora side by side and
their mean) and dev_stats.csv (per fold x seed: utterances per speaker, speaker-label dependence).
The shipped `speaker_norm=auto` rule is evaluated from the fixed-on / fixed-off runs
(norm_rule_runs), as `dependence-test alpha=A` variants.

    python bench/dev_corpora.py --cache ravdess=/work/caches/ravdess-base-trim.h5 \
        --cache casia=/work/caches/casia-base-trim.h5 --grid bench/dev_grid.toml --out runs/dev --workers 2
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from data_manifests.storage import write_text_atomic
from pipeline.cache import load_cache
from pipeline.stress_corpora import KINDS, TEXT_KINDS, derive
from trainer.ablate import ablate

SHOWN = ("supervised", "bgrpo", "pseudo-label", "topline")


def development_caches(real: dict[str, str], out: Path, stress: bool = True) -> dict[str, str]:
    """{corpus name: cache path}: the real caches and (once, then reused) their stress corpora."""
    caches = dict(real)
    for name, path in real.items():
        if not stress or name == "demo":
            continue
        with_text = (load_cache(path, layers=[], columns=["text_id"]).table.get("text_id", pd.Series([""])) != "").any()
        for kind in [k for k in KINDS if with_text or k not in TEXT_KINDS]:
            target = out / "caches" / f"{name}-{kind}.h5"
            if not target.exists():
                derive(path, kind, target)
            caches[f"{name}-{kind}"] = str(target)
    return caches


def collect_dev(out: Path, corpora: list[str]) -> pd.DataFrame:
    frames = []
    for name in corpora:
        t = pd.read_csv(out / name / "ablation.csv")
        frames.append(t.assign(corpus=name))
    return pd.concat(frames, ignore_index=True)


def dev_markdown(dev: pd.DataFrame) -> str:
    """Per variant: macro-F1 of each method per corpus, bgrpo's rel / G, and the mean over corpora."""
    corpora = list(dict.fromkeys(dev["corpus"]))
    parts = []
    for variant, g in dev.groupby("variant", sort=False):
        head = ["method", *corpora, "mean"]
        lines = [f"### {variant}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for method in [m for m in SHOWN if m in set(g["method"])]:
            cells = [g[(g["corpus"] == c) & (g["method"] == method)]["macro_f1_mean"] for c in corpora]
            vals = [float(v.iloc[0]) if len(v) else float("nan") for v in cells]
            lines.append(
                f"| {method} | " + " | ".join(f"{v:.1f}" for v in vals) + f" | **{pd.Series(vals).mean():.1f}** |"
            )
        b = g[g["method"] == "bgrpo"].set_index("corpus").reindex(corpora)
        for key, label, fmt in (("rel_vs_supervised", "bgrpo rel", "{:+.1f}%"), ("gap_recovered", "bgrpo G", "{:.2f}")):
            vals = b[key].astype(float)
            lines.append(
                f"| {label} | " + " | ".join(fmt.format(v) for v in vals) + f" | **{fmt.format(vals.mean())}** |"
            )
        collapsed = g.groupby("corpus")["collapsed"].sum().reindex(corpora)
        lines.append(
            "| collapsed runs | " + " | ".join(str(int(v)) for v in collapsed) + f" | {int(collapsed.sum())} |"
        )
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def norm_rule_runs(out: Path, caches: dict[str, str], alphas=(0.01, 0.05, 0.1)) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`speaker_norm=auto` as shipped, evaluated from the fixed-on / fixed-off runs of each fold.

    The rule reads only L's labels and speakers (and utterances per speaker), so per fold it selects
    exactly the features of one of those two runs, which are deterministic given features, fold and
    seed: their per-fold scores are the rule's. Returns (ablation-like rows per alpha, per-fold stats)."""
    import numpy as np

    from pipeline.cache import load_cache
    from trainer.inputs.auto_choices import (
        MIN_UTTERANCES_PER_SPEAKER,
        median_utterances_per_speaker,
        speaker_label_dependence,
    )
    from trainer.metrics import gap_recovered, relative_gain
    from trainer.inputs.protocol import fold_names, make_split

    grid_rows, stats = [], []
    for name, path in caches.items():
        runs = pd.read_csv(out / name / "all_runs.csv")
        t = load_cache(path).table
        spk, lab = t["speaker"].astype(str).to_numpy(), t["label"].astype(str).to_numpy()
        picked = {a: [] for a in alphas}
        for fold in fold_names(t):
            for seed in sorted(set(runs["seed"])):
                s = make_split(t, fold, seed, 0.1, 0.0, False, True)
                med = median_utterances_per_speaker(spk[np.concatenate([s.labeled, s.val, s.unlabeled])])
                mi, p = speaker_label_dependence(spk[s.labeled], lab[s.labeled])
                stats.append({"corpus": name, "fold": fold, "seed": seed, "median_utt_per_speaker": med,
                              "mi": mi, "p": p})
                for a in alphas:
                    variant = "fixed-on" if med >= MIN_UTTERANCES_PER_SPEAKER and p >= a else "fixed-off"
                    picked[a].append(runs[(runs["variant"] == variant) & (runs["fold"].astype(str) == fold)
                                          & (runs["seed"] == seed)])
        for a, frames in picked.items():
            f1 = pd.concat(frames).groupby("method")["macro_f1"].mean()
            for m, v in f1.items():
                grid_rows.append(
                    {
                        "variant": f"dependence-test alpha={a}",
                        "corpus": name,
                        "method": m,
                        "macro_f1_mean": v,
                        "rel_vs_supervised": relative_gain(v, f1["supervised"]),
                        "gap_recovered": gap_recovered(v, f1["supervised"], f1["topline"]),
                        "collapsed": int(pd.concat(frames).query("method == @m")["collapsed"].sum()),
                    }
                )
    return pd.DataFrame(grid_rows), pd.DataFrame(stats)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", action="append", required=True, help="NAME=PATH of a real (or demo) cache; repeat")
    ap.add_argument("--grid", default="bench/dev_grid.toml")
    ap.add_argument("--out", default="runs/dev")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--no-stress", action="store_true", help="only the given caches")
    ap.add_argument("--only", default=None, help="comma list of corpus names to (re)run ('none': only re-collect)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    real = dict(c.split("=", 1) for c in args.cache)
    caches = development_caches(real, out, not args.no_stress)
    for name, path in caches.items():
        if args.only and name not in args.only.split(","):
            continue
        print(f"== {name}: {path}", flush=True)
        ablate(path, args.grid, out / name, args.workers)
    done = [n for n in caches if (out / n / "ablation.csv").exists()]
    dev = collect_dev(out, done)
    rule, stats = norm_rule_runs(out, {n: caches[n] for n in done})
    dev = pd.concat([dev, rule], ignore_index=True)
    write_text_atomic(out / "dev.csv", dev.to_csv(index=False))
    write_text_atomic(out / "dev_stats.csv", stats.to_csv(index=False))
    write_text_atomic(out / "dev.md", dev_markdown(dev))
    print(dev_markdown(dev))


if __name__ == "__main__":
    main()
