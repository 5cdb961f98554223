"""Extraction speed: the usual way vs our extractor - same machine, encoder, files, one run.

  usual      what EmoBox's extraction script does: one file per forward pass, WhisperFeature-
             Extractor's 30 s padded input, fp32, transformers' WhisperEncoder forward with all
             hidden states, mean over the real-audio frames, one .npy written per utterance;
  ours-W     `pipeline.extract.extract(window=W)` into an HDF5 cache, as `cli.py extract` runs it:
             decode in DataLoader workers, log-mel and encoder on the device, resume files and
             the final HDF5 write all inside the clock (the encoder is loaded before it starts).
On a GPU every window runs in fp16, bf16 and fp32, and the same rows are measured for Whisper
large-v3's dimensions with random weights (`large-v3-dims`: same FLOPs as the real model, seeded
so every child builds the same encoder), the usual way included.  On a CPU only fp32 and base.

FLOPs per utterance (forward), from the encoder's config: T mel frames seen (3000 full; trim the
clip's real frames; padN its padded length), F = T/2 encoder frames, m mel bins, d = d_model,
f = encoder_ffn_dim, L layers (multiply-add = 2 FLOPs):
    conv1 2*T*3m*d + conv2 2*F*3d*d + L * (8*F*d^2 [q,k,v,o] + 4*F^2*d [scores, weighted sum] + 4*F*d*f [MLP])
= 87.4 GFLOP for base at 30 s, 2.27 TFLOP for large-v3.  These are the useful FLOPs (a trim
batch's padding is not counted).  TFLOP/s = FLOPs of all utterances / wall; share of peak =
that / the device's measured dense matmul rate in the same dtype (an 8192^3 product on a GPU,
2048^3 on a CPU), printed above the table.

The bench checks itself: for every model and dtype, trim must not be slower than full (exit 1
if it is).  Each variant runs in its own fresh subprocess (its peak memory is its own).

    python bench/extract_speed.py [--n 420] [--repeat 8] [--usual-n 200] [--root DIR] [--device cuda]
                                  [--windows full,trim] [--large/--no-large] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))
from bench.measure import peak_rss_mb, run_child  # noqa: E402
DEFAULT_ROOT = REPO.parent / "shared" / "corpora" / "ravdess"
AUDIO_EXT = (".wav", ".flac")
FP16_RTOL, FP16_ATOL = 2.0**-10, 1e-4  # one float16 ulp relative, plus fp32 summation noise
# Whisper large-v3's encoder (openai/whisper-large-v3 config.json), built with random weights
LARGE_V3_DIMS = dict(num_mel_bins=128, d_model=1280, encoder_layers=32, encoder_attention_heads=20,
                     encoder_ffn_dim=5120, max_source_positions=1500)


# --- pure helpers ----------------------------------------------------------------------------
def pick_files(paths, n: int) -> list:
    """`n` files spread evenly over the sorted list (RAVDESS: across actors and emotions)."""
    paths = sorted(paths)
    if n <= 0 or not paths:
        raise ValueError(f"need n >= 1 and at least one file (got n={n}, {len(paths)} files)")
    if n >= len(paths):
        return paths
    return [paths[i] for i in np.linspace(0, len(paths) - 1, n).round().astype(int)]


def real_frames(num_samples: int, hop: int = 160, max_mel: int = 3000) -> int:
    """Encoder frames that hold real audio: ceil(mel frames / 2) (conv2 has stride 2)."""
    from pipeline.encoder import encoder_frames

    return encoder_frames(min(-(-int(num_samples) // hop), max_mel))


def encoder_flops(mel_frames, n_mels: int, d: int, ffn: int, layers: int):
    """Forward FLOPs of a Whisper encoder over `mel_frames` mel frames (the docstring's formula)."""
    t = np.asarray(mel_frames, np.float64)
    f = np.ceil(t / 2)
    conv = 2 * t * 3 * n_mels * d + 2 * f * 3 * d * d
    return conv + layers * (8 * f * d * d + 4 * f * f * d + 4 * f * d * ffn)


def variants_for(cuda: bool, windows=("full", "trim"), large: bool = True) -> list[tuple[str, str, str, str]]:
    """(name, model, method, dtype): per model the usual way once (fp32), ours per window and dtype.
    The large-v3-dims rows exist on a GPU only (on a CPU they would take hours)."""
    dtypes = ("float16", "bfloat16", "float32") if cuda else ("float32",)
    out = []
    for model in ("base", "large-v3-dims") if cuda and large else ("base",):
        prefix = "" if model == "base" else "large-"
        out.append((f"{prefix}usual", model, "usual", "float32"))
        out += [(f"{prefix}ours-{w}" + (f"-{d}" if cuda else ""), model, w, d) for w in windows for d in dtypes]
    return out


def compare(reference: np.ndarray, other: np.ndarray) -> dict:
    """How far `other`'s pooled vectors [N, L+1, D] are from the reference's."""
    diff = np.abs(reference.astype(np.float64) - other.astype(np.float64))
    ref16 = np.abs(reference - reference.astype(np.float16).astype(np.float32))
    a, b = reference[:, -1].astype(np.float64), other[:, -1].astype(np.float64)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return {"max_abs_diff": float(diff.max()),
            "fp16_rounding_max_abs": float(ref16.max()),
            "within_fp16": bool((diff <= FP16_ATOL + FP16_RTOL * np.abs(reference)).all()),
            "last_layer_mean_cos": float(cos.mean())}


def summarize(runs: list[dict], vectors: dict, peaks: dict | None = None) -> list[dict]:
    """Table rows: each run plus its speed ratio vs its model's `usual` run, its TFLOP/s and share of
    the device's peak in its dtype, and (for the usual run's files) its vector agreement."""
    rows = []
    for r in runs:
        base = next(u for u in runs if u["method"] == "usual" and u.get("model") == r.get("model"))
        row = dict(r, ratio_vs_usual=r["utt_per_s"] / base["utt_per_s"])
        if "flops" in r:
            row["tflops"] = r["flops"] / r["wall_s"] / 1e12
            if peaks and r["dtype"] in peaks:
                row["share_of_peak"] = row["tflops"] / peaks[r["dtype"]]
        if r is not base and base["name"] in vectors and r["name"] in vectors:
            n = len(vectors[base["name"]])
            row.update(compare(vectors[base["name"]], vectors[r["name"]][:n]))
        rows.append(row)
    return rows


def trim_not_slower(rows: list[dict]) -> list[str]:
    """The bench's own check: each (model, dtype) whose trim row is slower than its full row."""
    speed = {(r.get("model"), r["method"], r["dtype"]): r["utt_per_s"] for r in rows}
    return [f"{model} {dtype}: trim {speed[(model, 'trim', dtype)]:.1f} < full {full:.1f} utt/s"
            for (model, method, dtype), full in speed.items()
            if method == "full" and (model, "trim", dtype) in speed and speed[(model, "trim", dtype)] < full]


def format_table(rows: list[dict]) -> str:
    head = (f"{'variant':<26}{'dtype':>9}{'utt/s':>9}{'x usual':>9}{'TFLOP/s':>9}{'of peak':>8}{'RTF':>8}"
            f"{'RSS MB':>8}{'GPU MB':>8}{'max|d| vs usual':>16}{'cos(last)':>10}")
    lines = [head, "-" * len(head)]
    for r in rows:
        d = f"{r['max_abs_diff']:.2e}" if "max_abs_diff" in r else "-"
        cos = f"{r['last_layer_mean_cos']:.4f}" if "last_layer_mean_cos" in r else "-"
        gpu = f"{r['peak_gpu_mb']:.0f}" if r.get("peak_gpu_mb") else "-"
        tf = f"{r['tflops']:.3g}" if "tflops" in r else "-"
        share = f"{100 * r['share_of_peak']:.1f}%" if "share_of_peak" in r else "-"
        lines.append(f"{r['name']:<26}{r['dtype']:>9}{r['utt_per_s']:>9.2f}{r['ratio_vs_usual']:>9.2f}{tf:>9}"
                     f"{share:>8}{r['rtf']:>8.4f}{r['peak_rss_mb']:>8.0f}{gpu:>8}{d:>16}{cos:>10}")
    return "\n".join(lines)


# --- the variants (run in a child process) ---------------------------------------------------
def build_encoder(model: str, device: str, dtype: str, base_model: str | None = None):
    """Whisper base (`base`: the embedded one, or `base_model`, a converted folder), or large-v3's
    dimensions with seeded random weights (`large-v3-dims`), as a pipeline Encoder."""
    import torch

    from pipeline.encoder import Encoder, load_encoder, pick_device

    if model == "base":
        return load_encoder(base_model, device, dtype)
    from transformers import WhisperConfig, WhisperFeatureExtractor
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    dev = pick_device(device)
    dt = getattr(torch, dtype)
    torch.manual_seed(0)
    config = WhisperConfig(**LARGE_V3_DIMS, attn_implementation="sdpa")
    with torch.device(dev):
        module = WhisperEncoder(config).to(dt).eval()
    fe = WhisperFeatureExtractor(feature_size=config.num_mel_bins)
    return Encoder(module, fe, "large-v3-dims-random", "large-v3-dims", "random-seed-0", dev, dt)


def run_usual(enc, paths: list[Path], out_dir: Path) -> np.ndarray:
    """EmoBox's shape: a loop over files, one padded 30 s forward each, one .npy per utterance."""
    import torch

    from pipeline.audio import load_audio

    out = []
    for i, path in enumerate(paths):
        audio = load_audio(path)
        feats = enc.feature_extractor(audio, sampling_rate=16000, return_tensors="pt").input_features
        with torch.no_grad():
            states = enc.module(feats.to(enc.device, enc.dtype), output_hidden_states=True).hidden_states
        n = real_frames(len(audio))
        pooled = torch.stack([h[0, :n].float().mean(0) for h in states]).cpu().numpy()
        np.save(out_dir / f"{i:05d}.npy", pooled)
        out.append(pooled)
    return np.stack(out)


def bench_table(paths: list[Path], root: Path, repeat: int):
    """A manifest table listing each file `repeat` times under different utt_ids."""
    import pandas as pd
    import soundfile as sf

    rel = [str(p.relative_to(root)) for p in paths]
    secs = [sf.info(str(p)).duration for p in paths]
    return pd.DataFrame({"utt_id": [f"r{k}-{Path(p).stem}-{i}" for k in range(repeat) for i, p in enumerate(rel)],
                         "path": rel * repeat, "label": "unknown", "speaker": "unknown", "corpus": "bench",
                         "duration": secs * repeat})


def run_ours(enc, table, root: Path, window: str, out_dir: Path, workers: int | None) -> np.ndarray:
    """Our extractor as `cli.py extract` runs it, with the already loaded encoder."""
    from pipeline.cache import load_cache
    from pipeline.extract import extract

    target = out_dir / f"bench-{window}.h5"
    extract(table, root, target, window=window, encoder=enc, workers=workers, progress=False, log=lambda *a: None)
    cache = load_cache(target)
    order = cache.table.set_index("utt_id").index.get_indexer(table["utt_id"])
    return cache.features[order].astype(np.float32)


def child(variant: str, model: str, method: str, dtype: str, files_json: Path, work: Path, device: str,
          workers: int | None, base_model: str | None) -> None:
    """Measure one variant (after an untimed warm-up on a few files); writes work/<variant>.json and .npy."""
    import torch

    from pipeline.window import real_mel_frames, seen_mel_frames

    spec = json.loads(files_json.read_text())
    root = Path(spec["root"])
    enc = build_encoder(model, device, dtype, base_model)
    repeat = spec["repeat"] if model == "base" else 1  # large-v3 is compute-bound: one pass is enough
    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    table = bench_table([Path(p) for p in spec["paths"]], root, repeat)
    usual = [Path(p) for p in spec["paths"][:spec["usual_n"]]]
    scratch = Path(tempfile.mkdtemp(dir=work))
    warm = Path(tempfile.mkdtemp(dir=work))
    cuda = enc.device.type == "cuda"
    if method == "usual":  # the warm-up: kernels chosen, memory pools grown, before the clock
        run_usual(enc, usual[:2 if cuda else 1], warm)
    else:
        run_ours(enc, table.iloc[:64 if cuda else 2], root, method, warm, workers)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    if method == "usual":
        vectors, n, samples = run_usual(enc, usual, scratch), len(usual), spec["samples"][:len(usual)]
        seen = np.full(n, 3000)
    else:
        vectors, n, samples = run_ours(enc, table, root, method, scratch, workers), len(table), spec["samples"] * repeat
        seen = seen_mel_frames(method, real_mel_frames(samples))
    if cuda:
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    cfg = enc.module.config
    flops = float(encoder_flops(seen, cfg.num_mel_bins, cfg.d_model, cfg.encoder_ffn_dim, cfg.encoder_layers).sum())
    np.save(work / f"{variant}.npy", vectors[:spec["usual_n"]])
    audio_s = float(np.sum(samples)) / 16000
    result = {"name": variant, "model": model, "method": method, "dtype": dtype, "device": str(enc.device), "n": n,
              "audio_s": audio_s, "wall_s": wall, "utt_per_s": n / wall, "rtf": wall / audio_s, "flops": flops,
              "peak_rss_mb": peak_rss_mb(), "rss_after_load_mb": rss_loaded,
              "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
              "torch_threads": torch.get_num_threads()}
    (work / f"{variant}.json").write_text(json.dumps(result))


def matmul_peaks(device: str, dtypes) -> dict:
    """Dense matmul TFLOP/s of this device per dtype (the 'peak' the table's share refers to)."""
    import torch

    n = 8192 if device == "cuda" else 2048
    peaks = {}
    for name in dtypes:
        a = torch.randn(n, n, device=device, dtype=getattr(torch, name))
        reps = 10 if device == "cuda" else 3
        a @ a
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ a
        if device == "cuda":
            torch.cuda.synchronize()
        peaks[name] = 2 * n**3 * reps / (time.perf_counter() - t0) / 1e12
    return peaks


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=420, help="distinct files (spread over the corpus)")
    ap.add_argument("--repeat", type=int, default=8,
                    help="our base rows encode each file this many times (utt_ids differ; large-v3-dims once)")
    ap.add_argument("--usual-n", type=int, default=200, help="files the usual way encodes (its rate is per file)")
    ap.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="folder of .wav/.flac files")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    ap.add_argument("--windows", default="full,trim", help="our windows to measure, e.g. full,trim,pad10")
    ap.add_argument("--model", help="Whisper base as a converted folder (default: the embedded one)")
    ap.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: sized to the machine)")
    ap.add_argument("--large", action=argparse.BooleanOptionalAction, default=True,
                    help="on a GPU, also the large-v3-dims rows")
    ap.add_argument("--json", type=Path, help="also save the table as JSON here")
    ap.add_argument("--child", nargs=6, metavar=("VARIANT", "MODEL", "METHOD", "DTYPE", "FILES", "WORK"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        v, model, m, d, files, work = args.child
        child(v, model, m, d, Path(files), Path(work), args.device, args.workers, args.model)
        return 0

    import soundfile as sf
    import torch

    root = args.root.resolve()
    if not root.is_dir():
        print(f"error: {root} is not a folder of audio files; pass --root DIR (RAVDESS: ../shared/corpora/ravdess)",
              file=sys.stderr)
        return 2
    paths = pick_files([p for p in root.rglob("*") if p.suffix.lower() in AUDIO_EXT], args.n)
    samples = [int(round(sf.info(str(p)).duration * 16000)) for p in paths]
    cuda = args.device in ("auto", "cuda") and torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    variants = variants_for(cuda, tuple(args.windows.split(",")), args.large)
    peaks = matmul_peaks(device, sorted({d for *_, d in variants}))
    runs, vectors = [], {}
    with tempfile.TemporaryDirectory(prefix="bench-extract-") as tmp:
        work = Path(tmp)
        files_json = work / "files.json"
        files_json.write_text(json.dumps({"root": str(root), "paths": [str(p) for p in paths], "samples": samples,
                                          "repeat": args.repeat, "usual_n": min(args.usual_n, len(paths))}))
        for name, model, method, dtype in variants:
            print(f"running {name} ({model}, {dtype}, {device}) ...", file=sys.stderr, flush=True)
            extra = (["--workers", args.workers] if args.workers is not None else []) + \
                (["--model", args.model] if args.model else [])
            runs.append(run_child(__file__, ["--device", device, *extra, "--child", name, model, method, dtype,
                                             files_json, work], work / f"{name}.json"))
            vectors[name] = np.load(work / f"{name}.npy")
            print(f"  {name}: {runs[-1]['utt_per_s']:.1f} utt/s ({runs[-1]['n']} in {runs[-1]['wall_s']:.1f} s)",
                  file=sys.stderr, flush=True)
    rows = summarize(runs, vectors, peaks)
    proc = torch.cuda.get_device_name() if cuda else (platform.processor() or platform.machine())
    print(f"\nExtraction speed on {device} ({proc}, torch threads {runs[0]['torch_threads']}): {len(paths)} files "
          f"from {root} ({sum(samples) / 16000:.1f} s audio), ours x{args.repeat} = {len(paths) * args.repeat} "
          f"utterances of base ({len(paths)} of large-v3-dims), usual {min(args.usual_n, len(paths))} files")
    print("measured dense matmul peak: " + ", ".join(f"{d} {p:.3g} TFLOP/s" for d, p in peaks.items()))
    print(format_table(rows))
    slower = trim_not_slower(rows)
    print("check: trim never slower than full: " + ("yes" if not slower else "NO - " + "; ".join(slower)))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"files": [str(p) for p in paths], "device": device, "peaks": peaks,
                                         "rows": rows}, indent=1))
        print(f"saved {args.json}")
    return 1 if slower else 0


if __name__ == "__main__":
    sys.exit(main())
