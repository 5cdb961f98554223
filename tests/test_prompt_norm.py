"""Content normalisation (text_norm): inductive prompt means, the automatic choice, the cache column
and `predict` with known and unknown prompts."""
from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pytest

from pipeline.cache import load_cache, set_annotation, write_cache_arrays
from pipeline.extract import sync_annotations
from trainer.config import TrainConfig
from trainer.inputs.feature_store import CenteredCache
from trainer.inputs.fold_jobs import prepare_fold
from trainer.method.policy import load_policies
from trainer.predict import predict_features, prompt_note
from trainer.inputs.prompt_norm import PromptCentered, prompt_label_dependence


def prompt_corpus(path, confounded: bool = False, n_speakers: int = 8, n_classes: int = 4, n_prompts: int = 6,
                  prompt_scale: float = 3.0, seed: int = 0, one_take: bool = False):
    """Every speaker says every prompt in every class (balanced), or every prompt only in class
    prompt % n_classes, as often (confounded), or (one_take) each prompt once, in class
    (speaker + prompt) % n_classes; vector = class + prompt + speaker + noise."""
    rng = np.random.default_rng(seed)
    dim = 12
    cls, prm = rng.normal(size=(n_classes, dim)), prompt_scale * rng.normal(size=(n_prompts, dim))
    rows, emb = [], []
    for s in range(n_speakers):
        offset = rng.normal(size=dim)
        for p in range(n_prompts):
            takes = (
                [(s + p) % n_classes] if one_take else [p % n_classes] * n_classes if confounded else range(n_classes)
            )
            for c in takes:
                v = cls[c] + prm[p] + offset + 0.5 * rng.normal(size=dim)
                emb.append([v * 0.5, v, v * 0.5])
                rows.append({"utt_id": f"s{s}_p{p}_{len(rows)}", "label": f"class{c}", "speaker": f"spk{s}",
                             "fold": s % 4, "text_id": f"p{p}", "corpus": "prompts"})
    return write_cache_arrays(path, np.asarray(emb), pd.DataFrame(rows), {"encoder_id": "synthetic", "window": "full"})


def test_inductive_prompt_means_never_read_test_rows(tmp_path):
    """Changing every test-fold vector changes no prompt mean (and a training row's input)."""
    path = prompt_corpus(tmp_path / "a.h5")
    cache = load_cache(path)
    test = (cache.table["fold"] == 0).to_numpy()
    altered = cache.features.astype(np.float32).copy()
    altered[test] = 100 + 50 * np.random.default_rng(1).normal(size=altered[test].shape)
    other = write_cache_arrays(tmp_path / "b.h5", altered, cache.table, {"encoder_id": "synthetic", "window": "full"})
    cfg = TrainConfig(text_norm=True, speaker_norm=True)
    a, b = prepare_fold(cfg, str(path), "0", 0, "cpu"), prepare_fold(cfg, str(other), "0", 0, "cpu")
    assert a.cfg.text_norm is True and a.choice["prompts_normalised"] == 6
    np.testing.assert_array_equal(a.prompts.means, b.prompts.means)
    train = a.split.unlabeled[:5]
    np.testing.assert_array_equal(a.prompts.rows(train), b.prompts.rows(train))
    # the means are those of the training rows alone, and test rows get them subtracted
    base = a.prompts.base
    seen = np.concatenate([a.split.labeled, a.split.val, a.split.unlabeled])
    p0 = seen[cache.table["text_id"].to_numpy()[seen] == "p0"]
    np.testing.assert_allclose(a.prompts.means[0], base.rows(p0).reshape(len(p0), -1).mean(0), rtol=1e-5, atol=1e-6)
    t = a.split.test[:3]
    np.testing.assert_allclose(a.prompts.rows(t), base.rows(t) - a.prompts.means[a.prompts.codes[t]].reshape(3, 1, -1),
                               rtol=1e-5, atol=1e-5)


def test_a_prompt_with_few_utterances_or_only_in_test_rows_is_untouched():
    rng = np.random.default_rng(0)
    raw = rng.normal(size=(30, 1, 4)).astype(np.float16)
    base = CenteredCache(raw, ["s"] * 30, "0", False)
    ids = ["many"] * 20 + ["one"] + ["few"] * 3 + ["test-only"] * 6
    centred = PromptCentered.fit(base, ids, np.arange(24))
    for row in (20, 21, 22, 25):  # one utterance, three utterances, a prompt seen only outside the training rows
        np.testing.assert_array_equal(centred.rows(np.array([row])), base.rows(np.array([row])))
    assert list(centred.normalised) == ["many"]
    np.testing.assert_allclose(centred.rows(np.arange(20)).mean(0), 0, atol=1e-6)


def test_dependence_gate_turns_text_norm_off_on_a_text_confounded_corpus(tmp_path):
    balanced = prepare_fold(TrainConfig(), str(prompt_corpus(tmp_path / "b.h5")), "0", 0, "cpu")
    confounded = prepare_fold(TrainConfig(), str(prompt_corpus(tmp_path / "c.h5", confounded=True)), "0", 0, "cpu")
    assert balanced.cfg.text_norm is True and "no prompt-label dependence" in balanced.choice["text_reason"]
    assert confounded.cfg.text_norm is False and "follow the prompt" in confounded.choice["text_reason"]
    assert confounded.prompts is None and confounded.choice["prompt_label_p"] < 0.05


def test_auto_is_off_where_a_speaker_says_each_prompt_once(tmp_path):
    """Label-free: prompts crossed with emotions only across speakers are not trusted."""
    job = prepare_fold(
        TrainConfig(), str(prompt_corpus(tmp_path / "o.h5", one_take=True, n_speakers=16)), "0", 0, "cpu"
    )
    assert job.choice["median_utterances_per_prompt"] >= 8 and job.choice["median_takes_per_speaker_prompt"] == 1
    assert job.cfg.text_norm is False and "fewer than half the 4 classes" in job.choice["text_reason"]


