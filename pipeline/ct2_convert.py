"""CTranslate2 Whisper `model.bin` -> transformers `WhisperEncoder` (safetensors), without ctranslate2.

`model.bin` is CTranslate2's flat serialisation (ctranslate2/specs/model_spec.py `_serialize`):
  u32 binary_version, str spec_name, u32 revision, u32 n_variables,
  n_variables x (str name, u8 ndim, ndim x u32 dim, u8 dtype_id, u32 nbytes, raw bytes),
  u32 n_aliases, n_aliases x (str alias, str target)
where str = u16 length (including a trailing NUL) + utf-8 bytes + NUL, all little-endian, and
dtype_id indexes (float32, int8, int16, int32, float16, bfloat16).  Only the encoder is converted:
the fused self-attention projection `linear_0` [3D, D] is split into q, k, v (CTranslate2 stores a
zero bias for k, which transformers' k_proj does not have).
"""
from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

import numpy as np

from data_manifests.errors import UserError

CT2_DTYPES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")


class ConversionError(UserError):
    """A CTranslate2 model that cannot be read or is not a Whisper model."""


def read_ct2_variables(parts, prefix: str = "encoder/") -> dict[str, np.ndarray]:
    """Named arrays of a CTranslate2 model.bin (given as one path or its split parts, in order).

    Only variables whose name starts with `prefix` are copied out of the buffer.
    """
    parts = [Path(p) for p in ([parts] if isinstance(parts, (str, os.PathLike)) else parts)]
    buf = b"".join(p.read_bytes() for p in parts)
    off = 0

    def take(fmt):
        nonlocal off
        (value,) = struct.unpack_from("<" + fmt, buf, off)
        off += struct.calcsize(fmt)
        return value

    def string():
        nonlocal off
        n = take("H")
        value = buf[off:off + n - 1].decode("utf-8")
        off += n
        return value

    try:
        take("I")  # binary version
        spec = string()
        take("I")  # revision
        out = {}
        for _ in range(take("I")):
            name = string()
            shape = [take("I") for _ in range(take("B"))]
            dtype = CT2_DTYPES[take("B")]
            nbytes = take("I")
            if name.startswith(prefix):
                if dtype == "bfloat16":
                    raw = np.frombuffer(buf, np.uint16, nbytes // 2, off).astype(np.uint32) << 16
                    arr = raw.view(np.float32)
                else:
                    arr = np.frombuffer(buf, dtype, nbytes // np.dtype(dtype).itemsize, off)
                out[name] = arr.reshape(shape).copy()
            off += nbytes
    except (struct.error, IndexError, UnicodeDecodeError, ValueError) as exc:
        raise ConversionError(f"{parts[0]}: not a readable CTranslate2 model.bin ({exc})") from exc
    if spec != "WhisperSpec" or f"{prefix}conv1/weight" not in out:
        raise ConversionError(f"{parts[0]}: CTranslate2 model '{spec}' is not a Whisper model")
    return out


def encoder_state_dict(v: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict]:
    """transformers WhisperEncoder weights + the config fields they imply."""
    d_model, n_mels, _ = v["encoder/conv1/weight"].shape
    n_layers = 1 + max(int(k.split("/")[1][6:]) for k in v
                       if k.startswith("encoder/layer_") and k.split("/")[1][6:].isdigit())
    sd = {
        "conv1.weight": v["encoder/conv1/weight"], "conv1.bias": v["encoder/conv1/bias"],
        "conv2.weight": v["encoder/conv2/weight"], "conv2.bias": v["encoder/conv2/bias"],
        "embed_positions.weight": v["encoder/position_encodings/encodings"],
        "layer_norm.weight": v["encoder/layer_norm/gamma"], "layer_norm.bias": v["encoder/layer_norm/beta"],
    }
    for i in range(n_layers):
        src, dst = f"encoder/layer_{i}/", f"layers.{i}."
        q, k, val = np.split(v[src + "self_attention/linear_0/weight"], 3, axis=0)
        qb, _, vb = np.split(v[src + "self_attention/linear_0/bias"], 3, axis=0)
        sd.update({
            dst + "self_attn.q_proj.weight": q, dst + "self_attn.q_proj.bias": qb,
            dst + "self_attn.k_proj.weight": k,
            dst + "self_attn.v_proj.weight": val, dst + "self_attn.v_proj.bias": vb,
            dst + "self_attn.out_proj.weight": v[src + "self_attention/linear_1/weight"],
            dst + "self_attn.out_proj.bias": v[src + "self_attention/linear_1/bias"],
            dst + "self_attn_layer_norm.weight": v[src + "self_attention/layer_norm/gamma"],
            dst + "self_attn_layer_norm.bias": v[src + "self_attention/layer_norm/beta"],
            dst + "fc1.weight": v[src + "ffn/linear_0/weight"], dst + "fc1.bias": v[src + "ffn/linear_0/bias"],
            dst + "fc2.weight": v[src + "ffn/linear_1/weight"], dst + "fc2.bias": v[src + "ffn/linear_1/bias"],
            dst + "final_layer_norm.weight": v[src + "ffn/layer_norm/gamma"],
            dst + "final_layer_norm.bias": v[src + "ffn/layer_norm/beta"],
        })
    config = dict(
        num_mel_bins=int(n_mels), d_model=int(d_model), encoder_layers=n_layers,
        encoder_attention_heads=int(v["encoder/num_heads"]),
        encoder_ffn_dim=int(v["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        max_source_positions=int(v["encoder/position_encodings/encodings"].shape[0]),
        decoder_layers=n_layers, decoder_attention_heads=int(v["encoder/num_heads"]),
        decoder_ffn_dim=int(v["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
    )
    return sd, config


def convert_ct2_encoder(parts, out_dir) -> Path:
    """Write `out_dir` = a transformers WhisperEncoder (fp16 safetensors + config + preprocessor).

    Written into a temp dir and renamed, so an interrupted conversion never leaves a half model.
    """
    from safetensors.numpy import save_file
    from transformers import WhisperConfig, WhisperFeatureExtractor

    out_dir = Path(out_dir)
    sd, fields = encoder_state_dict(read_ct2_variables(parts))
    tmp = out_dir.with_name(out_dir.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: np.ascontiguousarray(a, dtype=np.float16) for k, a in sd.items()},
              str(tmp / "model.safetensors"), metadata={"format": "pt"})
    config = WhisperConfig(**fields)
    config.architectures = ["WhisperEncoder"]
    config.save_pretrained(tmp)
    WhisperFeatureExtractor(feature_size=fields["num_mel_bins"]).save_pretrained(tmp)
    (tmp / "converted_from.json").write_text(json.dumps({"ct2_model": [str(p) for p in (
        [parts] if isinstance(parts, (str, os.PathLike)) else parts)]}, indent=1))
    if out_dir.exists():  # a concurrent conversion finished first: keep it
        shutil.rmtree(tmp)
    else:
        os.replace(tmp, out_dir)
    return out_dir
