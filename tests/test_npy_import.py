"""`import-features`: per-utterance .npy files (EmoBox layout) + a manifest -> a cache the trainer reads."""
from __future__ import annotations

import json

import h5py
import numpy as np
import pandas as pd
import pytest

from data_manifests import write_manifest
from data_manifests.errors import UserError
from pipeline.cache import load_cache
from pipeline.npy_import import import_npy, pooled_states

LABELS = ("angry", "happy", "neutral", "sad")


def feature_corpus(root, shape_of=lambda i: (7, 6), n_speakers: int = 6, per_class: int = 4, seed: int = 0):
    """A manifest (speaker-round-robin folds) and one .npy per row at <folder>/<path>.npy; class signal
    in every row of each array, so a trainer can learn from the imported means."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(len(LABELS), 6)) * 2
    rows, arrays = [], {}
    for s in range(n_speakers):
        for c, label in enumerate(LABELS):
            for k in range(per_class):
                i = len(rows)
                path = f"spk{s}/{label}_{k}.wav"
                rows.append(dict(utt_id=f"s{s}_{label}_{k}", path=path, speaker=f"spk{s}", gender="", language="en",
                                 label=label, raw_label=label, fold=s % 3, split="", duration=1.0, corpus="npy",
                                 sample_rate=16000, channels=1))
                shape = shape_of(i)
                arrays[path] = means[c][-shape[-1]:] + rng.normal(size=shape).astype(np.float32)
    table = pd.DataFrame(rows)
    table["fold"] = table["fold"].astype("Int64")
    write_manifest(table, root / "manifest.csv")
    for path, array in arrays.items():
        target = (root / "feats" / path).with_suffix(".npy")
        target.parent.mkdir(parents=True, exist_ok=True)
        np.save(target, array)
    return root / "manifest.csv", root / "feats", arrays


def run_cli(*args):
    from typer.testing import CliRunner

    from cli import app
    return CliRunner().invoke(app, [str(a) for a in args])


def test_pooling_of_each_layout_by_hand():
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert pooled_states(np.arange(4.0), "time", "f").tolist() == [[0, 1, 2, 3]]
    assert pooled_states(x, "time", "f").tolist() == [[4, 5, 6, 7]]  # mean over the 3 frames
    assert pooled_states(x, "layers", "f").tolist() == x.tolist()
    assert pooled_states(np.stack([x, x + 1]), "time", "f").tolist() == [[4, 5, 6, 7], [5, 6, 7, 8]]
    with pytest.raises(UserError, match="bad.npy"):
        pooled_states(np.zeros((1, 2, 3, 4)), "time", "bad.npy")


def test_frames_are_mean_pooled_into_a_fingerprinted_cache(tmp_path):
    manifest, feats, arrays = feature_corpus(tmp_path)
    result = run_cli("import-features", feats, "--manifest", manifest, "--encoder-id", "emotion2vec-test",
                     "--out", tmp_path / "c.h5")
    assert result.exit_code == 0, result.output
    data = load_cache(tmp_path / "c.h5")
    assert data.features.shape == (96, 1, 6)
    assert data.attrs["encoder_id"] == "emotion2vec-test" and len(data.fingerprint) == 64
    first = arrays["spk0/angry_0.wav"].mean(0).astype(np.float16)
    np.testing.assert_array_equal(data.features[0, 0], first)
    assert data.table["utt_id"].iloc[0] == "s0_angry_0" and set(data.table["fold"]) == {0, 1, 2}


def test_layers_layout_keeps_every_layer_and_trains_end_to_end(tmp_path):
    manifest, feats, arrays = feature_corpus(tmp_path)
    from data_manifests import read_manifest
    import_npy(read_manifest(manifest), feats, tmp_path / "c.h5", "wavlm-layers", rows="layers")
    data = load_cache(tmp_path / "c.h5")
    assert data.features.shape == (96, 7, 6)
    np.testing.assert_array_equal(data.features[5], arrays[read_manifest(manifest)["path"][5]].astype(np.float16))
    out = tmp_path / "run"
    result = run_cli("train", "--cache", tmp_path / "c.h5", "--seeds", "0", "--folds", "0", "--out", out,
                     "--set", "refit_rounds=1", "--set", "speaker_norm=false", "--set", "labeled_fraction=0.5")
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "results.json").read_text())
    assert summary["cache"]["encoder_id"] == "wavlm-layers"
    assert summary["methods"]["bgrpo"]["macro_f1"]["mean"] > 50  # 4 classes: chance is 25


def test_a_file_of_another_shape_is_refused_by_name_and_nothing_is_written(tmp_path):
    manifest, feats, _ = feature_corpus(tmp_path, shape_of=lambda i: (5, 6) if i != 30 else (5, 4))
    result = run_cli("import-features", feats, "--manifest", manifest, "--encoder-id", "x", "--out", tmp_path / "c.h5")
    assert result.exit_code == 2
    assert "spk1/sad_2.npy" in result.output and "(1, 4)" in result.output and "(1, 6)" in result.output
    assert not (tmp_path / "c.h5").exists() and not list(tmp_path.glob("*.tmp*"))


def test_missing_and_unknown_files_and_another_encoder_are_refused(tmp_path):
    manifest, feats, _ = feature_corpus(tmp_path)
    args = ["import-features", feats, "--manifest", manifest, "--out", tmp_path / "c.h5"]
    (feats / "spk1" / "sad_3.npy").rename(tmp_path / "moved.npy")
    result = run_cli(*args, "--encoder-id", "a")
    assert result.exit_code == 2 and "s1_sad_3" in result.output
    (tmp_path / "moved.npy").rename(feats / "spk1" / "sad_3.npy")
    np.save(feats / "stray.npy", np.zeros(6))
    result = run_cli(*args, "--encoder-id", "a")
    assert result.exit_code == 2 and "stray.npy" in result.output
    (feats / "stray.npy").unlink()
    assert run_cli(*args, "--encoder-id", "a").exit_code == 0
    result = run_cli(*args, "--encoder-id", "b")
    assert result.exit_code == 2 and "'a'" in result.output and "--overwrite" in result.output
    assert run_cli(*args, "--encoder-id", "b", "--overwrite").exit_code == 0
    with h5py.File(tmp_path / "c.h5") as f:
        assert f.attrs["encoder_id"] == "b"
