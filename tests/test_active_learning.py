"""bench/active_learning.py's rounds on a small synthetic cache: labels come only from the simulated
annotator (never a test-fold row), each round adds exactly the budget, every rule starts from the
same labels, hidden labels cannot steer the picks; and the labels-saved arithmetic."""
import numpy as np
import pandas as pd
import pytest
import torch

from bench.active_learning import (
    START,
    AnnotatorError,
    SimulatedAnnotator,
    labels_saved,
    round_targets,
    share_to_reach,
    simulate,
)
from pipeline.cache import load_cache
from trainer.config import TrainConfig
from trainer.inputs.fold_jobs import class_names
from trainer.inputs.protocol import fold_masks
from trainer.next_to_label import choose_next

RULES = ["margin", "balanced-diverse", "entropy", "k-center", "random"]
CFG = TrainConfig(refit_rounds=1)


@pytest.fixture(scope="module")
def cache(tmp_path_factory, synthetic_cache):
    # 3 folds x 4 speakers x 4 classes x 10: 320 training rows, start 16, budget 8, 6 rounds
    return str(synthetic_cache(tmp_path_factory.mktemp("al") / "syn.h5", n_classes=4, n_speakers=12, per_class=10,
                               n_folds=3, signal=0.6))


@pytest.fixture(scope="module")
def run(cache):
    return simulate(cache, "0", 0, RULES, CFG)


