"""PNG figures of a run: macro-F1 and selection precision per epoch per method (mean over folds x
seeds), and the confusion matrix of the best method (highest mean macro-F1; the all-label topline
is a reference, not a candidate)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from data_manifests.storage import atomic_path


def _save(fig, path: Path) -> Path:
    """Write a figure as PNG through the project's atomic write, then free it."""
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


ROUND_METHODS = ("pseudo-label", "bgrpo")  # one point per self-training round (bgrpo: with update=refit)
TITLES = {
    "test_macro_f1": "test macro-F1 (%; diagnostic only, never used to choose)",
    "selection_precision": "selection precision: share of the pool rows\nselected in a round given their hidden label",
    "pool_pred_entropy": "prediction entropy on the pool (0 = one class)",
}


def x_label(methods: list[str], refit: bool) -> str:
    """The x-axis of the curves of `methods` (those with more than one point): epochs, rounds, or
    both, saying which method counts which."""
    rounds = [m for m in methods if m in ROUND_METHODS and (m != "bgrpo" or refit)]
    if len(rounds) == len(methods):
        return "round (select from the pool, then refit)"
    return f"epoch ({', '.join(rounds)}: round)" if rounds else "epoch"


def curves_figure(curves: pd.DataFrame, summary: dict):
    """Per-epoch (or round) means over folds x seeds. A method with one point (a single fit:
    supervised, topline) is a dashed level across the panel, so no other curve hides it; the
    selection-precision legend gives each method's selection rate, as a precision means little
    without how much of the pool it covers."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    colors = {m: f"C{i}" for i, m in enumerate(summary["methods"])}
    panels = [c for c in TITLES if c in curves]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.9), squeeze=False)
    last = max(int(curves["epoch"].max()), 1)
    stepped = [m for m, g in curves.groupby("method", sort=False) if g["epoch"].nunique() > 1]
    for ax, col in zip(axes[0], panels):
        for method, g in curves.groupby("method", sort=False):
            m = g.groupby("epoch")[col].mean().dropna()
            if not len(m):
                continue
            label = method
            if col == "selection_precision" and "selection_rate" in g:
                label += f" (selects {g['selection_rate'].mean():.0%} of the pool)"
            if len(m) == 1:
                ax.hlines(m.iloc[0], 0, last, colors=colors.get(method), linestyles="--", linewidth=2,
                          zorder=3, label=f"{label} (one fit)")
            else:
                ax.plot(m.index, m.values, label=label, color=colors.get(method), marker="o" if len(m) < 8 else None,
                        markersize=4)
        ax.set_xlabel(x_label(stepped, summary["config"].get("update") == "refit"))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(TITLES[col], fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def confusion_figure(summary: dict, classes: list[str], best: str):
    """Counts of `best` summed over every fold x seed: each test utterance appears once per seed."""
    import matplotlib.pyplot as plt

    methods = summary["methods"]
    cm = np.asarray(methods[best]["confusion"], dtype=float)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.6 + 0.6 * len(classes), 1.2 + 0.6 * len(classes)))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i, j in np.ndindex(cm.shape):
        ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7,
                color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(classes)), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    n_folds, n_seeds = len({c["fold"] for c in summary["choices"]}), len(summary["config"]["seeds"])
    ax.set_title(f"{best}: macro-F1 {methods[best]['macro_f1']['mean']:.1f}\ncounts summed over {n_folds} fold(s) x "
                 f"{n_seeds} seed(s)\n(each test utterance counted once per seed)", fontsize=8)
    fig.tight_layout()
    return fig


def plot_run(out_dir: Path, curves: pd.DataFrame, summary: dict, classes: list[str]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    written = []
    if len(curves):
        written.append(_save(curves_figure(curves, summary), out_dir / "curves.png"))
    methods = summary["methods"]
    candidates = [m for m in methods if m != "topline"] or list(methods)
    best = max(candidates, key=lambda m: methods[m]["macro_f1"]["mean"]) if candidates else None
    if best and "confusion" in methods[best]:
        written.append(_save(confusion_figure(summary, classes, best), out_dir / "confusion.png"))
    return written
