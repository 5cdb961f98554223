"""CTranslate2 -> transformers conversion: same encoder output as ctranslate2 itself on the same log-mel."""
from __future__ import annotations

import importlib.util
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.ct2_convert import ConversionError, read_ct2_variables
from pipeline.encoder import EMBEDDED, EncoderError, _package_dir, load_encoder, resolve_model

ctranslate2 = pytest.importorskip("ctranslate2")


def ct2_dir(name: str, tmp_path: Path) -> Path:
    """A CTranslate2 model folder of an embedded model (base's split model.bin joined)."""
    cfg_pkg, parts, _ = EMBEDDED[name]
    if importlib.util.find_spec(cfg_pkg) is None:
        pytest.skip(f"{cfg_pkg} not installed")
    files = [_package_dir(pkg, "") / rel for pkg, rel in parts]
    src = files[0].parent
    if len(files) == 1:
        return src
    out = tmp_path / name
    out.mkdir()
    with open(out / "model.bin", "wb") as fh:
        for f in files:
            fh.write(f.read_bytes())
    for extra in ("config.json", "vocabulary.txt", "tokenizer.json"):
        shutil.copy(src / extra, out / extra)
    return out


@pytest.mark.parametrize("name", ["base", "tiny.en"])
def test_conversion_matches_ctranslate2_encoder(name, tmp_path, monkeypatch):
    monkeypatch.setenv("BGRPO_SER_HOME", str(tmp_path / "home"))  # convert from scratch
    model_dir = ct2_dir(name, tmp_path)
    enc = load_encoder(str(model_dir), "cpu")  # a local CTranslate2 folder: converted once
    assert (tmp_path / "home" / "encoders").exists()
    rng = np.random.default_rng(0)
    t = np.arange(16000 * 4) / 16000
    audio = (0.3 * np.sin(2 * np.pi * 220 * t * (1 + 0.2 * t)) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)
    mel = enc.feature_extractor(audio, sampling_rate=16000, return_tensors="np").input_features.astype(np.float32)
    ct2 = ctranslate2.models.Whisper(str(model_dir), device="cpu", compute_type="float32")
    want = np.array(ct2.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(mel)), to_cpu=True))
    with torch.inference_mode():
        got = enc.module(torch.from_numpy(mel)).last_hidden_state.numpy()
    assert got.shape == want.shape == (1, 1500, enc.hidden_size)
    assert np.abs(got - want).max() < 2e-3 < np.abs(want).max()
    # the converted folder is reused, not rebuilt
    _, target, _ = resolve_model(str(model_dir))
    stamp = (target / "model.safetensors").stat().st_mtime_ns
    assert resolve_model(str(model_dir))[1] == target and (target / "model.safetensors").stat().st_mtime_ns == stamp


def test_reader_rejects_garbage_and_non_whisper(tmp_path):
    bad = tmp_path / "model.bin"
    bad.write_bytes(b"\x06\x00\x00\x00garbage")
    with pytest.raises(ConversionError, match="model.bin"):
        read_ct2_variables(bad)
    name = b"TransformerSpec\x00"  # a well-formed file of another model type, one variable
    var = b"encoder/x\x00"
    blob = (struct.pack("<I", 6) + struct.pack("<H", len(name)) + name + struct.pack("<II", 1, 1)
            + struct.pack("<H", len(var)) + var + struct.pack("<BIBI", 1, 2, 0, 8)
            + np.array([1.5, -2.0], np.float32).tobytes() + struct.pack("<I", 0))
    bad.write_bytes(blob)
    with pytest.raises(ConversionError, match="not a Whisper model"):
        read_ct2_variables(bad)


def test_missing_package_and_bad_model_give_clear_errors(tmp_path):
    with pytest.raises(EncoderError, match="pip install"):
        _package_dir("no_such_whisper_package_xyz", "embedded")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EncoderError, match="neither model.bin"):
        resolve_model(str(tmp_path / "empty"))
    with pytest.raises(EncoderError, match="no such model directory"):
        resolve_model(str(tmp_path / "missing"))