def true_labels(cache):
    table = load_cache(cache, layers=[]).table
    classes = class_names(table)
    return table, table["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()


def test_labels_come_only_from_the_annotator_and_never_from_the_test_fold(cache, run):
    rows, trace = run
    table, _ = true_labels(cache)
    train_mask, test_mask = fold_masks(table, "0")
    for rule in RULES:
        log = trace[rule]["annotator"].log
        asked = np.concatenate(log)
        assert len(np.unique(asked)) == len(asked) and train_mask[asked].all() and not test_mask[asked].any()
        # every labelled set is exactly what the annotator was asked for so far
        for rnd, labelled in enumerate(trace[rule]["labelled"]):
            assert np.array_equal(labelled, np.sort(np.concatenate(log[: rnd + 1])))


def test_every_round_adds_exactly_the_budget_and_every_rule_starts_alike(cache, run):
    rows, trace = run
    table, _ = true_labels(cache)
    n_train = int(fold_masks(table, "0")[0].sum())
    budget, n_rounds = round_targets(n_train)
    assert (budget, n_rounds) == (8, 6)
    start = trace["random"]["labelled"][0]
    assert len(start) == round(START * n_train)
    for rule in RULES:
        sizes = [len(x) for x in trace[rule]["labelled"]]
        assert sizes == [len(start) + budget * k for k in range(n_rounds + 1)]
        assert np.array_equal(trace[rule]["labelled"][0], start)
    df = pd.DataFrame(rows)
    first = df[df["round"] == 0]
    assert first["macro_f1"].nunique() == 1 and len(first) == len(RULES)  # one start model for every rule
    assert len(df) == len(RULES) * (n_rounds + 1)


# A hand-made pool: candidates 0-5 (predicted class, top-1 minus top-2 margin, entropy in nats), labelled rows 6-9
# (given labels 0, 0, 0, 0) at the origin. 0: 0, .05, .86 | 1: 0, .10, 1.089 | 2: 0, .85 | 3: 1, .65 | 4: 1, .30, .90
# | 5: 0, .01, 1.099. Features: 4 (10, 0) and 5 (10, .5) side by side; nearest-neighbour distances 3 3 3 6.7 .5 .5.
HAND_PROBS = np.array([[0.50, 0.45, 0.05], [0.40, 0.30, 0.30], [0.90, 0.05, 0.05], [0.05, 0.80, 0.15],
                       [0.10, 0.60, 0.30], [0.34, 0.33, 0.33], *[[1 / 3] * 3] * 4])
HAND_FEATURES = torch.tensor([[0, 0], [0, 3], [3, 0], [6, 6], [10, 0], [10, 0.5],
                              [0, 1], [1, 0], [1, 1], [0.5, 0.5]])[:, None, :]  # [rows, 1 layer, D]
HAND_PICKS = {
    "margin": [5, 4],  # class 0's lowest margin (5), then class 1's (4): classes in turn
    "entropy": [5, 1],  # the two highest entropies, whatever their class
    # counts [4, 0, 0], predicted prior [8, 2, 0] / 10, target x (4 + 2) = [4.8, 1.2, 0]: class 1 first (row 4),
    # then class 0, whose lowest margin (5) is 0.5 from pick 4 (< the median nearest distance 3): the next, row 0
    "balanced-diverse": [4, 0],
    "balanced-margin": [4, 5],  # the same turns without the distance: 5 is not skipped
    # the farthest from labelled rows: 5 (9.01 from (1, 0)); then 3 (6.8 from 5), as 4 is now 0.5 from 5
    "k-center": [5, 3],
}


def test_each_rule_picks_what_its_definition_says_on_a_hand_made_pool(run):
    candidates, labelled = np.arange(6), np.arange(6, 10)
    assert set(RULES) <= {*HAND_PICKS, "random"}
    for rule in [*HAND_PICKS, "random"]:
        picks = choose_next(rule, 2, candidates, probs=HAND_PROBS, features=HAND_FEATURES, labelled=labelled,
                            rng=np.random.default_rng(7), labelled_labels=np.zeros(4, int))
        want = np.sort(np.random.default_rng(7).choice(candidates, 2, replace=False)) if rule == "random" \
            else HAND_PICKS[rule]
        assert picks.tolist() == list(want), rule
    # and the simulation hands each rule its own picks: no two rules' first batches are alike
    _, trace = run
    assert len({tuple(trace[rule]["labelled"][1]) for rule in RULES}) == len(RULES)


def test_hidden_and_test_labels_do_not_steer_the_picks(cache, run):
    """Relabel every row the annotator never revealed (pool rows never picked, and the test fold),
    from the same start: every rule picks the same rows, so only revealed labels reached a decision."""
    _, trace = run
    table, y = true_labels(cache)
    asked = np.unique(np.concatenate([np.concatenate(trace[r]["annotator"].log) for r in RULES]))
    shuffled = y.copy()
    hidden = np.setdiff1d(np.arange(len(y)), asked)
    shuffled[hidden] = (y[hidden] + 1 + np.arange(len(hidden)) % 3) % 4  # every hidden label changed
    _, trace2 = simulate(cache, "0", 0, RULES, CFG, true_labels=shuffled, start=trace["random"]["labelled"][0])
    for rule in RULES:
        for a, b in zip(trace[rule]["labelled"], trace2[rule]["labelled"]):
            assert np.array_equal(a, b)


def test_the_annotator_refuses_test_rows_and_repeats():
    annotator = SimulatedAnnotator.for_training_rows(np.array([0, 1, 2, 0, 1]), np.array([0, 1, 2]))
    assert annotator.reveal(np.array([2, 0])).tolist() == [2, 0]
    with pytest.raises(AnnotatorError, match="not training-fold rows"):
        annotator.reveal(np.array([3]))
    with pytest.raises(AnnotatorError, match="twice"):
        annotator.reveal(np.array([0]))


def test_deterministic_for_a_seed(cache, run):
    rows, _ = run
    again, _ = simulate(cache, "0", 0, ["margin", "random"], CFG)
    a = pd.DataFrame(rows).query("rule in ['margin', 'random']").reset_index(drop=True)
    b = pd.DataFrame(again)
    assert np.array_equal(a["macro_f1"].to_numpy(), b["macro_f1"].to_numpy())


def test_share_to_reach_interpolates_between_rounds():
    shares, scores = np.array([5.0, 7.5, 10.0, 12.5]), np.array([50.0, 60.0, 62.0, 70.0])
    assert share_to_reach(shares, scores, 55.0) == pytest.approx(6.25)
    assert share_to_reach(shares, scores, 66.0) == pytest.approx(11.25)
    assert share_to_reach(shares, scores, 40.0) == 5.0
    assert share_to_reach(shares, scores, 71.0) is None


def test_labels_saved_is_one_minus_ten_over_the_share_random_needs():
    curve = pd.DataFrame({"rule": ["random"] * 5 + ["margin"] * 5, "round": list(range(5)) * 2,
                          "share": [5.0, 7.5, 10.0, 12.5, 15.0] * 2,
                          "macro_f1": [50, 55, 60, 65, 70, 50, 58, 66, 70, 72]})
    out = labels_saved(curve, "margin")
    # margin at 10% = 66; random reaches 66 at 12.5 + (66 - 65) / 5 * 2.5 = 13.0 -> saved 1 - 10/13
    assert out["random_share_needed"] == pytest.approx(13.0) and out["saved"] == pytest.approx(1 - 10 / 13)
    never = labels_saved(curve.assign(macro_f1=[50, 55, 60, 61, 62, 50, 58, 80, 81, 82]), "margin")
    assert never["saved"] is None and never["saved_more_than"] == pytest.approx(1 - 10 / 15)
