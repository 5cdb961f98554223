"""What a run reports: per-job results gathered into tables, per-method summaries over folds x
seeds, the printed table, the saved policies and the git revision that produced them."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pandas as pd
import torch

from trainer.config import TrainConfig
from trainer.metrics import SCORES, confusion, gap_recovered, mean_std, relative_gain
from trainer.method.policy import PROMPT_MEANS, Policy, save_policies, speaker_prior_tensors


def collect(results: list[dict], classes: list[str]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict]:
    """Rows, curves, predictions of all jobs and the confusion matrices summed per method."""
    rows = pd.DataFrame([r for res in results for r in res["rows"]])
    curves = pd.DataFrame([c for res in results for c in res["curves"]])
    pred_frames, conf = [], {}
    for res in results:
        p = res["predictions"]
        for m in [k for k in p if k not in ("utt_id", "label")]:
            pred_frames.append(
                pd.DataFrame(
                    {
                        "method": m,
                        "fold": res["fold"],
                        "seed": res["seed"],
                        "utt_id": p["utt_id"],
                        "label": [classes[i] for i in p["label"]],
                        "pred": [classes[i] for i in p[m]],
                    }
                )
            )
            conf[m] = conf.get(m, 0) + confusion(p["label"], p[m], len(classes))
    return rows, curves, pd.concat(pred_frames, ignore_index=True) if pred_frames else pd.DataFrame(), conf


def summarise(rows: pd.DataFrame, n_classes: int, conf_by_method: dict | None = None) -> dict:
    """Per method: mean/std of each score over folds x seeds, relative gain and G (from means)."""
    out = {}
    for method, g in rows.groupby("method", sort=False):
        out[method] = {s: mean_std(g[s]) for s in SCORES}
        out[method]["collapsed_runs"] = int(g["collapsed"].sum())
        out[method]["per_fold_macro_f1"] = {str(k): float(v) for k, v in g.groupby("fold")["macro_f1"].mean().items()}
        if conf_by_method and method in conf_by_method:
            out[method]["confusion"] = conf_by_method[method].tolist()
    sup = out.get("supervised", {}).get("macro_f1", {}).get("mean")
    top = out.get("topline", {}).get("macro_f1", {}).get("mean")
    for method, d in out.items():
        if sup is not None:
            d["rel_macro_f1_vs_supervised"] = relative_gain(d["macro_f1"]["mean"], sup)
        if sup is not None and top is not None:
            d["gap_recovered"] = gap_recovered(d["macro_f1"]["mean"], sup, top)
    return out


def table_legend(over: str, shows_gap: bool, collapse_entropy: float = TrainConfig.collapse_entropy) -> str:
    """What the printed tables' numbers are, and each abbreviation (G only when a G is shown);
    collapse_entropy: the runs' threshold of `collapsed` (TrainConfig.collapse_entropy)."""
    lines = [
        f"Scores in %, mean ± std over {over} (each test fold's speakers unseen in training).",
        "UA = unweighted accuracy (mean of the per-class recalls); WA = weighted accuracy (share of test "
        "utterances labelled right); rel vs sup = macro-F1 change relative to supervised (the labelled subset alone)."]
    if shows_gap:
        lines.append("G = gap recovered = (F1 - F1 supervised) / (F1 topline - F1 supervised): 0 = no better than "
                     "the labelled subset alone, 1 = as good as every label.")
    else:
        lines.append("G (gap recovered) is blank: it needs both `supervised` and `topline` (trained on every label) "
                     "among the methods.")
    lines.append("collapsed = runs (of folds x seeds) whose predictions on the unlabelled pool piled onto few "
                 f"classes (normalised prediction entropy < {collapse_entropy:g}).")
    return "\n".join(lines)


