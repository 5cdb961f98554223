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


def plot_run(out_dir: Path, curves: pd.DataFrame, summary: dict, classes: list[str]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    colors = {m: f"C{i}" for i, m in enumerate(summary["methods"])}
    if len(curves):
        panels = [c for c in ("test_macro_f1", "selection_precision", "pool_pred_entropy") if c in curves]
        fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
        for ax, col in zip(axes[0], panels):
            for method, g in curves.groupby("method", sort=False):
                m = g.groupby("epoch")[col].mean()
                if m.notna().any():
                    ax.plot(m.index, m.values, label=method, color=colors.get(method), marker="o" if len(m) < 8 else None, markersize=4)
            ax.set_xlabel("epoch (pseudo-label: round)")
            ax.set_title(col.replace("_", " ") + (" (diagnostic only)" if col.startswith("test") else ""))
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        fig.tight_layout()
        written.append(_save(fig, out_dir / "curves.png"))
    methods = summary["methods"]
    candidates = [m for m in methods if m != "topline"] or list(methods)
    best = max(candidates, key=lambda m: methods[m]["macro_f1"]["mean"]) if candidates else None
    if best and "confusion" in methods[best]:
        cm = np.asarray(methods[best]["confusion"], dtype=float)
        norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
        fig, ax = plt.subplots(figsize=(1 + 0.6 * len(classes), 0.8 + 0.6 * len(classes)))
        ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        for i, j in np.ndindex(cm.shape):
            ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black")
        ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(classes)), classes, fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{best}: macro-F1 {methods[best]['macro_f1']['mean']:.1f} (all folds x seeds)", fontsize=9)
        fig.tight_layout()
        written.append(_save(fig, out_dir / "confusion.png"))
    return written
