"""Self-supervised speech encoders other than Whisper (WavLM, HuBERT, wav2vec 2.0, data2vec-audio)
from a LOCAL transformers folder (config.json + weights; nothing is ever downloaded), pooled as the
Whisper path pools: every hidden state (transformers' `hidden_states`: the feature projection's
output, then each layer's) mean over the frames of real audio -> [N, L+1, D].

Waveforms in a batch are padded; models whose feature extractor normalises each layer
(`feat_extract_norm="layer"`, e.g. microsoft/wavlm-base-plus) take an attention mask, so a batch
equals one file at a time. Models with group norm in the convolutions (facebook/hubert-base-ls960)
would see the padding in that norm's statistics: they encode one file at a time.

`extract_hub` writes the cache in one go (no shards or resume, unlike `extract` with Whisper); its
window is "utterance" (the whole file, real frames only).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline.audio import SAMPLE_RATE, BadAudio, load_audio
from pipeline.cache import check_output, manifest_rows, write_cache
from pipeline.encoder import EncoderError, _sha256_files, pick_device

HUB_WINDOW = "utterance"
HUB_TYPES = ("wavlm", "hubert", "wav2vec2", "data2vec-audio")


def is_hub_model(model) -> bool:
    """True when `model` is a local folder holding a transformers model of a HUB_TYPES architecture."""
    config = Path(str(model or "")).expanduser() / "config.json"
    if not config.is_file():
        return False
    try:
        return json.loads(config.read_text()).get("model_type") in HUB_TYPES
    except (OSError, ValueError):
        return False


@dataclass
class HubEncoder:
    """A loaded speech encoder, its feature extractor, and what identifies it in a cache."""

    module: torch.nn.Module
    feature_extractor: object
    encoder_id: str
    weights_sha256: str
    device: torch.device
    masked: bool  # takes an attention mask (layer-norm feature extractor): batches are exact

    @property
    def num_hidden_states(self) -> int:
        return self.module.config.num_hidden_layers + 1

    @property
    def hidden_size(self) -> int:
        return self.module.config.hidden_size


def load_hub_encoder(folder, device: str = "auto") -> HubEncoder:
    """The model of a local folder (local_files_only: a hub id or a missing folder is an EncoderError)."""
    from transformers import AutoConfig, AutoFeatureExtractor, AutoModel, Wav2Vec2FeatureExtractor
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    path = Path(str(folder)).expanduser()
    if not is_hub_model(path):
        raise EncoderError(f"--model {folder}: not a local folder of a {', '.join(HUB_TYPES)} model (config.json "
                           "with its model_type); download the model once with its weights, then pass the folder")
    path = path.resolve()
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
        module = AutoModel.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise EncoderError(f"--model {folder}: cannot load its weights ({exc})") from exc
    masked = getattr(config, "feat_extract_norm", "group") == "layer"
    try:
        fe = AutoFeatureExtractor.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError):  # a folder with weights but no preprocessor_config.json
        fe = Wav2Vec2FeatureExtractor(sampling_rate=SAMPLE_RATE, do_normalize=masked, return_attention_mask=masked)
    weights = sorted(str(p) for p in [*path.glob("*.safetensors"), *path.glob("*.bin")])
    dev = pick_device(device)
    return HubEncoder(module.eval().to(dev), fe, str(path), _sha256_files(weights), dev, masked)


@torch.inference_mode()
def pooled_hub_states(enc: HubEncoder, waves: list[np.ndarray]) -> np.ndarray:
    """Mean over real-audio frames of every hidden state of each waveform -> [B, L+1, D] float32."""
    inputs = enc.feature_extractor([np.asarray(w, np.float32) for w in waves], sampling_rate=SAMPLE_RATE,
                                   padding=True, return_attention_mask=True, return_tensors="pt")
    values = inputs["input_values"].to(enc.device)
    mask = inputs["attention_mask"].to(enc.device) if enc.masked else None
    out = enc.module(values, attention_mask=mask, output_hidden_states=True)
    n_frames = enc.module._get_feat_extract_output_lengths(torch.as_tensor([len(w) for w in waves]))
    states = torch.stack(out.hidden_states, 1).float()  # [B, L+1, F, D]
    real = (torch.arange(states.shape[2])[None, :] < n_frames[:, None]).to(states)  # [B, F]
    weights = (real / n_frames[:, None].to(states))[:, None, :, None].to(enc.device)
    return (states * weights).sum(2).cpu().numpy()


def embed_hub_files(paths, enc: HubEncoder, batch_size: int = 8, unreadable: dict | None = None) -> np.ndarray:
    """[n, L+1, D] of the readable files (unreadable ones: path -> reason in `unreadable`, or BadAudio)."""
    size = batch_size if enc.masked else 1
    out, batch = [], []

    def flush():
        if batch:
            out.append(pooled_hub_states(enc, batch))
            batch.clear()

    for p in paths:
        try:
            batch.append(load_audio(p))
        except BadAudio as exc:
            if unreadable is None:
                raise BadAudio(f"{p}: {exc}") from exc
            unreadable[str(p)] = str(exc)
        if len(batch) >= size:
            flush()
    flush()
    shape = (enc.num_hidden_states, enc.hidden_size)
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, *shape), np.float32)


def extract_hub(table: pd.DataFrame, root, out_path, model, device: str = "auto", batch_size: int = 8,
                manifest_sha256: str = "", log=print) -> tuple[Path, dict]:
    """(the cache of `table`'s audio under `root` encoded by the local model folder `model`,
    {utt_id: why} of the files that could not be read: their rows stay, with ok=False)."""
    out_path = check_output(out_path, "extract")
    enc = load_hub_encoder(model, device)
    paths = [str(Path(root) / p) for p in table["path"]]
    unreadable: dict = {}
    feats = embed_hub_files(paths, enc, batch_size, unreadable)
    sub = manifest_rows(table)
    sub["ok"] = [p not in unreadable for p in paths]
    sub["error"] = [unreadable.get(p, "") for p in paths]
    if not sub["ok"].any():
        raise BadAudio(f"none of the {len(sub)} files could be read (e.g. {paths[0]}: {unreadable[paths[0]]}); "
                       "no cache was written")
    identity = {"encoder_id": enc.encoder_id, "weights_sha256": enc.weights_sha256, "window": HUB_WINDOW,
                "sample_rate": SAMPLE_RATE, "manifest_sha256": manifest_sha256, "num_failed": len(unreadable)}
    log(f"encoded {len(feats)} of {len(sub)} files with {enc.encoder_id}")
    rows = np.flatnonzero(sub["ok"].to_numpy())
    write_cache(out_path, sub, identity, feats.shape[1:], [(rows, feats)])
    return out_path, dict(zip(sub.loc[~sub["ok"], "utt_id"], sub.loc[~sub["ok"], "error"]))
