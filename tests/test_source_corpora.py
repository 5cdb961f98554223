"""Labelled source corpora (`train --source`, issue 35): classes in play, refusals, per-domain
centring and standardisation, what is scored, and that the target's labels never train or pick
pool rows at --labeled-fraction 0. Small hand-built caches (pipeline.cache.write_cache_arrays)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from data_manifests.errors import UserError
from pipeline.cache import load_cache, write_cache_arrays
from trainer.config import TrainConfig
from trainer.inputs.fold_jobs import prepare_fold
from trainer.inputs.source_corpora import classes_in_play, mapped_labels, parse_label_map

VOCABULARY = ("angry", "happy", "neutral", "sad", "calm")
SAME_AS = {"joy": "happy", "anger": "angry"}  # a corpus that names two classes otherwise


def corpus(path, classes, n_speakers=4, per_class=6, shift=0.0, seed=0, name="src", window="full",
           encoder="synthetic", folds=2, text_ids=False):
    """A cache whose class means are shared by every corpus built here (the same vocabulary seed),
    with a corpus-wide shift and a per-speaker offset: what per-domain centring should remove."""
    means = np.random.default_rng(123).normal(size=(len(VOCABULARY), 8)) * 2
    rng = np.random.default_rng(seed)
    rows, emb = [], []
    for s in range(n_speakers):
        offset = shift + rng.normal(size=8)
        for c in classes:
            for k in range(per_class):
                z = offset + means[VOCABULARY.index(SAME_AS.get(c, c))] + 0.5 * rng.normal(size=8)
                emb.append([z * 0.5, z, z * 0.7])
                rows.append({"utt_id": f"{name}_s{s}_{c}_{k}", "label": c, "speaker": f"spk{s}", "fold": s % folds,
                             "corpus": name, "duration": 1.0, "num_frames": 50,
                             **({"text_id": f"t{k}"} if text_ids else {})})
    return str(write_cache_arrays(path, np.asarray(emb), pd.DataFrame(rows),
                                  {"encoder_id": encoder, "window": window, "sample_rate": 16000}))


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    d = tmp_path_factory.mktemp("sources")
    return {
        "target": corpus(d / "target.h5", ("angry", "happy", "neutral", "calm"), shift=3.0, seed=1, name="tgt"),
        "source": corpus(d / "source.h5", ("angry", "happy", "neutral", "sad"), seed=2, name="src"),
        "joyful": corpus(d / "joyful.h5", ("joy", "anger"), seed=3, name="joy"),
        "trim": corpus(d / "trim.h5", ("angry", "happy"), seed=4, name="trim", window="trim"),
        "dir": d,
    }


def cfg_of(caches, **kw):
    base = dict(methods=("supervised",), seeds=(0,), labeled_fraction=0.0, source_corpora=caches["source"],
                speaker_norm=True, text_norm=False)
    return TrainConfig(**{**base, **kw})


def test_default_classes_are_the_sources_classes_the_target_has(caches):
    """Union of the sources' classes (angry, happy, neutral, sad) with the target's (angry, happy,
    neutral, calm): angry, happy, neutral; `classes` names them instead; the label map renames."""
    target = np.array(["angry", "happy", "neutral", "calm"])
    sources = {"a.h5": np.array(["angry", "sad"]), "b.h5": np.array(["happy", "neutral"])}
    cfg = TrainConfig(source_corpora="a.h5,b.h5", labeled_fraction=0)
    assert classes_in_play(cfg, target, sources)[0] == ["angry", "happy", "neutral"]
    assert classes_in_play(cfg.replace(classes="sad,angry"), target, sources)[0] == ["angry", "sad"]
    with pytest.raises(UserError, match="calm"):  # named, but no source has it
        classes_in_play(cfg.replace(classes="angry,calm"), target, sources)
    assert parse_label_map("joy=happy, anger=angry") == {"joy": "happy", "anger": "angry"}
    table = pd.DataFrame({"label": ["joy", "anger", "sad"]})
    assert list(mapped_labels(table, "joy=happy,anger=angry")) == ["happy", "angry", "sad"]
    with pytest.raises(UserError, match="raw=label"):
        TrainConfig(label_map="joy")


def test_no_shared_class_and_another_window_are_refused(caches):
    with pytest.raises(UserError, match="no class in common"):
        prepare_fold(cfg_of(caches, source_corpora=caches["joyful"]), caches["target"], "0", 0, "cpu")
    # mapped, the same corpus lends angry and happy
    job = prepare_fold(cfg_of(caches, source_corpora=caches["joyful"], label_map="joy=happy,anger=angry"),
                       caches["target"], "0", 0, "cpu")
    assert job.classes == ["angry", "happy"] and len(job.data.y_lab) == 4 * 2 * 6
    with pytest.raises(UserError, match="source_corpora .*trim.h5: its window is 'trim'"):
        prepare_fold(cfg_of(caches, source_corpora=caches["trim"]), caches["target"], "0", 0, "cpu")
    with pytest.raises(UserError, match="labeled_fraction = 0 .*source_corpora"):
        TrainConfig(labeled_fraction=0)


def test_each_corpus_is_centred_and_standardised_on_its_own_audio(caches):
    """By hand: the source's rows minus their speaker's mean, z-scored on all of the source's rows
    (every class, sad included); the target's statistics from its own visible rows only."""
    job = prepare_fold(cfg_of(caches), caches["target"], "0", 0, "cpu")
    assert job.classes == ["angry", "happy", "neutral"] and len(job.split.labeled) == 0
    src = load_cache(caches["source"])
    x = src.features[:, 1].astype(np.float32)  # the middle of 3 hidden states
    spk = src.table["speaker"].to_numpy()
    for s in np.unique(spk):
        x[spk == s] -= x[spk == s].astype(np.float64).mean(0).astype(np.float32)
    z = (x - x.mean(0)) / x.std(0)
    in_play = src.table["label"].isin(job.classes).to_numpy()
    np.testing.assert_allclose(job.data.x_lab[:, 0].numpy(), z[in_play], atol=1e-4)
    assert job.data.y_lab.tolist() == [job.classes.index(c) for c in src.table["label"][in_play]]
    tgt = load_cache(caches["target"])
    t = tgt.features[:, 1].astype(np.float32)
    tspk = tgt.table["speaker"].to_numpy()
    for s in np.unique(tspk):
        t[tspk == s] -= t[tspk == s].astype(np.float64).mean(0).astype(np.float32)
    seen = job.split.unlabeled  # no labels of its own: the whole training fold, every class (calm too)
    assert sorted(seen) == sorted(np.flatnonzero(tgt.table["fold"].to_numpy() != 0))
    np.testing.assert_allclose(job.data.standardizer.mean_[0], t[seen].mean(0), atol=1e-4)
    assert job.labelled_speakers()[0].startswith("source1:src/")
    assert job.choice["prior_reason"].startswith("uniform") and np.allclose(job.data.prior.numpy(), 1 / 3)


