"""What to annotate next: rules that pick n unlabelled utterances for a person to label, from the
current model's probabilities on them (and, for diversity, their features). `label` writes the
default rule's picks; bench/active_learning.py measures every rule against random picks.

Rules (all read only the candidates' probabilities / features, the labelled rows' features and the
labels already given, never a hidden label):
- margin: per predicted class the lowest top-1 minus top-2 margin first, classes taken in turn,
  so that every class gets its share of the budget;
- entropy: the highest predictive entropy, whatever the class (pure uncertainty);
- k-center: greedy k-center over the features (each pick the candidate farthest from every
  labelled or already-picked row): diversity, no model;
- margin-density: margin's class-by-class turns, each class's candidates ordered by uncertainty
  (1 - margin) times typicality (the inverse mean distance to the 10 nearest candidates), so that
  an uncertain outlier waits behind an uncertain typical utterance;
- cluster-margin: diversity within a batch: k-means of the candidates' features into n clusters,
  the lowest-margin candidate of each (lowest margins first);
- cluster-typical: k-means into n clusters, the most typical candidate of each (no model:
  representativeness alone, the cold-start rule of TypiClust, Hacohen et al. 2022);
- balanced-margin: class-balanced batches over the current predictions: each pick goes to the
  class furthest below its share (the predicted prior of the corpus, from the labelled rows'
  given labels and the candidates' predictions, picks counted by predicted class), its lowest
  margin first; the labelled set's prior, which the balanced actions aim at, stays near the corpus's;
- balanced-diverse (the default: best on inner validation): balanced-margin, a candidate nearer to a
  pick of the same batch than the candidates' median nearest-neighbour distance waiting its turn;
- margin-random: half the batch by margin, half a seeded uniform draw of the rest;
- random: a seeded uniform draw (the baseline).
"""
from __future__ import annotations

import numpy as np
import torch

from data_manifests.errors import UserError

RULES = ("margin", "balanced-margin", "balanced-diverse", "margin-density", "cluster-margin", "cluster-typical",
         "margin-random", "entropy", "k-center", "random")
NEIGHBOURS = 10  # typicality: the mean distance to this many nearest candidates
DEFAULT_RULE = "balanced-diverse"  # what `label` writes: best on inner validation, docs/ACTIVE_LEARNING.md


