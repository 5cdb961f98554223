"""What to label next, measured (docs/ACTIVE_LEARNING.md): labelling in rounds, each rule of
trainer/next_to_label.py against random picks.

    python bench/active_learning.py --cache ravdess=cache/ravdess/whisper-base-trim.h5 \
        --cache casia=cache/casia/whisper-base-trim.h5 [--seeds 0,1,2] [--workers 2] \
        [--rules margin,entropy,k-center,random] [--inner] [--out docs/results/active-learning]

Per corpus, outer test fold and seed: start from the protocol's stratified 5% of the training folds
(trainer/inputs/protocol.py's split, the same for every rule), train the default recipe (inductive: the
training folds' unlabelled rows are the pool, the test fold is only scored), then in rounds let a
rule pick a fixed budget (2.5% of the training rows) from the pool, reveal those labels through
the simulated annotator, and train again, up to 20%. Rules see the model's probabilities on the
pool and the training folds' features, never a label; the annotator holds the training folds'
labels only, and reveals one when its row is picked. `--inner` runs the model-selection protocol
instead (each outer test fold removed, the next fold's speakers scored: `inner_validation`), which
decides the rule `label` uses.

Writes <out>/<protocol>/rounds.csv (one row per corpus x fold x seed x rule x round) and
summary.json; `--render` writes the page and its plot from both protocols' files.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import zlib
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from functools import partial
from multiprocessing import get_context
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from data_manifests.storage import atomic_path, write_text_atomic  # noqa: E402
from pipeline.run_lock import die_with_parent  # noqa: E402
from trainer.inputs.auto_choices import resolve_auto  # noqa: E402
from trainer.config import TrainConfig, parse_set  # noqa: E402
from trainer.inputs.fold_data import FoldData  # noqa: E402
from trainer.inputs.fold_jobs import FoldJob, class_names, prepared_cache, table_cache  # noqa: E402
from trainer.jobs import job_seed  # noqa: E402
from trainer.method.methods import monitored_epochs, train_method, warm_up  # noqa: E402
from trainer.metrics import scores  # noqa: E402
from trainer.method.monitor import Monitor  # noqa: E402
from trainer.next_to_label import DEFAULT_RULE, RULES, choose_next  # noqa: E402
from trainer.inputs.protocol import Split, fold_names, make_split  # noqa: E402

START, STEP, STOP = 0.05, 0.025, 0.20  # labelled share of the training rows: start, budget per round, end


class AnnotatorError(RuntimeError):
    """A rule asked for a label the simulated annotator must not give (a test row, or twice)."""


@dataclass
class SimulatedAnnotator:
    """The person who labels: knows the true label of every training-fold row and nothing else;
    each call to `reveal` is one round's annotation, recorded in `log`."""

    truth: np.ndarray  # [N] label index of every cache row, -1 outside the training folds
    log: list = field(default_factory=list)

    @classmethod
    def for_training_rows(cls, y: np.ndarray, train: np.ndarray) -> "SimulatedAnnotator":
        truth = np.full(len(y), -1)
        truth[train] = y[train]
        return cls(truth)

    def reveal(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=int)
        asked = np.concatenate([np.zeros(0, int), *self.log])
        if (self.truth[rows] < 0).any():
            raise AnnotatorError(f"rows {rows[self.truth[rows] < 0][:5].tolist()} are not training-fold rows")
        if np.isin(rows, asked).any() or len(np.unique(rows)) < len(rows):
            raise AnnotatorError("a row was asked for twice")
        self.log.append(rows)
        return self.truth[rows]


@dataclass
class RoundModel:
    """What one round's training gives: test predictions (B-GRPO and its warm-up), the model's
    probabilities on every pool row and the training rows' features (for the rules)."""

    test_pred: np.ndarray
    test_pred_supervised: np.ndarray
    probs: np.ndarray  # [n_train, C] in split.train order, zero on labelled rows
    features: torch.Tensor  # [n_train, L, D] z-scored, in split.train order
    choice: dict


