"""Extraction speed: the usual way vs our extractor - same machine, encoder, files, one run.

  (a) `usual`: what EmoBox's extraction script does - one file per forward pass, WhisperFeature-
      Extractor's 30 s padded input, fp32, transformers' WhisperEncoder forward with all hidden
      states, mean over the real-audio frames, one .npy written per utterance;
  (b) `ours-full`: `pipeline.extract.extract(window="full")` into an HDF5 cache;
  (c) `ours-trim`: the same with `window="trim"`.
On a GPU, (b) and (c) also run in fp16, bf16 and fp32 (the usual way stays fp32, as published).

Each variant runs in its own fresh subprocess, so its peak memory is its own; the encoder is
loaded before the clock starts (loading time is the same for all and excluded). Reported: utt/s,
real-time factor (wall / audio seconds), speed ratio vs (a), peak memory, and how far each
variant's pooled vectors are from (a)'s: (b) must agree to fp16 precision (the cache is float16).

    python bench/extract_speed.py [--n 32] [--root ../shared/corpora/ravdess] [--json FILE]
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


def variants_for(cuda: bool) -> list[tuple[str, str, str]]:
    """(name, method, dtype): the usual way once, ours per window (and per dtype on a GPU)."""
    out = [("usual", "usual", "float32")]
    for window in ("full", "trim"):
        dtypes = ("float16", "bfloat16", "float32") if cuda else ("float32",)
        out += [(f"ours-{window}" + (f"-{d}" if cuda else ""), window, d) for d in dtypes]
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


def summarize(runs: list[dict], vectors: dict) -> list[dict]:
    """Table rows: each run plus its speed ratio and vector agreement vs the `usual` run."""
    base = next(r for r in runs if r["name"] == "usual")
    rows = []
    for r in runs:
        row = dict(r, ratio_vs_usual=r["utt_per_s"] / base["utt_per_s"])
        if r["name"] != "usual":
            row.update(compare(vectors["usual"], vectors[r["name"]]))
        rows.append(row)
    return rows


def format_table(rows: list[dict]) -> str:
    head = (f"{'variant':<22}{'dtype':>9}{'utt/s':>8}{'RTF':>8}{'x usual':>9}{'peak RSS MB':>12}"
            f"{'GPU MB':>8}{'max|d| vs a':>13}{'fp16-ok':>8}{'cos(last)':>10}")
    lines = [head, "-" * len(head)]
    for r in rows:
        d = f"{r['max_abs_diff']:.2e}" if "max_abs_diff" in r else "-"
        ok = ("yes" if r["within_fp16"] else "no") if "within_fp16" in r else "-"
        cos = f"{r['last_layer_mean_cos']:.4f}" if "last_layer_mean_cos" in r else "-"
        gpu = f"{r['peak_gpu_mb']:.0f}" if r.get("peak_gpu_mb") else "-"
        lines.append(f"{r['name']:<22}{r['dtype']:>9}{r['utt_per_s']:>8.2f}{r['rtf']:>8.4f}"
                     f"{r['ratio_vs_usual']:>9.2f}{r['peak_rss_mb']:>12.0f}{gpu:>8}{d:>13}{ok:>8}{cos:>10}")
    return "\n".join(lines)


# --- the variants (run in a child process) ---------------------------------------------------
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


def run_ours(enc, paths: list[Path], root: Path, window: str, out_dir: Path) -> np.ndarray:
    """Our extractor as `cli.py extract` runs it, with the already loaded encoder."""
    import pandas as pd
    import soundfile as sf

    import pipeline.extract as pe
    from pipeline.cache import load_cache

    table = pd.DataFrame({"utt_id": [p.stem for p in paths], "path": [str(p.relative_to(root)) for p in paths],
                          "label": "unknown", "speaker": "unknown", "corpus": "bench",
                          "duration": [sf.info(str(p)).duration for p in paths]})
    pe.load_encoder = lambda *args, **kwargs: enc  # the clock measures encoding, not loading
    target = out_dir / f"bench-{window}.h5"
    pe.extract(table, root, target, window=window, progress=False, log=lambda *a: None)
    cache = load_cache(target)
    order = cache.table.set_index("utt_id").index.get_indexer(table["utt_id"])
    return cache.features[order].astype(np.float32)


def child(variant: str, method: str, dtype: str, files_json: Path, work: Path, device: str) -> None:
    """Measure one variant; writes work/<variant>.json and .npy."""
    import torch

    from pipeline.encoder import load_encoder

    spec = json.loads(files_json.read_text())
    root, paths = Path(spec["root"]), [Path(p) for p in spec["paths"]]
    enc = load_encoder(None, device, dtype)
    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if enc.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.synchronize()
    scratch = Path(tempfile.mkdtemp(dir=work))
    t0 = time.perf_counter()
    vectors = run_usual(enc, paths, scratch) if method == "usual" else run_ours(enc, paths, root, method, scratch)
    if enc.device.type == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    np.save(work / f"{variant}.npy", vectors)
    result = {"name": variant, "dtype": dtype, "device": str(enc.device), "n": len(paths),
              "audio_s": spec["audio_s"], "wall_s": wall, "utt_per_s": len(paths) / wall,
              "rtf": wall / spec["audio_s"], "peak_rss_mb": peak_rss_mb(), "rss_after_load_mb": rss_loaded,
              "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if enc.device.type == "cuda" else None,
              "torch_threads": torch.get_num_threads()}
    (work / f"{variant}.json").write_text(json.dumps(result))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=32, help="number of files (spread over the corpus)")
    ap.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="folder of .wav/.flac files")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    ap.add_argument("--json", type=Path, help="also save the table as JSON here")
    ap.add_argument("--child", nargs=5, metavar=("VARIANT", "METHOD", "DTYPE", "FILES", "WORK"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        v, m, d, files, work = args.child
        child(v, m, d, Path(files), Path(work), args.device)
        return 0

    import soundfile as sf
    import torch

    root = args.root.resolve()
    if not root.is_dir():
        print(f"error: {root} is not a folder of audio files; pass --root DIR (RAVDESS: ../shared/corpora/ravdess)",
              file=sys.stderr)
        return 2
    paths = pick_files([p for p in root.rglob("*") if p.suffix.lower() in AUDIO_EXT], args.n)
    audio_s = float(sum(sf.info(str(p)).duration for p in paths))
    cuda = args.device in ("auto", "cuda") and torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    runs, vectors = [], {}
    with tempfile.TemporaryDirectory(prefix="bench-extract-") as tmp:
        work = Path(tmp)
        files_json = work / "files.json"
        files_json.write_text(json.dumps({"root": str(root), "paths": [str(p) for p in paths], "audio_s": audio_s}))
        for name, method, dtype in variants_for(cuda):
            print(f"running {name} ({dtype}, {device}) on {len(paths)} files, {audio_s:.1f} s of audio ...",
                  file=sys.stderr, flush=True)
            runs.append(run_child(__file__, ["--device", device, "--child", name, method, dtype, files_json, work],
                                  work / f"{name}.json"))
            vectors[name] = np.load(work / f"{name}.npy")
    rows = summarize(runs, vectors)
    cpu = platform.processor() or platform.machine()
    print(f"\nExtraction speed: Whisper base (embedded), {len(paths)} files from {root} "
          f"({audio_s:.1f} s audio), device {device} ({cpu}, torch threads {runs[0]['torch_threads']})")
    print(format_table(rows))
    full = [r for r in rows if r["name"].startswith("ours-full")]
    trim = [r for r in rows if r["name"].startswith("ours-trim")]
    print(f"b/a = {max(r['ratio_vs_usual'] for r in full):.2f}x   c/a = {max(r['ratio_vs_usual'] for r in trim):.2f}x"
          f"   (b agrees with a to fp16 precision: {all(r['within_fp16'] for r in full if r['dtype'] == 'float32')})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"files": [str(p) for p in paths], "audio_s": audio_s, "device": device,
                                         "rows": rows}, indent=1))
        print(f"saved {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
