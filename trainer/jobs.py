"""One fold x seed of the protocol (every requested method on the same fold data), and the
process pool that runs many of them (`train`, `ablate`)."""
from __future__ import annotations

import os
import time
import zlib
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import torch
from tqdm import tqdm

from data_manifests.errors import UserError
from pipeline.run_lock import die_with_parent
from trainer.config import TrainConfig
from trainer.inputs.fold_jobs import prepare_fold, prepared_cache
from trainer.method.methods import METHOD_ORDER, monitored_epochs, train_method, warm_up
from trainer.metrics import histogram_entropy, scores
from trainer.method.monitor import Monitor
from trainer.inputs.protocol import fold_names
from trainer.method.source_gate import gate_sources


def job_seed(fold: str, seed: int, salt: str) -> int:
    return (seed * 1_000_003 + zlib.crc32(f"{fold}/{salt}".encode())) % (2**31)


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {device}: no CUDA device here; use --set device=cpu")
    return device


def run_job(cfg_dict: dict, cache_path: str, fold: str, seed: int) -> dict:
    """One fold x seed: warm-up, then every requested method; returns rows, curves, predictions."""
    cfg = TrainConfig.from_dict(cfg_dict)
    torch.set_num_threads(cfg.threads or max(1, (os.cpu_count() or 1) // cfg.workers))
    dev = torch.device(resolve_device(cfg.device))

    def seed_of(salt):
        return job_seed(fold, seed, salt)

    job = gate_sources(prepare_fold(cfg, cache_path, fold, seed, dev), seed_of)
    data, split, n_classes, cfg = job.data, job.split, len(job.classes), job.cfg  # cfg: auto choices resolved
    rows, curves, preds, models = [], [], {}, {}

    def finish(method, model, t0, kept_epoch=None):
        pred = data.x_test.map(model.probs).argmax(1).cpu().numpy()
        pool_pred = data.x_unl.map(model.probs).argmax(1).cpu().numpy() if len(data.x_unl) else pred
        ent = histogram_entropy(pool_pred, n_classes)
        rows.append(
            {
                "method": method,
                "fold": fold,
                "seed": seed,
                **scores(data.y_test.cpu().numpy(), pred, n_classes),
                "pool_pred_entropy": ent,
                "collapsed": bool(ent < cfg.collapse_entropy),
                "kept_epoch": kept_epoch,
                "n_labeled": len(data.y_lab),
                "n_val": len(split.val),
                "n_unlabeled": len(data.x_unl),
                "n_test": len(split.test),
                "speaker_overlap": split.speaker_overlap,
                "seconds": round(time.perf_counter() - t0, 3),
            }
        )
        preds[method] = pred
        if cfg.save_models and method == cfg.methods[0]:
            models[f"{method}_f{fold}_s{seed}"] = {k: v.cpu() for k, v in model.state_dict().items()}, model.arch

    warm, t_warm = None, 0.0
    if set(cfg.methods) - {"topline"}:
        t0 = time.perf_counter()
        mon = Monitor(data, "supervised", curves, monitored_epochs("supervised", cfg))
        warm, job = warm_up(job, seed_of, mon)
        t_warm = time.perf_counter() - t0
        if "supervised" in cfg.methods:
            finish("supervised", warm, t0, mon.best_epoch)
    for method in [m for m in METHOD_ORDER if m in cfg.methods and m != "supervised"]:
        t0 = time.perf_counter() - (t_warm if method != "topline" else 0.0)
        mon = Monitor(data, method, curves, monitored_epochs(method, cfg))
        model = train_method(method, warm, job, seed_of, mon)
        finish(method, model, t0, mon.best_epoch)
    for c in curves:
        c.update(fold=fold, seed=seed)
    for r in rows:
        r.update(layer=cfg.layer, speaker_norm=cfg.speaker_norm, text_norm=cfg.text_norm)
    prompts = None if job.prompts is None else job.prompts.to_save()  # prompts whose mean the run subtracted
    return {"rows": rows, "curves": curves, "fold": fold, "seed": seed, "models": models, "choice": job.choice,
            "prompt_means": prompts, "speaker_prior": job.speaker_prior() if cfg.save_models else None,
            "predictions": {"utt_id": job.table["utt_id"].iloc[split.test].tolist(),
                            "label": data.y_test.cpu().numpy().tolist(),
                            **{m: p.tolist() for m, p in preds.items()}}}


def jobs_for(cfg: TrainConfig, cache_path) -> list[tuple]:
    """(cfg_dict, cache, fold, seed) for every requested fold x seed; unknown folds named."""
    table = prepared_cache(str(cache_path), cfg.layer, cfg.speaker_norm).table
    unlabelled = int((table["label"].astype(str) == "").sum())
    if unlabelled:
        raise UserError(f"{cache_path}: {unlabelled} of {len(table)} utterances have no label (e.g. segments from "
                         "`segment`), but train / ablate score every fold's held-out labels: label them with "
                         "`python cli.py label --cache CACHE --labels LABELS.csv` (trains on the labels you have), "
                         "or extract a labelled manifest")
    all_folds = fold_names(table)
    folds = list(cfg.folds) if cfg.folds else all_folds
    bad = [f for f in folds if f not in all_folds]
    if bad:
        raise UserError(f"folds {','.join(bad)}: {cache_path} has folds {','.join(all_folds)}")
    if cfg.inner_validation and all_folds != ["split"] and len(all_folds) < 3:
        raise UserError(f"inner_validation scores the next fold's speakers with the test fold removed, so it needs "
                         f"at least 3 folds; {cache_path} has {len(all_folds)}: drop --set inner_validation=true, "
                         "or rebuild the manifest with more folds (--n-folds)")
    return [(cfg.to_dict(), str(cache_path), f, s) for f in folds for s in cfg.seeds]


def run_jobs(jobs: list[tuple], workers: int, desc: str = "folds x seeds") -> list[dict]:
    """Run (cfg_dict, cache, fold, seed) jobs serially or in spawned processes; order is kept."""
    if workers <= 1 or len(jobs) <= 1:
        return [run_job(*j) for j in tqdm(jobs, desc=desc, leave=False)]
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"),
                             initializer=die_with_parent, initargs=(os.getpid(),)) as pool:
        futures = [pool.submit(run_job, *j) for j in jobs]
        return [f.result() for f in tqdm(futures, desc=desc, leave=False)]
