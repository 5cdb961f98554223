"""The suggestion rules of trainer/next_to_label.py on small hand-computed cases."""
import numpy as np
import torch

from trainer.next_to_label import (
    balanced_margin,
    choose_next,
    cluster_margin,
    cluster_typical,
    margin_random,
    per_cluster,
    suggest_next,
    typicality,
)

# predicted class, margin: 0 .3 | 0 .1 | 1 .5 | 1 .0 (a tie, argmax first) | 2 .5 | 2 .1
PROBS = np.array([[0.6, 0.3, 0.1], [0.5, 0.4, 0.1], [0.2, 0.7, 0.1], [0.1, 0.45, 0.45], [0.1, 0.2, 0.7],
                  [0.3, 0.3, 0.4]])


def test_balanced_margin_fills_the_classes_furthest_below_their_share():
    # 6 given labels, all class 0: counts [6, 0, 0]; predicted prior (6+2, 2, 2) / 12; target x 9 = [6, 1.5, 1.5]
    # picks: class 1 (deficit 1.5, ties -> lower class) row 3, class 2 row 5, then class 1 again (0.5 vs 0.5) row 2
    assert balanced_margin(PROBS, np.arange(6), 3, np.zeros(6, int)).tolist() == [3, 5, 2]
    assert suggest_next(PROBS, np.arange(6), 3).tolist() == [1, 3, 5]  # margin's turns ignore the given labels
    # candidates predicted 0, 0, 2: prior (8, 0, 1) / 9, target x 9 = [8, 0, 1], deficits [2, 0, 1]: class 0
    # (row 1, then row 0 on the tie 1 vs 1), then class 2; class 1, with no candidate, never gets a turn
    assert balanced_margin(PROBS, np.array([0, 1, 4]), 3, np.zeros(6, int)).tolist() == [1, 0, 4]


def test_typicality_is_the_inverse_mean_distance_to_the_nearest_rows():
    x = torch.tensor([[0.0], [1.0], [2.0], [10.0]])
    assert torch.allclose(typicality(x, k=1), torch.tensor([1.0, 1.0, 1.0, 1 / 8]))
    assert torch.allclose(typicality(x, k=2), torch.tensor([1 / 1.5, 1.0, 1 / 1.5, 1 / 8.5]))


def test_per_cluster_takes_each_clusters_lowest_key_lowest_first():
    assert per_cluster(np.array([10, 11, 12, 13]), np.array([0, 1, 0, 1]), np.array([0.5, 0.2, 0.1, 0.3])).tolist() == [
        12,
        11,
    ]


def blobs():
    """Two far-apart blobs of 4 rows ([N, L=1, D=2]); in each blob row 1 of it is the most central."""
    base = np.array([[0.0, 0.0], [0.1, 0.1], [0.2, 0.0], [0.9, 0.9]])
    return torch.tensor(np.concatenate([base, base + 100]))[:, None, :].float()


def test_cluster_rules_take_one_utterance_per_cluster():
    probs = np.tile([[0.9, 0.1]], (8, 1))
    probs[2], probs[4] = [0.55, 0.45], [0.5, 0.5]  # the lowest margin of each blob
    assert sorted(cluster_margin(probs, blobs(), np.arange(8), 2).tolist()) == [2, 4]
    assert sorted(cluster_typical(blobs(), np.arange(8), 2).tolist()) == [1, 5]


def test_margin_random_is_half_margin_half_a_draw_of_the_rest():
    picks = margin_random(PROBS, np.arange(6), 3, np.random.default_rng(0))
    assert picks[:2].tolist() == suggest_next(PROBS, np.arange(6), 2).tolist()
    assert len(set(picks)) == 3 and picks[2] not in picks[:2]


def test_choose_next_of_nothing_is_empty():
    assert choose_next("cluster-margin", 5, np.zeros(0, int), probs=PROBS, features=blobs()).tolist() == []
