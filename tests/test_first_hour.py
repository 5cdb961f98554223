"""A new user's first hour: every trap found by following the README on real corpora,
each held by a test that failed on the code before the fix."""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import stat
import traceback
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from test_extract import make_clip, run_cli
from test_manifest_audio import write_tree

from pipeline.cache import load_cache, write_cache_arrays

REPO = Path(__file__).resolve().parents[1]
REAL_RAVDESS = REPO.parent / "shared/corpora/ravdess"
LABELS = ["angry", "happy", "neutral", "sad"]


def folders_corpus(root: Path, speakers=("s1", "s2", "s3"), per_label: int = 1) -> Path:
    """`<label>/<speaker>_<i>.wav` clips: a bring-your-own corpus for the folders adapter."""
    for s, speaker in enumerate(speakers):
        for k, label in enumerate(LABELS):
            for i in range(per_label):
                (root / label).mkdir(parents=True, exist_ok=True)
                make_clip(root / label / f"{speaker}_{i}.wav", 0.6, s * 100 + k * 10 + i, rate=16000, channels=1)
    return root


# --- trap 2: extract --manifest finds the audio; wrong roots stop before encoding; nothing encoded = no cache
def test_extract_manifest_reads_the_corpus_root_recorded_beside_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folders_corpus(tmp_path / "corpora" / "mine")
    run_cli("manifest", "--corpus", "folders", "--root", "corpora/mine", "--speaker-regex", "^(s\\d)_", check_rc=0)
    assert (tmp_path / "manifests/folders.csv.root").read_text().strip() == "../corpora/mine"
    proc = run_cli("extract", "--manifest", "manifests/folders.csv", "--model", "tiny.en", "--window", "trim")
    assert proc.exit_code == 0, proc.output
    assert "12 utterances encoded (0 failed of 12)" in proc.output
    assert len(load_cache(tmp_path / "cache/folders/whisper-tiny.en-trim.h5").table) == 12


def test_a_wrong_root_stops_before_encoding_with_a_hint(tmp_path):
    folders_corpus(tmp_path / "corpus")
    run_cli("manifest", "--corpus", "folders", "--root", tmp_path / "corpus", "--speaker-regex", "^(s\\d)_",
            "--out", tmp_path / "m.csv", check_rc=0)
    out = tmp_path / "c.h5"
    proc = run_cli("extract", "--manifest", tmp_path / "m.csv", "--root", tmp_path, "--model", "tiny.en",
                   "--window", "trim", "--out", out)
    assert proc.exit_code == 2, proc.output
    assert "12 of 12 files of the manifest are not under" in proc.output and "pass --root" in proc.output
    assert not out.exists() and not list(tmp_path.glob("c.h5*"))


def test_a_run_where_every_file_fails_writes_no_complete_cache(tmp_path):
    folders_corpus(tmp_path / "corpus")
    csv = tmp_path / "m.csv"
    run_cli("manifest", "--corpus", "folders", "--root", tmp_path / "corpus", "--speaker-regex", "^(s\\d)_",
            "--out", csv, check_rc=0)
    for wav in (tmp_path / "corpus").rglob("*.wav"):
        wav.write_bytes(b"RIFF broken")
    out = tmp_path / "c.h5"
    proc = run_cli("extract", "--manifest", csv, "--model", "tiny.en", "--window", "trim", "--out", out)
    assert proc.exit_code == 2, proc.output
    assert "all 12 files failed, so no cache was written" in proc.output
    assert not out.exists() and not (tmp_path / "c.h5.partial").exists()


def test_a_cache_where_everything_failed_is_encoded_again_not_called_complete(tmp_path):
    folders_corpus(tmp_path / "corpus")
    csv = tmp_path / "m.csv"
    run_cli("manifest", "--corpus", "folders", "--root", tmp_path / "corpus", "--speaker-regex", "^(s\\d)_",
            "--out", csv, check_rc=0)
    out = tmp_path / "c.h5"
    command = ("extract", "--manifest", csv, "--model", "tiny.en", "--window", "trim", "--out", out)
    run_cli(*command, check_rc=0)
    with h5py.File(out, "r+") as f:  # what the old code left after a wrong --root: complete, nothing ok
        f["ok"][...] = False
    proc = run_cli(*command)
    assert proc.exit_code == 0, proc.output
    assert "holds no encoded utterance" in proc.output and "12 utterances encoded (0 failed of 12)" in proc.output
    assert len(load_cache(out).table) == 12


# --- trap 3: extract --corpus takes every adapter option ------------------------------------------------
def test_extract_corpus_folders_takes_the_adapter_options(tmp_path):
    folders_corpus(tmp_path / "corpus")
    out = tmp_path / "c.h5"
    proc = run_cli("extract", "--corpus", "folders", "--root", tmp_path / "corpus", "--speaker-regex", "^(s\\d)_",
                   "--n-folds", "3", "--model", "tiny.en", "--window", "trim", "--out", out)
    assert proc.exit_code == 0, proc.output
    assert sorted(load_cache(out).table["fold"].unique().tolist()) == [0, 1, 2]


