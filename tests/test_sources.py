"""External unlabelled sources (trainer/inputs/sources.py, trainer/method/source_assignment.py,
trainer/method/source_gate.py): per-source centring and
priors on small hand-built caches, the gate, the labelled rows untouched, mismatched caches refused."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

from data_manifests.errors import UserError
from trainer.config import TrainConfig
from trainer.inputs.feature_store import CenteredCache
from trainer.run import train
from trainer.inputs.sources import centred_source, check_source, hidden_labels, is_copy, unseen_speaker_rows
from trainer.method.source_assignment import per_source_plan, source_priors
from trainer.method.source_gate import GATE_ALPHA, paired_gain_p, source_evidence

NAMES = ("angry", "happy", "neutral", "sad")


def test_a_source_is_centred_on_its_own_speakers_prompts_and_mean():
    # 2 speakers x 2 prompts x 8 takes of a 2-d vector: speaker offset + prompt offset + take
    spk, prompt = np.repeat([0, 1], 16), np.tile(np.repeat([0, 1], 8), 2)
    take = np.tile(np.arange(8, dtype=float), 4)
    raw = np.stack([10 * spk + 3 * prompt + take, -5 * spk + prompt], 1)[:, None, :].astype(np.float16)
    x = CenteredCache(raw, [f"s{s}" for s in spk], "0", speaker_norm=True)
    target = np.array([1.0, -2.0])
    every = np.arange(32)
    out = centred_source(x, [f"p{p}" for p in prompt], True, target, every).rows(every).reshape(32, 2)
    assert np.allclose(out.mean(0), target)
    # speaker and prompt removed: what is left is the take (centred), shifted to the target
    assert np.allclose(out[:, 0], take - 3.5 + 1.0) and np.allclose(out[:, 1], -2.0)
    # prompts that barely repeat (< 8 utterances) are not removed; the mean shift still applies
    few = centred_source(x, [f"q{i // 2}" for i in range(32)], True, target, every).rows(every).reshape(32, 2)
    assert np.allclose(few.mean(0), target) and np.allclose(few[:, 0] - few[0, 0], out[:, 0] - out[0, 0] + np.where(
        prompt == 1, 1.5, -1.5) - (1.5 if prompt[0] == 1 else -1.5))
    # the means come from the rows the run may see: speaker s1's rows (an unseen test speaker of a
    # copy) moved far away change nothing in speaker s0's centred rows
    far = raw.astype(np.float32).copy()
    far[spk == 1, 0, 0] += 500
    seen = np.flatnonzero(spk == 0)
    x_far = CenteredCache(far.astype(np.float16), [f"s{s}" for s in spk], "0", speaker_norm=False)
    x_near = CenteredCache(raw, [f"s{s}" for s in spk], "0", speaker_norm=False)
    texts = [f"p{p}" for p in prompt]
    a = centred_source(x_far, texts, True, target, seen).rows(seen)
    b = centred_source(x_near, texts, True, target, seen).rows(seen)
    assert np.allclose(a, b) and np.allclose(a.reshape(16, 2).mean(0), target)


def test_each_source_gets_its_own_balanced_assignment_and_prior():
    torch.manual_seed(0)
    p = torch.softmax(torch.randn(30, 3), 1)
    source = torch.tensor([0] * 18 + [1] * 12)
    priors = torch.tensor([[1 / 3, 1 / 3, 1 / 3], [0.5, 0.5, 0.0]], dtype=p.dtype)
    plan = per_source_plan(p, priors, source, None, 200, 1.0)
    assert torch.allclose(plan.sum(1), torch.ones(30), atol=1e-6)
    assert torch.allclose(plan[:18].sum(0), torch.full((3,), 6.0), atol=1e-3)  # own rows: 18 x the labelled prior
    assert torch.allclose(plan[18:].sum(0), torch.tensor([6.0, 6.0, 0.0]), atol=1e-3)  # a class the source lacks: 0
    # em: an external source's prior follows its predictions, the own pool keeps the labelled prior
    probs = torch.cat([p[:18], torch.tensor([[0.9, 0.05, 0.05]]).repeat(12, 1)])
    lab = torch.full((3,), 1 / 3, dtype=p.dtype)
    pri = source_priors("em", lab, source, lambda: probs)
    assert torch.equal(pri[0], lab) and pri[1, 0] > 0.9
    assert torch.equal(source_priors("labelled", lab, source, lambda: 1 / 0), lab[None].repeat(2, 1))


def test_shifted_copies_of_test_speakers_and_hidden_labels():
    t = pd.DataFrame({"corpus": ["mine", "mine", "other"], "speaker": ["a", "b", "a"], "label": ["sad", "calm", "x"]})
    assert unseen_speaker_rows(t, "mine", ["a"]).tolist() == [True, False, False]
    assert hidden_labels(t, ["calm", "sad"]).tolist() == [1, 0, -1]


def test_the_paired_gain_test_counts_discordant_rows_one_sided():
    def rows(b, c, both=3, neither=2):  # b rows right only with, c right only without
        w = [True] * b + [False] * c + [True] * both + [False] * neither
        wo = [False] * b + [True] * c + [True] * both + [False] * neither
        return np.array(w), np.array(wo)
    # 5 wins, 0 losses: p = 1/2^5; rows both get right or wrong do not count
    assert paired_gain_p(*rows(5, 0)) == (1 / 32, 5, 0) and paired_gain_p(*rows(5, 0, 50, 50))[0] == 1 / 32
    assert paired_gain_p(*rows(4, 1))[0] == 6 / 32  # P(X >= 4 | n = 5) = (5 + 1) / 32
    assert paired_gain_p(*rows(1, 4))[0] == 31 / 32  # one-sided: losing is not a gain
    assert paired_gain_p(*rows(0, 0)) == (1.0, 0, 0)  # the models never disagree
    assert abs(paired_gain_p(*rows(7, 1))[0] - 9 / 256) < 1e-12 and abs(paired_gain_p(*rows(6, 1))[0] - 8 / 128) < 1e-12
    # the gate keeps at p < GATE_ALPHA: 7 vs 1 kept (p 0.035), 6 vs 1 dropped (p 0.0625)
    y = np.zeros(12, int)
    for b, kept in ((7, True), (6, False)):
        w, wo = rows(b, 1, both=2, neither=12 - b - 3)
        rec = source_evidence(y, np.where(w, 0, 1), np.where(wo, 0, 1), 2, 3)
        assert rec["used"] is kept and (rec["right_only_with"], rec["right_only_without"]) == (b, 1)
    assert source_evidence(y[:0], y[:0], y[:0], 2, 0)["used"] is False  # nothing held out: not shown to help
    # a copy of the labelled corpus carries the other burden: dropped only when shown to hurt
    # (1 win vs 7 losses: p of a loss 9/256; 1 vs 6: 8/128, kept; no disagreement: kept)
    for c, kept in ((7, False), (6, True), (0, True)):
        w, wo = rows(1 if c else 0, c, both=2, neither=2)
        y_c = np.zeros(len(w), int)
        rec = source_evidence(y_c, np.where(w, 0, 1), np.where(wo, 0, 1), 2, 3, copy=True)
        assert rec["used"] is kept and rec["copy"] is True and "unless shown to hurt" in rec["reason"]
        assert rec["gate_p_loss"] == paired_gain_p(wo, w)[0]
    assert source_evidence(y[:0], y[:0], y[:0], 2, 0, copy=True)["used"] is True
    mine = pd.DataFrame({"corpus": ["mine"] * 3, "speaker": ["a", "a", "b"], "utt_id": ["u1", "u2", "u3"]})
    assert is_copy(mine.iloc[[2, 0]], mine) and is_copy(mine, mine)
    assert not is_copy(mine.assign(corpus="folders"), mine)  # another corpus, same ids
    assert not is_copy(mine.assign(speaker="c"), mine) and not is_copy(mine.iloc[:0], mine)
    assert not is_copy(pd.concat([mine, mine.assign(utt_id="u9")]), mine)  # not every row is the corpus's


def test_mismatched_caches_are_refused():
    base = {"encoder_id": "base", "window": "trim"}
    with pytest.raises(UserError, match="window is 'full'.*same encoder"):
        check_source("b.h5", {"encoder_id": "base", "window": "full"}, (1, 512), base, (1, 512))
    with pytest.raises(UserError, match="encoder is 'tiny'"):
        check_source("b.h5", {"encoder_id": "tiny", "window": "trim"}, (1, 384), base, (1, 512))
    check_source("b.h5", dict(base), (1, 512), base, (1, 512))


@pytest.fixture(scope="module")
def caches(tmp_path_factory, synthetic_cache):
    d = tmp_path_factory.mktemp("src")
    main = synthetic_cache(d / "main.h5", n_classes=4, n_speakers=6, per_class=8, n_folds=3)
    related = synthetic_cache(d / "related.h5", n_classes=4, n_speakers=2, per_class=8, n_folds=1, corpus="rel")
    return d, main, related


def test_a_source_never_changes_the_labelled_rows(caches):
    d, main, related = caches
    from trainer.inputs.fold_jobs import prepare_fold

    cfg = TrainConfig(seeds=(0,), folds=("1",))
    alone = prepare_fold(cfg, str(main), "1", 0, "cpu").data
    pooled = prepare_fold(cfg.replace(unlabeled_cache=f"{related},{related}"), str(main), "1", 0, "cpu").data
    for name in ("x_lab", "x_val", "y_lab", "prior"):
        assert torch.equal(getattr(alone, name), getattr(pooled, name))
    assert torch.equal(alone.x_test[:], pooled.x_test[:])
    assert np.array_equal(alone.standardizer.mean_, pooled.standardizer.mean_)
    assert torch.equal(pooled.pool_source.bincount(), torch.tensor([len(alone.x_unl), 64, 64]))
    # and supervised (the warm-up on L) scores exactly the same
    runs = [train(TrainConfig(methods=("supervised",), seeds=(0,), folds=("1",), unlabeled_cache=ext), main, d / name)
            for ext, name in ((None, "a"), (str(related), "b"))]
    assert runs[0]["methods"]["supervised"]["macro_f1"] == runs[1]["methods"]["supervised"]["macro_f1"]


def test_the_gate_drops_an_irrelevant_source_and_records_why(caches, tmp_path, synthetic_cache):
    d, main, _ = caches
    noise = synthetic_cache(tmp_path / "noise.h5", n_classes=4, n_speakers=3, per_class=30, n_folds=1, signal=0.0,
                            speaker_scale=3.0, corpus="noise", seed=9)
    res = train(TrainConfig(seeds=(0,), folds=("0",), unlabeled_cache=str(noise)), main, tmp_path / "run")
    rec = res["choices"][0]["sources"][0]
    assert rec["used"] is False and rec["rows"] == 360 and "with" in rec["reason"]
    assert rec["gate_p"] >= GATE_ALPHA and "paired" in rec["reason"]
    assert rec["right_only_with"] + rec["right_only_without"] <= rec["cv_rows"]
    stored = json.loads((tmp_path / "run" / "results.json").read_text())["choices"][0]["sources"][0]
    assert stored["used"] is False
    # a dropped source leaves exactly the run without it
    alone = train(TrainConfig(seeds=(0,), folds=("0",)), main, tmp_path / "alone")
    assert alone["methods"]["bgrpo"]["macro_f1"] == res["methods"]["bgrpo"]["macro_f1"]
    pred = [pd.read_csv(tmp_path / name / "predictions.csv") for name in ("run", "alone")]
    assert pred[0].equals(pred[1])
    # with the gate off it is used
    off = train(TrainConfig(seeds=(0,), folds=("0",), unlabeled_cache=str(noise), source_gate="off"), main,
                tmp_path / "off")
    assert off["choices"][0]["sources"][0]["used"] is True
    # the labelled corpus's own cache as a source (a copy: same ids): kept unless the CV shows a loss
    own = train(TrainConfig(seeds=(0,), folds=("0",), unlabeled_cache=str(main)), main, tmp_path / "own")
    rec = own["choices"][0]["sources"][0]
    assert rec["copy"] is True and rec["used"] is (rec["gate_p_loss"] >= GATE_ALPHA)
    assert rec["rows"] < 192 and "unless shown to hurt" in rec["reason"]  # its test speakers' rows left out


def test_label_and_train_take_sources_and_refuse_another_window(caches, tmp_path, synthetic_cache):
    from typer.testing import CliRunner

    from cli import app
    from pipeline.cache import load_cache, write_cache_arrays
    from trainer.label_corpus import label_corpus

    def canonical(path, name, window="full"):  # `label` reads the project's label vocabulary
        c = load_cache(path)
        table = c.table.assign(label=c.table["label"].map(dict(zip([f"class{i}" for i in range(4)], NAMES))))
        return write_cache_arrays(tmp_path / name, c.features, table, {"encoder_id": "synthetic", "window": window})

    main, related = canonical(caches[1], "main.h5"), canonical(caches[2], "related.h5")
    t = load_cache(main).table[["utt_id", "label"]].copy()
    t.loc[np.random.default_rng(0).random(len(t)) >= 0.3, "label"] = ""
    labels = tmp_path / "labels.csv"
    t.to_csv(labels, index=False)
    out, _, info = label_corpus(main, labels, TrainConfig(seeds=(0,), unlabeled_cache=f"{related},{related}"))
    assert len(out) == 192 and [r["rows"] for r in info["sources"][0]] == [64, 64]
    trim = canonical(synthetic_cache(tmp_path / "t.h5", n_speakers=2, per_class=2, n_folds=1, corpus="t"), "trim.h5",
                     "trim")
    for command in (["train", "--cache", str(main), "--set", f"unlabeled_cache={related},{trim}", "--folds", "0",
                     "--seeds", "0", "--out", str(tmp_path / "r")],
                    ["label", "--cache", str(main), "--labels", str(labels), "--out", str(tmp_path / "l.csv"),
                     "--seeds", "0", "--unlabeled-cache", str(trim)]):
        res = CliRunner().invoke(app, command)
        assert res.exit_code == 2 and "window is 'trim'" in res.output, res.output
