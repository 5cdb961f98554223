"""`cli.py label`: a row for every utterance, given labels kept verbatim, clear refusals,
and the to-annotate list (lowest margin, class by class)."""
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cli import app
from pipeline.cache import load_cache, write_cache_arrays
from trainer.config import TrainConfig
from trainer.label_corpus import label_corpus, read_user_labels
from trainer.next_to_label import suggest_next

NAMES = {"class0": "angry", "class1": "happy", "class2": "neutral", "class3": "sad"}


@pytest.fixture(scope="module")
def cache(tmp_path_factory, synthetic_cache):
    tmp = tmp_path_factory.mktemp("label")
    syn = load_cache(synthetic_cache(tmp / "syn.h5", n_classes=4, n_speakers=6, per_class=8, n_folds=3))
    table = syn.table.assign(label=syn.table["label"].map(NAMES))
    return write_cache_arrays(tmp / "corpus.h5", syn.features, table, {"encoder_id": "synthetic", "window": "full"})


@pytest.fixture(scope="module")
def given(cache, tmp_path_factory):
    t = load_cache(cache).table[["utt_id", "label"]].copy()
    keep = np.random.default_rng(0).random(len(t)) < 0.2
    t.loc[~keep, "label"] = ""
    # a deliberately "wrong" given label: the user's word stands
    first = np.flatnonzero(keep)[0]
    t.loc[first, "label"] = "sad" if t.loc[first, "label"] != "sad" else "angry"
    path = tmp_path_factory.mktemp("lab") / "labels.csv"
    t.to_csv(path, index=False)
    return path, t[keep].set_index("utt_id")["label"]


def test_every_utterance_gets_a_row_and_given_labels_stay(cache, given):
    path, labels = given
    out, suggest, info = label_corpus(cache, path, TrainConfig(seeds=(0,)), n_suggest=6)
    assert len(out) == len(load_cache(cache).table) and out["utt_id"].is_unique
    g = out.set_index("utt_id")
    assert (g.loc[labels.index, "label"] == labels).all() and (g.loc[labels.index, "source"] == "given").all()
    pred = out[out["source"] == "predicted"]
    assert len(pred) == len(out) - len(labels) == info["n_predicted"]
    assert pred["probability"].between(1 / 4, 1).all() and (pred["probability"] >= pred["second_probability"]).all()
    assert (pred["probability"] + pred["second_probability"] <= 1 + 1e-6).all()  # two shares of one distribution
    assert (pred["label"] != pred["second"]).all()
    acc = (pred["utt_id"].str.extract(r"_c(\d)_")[0].map(lambda c: NAMES[f"class{c}"]) == pred["label"]).mean()
    assert acc > 0.8  # the synthetic classes are well separated
    assert len(suggest) == 6 and set(suggest["utt_id"]).isdisjoint(labels.index)
    assert suggest["predicted"].nunique() >= 3  # class-balanced, not all from one class


def test_suggest_next_takes_lowest_margin_per_class_in_turn():
    probs = np.array([[0.9, 0.1], [0.55, 0.45], [0.6, 0.4], [0.2, 0.8], [0.45, 0.55], [0.5, 0.5]])
    # margins 0.8, 0.1, 0.2, 0.6, 0.1, 0.0; row 5 is a tie predicted as class 0 (argmax first)
    assert suggest_next(probs, np.array([0, 1, 2, 3, 4]), 4).tolist() == [1, 4, 2, 3]
    assert suggest_next(probs, np.arange(6), 3).tolist() == [5, 4, 1]


@pytest.mark.parametrize("rows, message", [
    ("utt_id,label\nnot_in_cache,angry\n", "1 utt_id(s) are not in the cache, e.g. not_in_cache"),
    ("utt_id,label\n{u0},joyful\n{u1},angry\n", "unknown label(s) joyful; use the project's vocabulary"),
    ("id,emotion\n{u0},angry\n", "missing column(s) utt_id, label"),
    ("utt_id,label\n{u0},angry\n{u0},sad\n{u1},sad\n", "two different labels"),
    ("utt_id,label\n{u0},angry\n", "at least 2 classes"),
])
def test_label_command_refuses_bad_labels_with_a_clear_message(cache, tmp_path, rows, message):
    ids = load_cache(cache).table["utt_id"].tolist()
    bad = tmp_path / "bad.csv"
    bad.write_text(rows.format(u0=ids[0], u1=ids[1]))
    out = tmp_path / "out.csv"
    res = CliRunner().invoke(
        app, ["label", "--cache", str(cache), "--labels", str(bad), "--out", str(out), "--seeds", "0"]
    )
    assert res.exit_code == 2 and message in res.output and str(bad) in res.output
    assert not out.exists()


