"""The whole protocol for folds x seeds: every requested method per job, scores, diagnostics,
summaries and the files of a run directory.

Run directory (scores in percent):
  results.json  {"methods": {NAME: {"macro_f1"|"ua"|"wa": {"mean", "std", "n"},
                   "rel_macro_f1_vs_supervised": % (when supervised ran),
                   "gap_recovered": G (when supervised and topline ran),
                   "collapsed_runs": int, "per_fold_macro_f1": {fold: mean over seeds},
                   "confusion": [[...]] (summed over folds x seeds, rows = true, cache.classes order)}},
                 "config": TrainConfig fields, "cache": {path, fingerprint, encoder_id, weights_sha256, window, classes,
                 n_utterances}, "git_revision": str, "wall_seconds": float}
  results.csv   one row per method x fold x seed: macro_f1, ua, wa, pool_pred_entropy, collapsed,
                kept_epoch, n_labeled, n_val, n_unlabeled, n_test, speaker_overlap, seconds
  curves.csv    per method x fold x seed x epoch (pseudo-label, refit: round): test_macro_f1 (diagnostic
                only), val_macro_f1, pool_pred_entropy; B-GRPO adds selection_rate, selection_precision
                (hidden labels, never used), mean_reward, mean_pred_entropy, action_entropy, action_hist
  predictions.csv  method, fold, seed, utt_id, label, pred for every test utterance
  config.json   config + cache identity + git revision (enough to re-run)
  models.safetensors  the first --method's policy per fold x seed (for `predict`)
  curves.png, confusion.png
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from data_manifests.storage import write_text_atomic
from pipeline.run_lock import exclusive
from trainer.config import TrainConfig
from trainer.inputs.fold_jobs import prepared_cache, run_classes, table_cache
from trainer.jobs import jobs_for, resolve_device, run_jobs
from trainer.inputs.protocol import warn_empty_pool, warn_few_labels
from trainer.report import collect, git_revision, save_models, summarise


def train(cfg: TrainConfig, cache_path, out_dir) -> dict:
    """The `train` command: all folds x seeds, then the run directory's files. Returns results.

    One train per run directory at a time (`<out>.lock`): a second one into the same --out is
    refused instead of interleaving its files with the first one's."""
    with exclusive(Path(str(out_dir) + ".lock"), f"run directory {out_dir}", folders=(out_dir,)):
        return _train(cfg, cache_path, out_dir)


def left_out(results: list[dict]) -> int:
    """Test rows of classes not in play, over the run's folds (one seed's: every seed has the same)."""
    return sum({r["fold"]: r["choice"].get("test_rows_left_out", 0) for r in results}.values())


def source_corpora_record(results: list[dict]) -> list[dict]:
    """results.json "source_corpora": each source's path, fingerprint, encoder, window and the
    labelled rows it lent (per fold x seed: min and max of the rows, and per class of the first)."""
    out = []
    for k, first in enumerate(results[0]["choice"]["source_corpora"]):
        attrs = table_cache(first["path"]).attrs
        used = [r["choice"]["source_corpora"][k]["rows"] for r in results]
        out.append({"path": first["path"], "fingerprint": first["fingerprint"],
                    "encoder_id": attrs.get("encoder_id", ""), "window": attrs.get("window", ""),
                    "rows_used": {"min": min(used), "max": max(used)}, "rows_per_class": first["rows_per_class"],
                    "prompts_normalised": first["prompts_normalised"]})
    return out


def _train(cfg: TrainConfig, cache_path, out_dir) -> dict:
    cache_path, out_dir = Path(cache_path), Path(out_dir)
    cfg = cfg.replace(device=resolve_device(cfg.device))
    t0 = time.perf_counter()
    _, table, attrs, fingerprint = prepared_cache(str(cache_path), cfg.layer, cfg.speaker_norm)
    classes, _, why = run_classes(cfg, table)
    jobs = jobs_for(cfg, cache_path)
    folds = sorted({job[2] for job in jobs})
    warn_few_labels(table, folds, cfg.labeled_fraction, cfg.inner_validation)
    warn_empty_pool(table, folds, cfg.labeled_fraction, cfg.methods, cfg.inner_validation, cfg.transductive)
    results = run_jobs(jobs, cfg.workers)
    rows, curves, preds, conf = collect(results, classes)
    cache_info = {
        "path": str(cache_path),
        "fingerprint": fingerprint,
        "encoder_id": attrs.get("encoder_id", ""),
        "weights_sha256": attrs.get("weights_sha256", ""),
        "window": attrs.get("window", ""),
        "classes": classes,
        "n_utterances": len(table),
    }
    summary = {"methods": summarise(rows, len(classes), conf), "config": cfg.to_dict(), "cache": cache_info,
               "choices": [{"fold": r["fold"], "seed": r["seed"], **r["choice"]} for r in results],
               "git_revision": git_revision(), "wall_seconds": round(time.perf_counter() - t0, 2)}
    if cfg.source_corpora or cfg.classes:
        summary["classes"] = {"in_play": classes, "reason": why, "test_rows_left_out": left_out(results)}
    if cfg.source_corpora:
        summary["source_corpora"] = source_corpora_record(results)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_dir / "config.json", json.dumps({"config": cfg.to_dict(), "cache": cache_info,
                                                      "git_revision": summary["git_revision"]}, indent=2))
    write_text_atomic(out_dir / "results.json", json.dumps(summary, indent=2))
    write_text_atomic(out_dir / "results.csv", rows.to_csv(index=False))
    write_text_atomic(out_dir / "curves.csv", curves.to_csv(index=False))
    write_text_atomic(out_dir / "predictions.csv", preds.to_csv(index=False))
    if cfg.save_models:
        save_models(out_dir / "models.safetensors", results, cfg, cache_info)
    from trainer.plots import plot_run  # matplotlib only when writing a run
    plot_run(out_dir, curves, summary, classes)
    return summary
