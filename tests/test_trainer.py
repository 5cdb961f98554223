"""End to end: the train command's run directory, determinism, metrics, saved policies, errors."""
import json

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import f1_score

from data_manifests.errors import UserError
from pipeline.cache import write_cache_arrays
from trainer.config import SPEC_FORM, TrainConfig
from trainer.inputs.fold_jobs import prepare_fold
from trainer.method.teachers import teacher_for
from trainer.metrics import fast_macro_f1, gap_recovered, relative_gain
from trainer.method.policy import Policy, load_policies, save_policies
from trainer.run import train

ALL = ("bgrpo", "supervised", "pseudo-label", "dino", "topline")


@pytest.fixture(scope="module")
def cache(tmp_path_factory, synthetic_cache):
    return synthetic_cache(tmp_path_factory.mktemp("t") / "syn.h5", n_classes=4, n_speakers=6, per_class=8, n_folds=3)


def small(**kw):
    """SPEC section 5's literal form (the recipe's defaults have their own test)."""
    return TrainConfig(**{**SPEC_FORM, "methods": ALL, "seeds": (0, 1), "epochs": 3, "warmup_epochs": 15,
                          "folds": ("0", "2"), **kw})


@pytest.fixture(scope="module")
def run_dir(cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    train(small(), cache, out)
    return out


def test_run_directory_has_every_file_and_the_schema(run_dir):
    for name in ("results.json", "results.csv", "curves.csv", "predictions.csv", "config.json",
                 "models.safetensors", "curves.png", "confusion.png"):
        assert (run_dir / name).stat().st_size > 0, name
    res = json.loads((run_dir / "results.json").read_text())
    per_run = pd.read_csv(run_dir / "results.csv")
    assert set(res["methods"]) == set(ALL)
    for m, d in res["methods"].items():
        for s in ("macro_f1", "ua", "wa"):
            assert set(d[s]) == {"mean", "std", "n"} and d[s]["n"] == 4
            assert d[s]["mean"] == pytest.approx(per_run.query("method == @m")[s].mean())
        assert "rel_macro_f1_vs_supervised" in d and "gap_recovered" in d
        assert np.asarray(d["confusion"]).sum() == 2 * 2 * 64  # seeds x test folds x (2 speakers x 32)
    assert res["methods"]["supervised"]["rel_macro_f1_vs_supervised"] == 0
    assert res["methods"]["topline"]["gap_recovered"] == pytest.approx(1.0)
    assert len(res["cache"]["fingerprint"]) == 64 and res["config"]["reward"] == "self+teacher"
    cfg = json.loads((run_dir / "config.json").read_text())
    assert TrainConfig.from_dict(cfg["config"]).replace(device="auto") == small() and cfg["git_revision"]
    rows = pd.read_csv(run_dir / "results.csv")
    assert len(rows) == 5 * 2 * 2 and set(rows.method) == set(ALL)
    means = rows.groupby("method").macro_f1.mean()
    assert means["bgrpo"] == pytest.approx(res["methods"]["bgrpo"]["macro_f1"]["mean"])
    curves = pd.read_csv(run_dir / "curves.csv")
    bg = curves[curves.method == "bgrpo"]
    assert len(bg) == 3 * 4 and {"selection_rate", "selection_precision", "mean_reward", "mean_pred_entropy",
                                  "action_hist", "test_macro_f1"} <= set(bg.columns)


def test_same_command_and_seed_give_identical_numbers(cache, run_dir, tmp_path):
    again = train(small(), cache, tmp_path)
    first = json.loads((run_dir / "results.json").read_text())
    assert again["methods"] == first["methods"]
    assert pd.read_csv(run_dir / "predictions.csv").equals(pd.read_csv(tmp_path / "predictions.csv"))
    assert (run_dir / "models.safetensors").read_bytes() == (tmp_path / "models.safetensors").read_bytes()


def test_saved_policies_are_the_same_bytes_every_time_and_older_runs_still_load(tmp_path):
    """safetensors writes several metadata keys in a random order, so the run is stored under one;
    a file of the former layout ("meta" and "arch" keys) loads the same."""
    from safetensors.torch import load_file, save_file

    torch.manual_seed(0)
    policies = {"bgrpo_f0_s0": Policy(1, 4, 3, head="linear"), "bgrpo_f1_s0": Policy(1, 4, 3)}
    meta = {"classes": ["a", "b", "c"], "layer": "middle", "speaker_norm": True}
    saved = {save_policies(tmp_path / f"{i}.safetensors", policies, meta).read_bytes() for i in range(8)}
    assert len(saved) == 1
    arch = {name: pol.arch for name, pol in policies.items()}
    save_file(load_file(str(tmp_path / "0.safetensors")), str(tmp_path / "old.safetensors"),
              metadata={"meta": json.dumps(meta), "arch": json.dumps(arch)})
    for path in (tmp_path / "0.safetensors", tmp_path / "old.safetensors"):
        loaded, loaded_meta = load_policies(path)
        assert {k: v for k, v in loaded_meta.items() if k != "extra"} == meta
        assert {name: pol.arch for name, pol in loaded.items()} == arch
        for name, pol in loaded.items():
            assert all(
                torch.equal(a, b) for a, b in zip(pol.state_dict().values(), policies[name].state_dict().values())
            )


def test_saved_policies_reproduce_the_run_predictions(cache, run_dir):
    from trainer.inputs.fold_jobs import prepared_cache

    policies, meta = load_policies(run_dir / "models.safetensors")
    assert sorted(policies) == ["bgrpo_f0_s0", "bgrpo_f0_s1", "bgrpo_f2_s0", "bgrpo_f2_s1"]
    prepared = prepared_cache(str(cache), meta["layer"], meta["speaker_norm"])
    x, table = prepared.features, prepared.table
    test = np.flatnonzero(table.fold.to_numpy() == 2)
    pol = policies["bgrpo_f2_s1"]
    pred = pol.probs(pol.standardize(torch.as_tensor(x.rows(test)))).argmax(1).numpy()
    saved = pd.read_csv(run_dir / "predictions.csv").query("method == 'bgrpo' and fold == 2 and seed == 1")
    assert [meta["classes"][i] for i in pred] == saved.pred.tolist()


def test_fast_macro_f1_equals_scikit_learn():
    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 5, 200), rng.integers(0, 4, 200)
    assert fast_macro_f1(y, p, 5) == pytest.approx(100 * f1_score(y, p, average="macro"))
    assert relative_gain(60.0, 50.0) == pytest.approx(20.0) and gap_recovered(60, 50, 70) == pytest.approx(0.5)
    assert np.isnan(relative_gain(12.0, 0.0))  # a supervised run that scored 0 (was ZeroDivisionError)