def test_source_rows_are_never_scored_and_other_classes_are_left_out(caches, tmp_path):
    from trainer.run import train

    summary = train(cfg_of(caches, methods=("supervised", "bgrpo", "topline")), caches["target"], tmp_path / "run")
    pred = pd.read_csv(tmp_path / "run" / "predictions.csv")
    target = load_cache(caches["target"]).table
    assert set(pred.utt_id) <= set(target.utt_id)  # never a source row
    in_play = target[target.label != "calm"]
    assert sorted(pred[pred.method == "bgrpo"].utt_id) == sorted(in_play.utt_id)  # each fold's test rows, once
    assert summary["classes"] == {"in_play": ["angry", "happy", "neutral"], "test_rows_left_out": 4 * 6,
                                  "reason": "the source corpora's classes that the cache's labels have too"}
    (record,) = summary["source_corpora"]
    assert record["path"] == caches["source"] and record["rows_per_class"] == {"angry": 24, "happy": 24, "neutral": 24}
    assert "sources" not in summary  # the unlabelled pools' key is not this one
    assert json.loads((tmp_path / "run" / "config.json").read_text())["config"]["source_corpora"] == caches["source"]
    rows = pd.read_csv(tmp_path / "run" / "results.csv")
    assert (rows.n_labeled == 72).all() and (rows[rows.fold == 0].n_unlabeled == 2 * 4 * 6).all()


