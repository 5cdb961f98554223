"""Scores (SPEC 2): macro-F1 (primary), UA = balanced accuracy, WA = accuracy, in percent, via
scikit-learn; aggregates over folds x seeds; relative gain and gap recovered G.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score

SCORES = ("macro_f1", "ua", "wa")


def scores(y_true, y_pred, n_classes: int) -> dict:
    """Percent scores; macro-F1 averages over all classes present in truth or prediction."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    return {"macro_f1": 100 * f1_score(y_true, y_pred, labels=np.unique(y_true), average="macro", zero_division=0),
            "ua": 100 * balanced_accuracy_score(y_true, y_pred),
            "wa": 100 * accuracy_score(y_true, y_pred)}


def fast_macro_f1(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    """Percent macro-F1 over the classes present in y_true, from one bincount (per-epoch curves;
    equals scikit-learn's, see tests)."""
    return confusion_macro_f1(np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes)
                              .reshape(n_classes, n_classes))


def device_confusion(y_true: torch.Tensor, y_pred: torch.Tensor, n_classes: int) -> np.ndarray:
    """The [C, C] confusion counts (rows = true) of label tensors, counted on their device: only
    C x C numbers reach the host."""
    return torch.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes).reshape(
        n_classes, n_classes).cpu().numpy()


def confusion_macro_f1(cm: np.ndarray) -> float:
    """Percent macro-F1 over the classes present in the truth (rows) of confusion counts."""
    tp, support, predicted = np.diag(cm), cm.sum(1), cm.sum(0)
    denom = support + predicted
    f1 = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)
    return float(100 * f1[support > 0].mean())


def confusion(y_true, y_pred, n_classes: int) -> np.ndarray:
    return confusion_matrix(y_true, y_pred, labels=np.arange(n_classes))


def normalised_entropy(p: torch.Tensor) -> torch.Tensor:
    """Per row, H(p_i) / log C: 0 = one-hot, 1 = uniform (E2b's certainty is 1 minus it; the
    per-round curves report its mean)."""
    return -(p * torch.log(p.clamp_min(1e-12))).sum(1) / math.log(p.shape[1])


def histogram_entropy(pred: np.ndarray, n_classes: int) -> float:
    """Normalised entropy of the predicted-class histogram: 1 = uniform use of classes, 0 = one class."""
    return counts_entropy(np.bincount(np.asarray(pred, dtype=int), minlength=n_classes), n_classes)


def counts_entropy(counts, n_classes: int) -> float:
    """histogram_entropy from the histogram's counts (a bincount made where the predictions are)."""
    counts = np.asarray(counts, dtype=float)
    p = counts / max(counts.sum(), 1)
    nz = p[p > 0]
    return float(-(nz * np.log(nz)).sum() / math.log(n_classes)) if n_classes > 1 else 1.0


def mean_std(values) -> dict:
    v = np.asarray(list(values), dtype=float)
    return {"mean": float(v.mean()) if len(v) else float("nan"),
            "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "n": int(len(v))}


def relative_gain(f1_method: float, f1_supervised: float) -> float:
    """Relative macro-F1 vs `supervised` in percent (the paper's +19.8% metric); undefined (nan) when
    supervised scored 0, as G is when the topline equals supervised."""
    return 100 * (f1_method - f1_supervised) / f1_supervised if abs(f1_supervised) > 1e-9 else float("nan")


def gap_recovered(f1_method: float, f1_supervised: float, f1_topline: float) -> float:
    """G = (F1_m - F1_sup) / (F1_top - F1_sup): 0 = no gain, 1 = as good as all labels."""
    gap = f1_topline - f1_supervised
    return float((f1_method - f1_supervised) / gap) if abs(gap) > 1e-9 else float("nan")