def test_refit_update_with_balanced_actions(cache, tmp_path):
    cfg = small(methods=("bgrpo",), seeds=(0,), folds=("0",), update="refit", refit_rounds=2, action="balanced",
                reward="assign", baseline="class", adv_std=True)
    res = train(cfg, cache, tmp_path)
    curves = pd.read_csv(tmp_path / "curves.csv").query("method == 'bgrpo'")
    assert curves.epoch.tolist() == [0, 1] and (curves.selection_rate > 0).all()
    hist = [list(map(int, h.split("|"))) for h in curves.action_hist]
    assert all(max(h) - min(h) <= 2 for h in hist)  # balanced actions follow the (uniform) labelled prior
    pred = pd.read_csv(tmp_path / "predictions.csv").query("method == 'bgrpo'")
    assert res["methods"]["bgrpo"]["macro_f1"]["mean"] == pytest.approx(
        100 * f1_score(pred.label, pred.pred, labels=sorted(set(pred.label)), average="macro", zero_division=0))


def test_external_unlabelled_caches_join_the_pool(cache, tmp_path, synthetic_cache):
    ext = synthetic_cache(tmp_path / "ext.h5", n_classes=4, n_speakers=2, per_class=5, n_folds=1, seed=5, corpus="ext")
    res = train(small(methods=("bgrpo",), seeds=(0,), folds=("1",), unlabeled_cache=str(ext), reward="self",
                      source_gate="off"),
                cache, tmp_path / "a")
    assert res["methods"]["bgrpo"]["macro_f1"]["n"] == 1
    rows = pd.read_csv(tmp_path / "a" / "results.csv")
    assert rows.n_unlabeled.iloc[0] == (4 * 8 * 4 - rows.n_labeled.iloc[0]) + 40
    ext2 = synthetic_cache(
        tmp_path / "ext2.h5", n_classes=4, n_speakers=1, per_class=3, n_folds=1, seed=6, corpus="ext2"
    )
    train(small(methods=("bgrpo",), seeds=(0,), folds=("1",), unlabeled_cache=f"{ext},{ext2}", reward="self",
                source_gate="off"),
          cache, tmp_path / "two")
    assert pd.read_csv(tmp_path / "two" / "results.csv").n_unlabeled.iloc[0] == rows.n_unlabeled.iloc[0] + 12
    other = synthetic_cache(tmp_path / "other.h5", n_classes=4, n_speakers=2, per_class=2, n_folds=1, dim=8)
    with pytest.raises(ValueError, match="same encoder"):
        train(small(methods=("bgrpo",), seeds=(0,), folds=("1",), unlabeled_cache=str(other)), cache, tmp_path / "c")


