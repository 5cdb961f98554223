"""The synthetic demo corpus: plan, determinism, layout, and prosody that really differs by class."""
from __future__ import annotations

import hashlib
import importlib.util
import re
import sys

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from data_manifests import synthetic_demo as demo

needs_espeak = pytest.mark.skipif(importlib.util.find_spec("espeakng_loader") is None,
                                  reason="espeakng-loader not installed (the demo extra)")


def _digest(root) -> dict:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*.wav"))}


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo") / "corpus"
    plan = demo.generate(root, seed=3, n_speakers=3, n_sentences=2, n_takes=2, progress=False)
    return root, plan


def test_plan_is_seeded_and_rows_do_not_depend_on_corpus_size():
    a = demo.corpus_plan(seed=5, n_speakers=2, n_sentences=2, n_takes=1)
    b = demo.corpus_plan(seed=5, n_speakers=4, n_sentences=3, n_takes=2)
    assert len(a) == 2 * 4 * 2 * 1 and len(b) == 4 * 4 * 3 * 2
    merged = a.merge(b, on="path", suffixes=("", "_b"))
    assert len(merged) == len(a)
    for col in ("rate", "pitch", "range", "volume", "noise_seed"):
        np.testing.assert_array_equal(merged[col], merged[col + "_b"])
    c = demo.corpus_plan(seed=6, n_speakers=2, n_sentences=2, n_takes=1)
    assert not np.allclose(a["rate"], c["rate"])


def test_plan_prosody_follows_class_means():
    plan = demo.corpus_plan(seed=0, n_speakers=8, n_sentences=8, n_takes=4)
    means = plan.groupby("label")[["rate", "pitch", "range", "volume"]].mean()
    for label, target in demo.CLASS_PROSODY.items():
        # 8 speakers' offsets average out to within a few units of the class mean
        np.testing.assert_allclose(means.loc[label], [target.rate, target.pitch, target.range, target.volume],
                                   atol=6)
    assert plan[["rate", "pitch", "range", "volume"]].std().gt(0).all()


@pytest.mark.parametrize("kwargs", [dict(n_speakers=0), dict(n_speakers=99), dict(n_sentences=0), dict(n_takes=0)])
def test_plan_rejects_bad_sizes(kwargs):
    with pytest.raises(ValueError):
        demo.corpus_plan(**kwargs)


@needs_espeak
def test_layout_format_and_speaker_regex(small_corpus):
    root, plan = small_corpus
    wavs = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.wav"))
    assert wavs == sorted(plan["path"])
    assert len(wavs) == 3 * 4 * 2 * 2
    assert {p.split("/")[0] for p in wavs} == set(demo.CLASS_PROSODY)
    for rel in wavs:
        label, name = rel.split("/")
        assert re.fullmatch(r"s\d\d_\d\d_\d\.wav", name)
        assert re.match(demo.SPEAKER_REGEX, name).group(1) == plan.set_index("path").loc[rel, "speaker"]
    info = sf.info(root / wavs[0])
    assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
    assert (root / demo.MARKER).exists()
    assert not root.with_name(root.name + ".partial").exists()


@needs_espeak
def test_same_seed_same_bytes_other_seed_differs(small_corpus, tmp_path):
    root, _ = small_corpus
    # pollute this process's eSpeak state first: generation must not depend on it
    demo.espeak_engine().synthesize("Something else first.", "en+m3", demo.Prosody(150, 50, 50, 100))
    again = tmp_path / "again"
    demo.generate(again, seed=3, n_speakers=3, n_sentences=2, n_takes=2, progress=False)
    assert _digest(again) == _digest(root)
    demo.generate(again, seed=4, n_speakers=3, n_sentences=2, n_takes=2, progress=False)  # replaces it
    assert _digest(again).keys() == _digest(root).keys()
    assert _digest(again) != _digest(root)


@needs_espeak
def test_class_prosody_is_measurable_in_the_audio(small_corpus):
    root, plan = small_corpus
    rows = []
    for rel, label in zip(plan["path"], plan["label"]):
        x, sr = sf.read(root / rel)
        voiced = np.abs(x) > 0.01  # above the noise floor
        rows.append({"label": label, "speech_s": voiced.sum() / sr, "rms": np.sqrt(np.mean(x[voiced] ** 2))})
    m = pd.DataFrame(rows).groupby("label").mean()
    assert m.loc["sad", "speech_s"] > m.loc["neutral", "speech_s"] > m.loc["angry", "speech_s"]
    assert m.loc["angry", "rms"] > m.loc["neutral", "rms"] > m.loc["sad", "rms"]


@needs_espeak
def test_existing_corpus_is_reused_and_foreign_folder_refused(small_corpus, tmp_path):
    root, _ = small_corpus
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*.wav")}
    demo.generate(root, seed=3, n_speakers=3, n_sentences=2, n_takes=2, progress=False)
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*.wav")} == before
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a demo corpus"):
        demo.generate(mine, seed=0, n_speakers=1, n_sentences=1, n_takes=1, progress=False)
    assert (mine / "notes.txt").read_text() == "keep me"


def test_missing_espeak_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "espeakng_loader", None)
    with pytest.raises(demo.DemoDependencyError, match=r"pip install"):
        demo.require_espeak()
