"""Ablation grids from cached embeddings (never audio): the cartesian product of any config fields
x folds x seeds, all jobs in one pool of processes, one combined table (CSV + Markdown).

grid.toml:
    [base]                      # fixed fields for every run: a recipe (`python cli.py recipe`)
    methods = ["supervised", "bgrpo"]
    seeds = [0, 1, 2]
    [grid]                      # each key lists values; one run per combination
    reward = ["self", "teacher", "self+teacher"]
    labeled_fraction = [0.05, 0.1]
    [variants.spec]             # optional named settings (each a table of fields), crossed with [grid]
    update = "grpo"
    [variants.recipe]           # an empty table = the defaults
"""
from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import pandas as pd

from data_manifests.errors import UserError
from data_manifests.storage import write_text_atomic
from pipeline.run_lock import exclusive
from trainer.config import TrainConfig, check_names, read_toml
from trainer.inputs.fold_jobs import prepared_cache, run_classes
from trainer.jobs import jobs_for, run_jobs
from trainer.report import collect, summarise


def read_grid(path) -> tuple[dict, dict, dict]:
    """(base overrides, {field: [values]}, {variant: overrides}) from grid.toml, unknown fields named."""
    spec = read_toml(path)
    base, grid, variants = dict(spec.get("base", {})), dict(spec.get("grid", {})), dict(spec.get("variants", {}))
    stray = sorted(set(spec) - {"base", "grid", "variants"})
    if stray:
        raise UserError(f"{path}: unknown table/key {stray[0]!r}; use [base], [grid] and [variants.NAME]")
    check_names(base, f"{path} [base]")
    check_names(grid, f"{path} [grid]")
    for name, fields in variants.items():
        check_names(fields, f"{path} [variants.{name}]")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise UserError(f"{path}: [grid] {key} must be a non-empty list")
    return base, grid, variants


def combinations(
    base: dict, grid: dict, overrides: dict, variants: dict | None = None
) -> list[tuple[dict, TrainConfig]]:
    """Every variant x grid combination as (its point, validated config); overrides (CLI) apply last."""
    keys = list(grid)
    out = []
    for name, fields in (variants or {None: {}}).items():
        for values in itertools.product(*(grid[k] for k in keys)) if keys else [()]:
            point = ({"variant": name} if name is not None else {}) | dict(zip(keys, values))
            settings = {**base, **fields, **dict(zip(keys, values)), **overrides, "save_models": False}
            out.append((point, TrainConfig.from_dict(settings)))
    return out


def ablate(cache_path, grid_path, out_dir, workers: int = 1) -> pd.DataFrame:
    """Run the grid; write ablation.csv, ablation.md, all_runs.csv, grid.json; return the table.

    One ablation per output folder at a time (`<out>.lock`, as for `train`): a second one into the
    same folder is refused instead of interleaving its tables with the first one's."""
    with exclusive(Path(str(out_dir) + ".lock"), f"ablation folder {out_dir}", folders=(out_dir,)):
        return _ablate(cache_path, grid_path, out_dir, workers)


def _ablate(cache_path, grid_path, out_dir, workers: int) -> pd.DataFrame:
    t0 = time.perf_counter()
    base, grid, variants = read_grid(grid_path)
    combos = combinations(base, grid, {"workers": workers}, variants)
    jobs, owner = [], []
    for i, (_, cfg) in enumerate(combos):
        for job in jobs_for(cfg, cache_path):
            jobs.append(job)
            owner.append(i)
    results = run_jobs(jobs, workers, desc=f"{len(combos)} settings x folds x seeds")
    _, table, _, fingerprint = prepared_cache(str(cache_path), combos[0][1].layer, combos[0][1].speaker_norm)
    classes = run_classes(combos[0][1], table)[0]  # the classes in play (source_corpora, classes)
    lines, all_rows = [], []
    for i, (point, cfg) in enumerate(combos):
        rows = collect([r for r, o in zip(results, owner) if o == i], classes)[0]
        all_rows.append(rows.assign(**{k: json.dumps(v) if isinstance(v, list) else v for k, v in point.items()}))
        for method, d in summarise(rows, len(classes)).items():
            lines.append(
                {
                    **point,
                    "method": method,
                    **{f"{s}_{k}": d[s][k] for s in ("macro_f1", "ua", "wa") for k in ("mean", "std")},
                    "rel_vs_supervised": d.get("rel_macro_f1_vs_supervised"),
                    "gap_recovered": d.get("gap_recovered"),
                    "collapsed": d["collapsed_runs"],
                    "runs": d["macro_f1"]["n"],
                }
            )
    summary = pd.DataFrame(lines)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_dir / "ablation.csv", summary.to_csv(index=False))
    write_text_atomic(out_dir / "ablation.md", markdown_table(summary, (["variant"] if variants else []) + list(grid)))
    write_text_atomic(out_dir / "all_runs.csv", pd.concat(all_rows, ignore_index=True).to_csv(index=False))
    write_text_atomic(
        out_dir / "grid.json",
        json.dumps(
            {
                "base": base,
                "grid": grid,
                "variants": variants,
                "cache": str(cache_path),
                "fingerprint": fingerprint,
                "wall_seconds": round(time.perf_counter() - t0, 1),
            },
            indent=2,
        ),
    )
    return summary


def markdown_table(summary: pd.DataFrame, keys: list[str]) -> str:
    head = keys + ["method", "macro-F1", "UA", "WA", "rel vs sup", "G", "collapsed"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    fmt = lambda v: "" if v is None or pd.isna(v) else v  # noqa: E731
    for _, r in summary.iterrows():
        cells = [str(r[k]) for k in keys] + [r["method"]]
        cells += [f"{r[f'{s}_mean']:.1f} ± {r[f'{s}_std']:.1f}" for s in ("macro_f1", "ua", "wa")]
        rel, g = fmt(r["rel_vs_supervised"]), fmt(r["gap_recovered"])
        cells += [f"{rel:+.1f}%" if rel != "" else "", f"{g:.2f}" if g != "" else "", f"{r['collapsed']}/{r['runs']}"]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"