def test_a_cache_teacher_gives_a_classifier_on_the_other_caches_vectors_matched_by_utt_id(cache, tmp_path):
    """teacher=cache:OTHER.h5: the teacher is trained on OTHER's vectors of the labelled utterances
    with the run's labels, and its probabilities for each pool utterance come from OTHER's row of that
    utt_id. OTHER here: rows in reverse order, its label column all class0 (never read), and vectors a
    one-hot of a code: the true class for labelled rows, the next class for every other pool row; so a
    teacher from OTHER predicts those codes, which no classifier on the run's own cache would."""
    job = prepare_fold(TrainConfig(), str(cache), "1", 0, "cpu")
    table = job.table
    code = job.y.copy()
    pool = job.split.unlabeled
    code[pool[::2]] = (code[pool[::2]] + 1) % 4
    rng = np.random.default_rng(0)
    one_hot = 4.0 * np.eye(4)[code][:, None, :] + 0.1 * rng.normal(size=(len(code), 3, 4))
    other = write_cache_arrays(tmp_path / "other.h5", one_hot[::-1], table.iloc[::-1].assign(label="class0"),
                               {"encoder_id": "other", "window": "full", "sample_rate": 16000})
    cfg = job.cfg.replace(teacher=f"cache:{other}", reward="r4")
    teacher = teacher_for(cfg, None, job, 0)  # the warm-up policy is not a cache teacher's business
    probs = teacher.probs(job.data.x_unl[:], torch.arange(len(pool)))
    assert probs.shape == (len(pool), 4) and torch.allclose(probs.sum(1), torch.ones(len(pool)), atol=1e-5)
    assert probs.argmax(1).tolist() == code[pool].tolist()
    short = write_cache_arrays(tmp_path / "short.h5", one_hot[1:], table.iloc[1:],
                               {"encoder_id": "other", "window": "full", "sample_rate": 16000})
    with pytest.raises(UserError, match=f"teacher cache {short} lacks 1 utterance"):
        teacher_for(cfg.replace(teacher=f"cache:{short}"), None, job, 0)
    res = train(small(methods=("bgrpo",), seeds=(0,), folds=("1",), teacher=f"cache:{other}", reward="r4"),
                cache, tmp_path / "b")  # and `train` runs with it
    assert res["methods"]["bgrpo"]["macro_f1"]["n"] == 1


@pytest.mark.parametrize(
    "bad,msg",
    [
        ({"methods": ("bgrpo", "magic")}, "methods = .*'magic': choose from"),
        ({"labeled_fraction": 0}, "labeled_fraction = 0 leaves no labelled rows: give source"),
        ({"labeled_fraction": 1.5}, r"labeled_fraction = 1.5: must be in \[0, 1\]"),
        ({"layer": "top"}, "layer = 'top'"),
        ({"action": "random"}, "action = 'random': choose"),
        ({"teacher": "big"}, "teacher = 'big'"),
        ({"batch_size": 1}, "batch_size = 1: must be >= 2"),
        ({"lr": "fast"}, "lr = 'fast': a number"),
        ({"adv_std": 1}, "adv_std = 1: true or false"),
    ],
)
def test_config_validation_names_the_flag(bad, msg):
    with pytest.raises(ValueError, match=msg):
        TrainConfig(**bad)
    with pytest.raises(ValueError, match="unknown field"):
        TrainConfig.from_dict({"betaa": 1})