def train_round(cfg: TrainConfig, cache_path: str, y_visible: np.ndarray, split: Split, classes: list[str],
                seed_key: tuple[str, int], device) -> RoundModel:
    """The default recipe (warm-up, then B-GRPO; trainer/method/methods.py, as `train` builds it) on
    split.labeled with the labels in y_visible (-1 = unknown; test rows carry their labels for scoring
    only), seeded by (fold, seed) alone so that the same labelled set gives the same model whichever
    rule chose it."""
    table = table_cache(cache_path).table
    cfg, choice = resolve_auto(cfg, table_cache(cache_path), split, y_visible, len(classes))
    data = FoldData.build(prepared_cache(cache_path, cfg.layer, cfg.speaker_norm).features, y_visible,
                          table["speaker"].astype(str).to_numpy(), split, len(classes), device)
    job = FoldJob(data, split, table, y_visible, classes, cfg, choice)
    seed_of = partial(job_seed, *seed_key)
    warm, job = warm_up(job, seed_of, Monitor(data, "supervised", [], monitored_epochs("supervised", cfg)))
    model = train_method("bgrpo", warm, job, seed_of, Monitor(data, "bgrpo", [], monitored_epochs("bgrpo", cfg)))
    probs = np.zeros((len(split.train), len(classes)))
    probs[np.searchsorted(split.train, split.unlabeled)] = data.x_unl.map(model.probs).cpu().numpy()
    return RoundModel(data.x_test.map(model.probs).argmax(1).cpu().numpy(),
                      data.x_test.map(warm.probs).argmax(1).cpu().numpy(), probs, data.x_train_all[:], job.choice)


def round_targets(n_train: int) -> tuple[int, int]:
    """(budget per round, number of rounds): STEP of the training rows per round, from START to STOP."""
    budget = max(1, int(round(STEP * n_train)))
    return budget, int(round((STOP - START) / STEP))


def simulate(cache_path: str, fold: str, seed: int, rules: list[str], cfg: TrainConfig, inner: bool = False,
             true_labels: np.ndarray | None = None, start: np.ndarray | None = None) -> tuple[list[dict], dict]:
    """Every rule's rounds for one fold x seed: (rows of scores per round, each rule's labelled rows
    per round and the annotator's log, for checks). `true_labels` replaces the cache's labels and
    `start` the stratified start (tests)."""
    torch.set_num_threads(1)
    table = table_cache(cache_path).table
    classes = class_names(table)
    y = table["label"].astype(str).map({c: i for i, c in enumerate(classes)}).to_numpy() if true_labels is None \
        else np.asarray(true_labels)
    split0 = make_split(table.assign(label=y), fold, seed, START, 0.0, False, inner)
    train, test = split0.train, split0.test
    budget, n_rounds = round_targets(len(train))
    device = torch.device("cpu")
    rows, trace = [], {}
    start_model = None
    for rule in rules:
        annotator = SimulatedAnnotator.for_training_rows(y, train)
        labelled = np.sort(split0.labeled if start is None else start)
        y_visible = np.full(len(y), -1)
        y_visible[labelled] = annotator.reveal(labelled)
        y_visible[test] = y[test]  # scored only: FoldData.y_test
        rng = np.random.default_rng([seed, zlib.crc32(str(fold).encode()), zlib.crc32(rule.encode())])
        trace[rule] = {"labelled": [labelled], "annotator": annotator}
        for rnd in range(n_rounds + 1):
            t0, c0 = time.perf_counter(), time.process_time()
            split = Split(str(fold), seed, labelled, np.zeros(0, int), np.setdiff1d(train, labelled), test, train, 0)
            if rnd == 0 and start_model is not None:
                model = start_model  # the same labelled set and seeds: the same model for every rule
            else:
                model = train_round(cfg, cache_path, y_visible, split, classes, (str(fold), seed), device)
                start_model = start_model or model
            rows.append(
                {
                    "fold": str(fold),
                    "seed": seed,
                    "rule": rule,
                    "round": rnd,
                    "n_labelled": len(labelled),
                    "share": len(labelled) / len(train),
                    "nominal_share": START + STEP * rnd,
                    **scores(y[test], model.test_pred, len(classes)),
                    "supervised_macro_f1": scores(y[test], model.test_pred_supervised, len(classes))["macro_f1"],
                    "labelled_per_class": "|".join(map(str, np.bincount(y_visible[labelled], minlength=len(classes)))),
                    "speaker_norm": model.choice.get("speaker_norm"),
                    "seconds": time.perf_counter() - t0,
                    "cpu_seconds": time.process_time() - c0,
                }
            )
            if rnd == n_rounds:
                break
            picked = train[choose_next(rule, budget, np.searchsorted(train, split.unlabeled), probs=model.probs,
                                       features=model.features, labelled=np.searchsorted(train, labelled), rng=rng,
                                       labelled_labels=y_visible[labelled])]
            y_visible[picked] = annotator.reveal(picked)
            labelled = np.sort(np.concatenate([labelled, picked]))
            trace[rule]["labelled"].append(labelled)
    return rows, trace


