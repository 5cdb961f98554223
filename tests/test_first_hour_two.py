"""A new user's first hour, round two: each trap found by following the README on a fresh clone
(all labels, an --out that is a text file, the data link, corpus subsets, a changed manifest, a silent
`label`, what the tables and plots say, the README's speed-ups), held by a test that failed before."""
from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
from test_extract import run_cli
from test_first_hour import folders_corpus
from test_manifest_audio import write_tree

from pipeline.cache import load_cache, write_cache_arrays

REPO = Path(__file__).resolve().parents[1]
CANONICAL = {"class0": "angry", "class1": "happy", "class2": "neutral", "class3": "sad"}


def folders_manifest(tmp_path: Path) -> Path:
    """The manifest (m.csv) of a 12-clip folders corpus under tmp_path/corpus."""
    folders_corpus(tmp_path / "corpus")
    run_cli("manifest", "--corpus", "folders", "--root", tmp_path / "corpus", "--speaker-regex", "^(s\\d)_",
            "--out", tmp_path / "m.csv", check_rc=0)
    return tmp_path / "m.csv"


def ravdess_names(actors, per_actor: int = 4) -> list[str]:
    """RAVDESS-coded file names (speech, two emotions, two statements) of the given actor numbers."""
    return [f"Actor_{a:02d}/03-01-{emotion:02d}-01-{statement:02d}-01-{a:02d}.wav"
            for a in actors for emotion in (3, 5) for statement in (1, 2)][:per_actor * len(actors)]


# --- 1: every label given: no pool, so the pool methods equal supervised, and the run says so -----------
def test_all_labels_make_bgrpo_equal_supervised_and_say_so(tmp_path, synthetic_cache):
    cache = synthetic_cache(tmp_path / "c.h5", n_speakers=6, per_class=8, n_folds=3)
    proc = run_cli(
        "train",
        "--cache",
        cache,
        "--labeled-fraction",
        "1",
        "--method",
        "supervised,bgrpo,pseudo-label,dino",
        "--seeds",
        "0",
        "--workers",
        "1",
        "--out",
        tmp_path / "run",
    )
    assert proc.exit_code == 0, proc.output
    assert ("warning: --labeled-fraction 1 labels every training utterance of fold(s) 0, 1, 2: there is no unlabelled "
            "pool, so bgrpo, pseudo-label, dino equal supervised there") in proc.output
    methods = json.loads((tmp_path / "run/results.json").read_text())["methods"]
    for name in ("bgrpo", "pseudo-label", "dino"):
        assert methods[name]["per_fold_macro_f1"] == methods["supervised"]["per_fold_macro_f1"]


def test_no_pool_warning_without_pool_methods_or_when_transductive(tmp_path, synthetic_cache):
    import warnings

    from trainer.inputs.protocol import EmptyPoolWarning, warn_empty_pool

    table = load_cache(synthetic_cache(tmp_path / "c.h5", n_speakers=4, per_class=4, n_folds=2)).table
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warn_empty_pool(table, ["0", "1"], 1.0, ["supervised", "topline"])
        warn_empty_pool(table, ["0", "1"], 1.0, ["bgrpo"], transductive=True)
        warn_empty_pool(table, ["0", "1"], 0.5, ["bgrpo"])
        assert not caught
        warn_empty_pool(table, ["0", "1"], 0.99, ["bgrpo"])  # round(0.99 * 8) = 8: every row labelled
    assert [w.category for w in caught] == [EmptyPoolWarning]


# --- 2: extract --out over a file that is not a cache ---------------------------------------------------
def test_extract_refuses_to_write_over_a_text_file(tmp_path):
    csv = folders_manifest(tmp_path)
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    proc = run_cli("extract", "--manifest", csv, "--model", "tiny.en", "--window", "trim", "--out", notes)
    assert proc.exit_code == 2, proc.output
    text = " ".join(proc.output.split())
    assert (
        f"{notes} is not a cache: it is a text file, not an HDF5 file; extract writes only over its own caches" in text
    )
    assert "Traceback" not in proc.output and notes.read_text() == "my notes\n"


def test_stress_merge_and_rechunk_never_write_over_a_text_file(tmp_path, synthetic_cache):
    cache = synthetic_cache(tmp_path / "c.h5", n_speakers=4, per_class=4, n_folds=2)
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    for command in (["stress", "--cache", cache, "--kind", "confounded", "--out", notes],
                    ["merge", cache, "--out", notes], ["rechunk", notes]):
        proc = run_cli(*command)
        assert proc.exit_code == 2, (command, proc.output)
        text = " ".join(proc.output.split())
        assert text.startswith(f"error: {notes} is not a cache: it is a text file"), text
    assert notes.read_text() == "my notes\n"


