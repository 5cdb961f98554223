"""WavLM / HuBERT from local weights: random-weight models of the real architectures (small
configs, saved to a temporary folder; nothing is downloaded) extract a cache of the right shape."""
import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from pipeline.cache import load_cache
from pipeline.encoder import EncoderError
from pipeline.hub_encoder import WaveformEncoder, extract_waveform_model, is_waveform_model

SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=48,
             conv_dim=(16, 16, 16), conv_stride=(5, 4, 4), conv_kernel=(10, 4, 4),
             num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2)


def save_model(kind: str, folder):
    from transformers import HubertConfig, HubertModel, WavLMConfig, WavLMModel

    torch.manual_seed(0)
    config_cls, model_cls = {"wavlm": (WavLMConfig, WavLMModel), "hubert": (HubertConfig, HubertModel)}[kind]
    extra = {"num_buckets": 16, "max_bucket_distance": 40} if kind == "wavlm" else {}
    model_cls(config_cls(**SMALL, **extra)).save_pretrained(folder)
    return str(folder)


def corpus(folder, n=4):
    folder.mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        sf.write(folder / f"u{i}.wav", 0.1 * rng.normal(size=4000 + 1000 * i).astype(np.float32), 16000)
        rows.append({"utt_id": f"u{i}", "path": f"u{i}.wav", "speaker": f"s{i % 2}", "label": ["happy", "sad"][i % 2],
                     "fold": i % 2, "corpus": "tones"})
    sf.write(folder / "broken.wav", np.zeros(0, np.float32), 16000)
    rows.append(
        {"utt_id": "broken", "path": "broken.wav", "speaker": "s0", "label": "sad", "fold": 0, "corpus": "tones"}
    )
    return pd.DataFrame(rows)


@pytest.mark.parametrize("kind", ["wavlm", "hubert"])
def test_random_weight_model_extracts_a_cache_of_the_right_shape(tmp_path, kind):
    model = save_model(kind, tmp_path / kind)
    assert is_waveform_model(model)
    table = corpus(tmp_path / "audio")
    out = extract_waveform_model(table, tmp_path / "audio", tmp_path / "c.h5", model, device="cpu", log=lambda _: None)
    cache = load_cache(out)
    assert cache.features.shape == (4, 3, 32)  # the ok rows x (front end + 2 layers) x hidden size
    assert cache.attrs["encoder_id"] == model and cache.attrs["window"] == "whole" and len(cache.fingerprint) == 64
    enc = WaveformEncoder(model, "cpu")
    audio, _ = sf.read(tmp_path / "audio" / "u1.wav", dtype="float32")
    np.testing.assert_allclose(cache.features[1], enc.pooled(audio).astype(np.float16))


def test_whisper_and_missing_models_are_not_waveform_models(tmp_path):
    assert not is_waveform_model(None) and not is_waveform_model("base")
    assert not is_waveform_model(str(tmp_path / "nothing"))
    with pytest.raises(EncoderError, match="never downloads"):
        WaveformEncoder(str(tmp_path / "nothing"))


def test_extract_command_takes_a_local_waveform_model(tmp_path):
    """`extract --manifest M --model DIR`: the command routes a WavLM folder here, cache named after it."""
    from test_extract import make_corpus, run_cli

    manifest = make_corpus(tmp_path / "corpus", 3, lengths=(0.3, 0.6))
    model = save_model("wavlm", tmp_path / "wavlm-small")
    done = run_cli("extract", "--manifest", manifest, "--model", model, "--cache-dir", tmp_path / "cache",
                   "--device", "cpu", check_rc=0)
    cache = load_cache(tmp_path / "cache" / "gen" / "wavlm-small-whole.h5")
    assert cache.features.shape == (3, 3, 32) and "wrote" in done.output


def test_a_run_on_a_waveform_cache_predicts_audio_with_the_same_model(tmp_path):
    """load_run(...).predict_proba re-encodes files with the run's waveform model (not Whisper) and
    scores them as their cached rows; other weights are refused."""
    import warnings

    from pipeline.hub_encoder import embed_waveform_files
    from trainer import load_run
    from trainer.config import TrainConfig
    from trainer.run import train

    model = save_model("wavlm", tmp_path / "wavlm")
    table = corpus(tmp_path / "audio", n=8)
    table["fold"] = [(i // 2) % 2 for i in range(8)] + [0]  # both classes in each fold
    extract_waveform_model(table, tmp_path / "audio", tmp_path / "c.h5", model, device="cpu", log=lambda _: None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train(TrainConfig(methods=("bgrpo",), seeds=(0,), folds=("0",), labeled_fraction=1.0, speaker_norm=False),
              tmp_path / "c.h5", tmp_path / "run")
    run = load_run(tmp_path / "run")
    files = [str(tmp_path / "audio" / f"u{i}.wav") for i in range(8)]
    unreadable: dict = {}
    served = run.predict_proba(files + [str(tmp_path / "audio" / "broken.wav")], device="cpu", unreadable=unreadable)
    assert served["file"].tolist() == files and list(unreadable) == [str(tmp_path / "audio" / "broken.wav")]
    cached = load_cache(tmp_path / "c.h5").features
    from trainer.predict import predict_features
    np.testing.assert_allclose(served[run.classes].to_numpy(float), predict_features(run.policies, run.meta, cached),
                               atol=1e-6)
    with pytest.raises(EncoderError, match="weights"):
        embed_waveform_files(files[:1], model, "cpu", weights_sha256="0" * 64)