def test_the_targets_labels_never_train_or_pick_pool_rows_at_fraction_0(caches, tmp_path):
    """Shuffling the target's training-fold labels (every class, calm included) changes neither the
    pool nor any prediction of the source-only model or of bgrpo; only the test fold is scored."""
    tgt = load_cache(caches["target"])
    table = tgt.table.copy()
    train = table["fold"].to_numpy() != 0
    table.loc[train, "label"] = np.random.default_rng(0).permutation(table.loc[train, "label"].to_numpy())
    shuffled = str(write_cache_arrays(tmp_path / "shuffled.h5", tgt.features, table, tgt.attrs))
    cfg = cfg_of(caches, methods=("supervised", "bgrpo"), speaker_norm="auto", text_norm="auto")
    jobs = [prepare_fold(cfg, path, "0", 0, "cpu") for path in (caches["target"], shuffled)]
    assert np.array_equal(jobs[0].split.unlabeled, jobs[1].split.unlabeled)
    assert np.array_equal(jobs[0].data.x_unl[:].numpy(), jobs[1].data.x_unl[:].numpy())
    trimmed = [prepare_fold(cfg.replace(pool_keep=0.5), path, "0", 0, "cpu").data.x_unl[:].numpy()
               for path in (caches["target"], shuffled)]  # pool_keep picks by distance alone
    assert len(trimmed[0]) == len(jobs[0].data.x_unl) // 2 and np.array_equal(*trimmed)
    from trainer.run import train as run

    for path, name in ((caches["target"], "a"), (shuffled, "b")):
        run(cfg.replace(folds=("0",)), path, tmp_path / name)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "a" / "predictions.csv"),
                                  pd.read_csv(tmp_path / "b" / "predictions.csv"))


def test_a_share_of_the_targets_labels_joins_the_sources(caches):
    job = prepare_fold(cfg_of(caches, labeled_fraction=0.5), caches["target"], "0", 0, "cpu")
    assert len(job.split.labeled) == 3 * 2 * 3  # half of each in-play class of the 2 training speakers
    assert len(job.data.y_lab) == len(job.split.labeled) + 72
    assert (job.y[job.split.labeled] >= 0).all()  # never a calm row
    assert job.choice["prior_reason"] == "the target's labelled subset"
    half = prepare_fold(cfg_of(caches, source_fraction=0.5), caches["target"], "0", 0, "cpu")
    assert len(half.data.y_lab) == 36


def test_predict_on_a_run_trained_with_sources(caches, tmp_path):
    """The saved policies carry the target's statistics and the classes in play: predict_features on
    fold 0's test rows (its speakers' own means, as train scores them) gives the run's predictions."""
    from trainer.method.policy import load_policies
    from trainer.predict import predict_features
    from trainer.run import train

    cfg = cfg_of(caches, methods=("bgrpo", "supervised"), folds=("0",))
    train(cfg, caches["target"], tmp_path / "run")
    policies, meta = load_policies(tmp_path / "run" / "models.safetensors")
    assert meta["classes"] == ["angry", "happy", "neutral"]
    written = pd.read_csv(tmp_path / "run" / "predictions.csv")
    written = written[written.method == "bgrpo"]
    tgt = load_cache(caches["target"])
    rows = tgt.table.set_index("utt_id").index.get_indexer(written.utt_id)
    probs = predict_features(policies, meta, tgt.features[rows], tgt.table.speaker.to_numpy()[rows],
                             speaker_means="own")
    assert [meta["classes"][i] for i in probs.argmax(1)] == written.pred.tolist()