def simulate_task(args: tuple) -> list[dict]:
    corpus, cache_path, fold, seed, rules, cfg_dict, inner = args
    rows, _ = simulate(cache_path, fold, seed, rules, TrainConfig.from_dict(cfg_dict), inner)
    return [{"corpus": corpus, **r} for r in rows]


def run_all(caches: dict[str, str], seeds: list[int], rules: list[str], workers: int, inner: bool,
            cfg: TrainConfig) -> pd.DataFrame:
    """Every corpus x fold x seed, in `workers` processes (one BLAS / torch thread each); prints progress."""
    tasks = [(name, path, fold, seed, rules, cfg.to_dict(), inner)
             for name, path in caches.items() for fold in fold_names(table_cache(path).table) for seed in seeds]
    t0, out = time.time(), []

    def done(rows):
        out.append(rows)
        print(f"{len(out)}/{len(tasks)} folds x seeds done, {time.time() - t0:.0f} s", flush=True)

    # Always in spawned workers whose BLAS has one thread, as torch: the margin and entropy picks follow
    # the last digits of the probabilities, which the BLAS thread count changes.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    with ProcessPoolExecutor(max_workers=max(1, workers), mp_context=get_context("spawn"),
                             initializer=die_with_parent, initargs=(os.getpid(),)) as pool:
        for future in as_completed([pool.submit(simulate_task, t) for t in tasks]):
            done(future.result())
    return pd.DataFrame([r for rows in out for r in rows]).sort_values(
        ["corpus", "fold", "seed", "rule", "round"], kind="stable").reset_index(drop=True)