# --- trap 4: the brief's commands: a data home for corpora, train finds its cache ---------------------
def test_root_defaults_to_the_data_home(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BGRPO_SER_DATA", raising=False)
    proc = run_cli("manifest", "--corpus", "emodb")
    assert proc.exit_code == 2
    assert "$BGRPO_SER_DATA/emodb ($BGRPO_SER_DATA is not set)" in proc.output and "data/emodb" in proc.output
    write_tree(tmp_path / "corpora" / "emodb", ["wav/03a01Fa.wav", "wav/08b10Wb.wav"])
    monkeypatch.setenv("BGRPO_SER_DATA", str(tmp_path / "corpora"))
    proc = run_cli("manifest", "--corpus", "emodb", "--n-folds", "2")
    assert proc.exit_code == 0, proc.output
    assert "utterances: 2" in proc.output
    monkeypatch.delenv("BGRPO_SER_DATA")
    shutil.move(tmp_path / "corpora", tmp_path / "data")
    assert run_cli("manifest", "--corpus", "emodb", "--n-folds", "2").exit_code == 0


def test_train_finds_the_cache_from_the_corpus_or_the_only_one(tmp_path, monkeypatch, synthetic_cache):
    from pipeline.cache import CacheError
    from pipeline.locate import find_cache

    monkeypatch.chdir(tmp_path)
    proc = run_cli("train", "--seeds", "0", "--method", "supervised")
    assert proc.exit_code == 2 and "no cache in cache/ (it has none)" in proc.output
    synthetic_cache(tmp_path / "cache/ravdess/whisper-base-trim.h5", n_speakers=6, per_class=8, n_folds=2)
    proc = run_cli("train", "--reward", "self+teacher", "--seeds", "0", "--method", "supervised,bgrpo",
                   "--out", "runs/r")
    assert proc.exit_code == 0, proc.output
    assert "training on cache/ravdess/whisper-base-trim.h5" in proc.output
    synthetic_cache(tmp_path / "cache/ravdess/whisper-base-full.h5", n_speakers=6, per_class=8, n_folds=2)
    synthetic_cache(tmp_path / "cache/casia/whisper-base-trim.h5", n_speakers=6, per_class=8, n_folds=2)
    assert find_cache(corpus="casia") == Path("cache/casia/whisper-base-trim.h5")
    assert find_cache(corpus="ravdess", model="whisper-base", window="full") == Path(
        "cache/ravdess/whisper-base-full.h5"
    )
    with pytest.raises(CacheError, match="2 caches in cache/ fit corpus ravdess.*--window"):
        find_cache(corpus="ravdess")
    with pytest.raises(CacheError, match="no cache for corpus emodb"):
        find_cache(corpus="emodb")


# --- trap 5: bad caches are named and explained -------------------------------------------------------
def test_bad_caches_name_the_file_and_say_what_it_is(tmp_path):
    from pipeline.cache import CacheError

    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    proc = run_cli("train", "--cache", notes, "--seeds", "0")
    assert proc.exit_code == 2
    assert f"{notes} is not a cache: it is a text file, not an HDF5 file" in proc.output.replace("\n", " ")
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = np.zeros(3)
    proc = run_cli("info", other)
    assert proc.exit_code == 2 and "is an HDF5 file but not a bgrpo-ser cache" in proc.output
    failed = tmp_path / "failed.h5"
    table = pd.DataFrame({"utt_id": ["a", "b"], "label": ["sad", "angry"], "speaker": ["s", "t"],
                          "ok": [False, False], "error": ["missing file", "missing file"], "fold": [0, 1]})
    write_cache_arrays(failed, np.zeros((2, 2, 4)), table, {"encoder_id": "x"})
    with pytest.raises(CacheError, match="holds no encoded utterance: all 2 files failed[\\s\\S]*a: missing file"):
        load_cache(failed)


# --- trap 6: outputs honour the umask --------------------------------------------------------------------
def test_outputs_are_shareable_under_umask_022(tmp_path, monkeypatch, synthetic_cache):
    monkeypatch.chdir(tmp_path)
    old = os.umask(0o022)
    try:
        synthetic_cache(tmp_path / "cache/x/whisper-base-trim.h5", n_speakers=6, per_class=8, n_folds=2)
        run_cli("train", "--cache", "cache/x/whisper-base-trim.h5", "--seeds", "0", "--method", "supervised",
                "--out", "run", check_rc=0)
        write_tree(tmp_path / "corpus", ["wav/03a01Fa.wav", "wav/08b02Wb.wav"])
        run_cli("manifest", "--corpus", "emodb", "--root", "corpus", "--n-folds", "2", check_rc=0)
    finally:
        os.umask(old)
    for path in ("manifests/emodb.csv", "run/models.safetensors", "run/results.json", "manifests/emodb.csv.root"):
        assert stat.S_IMODE((tmp_path / path).stat().st_mode) == 0o644, path


# --- trap 7: what a first run shows --------------------------------------------------------------------
def test_tiny_data_gives_one_clear_warning_and_a_legend(tmp_path, synthetic_cache):
    synthetic_cache(tmp_path / "tiny.h5", n_classes=4, n_speakers=4, per_class=3, n_folds=2)
    proc = run_cli("train", "--cache", tmp_path / "tiny.h5", "--seeds", "0", "--workers", "1",
                   "--out", tmp_path / "run")
    assert proc.exit_code == 0, proc.output
    assert proc.output.count("warning: too few labelled utterances per class") == 1
    assert "UserWarning" not in proc.output and "Only one sample available" not in proc.output
    assert "Scores in %" in proc.output and "collapsed = runs" in proc.output


def test_ablate_help_shows_the_grid_file_sections():
    proc = run_cli("ablate", "--help")
    text = re.sub(r"[\s│]+", " ", proc.output)
    assert "[base] fixed config fields, [grid] field = [values, ...]" in text


def test_the_demo_labels_enough_utterances_per_class():
    from trainer.demo import DEMO_LABELLED_PER_CLASS, demo_label_fraction
    from trainer.inputs.protocol import class_quota

    # the default demo corpus: 8 speakers x 4 sentences x 2 takes per class, 4 folds of 2 speakers
    table = pd.DataFrame([{"label": label, "fold": s // 2} for s in range(8) for label in LABELS for _ in range(8)])
    fraction, per_class = demo_label_fraction(table)
    assert (fraction, per_class) == (0.2, 10)  # 48 training utterances per class and fold: 10% would label 5
    assert class_quota(48, fraction) >= DEMO_LABELLED_PER_CLASS > class_quota(48, fraction - 0.05)
    small = table[table["fold"] < 2].assign(fold=lambda t: t["fold"] * 2)  # 16 per class, 2 folds of 16
    assert demo_label_fraction(small) == (0.5, 8)  # never labels most of the pool away


# --- trap 8: install lines --------------------------------------------------------------------------------
def test_readme_gives_the_cpu_wheel_index_and_ci_keeps_the_local_wheel():
    readme = (REPO / "README.md").read_text()
    assert "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" in readme
    assert "GPU" in readme[:readme.index("## Usage")]
    assert "pip install torch==2.13.0 && pip install -e" in (REPO / ".ci/run").read_text()


# --- the README's own command sequence, as written, on a small real RAVDESS subset ---------------------
def readme_usage_commands() -> list[list[str]]:
    block = re.search(r"## Usage.*?```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S).group(1)
    lines = [line.split("  #")[0].strip() for line in block.splitlines() if line.startswith("python cli.py")]
    return [shlex.split(line)[2:] for line in lines]


@pytest.mark.slow
def test_readme_sequence_runs_on_real_ravdess(tmp_path, monkeypatch):
    if not REAL_RAVDESS.is_dir():
        pytest.skip(f"{REAL_RAVDESS} not present")
    subset = tmp_path / "shared/corpora/ravdess"  # the README's ../shared path, seen from tmp_path/project
    for actor in ("Actor_01", "Actor_05"):  # folds 0 and 1
        (subset / actor).mkdir(parents=True)
        for emotion in range(1, 9):
            for name in sorted((REAL_RAVDESS / actor).glob(f"03-01-{emotion:02d}-01-0*-01-*"))[:2]:
                os.symlink(name, subset / actor / name.name)
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)
    commands = readme_usage_commands()
    assert [c[0] for c in commands] == ["manifest", "extract", "info", "train", "ablate", "predict"]
    for command in commands:
        if command[0] == "ablate":
            continue  # a grid of settings: the same cache lookup as train, minutes of work
        if command[0] == "train":
            command += ["--seeds", "0"]
        proc = run_cli(*command)
        assert proc.exit_code == 0, (command, proc.output, traceback.format_exception(*proc.exc_info))
        if command[0] == "manifest":
            assert "utterances: 32" in proc.output
        if command[0] == "info":
            assert "32 ok, 0 failed" in proc.output
        if command[0] == "predict":
            assert proc.output.count("\t") >= 2 * 2
            assert "note:" not in proc.output  # --text-regex gives RAVDESS's prompts (the statement field)
    results = json.loads(next(Path("runs").glob("*/results.json")).read_text())
    assert results["cache"]["n_utterances"] == 32