def test_train_source_flag_sets_the_recipe_field_and_bad_sources_exit_2(caches, tmp_path):
    from cli import app

    out = tmp_path / "cli"
    result = CliRunner().invoke(app, ["train", "--cache", caches["target"], "--source", caches["source"],
                                      "--labeled-fraction", "0", "--method", "supervised", "--seeds", "0",
                                      "--folds", "0", "--classes", "angry,happy", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "classes in play: angry, happy (given (classes)); 24 test row(s)" in result.output
    assert json.loads((out / "results.json").read_text())["config"]["classes"] == ["angry", "happy"]
    result = CliRunner().invoke(app, ["train", "--cache", caches["target"], "--source", caches["trim"],
                                      "--labeled-fraction", "0", "--out", str(tmp_path / "bad")])
    assert result.exit_code == 2 and "window" in result.output


def test_transductive_pools_the_whole_test_fold_and_hides_its_labels(caches):
    job = prepare_fold(cfg_of(caches, transductive=True), caches["target"], "0", 0, "cpu")
    folds = load_cache(caches["target"]).table["fold"].to_numpy()
    assert sorted(job.split.unlabeled) == list(range(len(folds)))  # every row, calm ones of the test fold too
    assert len(job.split.test) == (folds == 0).sum() - 2 * 6 and (job.y[job.split.test] >= 0).all()
    test_part = np.isin(job.split.unlabeled, np.flatnonzero(folds == 0))
    assert (job.data.y_unl_hidden.numpy()[test_part] == -1).all()


def test_typical_pool_keeps_the_rows_nearest_a_labelled_class_mean(caches):
    """pool_keep: by hand, the rows whose z-scored distance to the nearest labelled class mean is
    smallest; labels of the pool never enter (the order is the distance's alone)."""
    job = prepare_fold(cfg_of(caches), caches["target"], "0", 0, "cpu")
    data = job.data
    x, lab, y = data.x_unl[:].flatten(1).numpy(), data.x_lab.flatten(1).numpy(), data.y_lab.numpy()
    means = np.stack([lab[y == c].mean(0) for c in np.unique(y)])
    dist = np.linalg.norm(x[:, None] - means[None], axis=2).min(1)
    kept = data.typical_pool(0.25)
    assert len(kept.x_unl) == round(0.25 * len(x))
    np.testing.assert_allclose(kept.x_unl[:].flatten(1).numpy(), x[np.sort(np.argsort(dist)[:len(kept.x_unl)])],
                               atol=1e-6)
    assert len(kept.y_unl_hidden) == len(kept.group_speaker) == len(kept.x_unl)
    trimmed = prepare_fold(cfg_of(caches, pool_keep=0.25), caches["target"], "0", 0, "cpu")
    assert trimmed.choice["pool_kept"] == len(kept.x_unl)


def test_label_a_corpus_with_no_labels_of_its_own_from_a_source(caches, tmp_path):
    """`label --source` without --labels: every utterance predicted, in the sources' classes; a few
    given labels are kept verbatim; a given label outside the classes in play is refused."""
    from cli import app

    out = tmp_path / "labelled.csv"
    result = CliRunner().invoke(app, ["label", "--cache", caches["target"], "--source", caches["source"],
                                      "--seeds", "0", "--out", str(out), "--next", "5"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out)
    target = load_cache(caches["target"]).table
    assert len(table) == len(target) and (table.source == "predicted").all()
    assert set(table.label) <= {"angry", "happy", "neutral", "sad"}
    truth = target.set_index("utt_id").loc[table.utt_id, "label"].to_numpy()
    shared = np.isin(truth, ["angry", "happy", "neutral"])
    assert (table.label.to_numpy()[shared] == truth[shared]).mean() > 0.5  # chance: 1/4
    assert len(pd.read_csv(tmp_path / "labelled-to-label.csv")) == 5
    few = tmp_path / "few.csv"
    pd.DataFrame({"utt_id": [target.utt_id[0]], "label": [target.label[0]]}).to_csv(few, index=False)
    result = CliRunner().invoke(app, ["label", "--cache", caches["target"], "--source", caches["source"],
                                      "--labels", str(few), "--seeds", "0", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert pd.read_csv(out).set_index("utt_id").loc[target.utt_id[0], "source"] == "given"
    pd.DataFrame({"utt_id": [target.utt_id[0]], "label": ["calm"]}).to_csv(few, index=False)
    result = CliRunner().invoke(app, ["label", "--cache", caches["target"], "--source", caches["source"],
                                      "--labels", str(few), "--seeds", "0", "--out", str(out)])
    assert result.exit_code == 2 and "calm" in result.output
