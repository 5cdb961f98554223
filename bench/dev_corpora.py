"""Multi-corpus development (issue 14): every candidate default on every development corpus under
the inner-validation protocol (test folds dropped), and the choice made on the MEAN over corpora.

Development corpora: the real caches given (RAVDESS, CASIA, ...), the demo cache when given, and
the stress corpora derived from each real cache by pipeline/stress_corpora.py (confounded,
unbalanced, few-per-speaker). Writes to --out: caches/ (derived), <corpus>/ (ablate output per
corpus), dev.csv (variant x corpus x method) and dev.md (per variant: the corpora side by side and
their mean).

    python bench/dev_corpora.py --cache ravdess=/work/caches/ravdess-base-trim.h5 \
        --cache casia=/work/caches/casia-base-trim.h5 --grid bench/dev_grid.toml --out runs/dev --workers 2
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from data_manifests.storage import write_text_atomic
from pipeline.stress_corpora import KINDS, derive
from trainer.ablate import ablate

SHOWN = ("supervised", "bgrpo", "pseudo-label", "topline")


def development_caches(real: dict[str, str], out: Path, stress: bool = True) -> dict[str, str]:
    """{corpus name: cache path}: the real caches and (once, then reused) their stress corpora."""
    caches = dict(real)
    for name, path in real.items():
        if not stress or name == "demo":
            continue
        for kind in KINDS:
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
            lines.append(f"| {method} | " + " | ".join(f"{v:.1f}" for v in vals) + f" | **{pd.Series(vals).mean():.1f}** |")
        b = g[g["method"] == "bgrpo"].set_index("corpus").reindex(corpora)
        for key, label, fmt in (("rel_vs_supervised", "bgrpo rel", "{:+.1f}%"), ("gap_recovered", "bgrpo G", "{:.2f}")):
            vals = b[key].astype(float)
            lines.append(f"| {label} | " + " | ".join(fmt.format(v) for v in vals) + f" | **{fmt.format(vals.mean())}** |")
        collapsed = g.groupby("corpus")["collapsed"].sum().reindex(corpora)
        lines.append("| collapsed runs | " + " | ".join(str(int(v)) for v in collapsed) + f" | {int(collapsed.sum())} |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", action="append", required=True, help="NAME=PATH of a real (or demo) cache; repeat")
    ap.add_argument("--grid", default="bench/dev_grid.toml")
    ap.add_argument("--out", default="runs/dev")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--no-stress", action="store_true", help="only the given caches")
    ap.add_argument("--only", default=None, help="comma list of corpus names to (re)run")
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
    write_text_atomic(out / "dev.csv", dev.to_csv(index=False))
    write_text_atomic(out / "dev.md", dev_markdown(dev))
    print(dev_markdown(dev))


if __name__ == "__main__":
    main()
