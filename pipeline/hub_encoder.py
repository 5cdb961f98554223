"""Encoders other than Whisper from local transformers weights (WavLM, HuBERT, wav2vec 2.0,
data2vec-audio: `extract --model DIR`, or a hub id such as microsoft/wavlm-base-plus whose files
are already in the local hub cache). Nothing is downloaded: weights load with local_files_only.

Each utterance is encoded whole (these models take the raw 16 kHz waveform, no 30 s window) and
every hidden state (transformers' `hidden_states`: the feature projection, then each layer) is
mean-pooled over its frames -> a cache row [L+1, D], as `extract` writes Whisper's.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline.audio import SAMPLE_RATE, BadAudio, load_audio
from pipeline.cache import check_output, write_cache
from pipeline.encoder import EncoderError, _sha256_files, _sha256_of_state, pick_device
from pipeline.extract import manifest_sha256

WAVEFORM_MODELS = ("wavlm", "hubert", "wav2vec2", "data2vec-audio")
WINDOW = "whole"  # the cache's window attribute: each utterance encoded whole


def _local_dir(model: str) -> Path | None:
    """The folder holding `model`'s config.json: the folder itself, or its snapshot in the local hub cache."""
    path = Path(model).expanduser()
    if (path / "config.json").is_file():
        return path.resolve()
    if path.exists() or model.count("/") != 1:
        return None
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model, local_files_only=True))
    except Exception:  # not in the local cache (or no huggingface_hub): not a local model
        return None


def is_waveform_model(model: str | None) -> bool:
    """Whether `model` is a local WavLM / HuBERT / wav2vec 2.0 model (these go through this module)."""
    folder = _local_dir(model) if model else None
    if folder is None:
        return False
    return json.loads((folder / "config.json").read_text()).get("model_type") in WAVEFORM_MODELS


class WaveformEncoder:
    """A loaded waveform model (eval mode) with what identifies it in a cache."""

    def __init__(self, model: str, device: str = "auto"):
        from transformers import AutoConfig, AutoFeatureExtractor, AutoModel, Wav2Vec2FeatureExtractor

        folder = _local_dir(model)
        if folder is None:
            raise EncoderError(f"--model {model}: no local weights (a folder with config.json, or a hub id already "
                               "downloaded); this tool never downloads: fetch them where there is internet "
                               f"(`huggingface-cli download {model}`) and copy the folder here")
        config = AutoConfig.from_pretrained(folder, local_files_only=True)
        if config.model_type not in WAVEFORM_MODELS:
            raise EncoderError(f"--model {model}: a {config.model_type} model, not one of {', '.join(WAVEFORM_MODELS)}")
        self.device = pick_device(device)
        self.module = AutoModel.from_pretrained(folder, local_files_only=True).eval().to(self.device)
        try:
            self.feature_extractor = AutoFeatureExtractor.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError):  # a bare model folder: wav2vec 2.0's default (normalised waveform)
            self.feature_extractor = Wav2Vec2FeatureExtractor(do_normalize=True)
        weights = sorted(str(p) for p in folder.glob("*.safetensors")) or sorted(str(p) for p in folder.glob("*.bin"))
        self.weights_sha256 = _sha256_files(weights) if weights else _sha256_of_state(self.module)
        self.encoder_id = model

    @torch.inference_mode()
    def pooled(self, audio: np.ndarray) -> np.ndarray:
        """Every hidden state of one 16 kHz waveform, mean over its frames -> [L+1, D] float32."""
        inputs = self.feature_extractor(audio, sampling_rate=SAMPLE_RATE, return_tensors="pt")
        out = self.module(inputs["input_values"].to(self.device), output_hidden_states=True)
        return torch.stack([h[0].float().mean(0) for h in out.hidden_states]).cpu().numpy()


def embed_waveform_files(paths, model: str, device: str = "auto", weights_sha256: str | None = None,
                         unreadable: dict | None = None, spans=None) -> np.ndarray:
    """[n, L+1, D] float32 of the readable audio files (or of their `spans`, one Span or None per
    path), pooled as extract_waveform_model pools a cache's rows (for `predict` with a run on such a
    cache). Other weights than `weights_sha256` are refused; an unreadable file raises BadAudio naming
    it, or is recorded in `unreadable`."""
    enc = WaveformEncoder(model, device)
    if weights_sha256 and enc.weights_sha256 != weights_sha256:
        raise EncoderError(
            f"encoder {model!r} now has weights {enc.weights_sha256[:12]}..., but the vectors were made "
            f"with weights {weights_sha256[:12]}...: use the same model files, or re-extract and retrain"
        )
    out = []
    for p, span in zip(paths, [None] * len(paths) if spans is None else spans):
        try:
            out.append(enc.pooled(load_audio(p, span)))
        except BadAudio as exc:
            if unreadable is None:
                raise BadAudio(f"{p}: {exc}") from exc
            unreadable[str(p)] = str(exc)
    shape = (enc.module.config.num_hidden_layers + 1, enc.module.config.hidden_size)
    return np.stack(out).astype(np.float32) if out else np.zeros((0, *shape), np.float32)


def extract_waveform_model(table: pd.DataFrame, root, out_path, model: str, device: str = "auto",
                           log=print) -> Path:
    """Encode every row of a manifest table with a waveform model into the cache `out_path`.

    Unreadable files keep their row with ok=False and the reason (as `extract` does)."""
    check_output(out_path, "extract")
    enc = WaveformEncoder(model, device)
    n_states = enc.module.config.num_hidden_layers + 1
    shape = (n_states, enc.module.config.hidden_size)
    table = table.reset_index(drop=True).copy()
    table["ok"], table["error"] = True, ""

    def blocks():
        for i, rel in enumerate(table["path"]):
            try:
                audio = load_audio(Path(root) / rel)
            except BadAudio as exc:
                table.loc[i, ["ok", "error"]] = False, str(exc)
                yield [i], np.zeros((1, *shape), np.float32)
                continue
            yield [i], enc.pooled(audio)[None]

    rows = [(i, v.astype(np.float16)) for i, v in blocks()]  # ok / error are written before the vectors
    attrs = {"encoder_id": enc.encoder_id, "weights_sha256": enc.weights_sha256, "window": WINDOW,
             "sample_rate": SAMPLE_RATE, "manifest_sha256": manifest_sha256(table.drop(columns=["ok", "error"]))}
    path = write_cache(out_path, table, attrs, shape, rows)
    log(
        f"encoded {int(table['ok'].sum())} of {len(table)} utterances with {enc.encoder_id} "
        f"({n_states} hidden states x {shape[1]})"
    )
    return path