# --- 3: the README's data link, a dangling link named as such, data/ ignored ----------------------------
def test_the_readme_data_link_resolves_and_a_dangling_one_is_named(tmp_path, monkeypatch):
    readme = (REPO / "README.md").read_text()
    link = re.search(r"`(mkdir -p data && ln -s [^`]*data/ravdess)`", readme)
    assert link, "the README gives a data link command that makes data/ first"
    write_tree(tmp_path / "shared/corpora/ravdess", ravdess_names([1, 5]))
    project = tmp_path / "project"
    project.mkdir()
    subprocess.run(["bash", "-c", link.group(1)], cwd=project, check=True)
    assert (project / "data/ravdess/Actor_01").is_dir()

    monkeypatch.chdir(project)
    monkeypatch.delenv("BGRPO_SER_DATA", raising=False)
    assert run_cli("manifest", "--corpus", "ravdess").exit_code == 0
    (project / "data/ravdess").unlink()
    os.symlink("../shared/corpora/ravdess", project / "data/ravdess")  # the old README's link: dangles
    for command in (["manifest", "--corpus", "ravdess"], ["extract", "--corpus", "ravdess"],
                    ["manifest", "--corpus", "ravdess", "--root", "data/ravdess"]):
        proc = run_cli(*command)
        assert proc.exit_code == 2, proc.output
        text = " ".join(proc.output.split())
        assert "data/ravdess is a symlink to ../shared/corpora/ravdess, which does not exist" in text
        assert 'ln -sfn "$(realpath' in text
    assert "/data/" in (REPO / ".gitignore").read_text().split()


# --- 4: a part of a corpus: usable, or refused at manifest time with what to do -------------------------
def test_a_one_fold_subset_is_refused_at_manifest_time_with_what_to_do(tmp_path):
    write_tree(tmp_path / "sub", ravdess_names([1, 2, 3, 4]))  # RAVDESS's fold 0 only
    out = tmp_path / "m.csv"
    proc = run_cli("manifest", "--corpus", "ravdess", "--root", tmp_path / "sub", "--out", out)
    assert proc.exit_code == 2, proc.output
    text = " ".join(proc.output.split())
    assert "all fall in one fold (0), but `train` needs at least 2 speaker folds" in text
    assert "--speakers" in text and "--n-folds 2" in text
    assert not out.exists()
    proc = run_cli("extract", "--corpus", "ravdess", "--root", tmp_path / "sub", "--out", tmp_path / "c.h5")
    assert proc.exit_code == 2 and "all fall in one fold" in proc.output and not (tmp_path / "c.h5").exists()
    proc = run_cli("manifest", "--corpus", "ravdess", "--root", tmp_path / "sub", "--out", out, "--n-folds", "2")
    assert proc.exit_code == 0, proc.output
    assert "folds: 2 (0: 8, 1: 8)" in proc.output and "replaces the corpus's standard folds" in proc.output


def test_speakers_keeps_a_whole_fold_subset_and_symlinked_folders_count(tmp_path):
    write_tree(tmp_path / "ravdess", ravdess_names([1, 2, 5, 6, 9]))
    proc = run_cli("manifest", "--corpus", "ravdess", "--root", tmp_path / "ravdess", "--out", tmp_path / "m.csv",
                   "--speakers", "Actor_01,Actor_05")
    assert proc.exit_code == 0, proc.output
    table = pd.read_csv(tmp_path / "m.csv")
    assert sorted(table["speaker"].unique()) == ["Actor_01", "Actor_05"] and sorted(table["fold"].unique()) == [0, 1]
    proc = run_cli("manifest", "--corpus", "ravdess", "--root", tmp_path / "ravdess", "--out", tmp_path / "x.csv",
                   "--speakers", "01")
    assert (
        proc.exit_code == 2 and "--speakers: 01 not in this corpus; its speakers are Actor_01, Actor_02" in proc.output
    )
    links = tmp_path / "links"  # a subset made of links to speaker folders
    links.mkdir()
    for actor in ("Actor_01", "Actor_09"):
        os.symlink(tmp_path / "ravdess" / actor, links / actor)
    os.symlink(links, links / "Actor_01" / "loop")  # a link back up the tree does not loop
    proc = run_cli("manifest", "--corpus", "ravdess", "--root", links, "--out", tmp_path / "l.csv")
    assert proc.exit_code == 0, proc.output
    assert "utterances: 8" in proc.output and "folds: 2 (0: 4, 2: 4)" in proc.output
    assert "--speakers" in (REPO / "README.md").read_text()