# --- summary: curves, labels saved, the winning rule ----------------------------------------------
def curves(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over folds x seeds of macro-F1 (and its labelled share) per corpus x rule x round."""
    g = rows.groupby(["corpus", "rule", "round"])
    return pd.DataFrame({"share": g["share"].mean() * 100, "macro_f1": g["macro_f1"].mean(),
                         "std": g["macro_f1"].std(ddof=0), "supervised_macro_f1": g["supervised_macro_f1"].mean(),
                         "n": g.size()}).reset_index()


def share_to_reach(shares: np.ndarray, scores: np.ndarray, target: float) -> float | None:
    """The labelled share at which the curve (shares ascending) first reaches `target`, by linear
    interpolation between rounds; the first share when it starts above; None when it never does."""
    if scores[0] >= target:
        return float(shares[0])
    for i in range(1, len(scores)):
        if scores[i] >= target:
            s0, s1, f0, f1 = shares[i - 1], shares[i], scores[i - 1], scores[i]
            return float(s0 + (target - f0) / (f1 - f0) * (s1 - s0))
    return None


def labels_saved(curve: pd.DataFrame, rule: str, baseline: str = "random", at: float = 10.0) -> dict:
    """Labels saved at `at`% = 1 - at / r, r = the share (%) `baseline` needs to reach the rule's
    mean score at `at`% (the round nearest to it). None with 'more than' when the baseline never
    gets there (r > the last share)."""
    mine = curve[curve["rule"] == rule].sort_values("round")
    base = curve[curve["rule"] == baseline].sort_values("round")
    at_round = int((mine["share"] - at).abs().idxmin())
    target = float(mine.loc[at_round, "macro_f1"])
    shares = base["share"].to_numpy()
    r = share_to_reach(shares, base["macro_f1"].to_numpy(), target)
    if r is None:
        return {
            "rule": rule,
            "score_at": target,
            "share_at": float(mine.loc[at_round, "share"]),
            "random_share_needed": None,
            "saved": None,
            "saved_more_than": 1 - float(mine.loc[at_round, "share"]) / shares[-1],
        }
    return {"rule": rule, "score_at": target, "share_at": float(mine.loc[at_round, "share"]),
            "random_share_needed": r, "saved": 1 - float(mine.loc[at_round, "share"]) / r, "saved_more_than": None}


def class_balance(rows: pd.DataFrame) -> dict:
    """The labelled set's class shares at the last round (mean over folds x seeds), smallest and
    largest: how far a rule moves the labelled prior (which the balanced actions aim at) from the
    stratified start. Reporting only: the annotator's labels, read after the run."""
    if "labelled_per_class" not in rows:
        return {}
    last = rows[rows["round"] == rows["round"].max()]["labelled_per_class"]
    counts = np.array([list(map(int, c.split("|"))) for c in last], dtype=float)
    shares = (counts / counts.sum(1, keepdims=True)).mean(0)
    return {"last_round_class_share_min": float(shares.min()), "last_round_class_share_max": float(shares.max())}


def summarise(rows: pd.DataFrame) -> dict:
    """Per corpus: each rule's curve, its gain over random per round, labels saved at 10%, whether
    it beats random at every budget; the rule with the best mean over the rounds after the start."""
    curve = curves(rows)
    out = {}
    for corpus, c in curve.groupby("corpus"):
        rand = c[c["rule"] == "random"].set_index("round")["macro_f1"]
        runs = rows[rows["corpus"] == corpus].pivot_table(index=["fold", "seed", "round"], columns="rule",
                                                          values="macro_f1")
        per_rule = {}
        for rule, r in c.groupby("rule"):
            r = r.set_index("round")
            gain = (r["macro_f1"] - rand).drop(index=0)
            paired = (runs[rule] - runs["random"]).groupby(level="round")  # same fold x seed, same share
            gain_se = (paired.std(ddof=1) / np.sqrt(paired.size())).drop(index=0)
            per_rule[rule] = {"share": r["share"].round(2).tolist(), "macro_f1": r["macro_f1"].round(2).tolist(),
                              "std": r["std"].round(2).tolist(),
                              "supervised_macro_f1": r["supervised_macro_f1"].round(2).tolist(),
                              "gain_vs_random": gain.round(2).tolist(), "gain_se": gain_se.round(2).tolist(),
                              "beats_random_every_round": bool((gain > 0).all()),
                              "mean_after_start": float(r["macro_f1"].drop(index=0).mean()),
                              **class_balance(rows[(rows["corpus"] == corpus) & (rows["rule"] == rule)]),
                              **({} if rule == "random" else labels_saved(c, rule))}
        out[corpus] = per_rule
    rules = sorted({rule for per in out.values() for rule in per})
    overall = {rule: float(np.mean([out[c][rule]["mean_after_start"] for c in out])) for rule in rules}
    n_runs = rows.drop_duplicates(["corpus", "fold", "seed"]).groupby("corpus").size().to_dict()
    return {"corpora": out, "mean_after_start": overall, "best_rule": max(overall, key=overall.get),
            "n_runs": {k: int(v) for k, v in n_runs.items()},
            "cpu_seconds": float(rows["cpu_seconds"].sum()) if "cpu_seconds" in rows else None}


# --- the page -------------------------------------------------------------------------------------
RULE_TEXT = {
    "margin": "margin (lowest top-1/top-2 margin, class by class)",
    "margin-density": "margin-density (margin's class turns, uncertainty x typicality)",
    "cluster-margin": "cluster-margin (k-means into the budget, each cluster's lowest margin)",
    "cluster-typical": "cluster-typical (k-means into the budget, each cluster's most typical; no model)",
    "balanced-margin": "balanced-margin (each pick to the class furthest below its predicted share, lowest margin)",
    "balanced-diverse": "balanced-diverse (balanced-margin, no two picks of a batch closer than the typical "
                        "nearest-neighbour distance)",
    "margin-random": "margin-random (half by margin, half random)",
    "entropy": "entropy (highest predictive entropy)",
    "k-center": "k-center (diversity over the features)",
    "random": "random",
}


def pct(v) -> str:
    return "" if v is None else f"{100 * v:.0f}%"


def saved_text(cell: dict) -> str:
    """The labels a rule saved against random: a share, or a lower bound where its curve stays above."""
    return pct(cell["saved"]) or "more than " + pct(cell["saved_more_than"])


def curve_table(per_rule: dict) -> list[str]:
    shares = per_rule["random"]["share"]
    out = ["| rule | " + " | ".join(f"{s:.1f}%" for s in shares) + " |", "|---|" + "---|" * len(shares)]
    for rule, r in per_rule.items():
        out.append(f"| {rule} | " + " | ".join(f"{m:.1f} ± {s:.1f}" for m, s in zip(r["macro_f1"], r["std"])) + " |")
    out.append(
        "| *warm-up alone (random)* | "
        + " | ".join(f"{m:.1f}" for m in per_rule["random"]["supervised_macro_f1"])
        + " |"
    )
    return out


def gain_table(summary: dict) -> list[str]:
    head = ["corpus", "rule", *(f"round {k}" for k in range(1, 7)), "beats random every round"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for corpus, per_rule in summary["corpora"].items():
        for rule, r in per_rule.items():
            if rule != "random":
                out.append(f"| {corpus} | {rule} | " + " | ".join(f"{g:+.1f} ± {e:.1f}" for g, e in
                                                                 zip(r["gain_vs_random"], r["gain_se"])) +
                           f" | {'yes' if r['beats_random_every_round'] else 'no'} |")
    return out


def saved_table(summary: dict) -> list[str]:
    out = ["| corpus | rule | labelled share | macro-F1 | random needs | labels saved |", "|---|---|---|---|---|---|"]
    for corpus, per_rule in summary["corpora"].items():
        for rule, r in per_rule.items():
            if rule == "random":
                continue
            need = f"{r['random_share_needed']:.1f}%" if r["random_share_needed"] is not None else \
                f"> {per_rule['random']['share'][-1]:.1f}%"
            saved = pct(r["saved"]) if r["saved"] is not None else f"more than {pct(r['saved_more_than'])}"
            out.append(f"| {corpus} | {rule} | {r['share_at']:.1f}% | {r['score_at']:.1f} | {need} | **{saved}** |")
    return out


def target_lines(summary: dict, rule: str = DEFAULT_RULE) -> list[str]:
    """The issue's targets for the default rule, met or not, per corpus (outer test folds)."""
    out = []
    for corpus, per_rule in summary["corpora"].items():
        r = per_rule[rule]
        gains = ", ".join(f"{g:+.1f}" for g in r["gain_vs_random"])
        saved = pct(r["saved"]) if r["saved"] is not None else f"more than {pct(r['saved_more_than'])}"
        met_rounds = "met" if r["beats_random_every_round"] else "**not met**"
        met_saved = "met" if (r["saved"] is None or r["saved"] >= 0.3) else "**not met**"
        out.append(f"- {corpus}: `{rule}` beats random at every budget: {met_rounds} (gain per round {gains}); "
                   f"labels saved at 10% >= 30%: {met_saved} ({saved}).")
    return out


def reading_lines(summary: dict) -> list[str]:
    """What the numbers say about each rule against random, per corpus (outer test folds)."""
    out = []
    for corpus, per_rule in summary["corpora"].items():
        rand = per_rule["random"]
        for rule, r in per_rule.items():
            if rule == "random":
                continue
            gains, se = np.array(r["gain_vs_random"]), np.array(r["gain_se"])
            out.append(
                f"- {corpus}, {rule}: mean gain {gains.mean():+.1f} points over the six rounds, beyond two "
                f"paired standard errors in {int((gains > 2 * se).sum())} of 6 rounds (below in "
                f"{int((gains < -2 * se).sum())}); at 20% B-GRPO {r['macro_f1'][-1]:.1f} vs "
                f"{rand['macro_f1'][-1]:.1f}, "
                f"its warm-up {r['supervised_macro_f1'][-1]:.1f} vs {rand['supervised_macro_f1'][-1]:.1f}."
            )
    return out


def plot(summary: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    corpora = summary["corpora"]
    fig, axes = plt.subplots(1, len(corpora), figsize=(5.2 * len(corpora), 3.8), squeeze=False)
    for ax, (corpus, per_rule) in zip(axes[0], corpora.items()):
        n = summary["n_runs"][corpus]
        for rule, r in per_rule.items():
            m, se = np.array(r["macro_f1"]), np.array(r["std"]) / np.sqrt(n)
            ax.plot(r["share"], m, marker="o", ms=3, label=rule, lw=2.2 if rule == DEFAULT_RULE else 1.2,
                    ls="--" if rule == "random" else "-")
            ax.fill_between(r["share"], m - se, m + se, alpha=0.12)
        ax.set_title(f"{corpus} ({n} folds x seeds, outer test folds)")
        ax.set_xlabel("labelled share of the training folds (%)")
        ax.set_ylabel("macro-F1 (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def command_line(summary: dict) -> str:
    """The command that wrote a protocol's files (results copied to the default --out)."""
    caches = " ".join(f"--cache {k}={v}" for k, v in summary["caches"].items())
    sets = "".join(f" --set {k}={v}" for k, v in summary.get("settings", {}).items())
    return (f"python bench/active_learning.py {caches} --seeds {summary['seeds']} --workers {summary['workers']}"
            + (" --inner" if summary["protocol"] == "inner" else "") + sets
            + (f" --rules {','.join(summary['rules'])}" if summary.get("name") else "")
            + (f" --name {summary['name']}" if summary.get("name") else ""))


def render(outer: dict, inner: dict | None, page: Path, figure: Path, also_tried: dict | None = None) -> str:
    """docs/ACTIVE_LEARNING.md from the summaries (every number comes from summary.json); `also_tried`:
    name -> the summary of another inner-validation run (other recipe settings)."""
    plot(outer, figure)
    lines = [
        "# What to label next, measured",
        "",
        "Generated by `bench/active_learning.py --render` from "
        f"`{outer['out']}/outer/summary.json`" + (f" and `{inner['out']}/inner/summary.json`" if inner else "") + ".",
        "",
        "Labels come in rounds. Per corpus, outer test fold and seed (3 seeds): start from the protocol's "
        "stratified 5% of the training folds, train the default recipe (inductive; the training folds' "
        "unlabelled rows are the pool; the test fold is only scored), then in each round a rule picks "
        "2.5% of the training rows from the pool, a simulated annotator reveals their labels (it holds the "
        "training folds' labels only), and the recipe is trained again, up to 20%. Every rule starts from "
        "the same labels and the same model; the model of a round is seeded by fold and seed alone. "
        "Rules (trainer/next_to_label.py): "
        + "; ".join(RULE_TEXT[r] + (" **= the `label` rule**" if r == DEFAULT_RULE else "") for r in outer["rules"])
        + ".",
        "",
        f"Caches: {', '.join(f'`{k}` = `{v}`' for k, v in outer['caches'].items())}. "
        f"Wall time {outer['wall_seconds'] / 60:.1f} min for both corpora ({outer['workers']} workers on "
        f"{outer['cpu_count']} cores; load average {outer['load_before'][0]:.1f} before, "
        f"{outer['load_after'][0]:.1f} after: the machine was shared)"
        + (
            f"; the rounds' CPU time, summed over workers, {outer['cpu_seconds'] / 60:.1f} min."
            if outer.get("cpu_seconds")
            else "."
        )
        + " Same command, same numbers: the workers run one BLAS thread (margin and entropy picks follow the "
        "last digits of the probabilities, which the thread count changes).",
        "",
        "```",
        command_line(outer),
        *([command_line(inner)] if inner else []),
        "python bench/active_learning.py --render",
        "```",
        "",
        f"![macro-F1 against labelled share]({os.path.relpath(figure, page.parent)})",
        "",
        "(bands: ± the standard error over folds x seeds)",
        "",
        "## Macro-F1 (%) against labelled share (mean ± std over folds x seeds, outer test folds)",
        "",
    ]
    for corpus, per_rule in outer["corpora"].items():
        lines += [f"**{corpus}**", "", *curve_table(per_rule), ""]
    lines += ["## Gain over random (macro-F1 points, same labelled share)", "",
              "Mean over folds x seeds ± the standard error of the paired difference (same fold, seed and share).",
              "", *gain_table(outer), "",
              "## Labels saved at 10%", "",
              "labels saved = 1 - 10 / r, r = the labelled share (%) random needs to reach the rule's mean score "
              "at the 10% round (linear interpolation between rounds; 'more than' when random does not reach "
              "it by the last round).", "", *saved_table(outer), ""]
    if "last_round_class_share_min" in next(iter(outer["corpora"].values()))["random"]:
        lines += ["## Class balance of the labelled set at 20%", "",
                  "Smallest and largest class share of the labelled rows after the last round (mean over folds x "
                  "seeds). The recipe's balanced actions aim at the labelled set's class prior, so a rule that "
                  "skews it also skews every pool assignment.", "",
                  "| corpus | " + " | ".join(outer["rules"]) + " |", "|---|" + "---|" * len(outer["rules"])]
        for corpus, per_rule in outer["corpora"].items():
            lines.append(
                f"| {corpus} | "
                + " | ".join(
                    f"{100 * per_rule[r]['last_round_class_share_min']:.1f}-"
                    f"{100 * per_rule[r]['last_round_class_share_max']:.1f}%"
                    for r in outer["rules"]
                )
                + " |"
            )
        lines.append("")
    lines += ["## Targets", "", *target_lines(outer), "", "## Reading", "", *reading_lines(outer),
              "- k-center picks the utterances farthest from every labelled one: the outliers of the feature "
              "space, unevenly over the classes (class balance above). The warm-up alone loses with them, and "
              "B-GRPO, whose balanced actions aim at the labelled prior, loses its gain over the warm-up.",
              "- margin takes the predicted classes in turn, so its labelled set stays near balanced (class "
              "balance above); entropy does not balance classes and stays within two paired standard errors of "
              "random.", ""]
    if inner:
        lines += ["## Which rule `label` uses: inner validation", "",
                  "The same rounds under `inner_validation` (each outer test fold removed, the next fold's "
                  "speakers scored; the test folds are never read). Mean macro-F1 over the rounds after the "
                  "start, per corpus, and labels saved at 10%:", "", *inner_table(inner), "",
                  f"Best on inner validation: **{inner['best_rule']}**; `label` suggests by `{DEFAULT_RULE}` "
                  "(trainer/next_to_label.DEFAULT_RULE). " + runner_up_line(inner), ""]
    for name, tried in (also_tried or {}).items():
        lines += [f"## Also tried on inner validation: {name}", "", "```", command_line(tried), "```", "",
                  *inner_table(tried), ""]
    return "\n".join(lines)


def runner_up_line(inner: dict) -> str:
    """How far the best rule on inner validation leads the next, against the paired noise of one rule."""
    ranked = sorted(inner["mean_after_start"].items(), key=lambda kv: -kv[1])
    (best, a), (second, b) = ranked[:2]
    se = np.mean([r["gain_se"] for per in inner["corpora"].values() for name, r in per.items() if name == best])
    return (
        f"It leads `{second}` by {a - b:.2f} points of mean macro-F1, while one round's paired standard error "
        f"against random is {se:.1f} points on average: the rules at the top are not told apart by "
        f"{inner['seeds'].count(',') + 1} seeds, and the choice is the pre-set criterion (the best mean), "
        "not a finding."
    )


def inner_table(inner: dict) -> list[str]:
    """Rule x corpus: mean macro-F1 after the start (labels saved at 10%), and the mean over corpora."""
    out = ["| rule | " + " | ".join(inner["corpora"]) + " | mean |", "|---|" + "---|" * (len(inner["corpora"]) + 1)]
    for rule in inner["rules"]:
        cells = [
            f"{inner['corpora'][c][rule]['mean_after_start']:.1f}"
            + (
                ""
                if rule == "random"
                else f" (saved {saved_text(inner['corpora'][c][rule])})"
            )
            for c in inner["corpora"]
        ]
        out.append(f"| {rule} | " + " | ".join(cells) + f" | {inner['mean_after_start'][rule]:.1f} |")
    return out


def stored_summary(folder: Path) -> dict | None:
    """A protocol's summary.json with its numbers recomputed from rounds.csv beside it; None if absent."""
    if not (folder / "summary.json").exists():
        return None
    meta = json.loads((folder / "summary.json").read_text())
    return {**meta, "out": str(folder.parent), **summarise(pd.read_csv(folder / "rounds.csv", dtype={"fold": str}))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", action="append", default=[], help="NAME=PATH of a cache (repeatable)")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--rules", default=",".join(RULES))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--set", action="append", default=[], metavar="K=V",
                    help="a recipe field for every round, repeatable (trainer/config.py; default: the default recipe)")
    ap.add_argument("--inner", action="store_true", help="inner validation (choose the rule): never the test folds; "
                    "with --set, write <out>/inner-<name> (--render shows it as 'also tried')")
    ap.add_argument("--name", default="", help="with --inner: the run's folder is <out>/inner-<name>")
    ap.add_argument("--out", default="docs/results/active-learning")
    ap.add_argument("--render", action="store_true", help="write --page from <out>/outer and <out>/inner, run nothing")
    ap.add_argument("--page", default="docs/ACTIVE_LEARNING.md")
    args = ap.parse_args(argv)
    if args.render:
        outer, inner = (stored_summary(Path(args.out) / p) for p in ("outer", "inner"))
        tried = {f.name.removeprefix("inner-"): stored_summary(f) for f in sorted(Path(args.out).glob("inner-*"))}
        write_text_atomic(args.page, render(outer, inner, Path(args.page), Path(args.out) / "curves.png",
                                            {k: v for k, v in tried.items() if v}))
        print(f"wrote {args.page} and {Path(args.out) / 'curves.png'}")
        return 0
    caches = dict(c.split("=", 1) for c in args.cache)
    rules = args.rules.split(",")
    if "random" not in rules:
        ap.error("--rules must include random (the baseline of every comparison)")
    protocol = "inner" if args.inner else "outer"
    out = Path(args.out) / (protocol + (f"-{args.name}" if args.name and args.inner else ""))
    t0, load = time.time(), os.getloadavg()
    settings = parse_set(args.set)
    rows = run_all(caches, [int(s) for s in args.seeds.split(",")], rules, args.workers, args.inner,
                   TrainConfig().replace(**settings))
    wall = time.time() - t0
    with atomic_path(out / "rounds.csv") as tmp:
        rows.to_csv(tmp, index=False)
    summary = {
        "protocol": protocol,
        "out": args.out,
        "caches": caches,
        "seeds": args.seeds,
        "rules": rules,
        "workers": args.workers,
        "settings": settings,
        "name": args.name,
        "wall_seconds": round(wall, 1),
        "load_before": load,
        "load_after": os.getloadavg(),
        "cpu_count": os.cpu_count(),
        **summarise(rows),
    }
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=1))
    print(json.dumps({k: summary[k] for k in ("protocol", "wall_seconds", "load_before", "load_after",
                                               "mean_after_start", "best_rule")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