def format_table(summary: dict) -> str:
    """The printed table (mean ± std per method, relative gain vs supervised, G, collapsed runs),
    then the legend saying what its numbers are."""
    n_folds, n_seeds = len({r["fold"] for r in summary["choices"]}), len(summary["config"]["seeds"])
    lines = [f"{'method':<14}{'macro-F1':>15}{'UA':>15}{'WA':>15}{'rel vs sup':>12}{'G':>8}{'collapsed':>11}"]
    for m, d in summary["methods"].items():
        cell = lambda s: f"{d[s]['mean']:6.1f} ± {d[s]['std']:4.1f}"  # noqa: E731
        rel = d.get("rel_macro_f1_vs_supervised")
        g = d.get("gap_recovered")
        lines.append(f"{m:<14}{cell('macro_f1'):>15}{cell('ua'):>15}{cell('wa'):>15}"
                     f"{'' if rel is None else f'{rel:+.1f}%':>12}{'' if g is None else f'{g:.2f}':>8}"
                     f"{d['collapsed_runs']:>6}/{d['macro_f1']['n']}")
    shows_gap = any(d.get("gap_recovered") is not None for d in summary["methods"].values())
    threshold = summary["config"]["collapse_entropy"]
    notes = collapse_notes(summary["methods"], threshold)
    return "\n".join([*lines, table_legend(f"{n_folds} fold(s) x {n_seeds} seed(s)", shows_gap, threshold), *notes])


def collapse_notes(methods: dict, threshold: float) -> list[str]:
    """One line per method with collapsed runs: what the collapse says about that method's runs, and
    what to try (a number in the collapsed column alone leaves a user guessing whether to trust them)."""
    label_only = ("supervised", "topline")
    sup = methods.get("supervised", {}).get("collapsed_runs")
    unbalanced = (f"either the pool's classes are that unbalanced (then it is expected; --set collapse_entropy, now "
                  f"{threshold:g}, is the threshold) or the features do not separate them")
    lines = []
    for m, d in methods.items():
        k, n = d["collapsed_runs"], d["macro_f1"]["n"]
        if not k:
            continue
        head = f"note: {m} collapsed in {k}/{n} runs (its predictions on the unlabelled pool piled onto few classes)"
        if m in label_only:
            lines.append(f"{head}: trained on labels alone, it already predicts few classes there: {unbalanced}.")
        elif sup:
            lines.append(f"{head}, as supervised's did: the labelled subset alone predicts few classes there: "
                         f"{unbalanced}.")
        else:
            lines.append(f"{head}{' while supervised did not' if sup == 0 else ''}: learning from the pool reinforced "
                         f"its own mistakes there, so its scores come {'entirely' if k == n else 'partly'} from such "
                         f"runs{' and supervised is the safer result' if sup == 0 else ''}. To try: more labels "
                         "(--labeled-fraction: the pool is read through the labelled subset's classes), fewer rounds "
                         "(--set refit_rounds=1; epochs with update=grpo); each run's pool_pred_entropy is in "
                         "results.csv.")
    return lines


def save_models(path: Path, results: list[dict], cfg: TrainConfig, cache_info: dict) -> None:
    policies = {}
    for res in results:
        for name, (state, arch) in res["models"].items():
            pol = Policy(**arch)
            pol.load_state_dict(state)
            policies[name] = pol
    if policies:
        name = lambda r: f"{cfg.methods[0]}_f{r['fold']}_s{r['seed']}"  # noqa: E731
        choices = {name(r): {k: r["choice"].get(k, False) for k in ("layer", "speaker_norm", "text_norm")}
                   for r in results}  # `auto` runs choose per fold x seed
        extra = {}
        for r in results:
            if r.get("prompt_means"):
                choices[name(r)]["prompts"], means = r["prompt_means"]
                extra[f"{PROMPT_MEANS}/{name(r)}"] = torch.as_tensor(means)
            if r.get("speaker_prior") is not None:
                extra.update(speaker_prior_tensors(name(r), r["speaker_prior"]))
        save_policies(path, policies, {"method": cfg.methods[0], "layer": cfg.layer, "speaker_norm": cfg.speaker_norm,
                                       "text_norm": cfg.text_norm, "choices": choices, **cache_info}, extra)


def git_revision() -> str:
    try:
        root = Path(__file__).resolve().parents[1]
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "trainer", "cli.py"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return rev + ("+dirty" if dirty else "") if rev else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"