def test_train_on_a_one_fold_cache_says_so_before_any_work(tmp_path, synthetic_cache):
    cache = synthetic_cache(tmp_path / "c.h5", n_speakers=4, per_class=4, n_folds=1)
    proc = run_cli("train", "--cache", cache, "--seeds", "0", "--out", tmp_path / "run")
    assert proc.exit_code == 2, proc.output
    text = " ".join(proc.output.split())
    assert "every utterance of the cache is in fold 0, but a speaker-independent test needs at least 2 folds" in text
    assert "labelled" not in text and not (tmp_path / "run").exists()


def test_inner_validation_on_two_folds_says_it_needs_three(tmp_path, synthetic_cache):
    cache = synthetic_cache(tmp_path / "c.h5", n_speakers=4, per_class=4, n_folds=2)
    proc = run_cli("train", "--cache", cache, "--seeds", "0", "--set", "inner_validation=true", "--out", tmp_path / "r")
    assert proc.exit_code == 2, proc.output
    assert "so it needs at least 3 folds" in " ".join(proc.output.split()) and "labelled" not in proc.output


# --- 5: a changed manifest, said in words -----------------------------------------------------------------
def test_a_changed_manifest_is_described_in_words(tmp_path):
    csv = folders_manifest(tmp_path)
    out = tmp_path / "c.h5"
    run_cli("extract", "--manifest", csv, "--model", "tiny.en", "--window", "trim", "--out", out, check_rc=0)
    table = pd.read_csv(csv, keep_default_na=False, dtype=str)
    table.loc[table["utt_id"] == "angry__s1_0", "label"] = "sad"
    table[table["utt_id"] != "neutral__s2_0"].to_csv(csv, index=False)
    proc = run_cli("extract", "--manifest", csv, "--model", "tiny.en", "--window", "trim", "--out", out)
    assert proc.exit_code == 2, proc.output
    text = " ".join(proc.output.split())
    assert ("the manifest is not the one it was made from: 1 utterance(s) gone (e.g. neutral__s2_0); "
            "label changed for 1 (e.g. angry__s1_0: 'angry' -> 'sad')") in text
    assert not re.search(r"[0-9a-f]{64}", proc.output)


def test_manifest_changes_names_new_rows_and_order():
    from data_manifests.summary import manifest_changes

    old = pd.DataFrame({"utt_id": ["a", "b"], "fold": [0, 1]})
    assert manifest_changes(old, pd.DataFrame({"utt_id": ["a", "b", "c"], "fold": [0, 1, 1]}),
                            ["utt_id", "fold"]) == "1 utterance(s) new (e.g. c)"
    assert manifest_changes(old, old.iloc[::-1], ["utt_id", "fold"]) == "the same utterances in another order"


# --- 6: label says what it is doing -----------------------------------------------------------------------
def test_label_reports_each_step(tmp_path, synthetic_cache):
    syn = load_cache(synthetic_cache(tmp_path / "s.h5", n_speakers=4, per_class=6, n_folds=2))
    cache = write_cache_arrays(
        tmp_path / "c.h5",
        syn.features,
        syn.table.assign(label=syn.table["label"].map(CANONICAL)),
        {"encoder_id": "synthetic", "window": "full"},
    )
    labels = syn.table[["utt_id"]].assign(
        label=syn.table["label"].map(CANONICAL).where(np.arange(len(syn.table)) % 4 == 0, "")
    )
    labels.to_csv(tmp_path / "labels.csv", index=False)
    proc = run_cli("label", "--cache", cache, "--labels", tmp_path / "labels.csv", "--out", tmp_path / "out.csv",
                   "--seeds", "0,1")
    assert proc.exit_code == 0, proc.output
    steps = [line for line in proc.output.splitlines() if line.startswith("seed ") or "to predict:" in line]
    assert steps == ["24 given labels, 72 utterances to predict: choosing the layer and speaker normalisation from "
                     "the given labels",
                     "seed 0 (1 of 2): warm-up, then B-GRPO (3 rounds) over the 72 unlabelled utterances",
                     "seed 1 (2 of 2): warm-up, then B-GRPO (3 rounds) over the 72 unlabelled utterances"]