def test_label_command_writes_both_files(cache, given, tmp_path):
    out = tmp_path / "labelled.csv"
    res = CliRunner().invoke(app, ["label", "--cache", str(cache), "--labels", str(given[0]), "--out", str(out),
                                   "--seeds", "0", "--next", "5"])
    assert res.exit_code == 0, res.output
    assert len(pd.read_csv(out)) == 192 and len(pd.read_csv(tmp_path / "labelled-to-label.csv")) == 5
    assert "utterances predicted" in res.output


def test_the_to_label_rows_filled_in_and_appended_are_read_as_labels(cache, given, tmp_path):
    """OUT-to-label.csv starts utt_id,label (label empty, to fill in) and keeps its other columns; its
    rows appended to the labels file are read: filled labels count, empty ones stay unlabelled."""
    out = tmp_path / "labelled.csv"
    res = CliRunner().invoke(app, ["label", "--cache", str(cache), "--labels", str(given[0]), "--out", str(out),
                                   "--seeds", "0", "--next", "4"])
    assert res.exit_code == 0, res.output
    to_label = pd.read_csv(tmp_path / "labelled-to-label.csv", dtype=str, keep_default_na=False)
    assert to_label.columns.tolist() == ["utt_id", "label", "speaker", "predicted", "probability", "second", "margin"]
    assert (to_label["label"] == "").all() and (to_label["predicted"] != "").all()
    filled = to_label.assign(label=["angry", "sad", "", ""])
    labels = tmp_path / "L.csv"
    labels.write_text(given[0].read_text() + filled.to_csv(index=False, header=False))  # utt_id,label + the rows
    read = read_user_labels(labels, load_cache(cache).table["utt_id"])
    assert read.drop(given[1].index).to_dict() == {to_label["utt_id"][0]: "angry", to_label["utt_id"][1]: "sad"}
    pd.testing.assert_series_equal(read.loc[given[1].index], given[1], check_names=False)


@pytest.mark.parametrize("field, value", [("update", "grpo"), ("pool_prior", "em"), ("act_on", "policy"),
                                          ("refit_rounds", 1)])
def test_label_follows_every_recipe_field(cache, given, field, value):
    """`label` builds its model as `train` does (trainer/method/methods.py): changing one recipe field
    changes its probabilities."""
    base = TrainConfig(seeds=(0,), epochs=3)
    changed = base.replace(**{field: value})
    assert getattr(changed, field) != getattr(base, field)
    p_base = label_corpus(cache, given[0], base)[0]["probability"]
    p_changed = label_corpus(cache, given[0], changed)[0]["probability"]
    assert not np.allclose(p_base.fillna(0), p_changed.fillna(0))


def test_a_segment_cache_gives_start_and_end_in_both_tables(cache, given, tmp_path):
    """A cache of segments (start/end per row, as `segment` -> `extract` writes): `label --out` and the
    to-label list carry each row's start and end after its speaker; a clip cache has neither column."""
    syn = load_cache(cache)
    table = syn.table.assign(recording="rec", start=np.arange(len(syn.table)) * 2.0,
                             end=np.arange(len(syn.table)) * 2.0 + 1.5)
    segments = write_cache_arrays(tmp_path / "segments.h5", syn.features, table,
                                  {"encoder_id": "synthetic", "window": "full"})
    out, suggest, _ = label_corpus(segments, given[0], TrainConfig(seeds=(0,)), n_suggest=4)
    assert out.columns.tolist()[:4] == ["utt_id", "speaker", "start", "end"]
    assert out[["start", "end"]].to_numpy().tolist() == table[["start", "end"]].to_numpy().tolist()
    assert suggest.columns.tolist()[:5] == ["utt_id", "label", "speaker", "start", "end"]
    row = out.set_index("utt_id").loc[suggest["utt_id"]]
    assert suggest["start"].tolist() == row["start"].tolist()
    clips, _, _ = label_corpus(cache, given[0], TrainConfig(seeds=(0,)), n_suggest=0)
    assert "start" not in clips.columns
