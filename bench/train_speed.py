"""Training speed from caches: seconds per B-GRPO epoch, the whole RAVDESS protocol, scaling.

  * RAVDESS (the real cache `cache/ravdess/whisper-base-trim.h5`, else `-full.h5`, or `--cache`):
    the whole protocol with the trainer's defaults - 6 folds x 3 seeds, `supervised` + `bgrpo`;
    and seconds per B-GRPO epoch (a refit round under the default `--update refit`) from one fold x seed
    with `--epochs` E epochs/rounds: (T_bgrpo - T_supervised) / E
    of the trainer's own per-method timing, so loading, warm-up and writing cancel out.
  * Scaling: synthetic caches of 1k, 10k and 100k utterances (Whisper base shape: 7 hidden
    states x 512, float16; written with `pipeline.cache.write_cache_arrays` into a temp dir), the
    same per-epoch measure on one fold x seed.
  * `--pool 10000,100000,1000000`: the large-pool benchmark. Synthetic caches of that many
    utterances (7 x 512 float16 on disk, 4 classes, one speaker per 200 utterances, class signal
    `--signal` (default 0.1: overlapping classes, so each round refits on a real selection), written
    block by block, never whole in RAM) and one default run each (one fold x one seed: warm-up +
    --epochs refit rounds): wall time, warm-up, seconds per round, peak RSS and how the cost per
    round grew against the pool (1.0 = linear). `--pool-dir` keeps the caches for a re-run.
    With `--cache FILE`, the RAVDESS protocol above is timed too (workers = min(cores, jobs)).
`--device cpu,cuda` measures every row on each device (cuda is skipped, with a note, where there
is none) and prints seconds per round (and the protocol's wall time) side by side, with the
macro-F1 each device reached. Each measurement runs in a fresh child process (peak memory = that
run's; `bench/measure.py`); a run that fails or passes `--timeout` is reported and the rest go on.

    python bench/train_speed.py [--cache FILE.h5] [--sizes 1000,10000,100000] [--epochs 3] [--json FILE]
    python bench/train_speed.py --pool 10000,100000,1000000 --epochs 3 [--pool-dir /big/disk]
    python bench/train_speed.py --pool 100000,1000000 --device cpu,cuda --epochs 3 \
        --cache cache/ravdess/whisper-base-trim.h5
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))
from bench.measure import peak_rss_mb, run_child  # noqa: E402
from trainer.config import TrainConfig  # noqa: E402

RAVDESS_CACHES = [REPO / "cache" / "ravdess" / f"whisper-base-{w}.h5" for w in ("trim", "full")]
SHAPE = (7, 512)  # Whisper base: conv output + 6 layers, 512 wide


# --- pure helpers ----------------------------------------------------------------------------
def per_epoch_seconds(t_with: float, t_without: float, epochs: int) -> float:
    """Seconds per epoch from the time with `epochs` epochs and the time of the rest alone."""
    if epochs < 1:
        raise ValueError("epochs must be >= 1")
    return max(t_with - t_without, 0.0) / epochs


def synthetic_table(n: int, n_classes: int = 4, n_speakers: int = 50, n_folds: int = 5, seed: int = 0):
    """Rows of a synthetic cache: balanced labels, speakers round-robin into speaker folds."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    speaker = rng.integers(0, n_speakers, n)
    label = rng.integers(0, n_classes, n)
    return pd.DataFrame({"utt_id": [f"u{i:07d}" for i in range(n)], "label": [f"class{c}" for c in label],
                         "speaker": [f"spk{s:05d}" for s in speaker], "fold": speaker % n_folds,
                         "corpus": "synthetic", "duration": 3.0, "num_frames": 150})


def synthetic_blocks(table, shape=SHAPE, seed: int = 0, chunk: int = 8192, signal: float = 0.5):
    """(rows, [b, L, D] float16) blocks in row order: class mean (N(0, signal^2) per dimension) +
    speaker offset + noise. The values do not depend on `chunk` (one random stream), so a cache of
    any size is written in blocks without ever holding it whole. signal 0.5 separates the classes
    perfectly (every pool row is confident, B-GRPO selects none and a refit is the labelled set's);
    0.1 leaves them overlapping (accuracy below 100%, real selections to refit on)."""
    rng = np.random.default_rng(seed)
    n_layers, dim = shape
    labels = table["label"].astype("category").cat.codes.to_numpy()
    speakers = table["speaker"].astype("category").cat.codes.to_numpy()
    class_means = rng.normal(size=(labels.max() + 1, 1, dim)) * signal
    offsets = rng.normal(size=(speakers.max() + 1, 1, dim)) * 0.5
    for start in range(0, len(table), chunk):
        sl = slice(start, start + chunk)
        noise = rng.standard_normal((len(labels[sl]), n_layers, dim), dtype=np.float32)
        yield np.arange(start, start + len(noise)), (class_means[labels[sl]] + offsets[speakers[sl]] + noise
                                                     ).astype(np.float16)


