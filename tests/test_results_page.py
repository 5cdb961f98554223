"""bench/results_page.py: the page renders from tiny hand-made results.json files; the skip logic
reruns only when the config or the cache fingerprint changed."""
from __future__ import annotations

import json

import pytest

from bench.results_page import (EMOBOX_RAVDESS, identity, is_current, load_results, main, plan, render,
                                run_config)
from trainer.config import TrainConfig


def summary(f1, ua=None, wa=None, std=1.0, n=18, **extra):
    s = lambda m: {"mean": m, "std": std, "n": n}  # noqa: E731
    return {"macro_f1": s(f1), "ua": s(ua if ua is not None else f1 + 1), "wa": s(wa if wa is not None else f1 + 2),
            "collapsed_runs": 0, **extra}


def run_json(methods: dict, reward="self+teacher", fraction=0.1, layer="weighted", seeds=(0, 1, 2), folds=None,
             window="trim"):
    cfg = TrainConfig(methods=tuple(methods), reward=reward, labeled_fraction=fraction, layer=layer, seeds=seeds,
                      folds=folds).to_dict()
    return {"methods": methods, "config": cfg, "git_revision": "abc123",
            "cache": {"path": f"cache/ravdess/whisper-base-{window}.h5", "fingerprint": f"{window}fp" * 8,
                      "encoder_id": "base", "window": window, "classes": list("abcdefgh"), "n_utterances": 1440}}


def write(results_dir, name, data):
    d = results_dir / name
    d.mkdir(parents=True)
    (d / "results.json").write_text(json.dumps(data))


@pytest.fixture
def results_dir(tmp_path):
    rd = tmp_path / "results"
    default_reward = TrainConfig().reward
    main_methods = {"supervised": summary(50.0), "pseudo-label": summary(52.0), "dino": summary(49.0),
                    "bgrpo": summary(55.0), "topline": summary(70.0)}
    write(rd, "main-f0.1", run_json(main_methods, reward=default_reward))
    other = [r for r in ("self", "teacher", "self+teacher") if r != default_reward]
    write(
        rd, f"reward-{other[0]}-f0.1", run_json({"supervised": summary(50.0), "bgrpo": summary(60.0)}, reward=other[0])
    )
    write(rd, "window-trim", run_json({"supervised": summary(50.0),
                                       "bgrpo": summary(55.0, rel_macro_f1_vs_supervised=10.0, gap_recovered=0.25),
                                       "topline": summary(70.0)}))
    for i, f1 in enumerate((40.0, 61.0, 45.0)):
        write(rd, f"layer-{i}", run_json({"supervised": summary(f1), "bgrpo": summary(f1 + 1)}, layer=str(i)))
    (rd / "ablation").mkdir()
    (rd / "ablation" / "research.md").write_text("| reward | method |\n|---|---|\n| self | bgrpo |\n")
    return rd


def test_render_computes_rel_and_g_from_the_same_fraction(results_dir):
    page = render(load_results(results_dir), "python bench/results_page.py", "deadbeef", "2026-11-25 10:00 UTC",
                  None, [("research", (results_dir / "ablation/research.md").read_text())], ["results/x/curves.png"])
    lines = page.splitlines()
    default_reward = TrainConfig().reward
    row = next(line for line in lines if f"| bgrpo-{default_reward} (default) |" in line)
    # rel = (55 - 50) / 50 = +10.0 %; G = (55 - 50) / (70 - 50) = 0.25
    assert "| 55.0 ± 1.0 | 56.0 ± 1.0 | 57.0 ± 1.0 | +10.0% | +0.25 |" in row
    other = next(r for r in ("self", "teacher", "self+teacher") if r != default_reward)
    row = next(line for line in lines if f"| bgrpo-{other} |" in line)
    assert "+20.0%" in row and "+0.50" in row  # (60 - 50) / 50, (60 - 50) / (70 - 50)
    assert sum("topline" in line and line.startswith("| 100% |") for line in lines) == 1
    assert "Regenerate: `python bench/results_page.py`" in page and "`deadbeef`" in page and "`abc123`" in page
    assert "fingerprint `trimfptrimfptrim…`" in page
    assert "Best single layer on the **test** folds (supervised macro-F1): **1**" in page
    assert "2 (last)" in page and "(default, = window-trim run)" in page
    assert f"| {EMOBOX_RAVDESS['macro_f1']} |" in page and "large-v3" in page
    assert "| self | bgrpo |" in page and "![curves](results/x/curves.png)" in page
    assert "PARTIAL PROTOCOL" not in page


def test_render_says_when_full_cache_or_protocol_is_missing(results_dir):
    data = json.loads((results_dir / "main-f0.1/results.json").read_text())
    data["config"]["folds"] = ["1", "2"]
    (results_dir / "main-f0.1/results.json").write_text(json.dumps(data))
    page = render(load_results(results_dir), "cmd", "rev", "date", "python cli.py extract --window full", [], [])
    assert "PARTIAL PROTOCOL" in page
    assert "The full-window cache is missing" in page and "    python cli.py extract --window full" in page
    assert "_None yet" in page and "## Learning curves" not in page


def test_is_current_checks_config_and_fingerprint(tmp_path):
    spec = plan(7)[0]
    cfg = run_config(spec, [0], ["1", "2"], workers=2)
    path = tmp_path / "results.json"
    assert not is_current(path, cfg, "fp")
    stored = {"config": run_config(spec, [0], ["1", "2"], workers=1).to_dict(), "cache": {"fingerprint": "fp"}}
    path.write_text(json.dumps(stored))
    assert is_current(path, cfg, "fp")  # workers differ: execution only
    assert not is_current(path, cfg, "other")
    assert not is_current(path, run_config(spec, [0, 1], ["1", "2"], workers=2), "fp")
    stored["config"]["no_such_field"] = 1  # a field the trainer no longer has
    path.write_text(json.dumps(stored))
    assert not is_current(path, cfg, "fp")
    del stored["config"]["no_such_field"], stored["config"]["epochs"]  # a field added since the run
    path.write_text(json.dumps(stored))
    assert not is_current(path, cfg, "fp")
    assert identity(cfg.to_dict())["labeled_fraction"] == spec.overrides["labeled_fraction"]
    assert "workers" not in identity(cfg.to_dict())


def test_plan_covers_every_method_reward_fraction_and_layer():
    names = {s.name for s in plan(7)}
    default = TrainConfig().reward
    for f in (0.05, 0.1, 0.2):
        assert f"main-f{f}" in names
        assert {f"reward-{r}-f{f}" for r in ("self", "teacher", "self+teacher") if r != default} <= names
    assert {f"layer-{i}" for i in range(7)} <= names and {"window-full", "window-trim"} <= names


def test_render_only_cli_writes_the_page_without_training(results_dir, tmp_path):
    out = tmp_path / "RESULTS.md"
    cache_dir = tmp_path / "cache"
    (cache_dir / "ravdess").mkdir(parents=True)
    (cache_dir / "ravdess" / "whisper-base-trim.h5").write_bytes(b"")  # only its existence is checked
    assert main(["--cache-dir", str(cache_dir), "--out", str(out), "--render-only"]) == 0
    page = out.read_text()
    assert "The full-window cache is missing" in page and "| 10% | supervised |" in page
    assert main(["--cache-dir", str(tmp_path / "nowhere"), "--out", str(out), "--render-only"]) == 2
