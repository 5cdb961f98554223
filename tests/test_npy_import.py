"""cache-import: per-utterance .npy features (EmoBox's layout) -> a cache that train reads."""
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cli import app
from pipeline.cache import load_cache
from pipeline.npy_import import pooled_vectors


def write_features(folder, n_speakers=6, per_class=6, n_classes=3, frames=5, dim=8, seed=0):
    """[T, D] frame features per utterance with a class signal; returns the table CSV's path."""
    rng = np.random.default_rng(seed)
    means = 2 * rng.normal(size=(n_classes, dim))
    folder.mkdir()
    rows = []
    for s in range(n_speakers):
        for c in range(n_classes):
            for k in range(per_class):
                utt = f"s{s}_c{c}_{k}"
                np.save(folder / f"{utt}.npy", (means[c] + rng.normal(size=(frames, dim))).astype(np.float32))
                rows.append({"utt_id": utt, "label": f"class{c}", "speaker": f"spk{s}", "fold": s % 3})
    table = folder.parent / "table.csv"
    pd.DataFrame(rows).to_csv(table, index=False)
    return table


def test_pooling_of_each_layout():
    a = np.arange(6, dtype=np.float32).reshape(3, 2)
    assert pooled_vectors(a[0], "frames").tolist() == [[0, 1]]
    assert pooled_vectors(a, "frames").tolist() == [[2, 3]]  # mean over the 3 frames
    assert pooled_vectors(a, "layers").tolist() == a.tolist()


def test_imported_cache_trains_end_to_end(tmp_path):
    table = write_features(tmp_path / "feats")
    out = tmp_path / "imported.h5"
    done = CliRunner().invoke(app, ["cache-import", str(tmp_path / "feats"), "--table", str(table), "--out", str(out),
                                    "--encoder-id", "emotion2vec_test"])
    assert done.exit_code == 0, done.output
    cache = load_cache(out)
    assert cache.features.shape == (108, 1, 8) and cache.attrs["encoder_id"] == "emotion2vec_test"
    first = np.load(tmp_path / "feats" / "s0_c0_0.npy").mean(0)
    np.testing.assert_allclose(cache.features[0, 0], first.astype(np.float16))
    assert len(cache.fingerprint) == 64
    trained = CliRunner().invoke(app, ["train", "--cache", str(out), "--seeds", "0", "--folds", "0",
                                       "--set", "refit_rounds=1", "--out", str(tmp_path / "run")])
    assert trained.exit_code == 0, trained.output
    assert "bgrpo" in trained.output and (tmp_path / "run" / "results.json").exists()


@pytest.mark.parametrize("fault, message", [
    ("shape", "s1_c0_0.npy: pooled to [1, 9]"),
    ("missing", "have no feature file, e.g."),
    ("extra", "stray.npy"),
    ("text", "s0_c1_0.npy: not a readable feature array"),
])
def test_mismatched_files_are_refused_naming_them(tmp_path, fault, message):
    table = write_features(tmp_path / "feats")
    feats = tmp_path / "feats"
    if fault == "shape":
        np.save(feats / "s1_c0_0.npy", np.zeros((5, 9), np.float32))
    elif fault == "missing":
        (feats / "s2_c2_1.npy").unlink()
    elif fault == "extra":
        np.save(feats / "stray.npy", np.zeros(8, np.float32))
    else:
        (feats / "s0_c1_0.npy").write_text("not an array")
    out = tmp_path / "imported.h5"
    bad = CliRunner().invoke(app, ["cache-import", str(feats), "--table", str(table), "--out", str(out),
                                   "--encoder-id", "x"])
    assert bad.exit_code == 2 and message in bad.output, bad.output
    assert not out.exists()


def test_an_existing_out_is_kept_unless_overwrite(tmp_path):
    table = write_features(tmp_path / "feats", n_speakers=3, per_class=2)
    out = tmp_path / "imported.h5"
    command = ["cache-import", str(tmp_path / "feats"), "--table", str(table), "--out", str(out), "--encoder-id", "x"]
    assert CliRunner().invoke(app, command).exit_code == 0
    before = out.stat().st_mtime_ns
    again = CliRunner().invoke(app, command)
    assert again.exit_code == 2, again.output
    assert f"{out} already exists: pass another --out, or --overwrite" in again.output
    assert out.stat().st_mtime_ns == before
    replaced = CliRunner().invoke(app, [*command, "--overwrite", "--encoder-id", "y"])
    assert replaced.exit_code == 0, replaced.output
    assert load_cache(out).attrs["encoder_id"] == "y"


def test_help_keeps_the_bracketed_shapes():
    text = " ".join(CliRunner().invoke(app, ["cache-import", "--help"]).output.replace("│", " ").split())
    assert "one [D], [T, D] or [layers, D] array each" in text