# --- 7: what the tables' numbers are ----------------------------------------------------------------------
def test_tables_say_what_their_numbers_are(tmp_path, synthetic_cache):
    cache = synthetic_cache(tmp_path / "c.h5", n_speakers=6, per_class=8, n_folds=3)
    proc = run_cli("train", "--cache", cache, "--method", "supervised,bgrpo", "--seeds", "0,1", "--out", tmp_path / "a")
    assert proc.exit_code == 0, proc.output
    text = " ".join(proc.output.split())
    assert "Scores in %, mean ± std over 3 fold(s) x 2 seed(s)" in text
    assert "UA = unweighted accuracy (mean of the per-class recalls); WA = weighted accuracy" in text
    assert "G = gap recovered" not in text  # no topline, so no G column filled
    proc = run_cli("train", "--cache", cache, "--method", "supervised,topline", "--seeds", "0", "--out", tmp_path / "b")
    assert "G = gap recovered" in proc.output and "over 3 fold(s) x 1 seed(s)" in proc.output
    grid = tmp_path / "grid.toml"
    grid.write_text('[base]\nmethods = ["supervised"]\nseeds = [0]\n[grid]\nl2 = [1.0, 10.0]\n')
    proc = run_cli("ablate", "--cache", cache, "--grid", grid, "--workers", "1", "--out", tmp_path / "ab")
    assert proc.exit_code == 0, proc.output
    assert "UA = unweighted accuracy" in proc.output and "G = gap recovered" not in proc.output


# --- 8: the plots say what they show ----------------------------------------------------------------------
def test_plots_label_rounds_show_single_fits_and_explain_precision(tmp_path, synthetic_cache):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.collections import LineCollection

    from trainer.plots import confusion_figure, curves_figure

    cache = synthetic_cache(tmp_path / "c.h5", n_speakers=6, per_class=8, n_folds=3)
    run_cli("train", "--cache", cache, "--method", "bgrpo,supervised,pseudo-label", "--seeds", "0,1",
            "--out", tmp_path / "run", check_rc=0)
    curves = pd.read_csv(tmp_path / "run/curves.csv")
    summary = json.loads((tmp_path / "run/results.json").read_text())
    fig = curves_figure(curves, summary)
    f1, precision = fig.axes[0], fig.axes[1]
    assert f1.get_xlabel() == "round (select from the pool, then refit)"
    assert all(float(t).is_integer() for t in f1.get_xticks())
    single = [c for c in f1.collections if isinstance(c, LineCollection)]
    assert [c.get_label() for c in single] == ["supervised (one fit)"] and single[0].get_linestyle()[0][1]
    assert "hidden label" in precision.get_title()
    legend = [t.get_text() for t in precision.get_legend().get_texts()]
    assert legend and all(re.search(r"\(selects \d+% of the pool\)", t) for t in legend)
    title = confusion_figure(summary, summary["cache"]["classes"], "bgrpo").axes[0].get_title()
    assert "counts summed over 3 fold(s) x 2 seed(s)" in title
    assert (tmp_path / "run/curves.png").stat().st_size and (tmp_path / "run/confusion.png").stat().st_size


def test_x_label_says_epochs_where_a_method_counts_epochs():
    from trainer.plots import x_label

    assert x_label(["bgrpo", "pseudo-label"], refit=False) == "epoch (pseudo-label: round)"
    assert x_label(["dino"], refit=True) == "epoch"


# --- 9: one trim speed-up -----------------------------------------------------------------------------------
def test_every_trim_speed_up_quoted_is_the_measured_one():
    """The speed-up the docs quote for --window trim is the ratio of the two throughputs that
    bench/extract_speed.py measured (docs/PERFORMANCE.md's extraction row), not a number of its own."""
    (row,) = [line for line in (REPO / "docs/PERFORMANCE.md").read_text().splitlines()
              if line.startswith("| extraction vs the usual way | `python bench/extract_speed.py")]
    full = float(re.search(r"ours full window: ([\d.]+) utt/s", row).group(1))
    trim = float(re.search(r"ours trim window: ([\d.]+) utt/s", row).group(1))
    text = (REPO / "README.md").read_text() + "".join(p.read_text() for p in (REPO / "docs").glob("*.md"))
    quoted = [float(m) for line in text.splitlines() if "trim" in line
              for m in re.findall(r"~?(\d+(?:\.\d+)?)x (?:faster|cheaper)", line)]
    quoted += [float(m) for m in re.findall(r"\*\*([\d.]+)x\*\* our full window", row)]
    assert len(quoted) >= 2, quoted  # PERFORMANCE.md's own and at least one elsewhere (README, EXTRACTION.md)
    low, high = (trim - 0.005) / (full + 0.005), (trim + 0.005) / (full - 0.005)  # throughputs given to 0.01
    assert all(low - 0.05 <= q <= high + 0.05 for q in quoted), (quoted, low, high)  # quotes given to 0.1