def synthetic_embeddings(table, shape=SHAPE, seed: int = 0, chunk: int = 8192) -> np.ndarray:
    """[N, L, D] float16 of `synthetic_blocks` in one array (small caches)."""
    return np.concatenate([b for _, b in synthetic_blocks(table, shape, seed, chunk)])


def synthetic_pool_cache(path: Path, n: int, signal: float = 0.5) -> Path:
    """A synthetic cache of n utterances in the real shape, streamed to disk (reused when complete;
    the file name should carry `signal`)."""
    import h5py

    from pipeline.cache import cache_shape, write_cache

    if path.exists():
        with h5py.File(path, "r") as f:
            if f.attrs.get("complete", False) and cache_shape(path) == (n, *SHAPE):
                return path
    table = synthetic_table(n, n_speakers=max(50, n // 200))
    print(f"writing {path} ({n} x {SHAPE[0]} x {SHAPE[1]} float16)", file=sys.stderr, flush=True)
    return write_cache(path, table, {"encoder_id": "synthetic", "window": "trim", "sample_rate": 16000},
                       SHAPE, synthetic_blocks(table, signal=signal))


def problem(r: dict) -> str | None:
    """Why a row has no numbers (ran past its timeout, or its run failed), else None."""
    if r.get("timeout"):
        return f"timed out after {r['timeout']:.0f} s"
    return f"failed (exit {r['failed']})" if r.get("failed") else None


def growth(rows: list[dict]) -> list[dict]:
    """Per row after the first of its device: how the cost of a round grew against the pool (1.0 = linear)."""
    out, last = [], {}
    for row in rows:
        dev = row.get("device", "cpu")
        prev, last[dev] = last.get(dev), row
        ok = prev is not None and not problem(prev) and not problem(row) and prev["s_per_epoch"] > 0
        ratio = (row["s_per_epoch"] / prev["s_per_epoch"]) / (row["pool"] / prev["pool"]) if ok else None
        out.append(dict(row, growth_vs_linear=ratio))
    return out


POOL_COLUMNS = ("cache utts", "pool", "wall s", "warm-up s", "s/round", "round growth / pool growth", "peak RSS MB",
                "device")


def pool_cells(r: dict) -> list[str]:
    """One large-pool row as text cells (POOL_COLUMNS), shared by the printed and the Markdown table."""
    dev = r.get("device", "cpu")
    if problem(r):
        return [f"{r['utterances']:,}", f"{r['pool']:,}", problem(r), "", "", "", "", dev]
    g = r.get("growth_vs_linear")
    return [f"{r['utterances']:,}", f"{r['pool']:,}", f"{r['wall_s']:.1f}", f"{r['warmup_s']:.2f}",
            f"{r['s_per_epoch']:.2f}", "-" if g is None else f"{g:.2f}", f"{r['peak_rss_mb']:.0f}", dev]


def format_pool_table(rows: list[dict]) -> str:
    widths = [max(len(c), 11) + 2 for c in POOL_COLUMNS]
    lines = ["".join(f"{c:>{w}}" for c, w in zip(POOL_COLUMNS, widths))]
    lines.append("-" * len(lines[0]))
    lines += ["".join(f"{c:>{w}}" for c, w in zip(pool_cells(r), widths)).rstrip() for r in rows]
    return "\n".join(lines)


def format_table(rows: list[dict]) -> str:
    head = (f"{'measurement':<44}{'utts':>8}{'pool':>7}{'wall s':>9}{'warm-up s':>10}{'s/epoch':>9}"
            f"{'us/utt/ep':>10}{'peak RSS MB':>12}")
    lines = [head, "-" * len(head)]

    def cell(value, fmt):
        return "-" if value is None else format(value, fmt)
    for r in rows:
        if problem(r):
            lines.append(f"{r['name']:<44}{r['utterances']:>8}{cell(r.get('pool'), 'd'):>7}  {problem(r)}")
            continue
        lines.append(f"{r['name']:<44}{r['utterances']:>8}{cell(r.get('pool'), 'd'):>7}{r['wall_s']:>9.2f}"
                     f"{cell(r.get('warmup_s'), '.2f'):>10}{cell(r.get('s_per_epoch'), '.3f'):>9}"
                     f"{cell(r.get('us_per_utt_epoch'), '.1f'):>10}{r['peak_rss_mb']:>12.0f}")
    return "\n".join(lines)


# --- one training run (in a child process) ---------------------------------------------------
def child(spec_path: Path) -> None:
    """Run the jobs of the config overrides in the spec (the protocol of `train`, without writing a
    run directory, so no plotting or model files are needed); record wall time, peak memory, the
    trainer's per-method seconds and the macro-F1 means."""
    import pandas as pd
    import torch

    from trainer.jobs import jobs_for, resolve_device, run_jobs

    spec = json.loads(spec_path.read_text())
    cfg = TrainConfig().replace(**spec["overrides"])
    cfg = cfg.replace(device=resolve_device(cfg.device), save_models=False)
    cuda = cfg.device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    results = run_jobs(jobs_for(cfg, spec["cache"]), cfg.workers)
    wall = time.perf_counter() - t0
    rows = pd.DataFrame([row for res in results for row in res["rows"]]).groupby("method")
    # the trainer's own per-job timing (warm-up + method), free of loading
    Path(spec["result"]).write_text(json.dumps({
        "wall_s": wall, "peak_rss_mb": peak_rss_mb(), "macro_f1": rows["macro_f1"].mean().to_dict(),
        "method_seconds": rows["seconds"].sum().to_dict(),
        "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None}))


def measure(work: Path, name: str, cache: Path, overrides: dict, timeout: float) -> dict | None:
    """One training run in a child process; None when it ran past `timeout` seconds, {"failed":
    exit code} when it failed (its traceback is on stderr)."""
    spec = work / f"{name}.spec.json"
    result = work / f"{name}.result.json"
    spec.write_text(json.dumps({"cache": str(cache), "result": str(result), "overrides": overrides}))
    print(f"running {name}: {overrides}", file=sys.stderr, flush=True)
    try:
        return run_child(__file__, ["--child", spec], result, timeout)
    except subprocess.CalledProcessError as error:
        print(f"{name} failed (exit {error.returncode})", file=sys.stderr, flush=True)
        return {"failed": error.returncode}


def epoch_row(work: Path, name: str, cache: Path, epochs: int, base: dict, n_utts: int, pool: int,
              timeout: float) -> dict:
    """One fold x seed, `supervised` + `bgrpo` with `epochs` B-GRPO epochs, in one process.

    The trainer times each method per job from the start of the shared warm-up, so
    bgrpo - supervised is the B-GRPO loop alone (the warm-up and the process noise cancel).
    """
    row = {"name": name, "utterances": n_utts, "pool": pool, "device": base.get("device", "cpu")}
    r = measure(work, name.replace(" ", "_").replace(",", ""), cache,
                dict(base, methods=["supervised", "bgrpo"], epochs=epochs, refit_rounds=epochs), timeout)
    if r is None or r.get("failed"):
        return dict(row, timeout=timeout) if r is None else dict(row, failed=r["failed"])
    sec = r["method_seconds"]
    s = per_epoch_seconds(sec["bgrpo"], sec["supervised"], epochs)
    return dict(row, wall_s=r["wall_s"], warmup_s=sec["supervised"], s_per_epoch=s,
                us_per_utt_epoch=1e6 * s / pool if pool else None, peak_rss_mb=r["peak_rss_mb"],
                peak_gpu_mb=r.get("peak_gpu_mb"), macro_f1=r["macro_f1"])


def protocol_row(work: Path, cache: Path, device: str, timeout: float) -> dict:
    """The whole RAVDESS protocol (every fold x seed, supervised + bgrpo) on `device`, with as many
    worker processes as cores (at most one per job): wall time and macro-F1."""
    from pipeline.cache import load_cache
    from trainer.inputs.protocol import fold_names

    table, seeds = load_cache(cache, layers=[]).table, TrainConfig().seeds
    folds = fold_names(table)
    workers = max(1, min(os.cpu_count() or 1, len(folds) * len(seeds)))
    name = f"RAVDESS {len(folds)} folds x {len(seeds)} seeds, sup+bgrpo, {workers} workers"
    row = {"name": name, "utterances": len(table), "device": device}
    r = measure(work, f"protocol-{device.replace(':', '')}", cache,
                {"methods": ["supervised", "bgrpo"], "device": device, "workers": workers}, timeout)
    if r is None or r.get("failed"):
        return dict(row, timeout=timeout) if r is None else dict(row, failed=r["failed"])
    return dict(row, wall_s=r["wall_s"], peak_rss_mb=r["peak_rss_mb"], macro_f1=r["macro_f1"])


def usable_devices(spec: str) -> tuple[list[str], list[str]]:
    """(devices of a comma list that this machine has, notes on the ones it lacks)."""
    import torch

    devices, notes = [], []
    for dev in [d.strip() for d in spec.split(",") if d.strip()]:
        if dev.startswith("cuda") and not torch.cuda.is_available():
            notes.append(f"{dev}: no CUDA device on this machine; its rows are skipped")
        else:
            devices.append(dev)
    return devices, notes


def device_label(dev: str) -> str:
    """The device with its hardware: the GPU's name, or the CPU's core count."""
    import torch

    if dev.startswith("cuda"):
        return f"{dev} ({torch.cuda.get_device_name(torch.device(dev))})"
    return f"{dev} ({os.cpu_count()} cores)"


def device_comparison(rows: list[dict]) -> list[str]:
    """One line per measurement with each device's s/round (or wall s for the protocol), the
    speed-up over the first device and the macro-F1 each reached."""
    lines, by_name = [], {}
    for r in rows:
        by_name.setdefault(r["name"].split(" [")[0], []).append(r)
    for name, group in by_name.items():
        key = "s_per_epoch" if "s_per_epoch" in group[0] or "pool" in group[0] else "wall_s"
        unit = "s/round" if key == "s_per_epoch" else "s wall"
        first = group[0]
        cells = []
        for r in group:
            if problem(r):
                cells.append(f"{r['device']} {problem(r)}")
                continue
            ratio = (f", speed-up {first[key] / r[key]:.2f}x over {first['device']}"
                     if r is not first and not problem(first) and r[key] > 0 else "")
            f1 = ", ".join(f"{m} {v:.2f}" for m, v in sorted(r.get("macro_f1", {}).items()))
            cells.append(f"{r['device']} {r[key]:.3f} {unit}{ratio} (macro-F1 {f1})")
        lines.append(f"{name}: " + "; ".join(cells))
    return lines


def pool_size(table, fold, labeled_fraction: float) -> int:
    """Unlabelled pool of one training fold: its utterances minus the labelled share."""
    n_train = int((table["fold"].astype(str) != str(fold)).sum())
    return n_train - int(round(n_train * labeled_fraction))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--cache",
        type=Path,
        help="RAVDESS cache (default: cache/ravdess/whisper-base-trim.h5 or -full.h5; "
        "with --pool: time the RAVDESS protocol on it too)",
    )
    ap.add_argument("--sizes", default="1000,10000,100000", help="synthetic cache sizes (utterances)")
    ap.add_argument("--epochs", type=int, default=5, help="B-GRPO epochs of the per-epoch runs")
    ap.add_argument("--device", default="cpu", help="cpu | cuda | a comma list (cpu,cuda): every row on each device")
    ap.add_argument("--threads", type=int, default=TrainConfig.threads,
                    help="torch threads of the one-job rows (0 = every core); the protocol runs one thread per worker")
    ap.add_argument("--timeout", type=float, default=900, help="seconds allowed per training run")
    ap.add_argument("--skip-protocol", action="store_true", help="skip the full 6 folds x 3 seeds RAVDESS run")
    ap.add_argument(
        "--pool", help="large-pool benchmark: comma list of synthetic cache sizes, e.g. 10000,100000,1000000"
    )
    ap.add_argument("--signal", type=float, default=0.1,
                    help="--pool: class-mean scale of the synthetic caches (0.1: overlapping classes, refits over "
                         "real selections; 0.5, the caches before: separable, nothing selected to refit on)")
    ap.add_argument(
        "--pool-dir", type=Path, help="--pool: keep (and reuse) the synthetic caches here (default: a temp dir)"
    )
    ap.add_argument("--json", type=Path, help="also save the table as JSON here")
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child)
        return 0
    devices, device_notes = usable_devices(args.device)
    for note in device_notes:
        print("note:", note, file=sys.stderr)
    if not devices:
        return 2

    if args.pool:
        return pool_benchmark([int(s) for s in args.pool.split(",") if s], devices, device_notes, args)

    from pipeline.cache import load_cache, write_cache_arrays
    from trainer.inputs.protocol import fold_names

    defaults = TrainConfig()
    rows, notes = [], list(device_notes)
    cache = args.cache or next((p for p in RAVDESS_CACHES if p.exists()), None)
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        work = Path(tmp)
        if cache is None or not Path(cache).exists():
            notes.append(f"no RAVDESS cache at {cache or RAVDESS_CACHES[0]}: run `python cli.py extract --corpus "
                         "ravdess --root ../shared/corpora/ravdess --window trim` first; RAVDESS rows skipped")
        else:
            table = load_cache(cache).table
            n, folds = len(table), fold_names(table)
            notes.append(f"RAVDESS cache: {cache} ({n} utterances, folds {','.join(folds)})")
            for dev in devices:
                if not args.skip_protocol:
                    rows.append(named(protocol_row(work, cache, dev, args.timeout), dev))
                base = {"folds": [folds[0]], "seeds": [0], "device": dev, "threads": args.threads}
                rows.append(named(epoch_row(work, f"RAVDESS fold {folds[0]} x 1 seed, {args.epochs} ep {dev}", cache,
                                            args.epochs, base, n, pool_size(table, folds[0], defaults.labeled_fraction),
                                            args.timeout), dev))
        for size in [int(s) for s in args.sizes.split(",") if s]:
            table = synthetic_table(size)
            path = write_cache_arrays(work / f"synthetic-{size}.h5", synthetic_embeddings(table), table,
                                      {"encoder_id": "synthetic", "window": "trim", "sample_rate": 16000})
            for dev in devices:
                base = {"folds": ["0"], "seeds": [0], "device": dev, "threads": args.threads}
                rows.append(
                    named(
                        epoch_row(
                            work,
                            f"synthetic {size // 1000}k, 1 fold x 1 seed, {args.epochs} ep {dev}",
                            path,
                            args.epochs,
                            base,
                            size,
                            pool_size(table, 0, defaults.labeled_fraction),
                            args.timeout,
                        ),
                        dev,
                    )
                )
            path.unlink()
    print(f"\nTraining speed (trainer defaults: solver {defaults.solver}, update {defaults.update} with "
          f"{defaults.refit_rounds} rounds, groups of {defaults.batch_size}, labelled fraction "
          f"{defaults.labeled_fraction}; devices {', '.join(map(device_label, devices))}; {args.threads} torch "
          "threads (0 = every core) in the one-job rows)")
    print(format_table(rows))
    for line in device_comparison(rows):
        print(line)
    for note in notes:
        print("note:", note)
    if args.json:
        from data_manifests.storage import write_text_atomic
        write_text_atomic(args.json, json.dumps({"rows": rows, "notes": notes}, indent=1))
        print(f"saved {args.json}")
    return 0


def named(row: dict, device: str) -> dict:
    """The row's name tagged with its device ("... [cuda]"), the key device_comparison groups on;
    printed at once, so a run cut short still shows the rows it finished."""
    row = dict(row, name=f"{row['name'].removesuffix(' ' + device)} [{device}]")
    print("measured", *device_comparison([row]), flush=True)
    return row


def pool_benchmark(sizes: list[int], devices: list[str], notes: list[str], args) -> int:
    """One default run (one fold x one seed) per synthetic cache size and device; the table with
    growth ratios, the devices side by side, and (with --cache) the RAVDESS protocol per device."""
    import h5py

    from pipeline.cache import read_table

    defaults = TrainConfig()
    rows, protocol = [], []
    with tempfile.TemporaryDirectory(prefix="bench-pool-") as tmp:
        work = Path(tmp)
        if args.cache:
            protocol = [named(protocol_row(work, args.cache, dev, args.timeout), dev) for dev in devices]
        caches = args.pool_dir or work
        caches.mkdir(parents=True, exist_ok=True)
        for n in sizes:
            path = synthetic_pool_cache(caches / f"synthetic-{n}-signal{args.signal:g}.h5", n, args.signal)
            with h5py.File(path, "r") as f:
                table = read_table(f)
            for dev in devices:
                base = {"folds": ["0"], "seeds": [0], "device": dev, "threads": args.threads}
                rows.append(named(epoch_row(work, f"pool {n}", path, args.epochs, base, n,
                                            pool_size(table, 0, defaults.labeled_fraction), args.timeout), dev))
            del table
    rows = growth(rows)
    title = (
        f"Synthetic caches ({SHAPE[0]} x {SHAPE[1]} float16, class signal {args.signal:g}), one fold x one "
        "seed, supervised warm-up + "
        f"{args.epochs} refit rounds with the trainer's defaults; devices {', '.join(map(device_label, devices))}, "
        f"{args.threads} torch threads (0 = every core), "
        f"load average {os.getloadavg()[0]:.2f} at the end ({time.strftime('%Y-%m-%d %H:%M')})."
    )
    print("\n" + title)
    print(format_pool_table(rows))
    for line in device_comparison(protocol + rows):
        print(line)
    for note in notes:
        print("note:", note)
    if args.json:
        from data_manifests.storage import write_text_atomic
        write_text_atomic(args.json, json.dumps({"title": title, "rows": rows, "protocol": protocol}, indent=1))
        print(f"saved {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
