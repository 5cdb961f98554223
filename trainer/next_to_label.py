"""What to annotate next: rules that pick n unlabelled utterances for a person to label, from the
current model's probabilities on them (and, for diversity, their features). `label` writes the
default rule's picks; bench/active_learning.py measures every rule against random picks.

Rules (all read only the candidates' probabilities / features and the labelled rows' features,
never a label):
- margin: per predicted class the lowest top-1 minus top-2 margin first, classes taken in turn,
  so that every class gets its share of the budget;
- entropy: the highest predictive entropy, whatever the class (pure uncertainty);
- k-center: greedy k-center over the features (each pick the candidate farthest from every
  labelled or already-picked row): diversity, no model;
- random: a seeded uniform draw (the baseline).
"""
from __future__ import annotations

import numpy as np
import torch

from data_manifests.errors import UserError

RULES = ("margin", "entropy", "k-center", "random")
DEFAULT_RULE = "margin"  # what `label` writes (suggest_next): best on inner validation, docs/ACTIVE_LEARNING.md


def suggest_next(probs: np.ndarray, candidates: np.ndarray, n: int) -> np.ndarray:
    """Row indices (taken from `candidates`) of n utterances to annotate next: per predicted class the
    lowest top-1 minus top-2 margin first, classes taken in turn so that every class gets its share."""
    top2 = np.sort(probs, 1)[:, -2:]
    margin = top2[:, 1] - top2[:, 0]
    pred = probs.argmax(1)
    candidates = np.asarray(candidates)
    queues = []
    for c in range(probs.shape[1]):
        mine = candidates[pred[candidates] == c]
        queues.append(mine[np.argsort(margin[mine], kind="stable")])
    out = []
    depth = max((len(q) for q in queues), default=0)
    for j in range(depth):
        out.extend(int(q[j]) for q in queues if j < len(q))
    return np.asarray(out[:n], dtype=int)


def highest_entropy(probs: np.ndarray, candidates: np.ndarray, n: int) -> np.ndarray:
    """The n candidates whose predicted distribution has the highest entropy (ties: lower index first)."""
    candidates = np.asarray(candidates)
    p = np.clip(probs[candidates], 1e-12, 1.0)
    entropy = -(p * np.log(p)).sum(1)
    return candidates[np.argsort(-entropy, kind="stable")[:n]].astype(int)


def k_center(features: torch.Tensor, labelled: np.ndarray, candidates: np.ndarray, n: int) -> np.ndarray:
    """Greedy k-center (Sener & Savarese 2018): n times, the candidate farthest (Euclidean, over the
    flattened feature rows) from its nearest labelled or already-picked row. Without labelled rows
    the first pick is the candidate farthest from the candidates' mean."""
    candidates = np.asarray(candidates)
    x = features.reshape(len(features), -1).float()
    cand = x[torch.as_tensor(candidates)]
    if len(labelled):
        nearest = torch.cdist(cand, x[torch.as_tensor(np.asarray(labelled))]).min(1).values
    else:
        nearest = torch.cdist(cand, cand.mean(0, keepdim=True))[:, 0]
    picked = []
    for _ in range(min(n, len(candidates))):
        j = int(nearest.argmax())
        picked.append(j)
        nearest = torch.minimum(nearest, torch.cdist(cand, cand[j:j + 1])[:, 0])
        nearest[j] = -1.0  # never twice
    return candidates[np.asarray(picked, dtype=int)]


def choose_next(rule: str, n: int, candidates: np.ndarray, probs: np.ndarray | None = None,
                features: torch.Tensor | None = None, labelled: np.ndarray | None = None,
                rng: np.random.Generator | None = None) -> np.ndarray:
    """n row indices from `candidates` by `rule` (RULES). probs / features are indexed by row
    (probabilities for margin/entropy, features for k-center, rows `labelled` already annotated);
    rng draws for random."""
    candidates = np.asarray(candidates, dtype=int)
    n = min(int(n), len(candidates))
    if rule == "margin":
        return suggest_next(probs, candidates, n)
    if rule == "entropy":
        return highest_entropy(probs, candidates, n)
    if rule == "k-center":
        return k_center(features, np.zeros(0, int) if labelled is None else labelled, candidates, n)
    if rule == "random":
        return np.sort(rng.choice(candidates, size=n, replace=False))
    raise UserError(f"unknown rule {rule!r}: choose from {', '.join(RULES)}")