def top_margin(probs: np.ndarray) -> np.ndarray:
    """Top-1 minus top-2 probability per row."""
    top2 = np.sort(probs, 1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def suggest_next(probs: np.ndarray, candidates: np.ndarray, n: int, priority: np.ndarray | None = None) -> np.ndarray:
    """Row indices (taken from `candidates`) of n utterances to annotate next: per predicted class the
    lowest top-1 minus top-2 margin first (or the lowest `priority`, indexed by row, when given),
    classes taken in turn so that every class gets its share."""
    key = top_margin(probs) if priority is None else priority
    pred = probs.argmax(1)
    candidates = np.asarray(candidates)
    queues = []
    for c in range(probs.shape[1]):
        mine = candidates[pred[candidates] == c]
        queues.append(mine[np.argsort(key[mine], kind="stable")])
    out = []
    depth = max((len(q) for q in queues), default=0)
    for j in range(depth):
        out.extend(int(q[j]) for q in queues if j < len(q))
    return np.asarray(out[:n], dtype=int)


def balanced_margin(probs: np.ndarray, candidates: np.ndarray, n: int, labelled_labels: np.ndarray,
                    features: torch.Tensor | None = None) -> np.ndarray:
    """n picks, each from the class c with the largest target_c - count_c (target: the predicted prior x
    the labelled set's size after the batch; count: given labels + picks so far, by predicted class;
    ties: the lower class), the lowest-margin candidate predicted c that is left. With `features`,
    diversity within the batch: a candidate nearer to a pick than the candidates' median
    nearest-neighbour distance waits until its class has no other."""
    candidates = np.asarray(candidates)
    n_classes = probs.shape[1]
    pred, margin = probs.argmax(1), top_margin(probs)
    count = np.bincount(np.asarray(labelled_labels, int), minlength=n_classes).astype(float)
    prior = count + np.bincount(pred[candidates], minlength=n_classes)
    target = prior / prior.sum() * (count.sum() + n)
    queues = [
        list(candidates[pred[candidates] == c][np.argsort(margin[candidates[pred[candidates] == c]], kind="stable")])
        for c in range(n_classes)
    ]
    near = None if features is None else nearest_distance_scale(flat_rows(features, candidates))
    out, picked = [], []
    for _ in range(min(n, len(candidates))):
        c = max((k for k in range(n_classes) if queues[k]), key=lambda k: (target[k] - count[k], -k))
        j = 0
        if near is not None and picked:
            d = torch.cdist(flat_rows(features, queues[c]), torch.stack(picked)).min(1).values
            far = torch.nonzero(d >= near).flatten()
            j = int(far[0]) if len(far) else 0
        out.append(int(queues[c].pop(j)))
        if near is not None:
            picked.append(flat_rows(features, out[-1:])[0])
        count[c] += 1
    return np.asarray(out, dtype=int)


def nearest_distance_scale(x: torch.Tensor, sample: int = 2000) -> float:
    """The median distance from a row to its nearest other row, over a seeded sample of the rows."""
    if len(x) > sample:
        x = x[torch.as_tensor(np.sort(np.random.default_rng(0).choice(len(x), sample, replace=False)))]
    d = torch.cdist(x, x)
    d.fill_diagonal_(float("inf"))
    return float(d.min(1).values.median())


def margin_random(probs: np.ndarray, candidates: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """ceil(n / 2) by margin (suggest_next), the rest a uniform draw from the candidates left."""
    first = suggest_next(probs, candidates, (n + 1) // 2)
    rest = np.setdiff1d(candidates, first)
    return np.concatenate([first, np.sort(rng.choice(rest, size=n - len(first), replace=False))]).astype(int)


def highest_entropy(probs: np.ndarray, candidates: np.ndarray, n: int) -> np.ndarray:
    """The n candidates whose predicted distribution has the highest entropy (ties: lower index first)."""
    candidates = np.asarray(candidates)
    p = np.clip(probs[candidates], 1e-12, 1.0)
    entropy = -(p * np.log(p)).sum(1)
    return candidates[np.argsort(-entropy, kind="stable")[:n]].astype(int)


def flat_rows(features: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
    """float32 [len(rows), L*D]: the policy's input of `rows`, hidden states side by side."""
    return features[torch.as_tensor(np.asarray(rows))].reshape(len(rows), -1).float()


def typicality(x: torch.Tensor, k: int = NEIGHBOURS, chunk: int = 2048) -> torch.Tensor:
    """1 / (mean Euclidean distance to the k nearest other rows of x), a chunk of rows at a time
    (TypiClust's typicality): high in dense regions, low for outliers."""
    k = max(1, min(k, len(x) - 1))
    out = torch.empty(len(x))
    for s in range(0, len(x), chunk):
        d = torch.cdist(x[s:s + chunk], x)
        nearest = d.topk(k + 1, dim=1, largest=False).values[:, 1:]  # the row itself is at distance 0
        out[s:s + len(d)] = 1.0 / (nearest.mean(1) + 1e-12)
    return out


def margin_density(probs: np.ndarray, features: torch.Tensor, candidates: np.ndarray, n: int) -> np.ndarray:
    """suggest_next's class-by-class turns, each class ordered by (1 - margin) x typicality, highest first
    (typicality among the candidates, scaled to [0, 1] by its maximum)."""
    candidates = np.asarray(candidates)
    typical = typicality(flat_rows(features, candidates)).numpy()
    score = np.zeros(len(probs))
    score[candidates] = (1.0 - top_margin(probs)[candidates]) * typical / typical.max()
    return suggest_next(probs, candidates, n, priority=-score)


def clusters(x: torch.Tensor, n: int) -> np.ndarray:
    """k-means (scikit-learn, seeded, one k-means++ start) of the rows of x into n clusters: a label per row."""
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=n, n_init=1, random_state=0).fit_predict(x.numpy().astype(np.float64))


def per_cluster(candidates: np.ndarray, cluster: np.ndarray, key: np.ndarray) -> np.ndarray:
    """The candidate with the lowest `key` (aligned with candidates) in each cluster, lowest keys first."""
    order = np.lexsort((key, cluster))  # by cluster, then key
    first = order[np.r_[True, cluster[order][1:] != cluster[order][:-1]]]
    return candidates[first[np.argsort(key[first], kind="stable")]].astype(int)


def cluster_margin(probs: np.ndarray, features: torch.Tensor, candidates: np.ndarray, n: int) -> np.ndarray:
    """Diversity within a batch: k-means of the candidates into n clusters, each cluster's lowest margin."""
    candidates = np.asarray(candidates)
    cluster = clusters(flat_rows(features, candidates), n)
    return per_cluster(candidates, cluster, top_margin(probs)[candidates])


def cluster_typical(features: torch.Tensor, candidates: np.ndarray, n: int) -> np.ndarray:
    """k-means of the candidates into n clusters, each cluster's most typical member (within its cluster)."""
    candidates = np.asarray(candidates)
    x = flat_rows(features, candidates)
    cluster = clusters(x, n)
    typical = np.zeros(len(candidates))
    for c in np.unique(cluster):
        mine = np.flatnonzero(cluster == c)
        typical[mine] = typicality(x[torch.as_tensor(mine)]).numpy() if len(mine) > 1 else 1.0
    return per_cluster(candidates, cluster, -typical)


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
                rng: np.random.Generator | None = None, labelled_labels: np.ndarray | None = None) -> np.ndarray:
    """n row indices from `candidates` by `rule` (RULES). probs / features are indexed by row
    (probabilities for the model's rules, features for the clustering ones, rows `labelled` already
    annotated, with their given labels as class indices in `labelled_labels`); rng draws for random."""
    candidates = np.asarray(candidates, dtype=int)
    n = min(int(n), len(candidates))
    if n == 0:
        return np.zeros(0, int)
    if rule == "margin":
        return suggest_next(probs, candidates, n)
    if rule == "margin-density":
        return margin_density(probs, features, candidates, n)
    if rule == "cluster-margin":
        return cluster_margin(probs, features, candidates, n)
    if rule == "cluster-typical":
        return cluster_typical(features, candidates, n)
    if rule == "balanced-margin":
        return balanced_margin(probs, candidates, n, labelled_labels)
    if rule == "balanced-diverse":
        return balanced_margin(probs, candidates, n, labelled_labels, features)
    if rule == "margin-random":
        return margin_random(probs, candidates, n, rng)
    if rule == "entropy":
        return highest_entropy(probs, candidates, n)
    if rule == "k-center":
        return k_center(features, np.zeros(0, int) if labelled is None else labelled, candidates, n)
    if rule == "random":
        return np.sort(rng.choice(candidates, size=n, replace=False))
    raise UserError(f"unknown rule {rule!r}: choose from {', '.join(RULES)}")