def test_cli_train_prints_the_table_and_fails_cleanly(cache, tmp_path):
    from typer.testing import CliRunner

    from cli import app

    args = ["train", "--cache", str(cache), "--seeds", "0", "--folds", "0", "--set", "refit_rounds=1"]
    ok = CliRunner().invoke(app, args + ["--out", str(tmp_path / "r")])
    assert ok.exit_code == 0, ok.output
    assert "macro-F1" in ok.output and "bgrpo" in ok.output and (tmp_path / "r" / "results.json").exists()
    for extra, msg in (
        (["--folds", "9"], "folds"),
        (["--set", "reward=r7"], "reward"),
        (["--set", "baseline=x"], "baseline"),
        (["--set", "betaa=1"], "unknown field(s) betaa"),
        (["--set", "beta"], "field=value"),
    ):
        bad = CliRunner().invoke(app, args + ["--out", str(tmp_path / "bad")] + extra)
        assert bad.exit_code == 2 and msg in bad.output and not (tmp_path / "bad").exists()
    missing = CliRunner().invoke(app, ["train", "--cache", str(tmp_path / "none.h5")])
    assert missing.exit_code == 2 and "none.h5" in missing.output



def test_ablate_grid_writes_one_combined_table(cache, tmp_path):
    from trainer.ablate import ablate

    grid = tmp_path / "grid.toml"
    grid.write_text('[base]\nmethods = ["supervised", "bgrpo"]\nseeds = [0]\nfolds = ["0", "1"]\nepochs = 2\n'
                    'warmup_epochs = 5\n[grid]\nreward = ["self", "teacher"]\nbeta = [0.0, 0.04]\n')
    table = ablate(cache, grid, tmp_path / "out", workers=1)
    assert len(table) == 2 * 2 * 2 and set(table.method) == {"supervised", "bgrpo"}
    assert {"reward", "beta", "macro_f1_mean", "macro_f1_std", "rel_vs_supervised", "runs"} <= set(table.columns)
    assert (table.runs == 2).all()
    md = (tmp_path / "out" / "ablation.md").read_text()
    assert md.count("\n") == 2 + 8 and "| teacher | 0.04 | bgrpo |" in md
    assert len(pd.read_csv(tmp_path / "out" / "all_runs.csv")) == 4 * 2 * 2


def test_ablate_rejects_unknown_fields(cache, tmp_path):
    from trainer.ablate import ablate

    grid = tmp_path / "grid.toml"
    grid.write_text('[grid]\nrewardz = ["self"]\n')
    with pytest.raises(ValueError, match=r"\[grid\]: unknown field\(s\) rewardz"):
        ablate(cache, grid, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_second_ablate_into_a_busy_folder_is_refused(cache, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from pipeline.run_lock import Locked
    from trainer.ablate import ablate

    grid = tmp_path / "grid.toml"
    grid.write_text('[base]\nmethods = ["supervised"]\nseeds = [0]\nfolds = ["0"]\n[grid]\nl2 = [1.0]\n')
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", "import sys; from pipeline.run_lock import exclusive\n"
                               "with exclusive(sys.argv[1], 'x'):\n print('held', flush=True); sys.stdin.read()",
                               str(out) + ".lock"], cwd=Path(__file__).resolve().parents[1],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "held\n"  # another live ablation holds the folder
    with pytest.raises(Locked, match=f"ablation folder {out} is being written by another process \\(pid {holder.pid}"):
        ablate(cache, grid, out)
    holder.communicate("")
    assert not out.exists()
    assert len(ablate(cache, grid, out)) == 1  # once the holder is done, the same command runs


def test_ablate_named_variants_cross_the_grid(cache, tmp_path):
    from trainer.ablate import ablate

    grid = tmp_path / "grid.toml"
    grid.write_text('[base]\nmethods = ["supervised", "bgrpo"]\nseeds = [0]\nfolds = ["0"]\nrefit_rounds = 2\n'
                    '[grid]\nlabeled_fraction = [0.2, 0.3]\n[variants.recipe]\n'
                    '[variants.policy-only]\nact_on = "policy"\n[variants.literal]\nupdate = "grpo"\nepochs = 2\n'
                    'warmup_epochs = 5\nhead = "mlp"\nsolver = "adam"\n')
    table = ablate(cache, grid, tmp_path / "out", workers=1)
    assert len(table) == 3 * 2 * 2 and list(table.variant.unique()) == ["recipe", "policy-only", "literal"]
    md = (tmp_path / "out" / "ablation.md").read_text()
    assert md.splitlines()[0].startswith("| variant | labeled_fraction | method |")
    assert "| policy-only | 0.3 | bgrpo |" in md
