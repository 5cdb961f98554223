"""WavLM / HuBERT from a local folder (random weights of the real architectures, small configs; no
download): every hidden state mean-pooled over real frames into a cache of [N, layers + 1, D]."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from data_manifests import write_manifest
from pipeline.cache import load_cache
from pipeline.encoder import EncoderError
from pipeline.hub_encoder import embed_hub_files, is_hub_model, load_hub_encoder

SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
             conv_dim=(16, 16, 16), conv_kernel=(10, 3, 3), conv_stride=(5, 2, 2), num_conv_pos_embeddings=16,
             num_conv_pos_embedding_groups=2)


def save_wavlm(folder):
    from transformers import Wav2Vec2FeatureExtractor, WavLMConfig, WavLMModel

    torch.manual_seed(0)
    WavLMModel(WavLMConfig(**SMALL, feat_extract_norm="layer", do_stable_layer_norm=True)).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True).save_pretrained(folder)
    return folder


def save_hubert(folder):
    from transformers import HubertConfig, HubertModel

    torch.manual_seed(1)
    HubertModel(HubertConfig(**SMALL, feat_extract_norm="group")).save_pretrained(folder)  # no preprocessor saved
    return folder


def corpus(root, n=6):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        secs = 0.3 + 0.15 * i
        t = np.arange(int(secs * 16000)) / 16000
        sf.write(root / f"u{i}.wav", 0.3 * np.sin(2 * np.pi * (150 + 20 * i) * t) + 0.01 * rng.standard_normal(len(t)),
                 16000, subtype="PCM_16")
        rows.append(dict(utt_id=f"u{i}", path=f"u{i}.wav", speaker=f"s{i % 3}", gender="", language="en",
                         label=("sad", "happy")[i % 2], raw_label=("sad", "happy")[i % 2], fold=i % 3, split="", duration=secs, corpus="gen",
                         sample_rate=16000, channels=1))
    table = pd.DataFrame(rows)
    table["fold"] = table["fold"].astype("Int64")
    return write_manifest(table, root / "manifest.csv")


@pytest.mark.parametrize("save", [save_wavlm, save_hubert])
def test_extract_writes_every_hidden_state_pooled_over_real_frames(tmp_path, save):
    from typer.testing import CliRunner

    from cli import app
    model = save(tmp_path / "model")
    manifest = corpus(tmp_path)
    result = CliRunner().invoke(app, ["extract", "--manifest", str(manifest), "--root", str(tmp_path),
                                      "--model", str(model), "--out", str(tmp_path / "c.h5"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    data = load_cache(tmp_path / "c.h5")
    assert data.features.shape == (6, 3, 32)  # 2 layers + the feature projection's output, hidden 32
    assert data.attrs["window"] == "utterance" and data.attrs["encoder_id"] == str(model.resolve())
    assert len(data.attrs["weights_sha256"]) == 64
    # by hand, one file alone: the mean over all its frames of each hidden state
    enc = load_hub_encoder(model, "cpu")
    wave, _ = sf.read(tmp_path / "u3.wav", dtype="float32")
    values = torch.as_tensor(enc.feature_extractor(wave, sampling_rate=16000, return_tensors="np")["input_values"])
    with torch.no_grad():
        states = enc.module(values, output_hidden_states=True).hidden_states
    by_hand = torch.stack([h[0].mean(0) for h in states]).numpy()
    np.testing.assert_allclose(data.features[3].astype(np.float32), by_hand, rtol=2e-3, atol=2e-3)


def test_a_wavlm_batch_equals_one_file_at_a_time(tmp_path):
    model = save_wavlm(tmp_path / "model")
    corpus(tmp_path)
    enc = load_hub_encoder(model, "cpu")
    assert enc.masked
    paths = [str(tmp_path / f"u{i}.wav") for i in range(6)]
    batched = embed_hub_files(paths, enc, batch_size=6)
    alone = np.concatenate([embed_hub_files([p], enc, batch_size=1) for p in paths])
    np.testing.assert_allclose(batched, alone, rtol=1e-4, atol=1e-5)


def test_only_local_folders_load(tmp_path):
    assert not is_hub_model("microsoft/wavlm-base-plus")
    with pytest.raises(EncoderError, match="local folder"):
        load_hub_encoder("microsoft/wavlm-base-plus")
    (tmp_path / "config.json").write_text('{"model_type": "wavlm"}')
    with pytest.raises(EncoderError, match="cannot load its weights"):
        load_hub_encoder(tmp_path)


def test_a_run_on_a_wavlm_cache_predicts_audio_through_the_same_folder(tmp_path):
    """load_run(...).predict re-encodes files with the cache's WavLM folder (weights checked) and
    scores them as their cached rows."""
    import warnings

    from pipeline.extract import extract
    from data_manifests import read_manifest
    from trainer.config import TrainConfig
    from trainer.run import train
    from trainer.run_loader import load_run

    model = save_wavlm(tmp_path / "model")
    table = read_manifest(corpus(tmp_path, n=9))
    extract(table, tmp_path, tmp_path / "c.h5", model=str(model), device="cpu", log=lambda *a: None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train(TrainConfig(methods=("bgrpo",), seeds=(0,), folds=("0",), labeled_fraction=1.0,
                          speaker_norm=False), tmp_path / "c.h5", tmp_path / "run")
    run = load_run(tmp_path / "run", device="cpu")
    files = [str(tmp_path / f"u{i}.wav") for i in range(9)]
    served = run.predict(files)
    cached = run.predict_features(load_cache(tmp_path / "c.h5").features)
    np.testing.assert_allclose(served[run.classes_].to_numpy(float), cached, atol=1e-6)