def test_auto_is_off_without_ids_and_for_prompts_that_barely_repeat(tmp_path):
    path = prompt_corpus(tmp_path / "a.h5")
    cache = load_cache(path)
    unique = write_cache_arrays(tmp_path / "u.h5", cache.features, cache.table.assign(text_id=cache.table["utt_id"]),
                                {"encoder_id": "synthetic", "window": "full"})
    none = write_cache_arrays(tmp_path / "n.h5", cache.features, cache.table.drop(columns="text_id"),
                              {"encoder_id": "synthetic", "window": "full"})
    assert (
        "median utterances per prompt 1.0 < 8"
        in prepare_fold(TrainConfig(), str(unique), "0", 0, "cpu").choice["text_reason"]
    )
    job = prepare_fold(TrainConfig(), str(none), "0", 0, "cpu")
    assert job.cfg.text_norm is False and "no prompt ids" in job.choice["text_reason"]


def test_prompt_label_dependence_reads_only_labelled_rows_labels():
    rng = np.random.default_rng(0)
    raw = rng.normal(size=(64, 1, 5)).astype(np.float16)
    base = CenteredCache(raw, np.repeat(np.arange(8), 8), "0", True)
    codes, spk = np.tile(np.arange(8), 8), np.repeat(np.arange(8), 8).astype(str)
    lab = np.arange(0, 64, 2)
    y = rng.integers(0, 3, 32)
    first = prompt_label_dependence(base, codes, spk, np.arange(64), lab, y)
    assert first == prompt_label_dependence(base, codes, spk, np.arange(64), lab, y.copy()) and first[2] == 32
    # no prompt spoken by two speakers: nothing to test
    assert prompt_label_dependence(base, np.arange(64), spk, np.arange(64), lab, y) == (0.0, 1.0, 0)


def test_an_existing_cache_gains_text_id_without_reencoding(tmp_path):
    path = prompt_corpus(tmp_path / "a.h5")
    cache = load_cache(path)
    old = write_cache_arrays(tmp_path / "old.h5", cache.features, cache.table.drop(columns="text_id"),
                             {"encoder_id": "synthetic", "window": "full"})
    with h5py.File(old, "r+") as f:  # as written before caches had the column
        del f["text_id"]
    before = load_cache(old)
    assert "text_id" not in before.table  # old caches still load, without the column
    manifest = cache.table.assign(text_id=cache.table["text_id"].where(cache.table.index % 2 == 0, ""))
    assert sync_annotations(old, manifest, log=lambda *_: None) == ["text_id"]
    after = load_cache(old)
    assert after.fingerprint == before.fingerprint and (after.features == before.features).all()
    assert after.table["text_id"].tolist() == manifest["text_id"].tolist()
    assert sync_annotations(old, manifest, log=lambda *_: None) == []  # already in step: nothing written
    with pytest.raises(ValueError, match="not an annotation column"):
        set_annotation(old, "label", manifest["label"])


def test_predict_subtracts_stored_means_for_known_prompts_only(tmp_path):
    from trainer.run import train

    path = prompt_corpus(tmp_path / "a.h5")
    cfg = TrainConfig(text_norm=True, speaker_norm=True, seeds=(0,), folds=("0",), methods=("bgrpo", "supervised"))
    train(cfg, path, tmp_path / "run")
    policies, meta = load_policies(tmp_path / "run" / "models.safetensors")
    choice = meta["choices"]["bgrpo_f0_s0"]
    assert choice["text_norm"] is True and choice["prompts"] == [f"p{i}" for i in range(6)]
    cache = load_cache(path)
    rows = np.flatnonzero(cache.table["fold"].to_numpy() == 0)[:8]
    feats, spk = cache.features[rows], cache.table["speaker"].to_numpy()[rows]
    ids = cache.table["text_id"].to_numpy()[rows]
    known = predict_features(policies, meta, feats, spk, ids, speaker_means="own")  # the speaker's own mean, as below
    unknown = predict_features(policies, meta, feats, spk, [""] * 8, speaker_means="own")
    assert not np.allclose(known, unknown)
    # by hand: speaker-centred middle layer minus the stored mean of each file's prompt
    lookup = {p: k for k, p in enumerate(choice["prompts"])}
    had = np.array([t in lookup for t in ids])
    centred = (feats[:, [1]].astype(np.float32) - feats[:, [1]].astype(np.float32).mean(0)).reshape(8, -1)
    means = meta["extra"]["~prompt_means/bgrpo_f0_s0"].numpy().astype(np.float64)
    x = (centred - means[[lookup[t] for t in ids]]).astype(np.float32).reshape(8, 1, -1)
    pol = policies["bgrpo_f0_s0"]
    import torch
    np.testing.assert_allclose(known, pol.probs(pol.standardize(torch.as_tensor(x))).numpy(), atol=1e-5)
    assert had.all()
    mixed = predict_features(policies, meta, feats, spk, list(ids[:4]) + ["never-seen"] * 4, speaker_means="own")
    np.testing.assert_allclose(mixed[:4], known[:4], atol=1e-6)
    np.testing.assert_allclose(mixed[4:], unknown[4:], atol=1e-6)
    assert "4 of 8 file(s) have no known prompt" in prompt_note(meta, list(ids[:4]) + [""] * 4, 8)
    assert "give text_ids= (one prompt per file)" in prompt_note(meta, None, 8) and prompt_note(meta, ids, 8) is None
    assert prompt_note(meta, None, 8, "--text-regex").endswith("(give --text-regex)")  # how cli.py predict says it
