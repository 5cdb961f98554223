"""The whole protocol for folds x seeds: every requested method per job, scores, diagnostics,
summaries and the files of a run directory.

Run directory (scores in percent):
  results.json  {"methods": {NAME: {"macro_f1"|"ua"|"wa": {"mean", "std", "n"},
                   "rel_macro_f1_vs_supervised": % (when supervised ran),
                   "gap_recovered": G (when supervised and topline ran),
                   "collapsed_runs": int, "per_fold_macro_f1": {fold: mean over seeds},
                   "confusion": [[...]] (summed over folds x seeds, rows = true, cache.classes order)}},
                 "config": TrainConfig fields, "cache": {path, fingerprint, encoder_id, window, classes,
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
import os
import subprocess
import time
import zlib
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache
from multiprocessing import get_context
from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm

from data_manifests.storage import write_text_atomic
from pipeline.cache import load_cache
from trainer.baselines import train_dino, train_pseudo_label
from trainer.bgrpo import train_bgrpo, train_bgrpo_refit
from trainer.auto_choices import em_prior, resolve_auto
from trainer.config import TrainConfig
from trainer.fold_data import FoldData
from trainer.features import prepare
from trainer.metrics import SCORES, confusion, gap_recovered, histogram_entropy, mean_std, relative_gain, scores
from trainer.monitor import Monitor
from trainer.policy import Policy, save_policies
from trainer.protocol import fold_names, make_split
from trainer.rewards import needs_teacher, parse_reward
from trainer.supervised import fit_supervised, new_policy
from trainer.teachers import build_teacher, cache_teacher_probs

METHOD_ORDER = ("supervised", "bgrpo", "pseudo-label", "dino", "topline")


@lru_cache(maxsize=2)
def raw_cache(path: str):
    """The cache as stored (every hidden state), once per process."""
    return load_cache(path)


@lru_cache(maxsize=8)
def prepared_cache(path: str, layer: str, speaker_norm: bool):
    """(features [N, L', D'] float32, table, attrs, fingerprint) of a cache, once per process.
    `auto` settings are resolved per run (run_job); here they read as the table only."""
    c = raw_cache(path)
    if layer == "auto" or speaker_norm == "auto":
        return None, c.table, c.attrs, c.fingerprint
    return prepare(c.features, c.table["speaker"].to_numpy(), layer, speaker_norm), c.table, c.attrs, c.fingerprint


def class_names(table: pd.DataFrame) -> list[str]:
    """The label vocabulary (sorted); a vocabulary, not test evidence: shuffling test labels keeps it."""
    return sorted(set(table["label"].astype(str)))


def job_seed(fold: str, seed: int, salt: str) -> int:
    return (seed * 1_000_003 + zlib.crc32(f"{fold}/{salt}".encode())) % (2**31)


def run_job(cfg_dict: dict, cache_path: str, fold: str, seed: int) -> dict:
    """One fold x seed: warm-up, then every requested method; returns rows, curves, predictions."""
    cfg = TrainConfig.from_dict(cfg_dict)
    torch.set_num_threads(cfg.threads or max(1, (os.cpu_count() or 1) // cfg.workers))
    dev = torch.device(cfg.device)
    table = raw_cache(str(cache_path)).table
    classes = class_names(table)
    y = table["label"].astype(str).map({c: i for i, c in enumerate(classes)}).to_numpy()
    split = make_split(table, fold, seed, cfg.labeled_fraction, cfg.val_fraction, cfg.transductive,
                       cfg.inner_validation)
    cfg, choice = resolve_auto(cfg, raw_cache(str(cache_path)), split, y, len(classes))  # issue 14: label-only choices
    x = prepared_cache(str(cache_path), cfg.layer, cfg.speaker_norm)[0]
    x_ext = spk_ext = None
    if cfg.unlabeled_cache:
        x_ext, t_ext, _, _ = prepared_cache(str(cfg.unlabeled_cache), cfg.layer, cfg.speaker_norm)
        if x_ext.shape[1:] != x.shape[1:]:
            raise ValueError(f"--unlabeled-cache {cfg.unlabeled_cache} has features {x_ext.shape[1:]}, "
                             f"this cache {x.shape[1:]}: extract it with the same encoder and --layer")
        spk_ext = (t_ext["corpus"].astype(str) + "/" + t_ext["speaker"].astype(str)).to_numpy()
    data = FoldData.build(x, y, table["speaker"].astype(str).to_numpy(), split, len(classes), dev, x_ext, spk_ext)
    rows, curves, preds, models = [], [], {}, {}

    def gen(salt):
        return torch.Generator().manual_seed(job_seed(fold, seed, salt))

    def finish(method, model, t0, kept_epoch=None):
        pred = model.probs(data.x_test).argmax(1).cpu().numpy()
        pool_pred = model.probs(data.x_unl).argmax(1).cpu().numpy() if len(data.x_unl) else pred
        ent = histogram_entropy(pool_pred, len(classes))
        rows.append({"method": method, "fold": fold, "seed": seed,
                     **scores(data.y_test.cpu().numpy(), pred, len(classes)),
                     "pool_pred_entropy": ent, "collapsed": bool(ent < cfg.collapse_entropy),
                     "kept_epoch": kept_epoch, "n_labeled": len(split.labeled), "n_val": len(split.val),
                     "n_unlabeled": len(data.x_unl), "n_test": len(split.test), "speaker_overlap": split.speaker_overlap,
                     "seconds": round(time.perf_counter() - t0, 3)})
        preds[method] = pred
        if cfg.save_models and method == cfg.methods[0]:
            models[f"{method}_f{fold}_s{seed}"] = {k: v.cpu() for k, v in model.state_dict().items()}, model.arch

    warm = None
    if set(cfg.methods) - {"topline"}:
        t0 = time.perf_counter()
        mon = Monitor(data, "supervised", curves, cfg.warmup_epochs)
        warm = fit_supervised(new_policy(cfg, data.standardizer, len(classes), job_seed(fold, seed, "init"), dev),
                              data.x_lab, data.y_lab, cfg, gen("supervised"), mon)
        if cfg.pool_prior == "em" and len(data.x_unl):  # issue 14: the pool's prior, label-free
            data.prior = em_prior(warm.probs(data.x_unl), data.prior)
        choice["pool_prior"] = data.prior.cpu().tolist()
        t_warm = time.perf_counter() - t0
        if "supervised" in cfg.methods:
            finish("supervised", warm, t0, mon.best_epoch)
    for method in [m for m in METHOD_ORDER if m in cfg.methods and m != "supervised"]:
        t0 = time.perf_counter() - (t_warm if method != "topline" else 0.0)
        n_epochs = {"pseudo-label": cfg.pl_rounds, "topline": cfg.warmup_epochs,
                    "bgrpo": cfg.refit_rounds if cfg.update == "refit" else cfg.epochs}.get(method, cfg.epochs)
        mon = Monitor(data, method, curves, n_epochs)
        if method == "bgrpo":
            teacher = None
            if needs_teacher(parse_reward(cfg.reward)) or cfg.act_on == "mix":
                probs = None
                if cfg.teacher.startswith("cache:"):
                    utt = table["utt_id"].astype(str).to_numpy()
                    if cfg.unlabeled_cache:
                        raise ValueError("--teacher cache:FILE with --unlabeled-cache is not supported: "
                                         "the teacher cache has no vectors for the external corpus")
                    probs = cache_teacher_probs(cfg, cfg.teacher[len("cache:"):], utt[split.labeled], y[split.labeled],
                                                utt[split.unlabeled], len(classes), job_seed(fold, seed, "teacher"), dev)
                teacher = build_teacher(cfg.teacher, warm, cfg.tau, probs, data, cfg, job_seed(fold, seed, "teacher"))
            if cfg.update == "refit":
                model = train_bgrpo_refit(warm, data, cfg, teacher, gen("bgrpo"), mon, job_seed(fold, seed, "refit"))
            else:
                model = train_bgrpo(warm, data, cfg, teacher, gen("bgrpo"), mon)
        elif method == "pseudo-label":
            model = train_pseudo_label(warm, data, cfg, job_seed(fold, seed, "pl"), gen("pseudo-label"), mon)
        elif method == "dino":
            model = train_dino(warm, data, cfg, gen("dino"), mon)
        else:  # topline: the same head and recipe on every training label
            model = fit_supervised(new_policy(cfg, data.standardizer, len(classes), job_seed(fold, seed, "init"), dev),
                                   data.x_train_all, data.y_train_all, cfg, gen("topline"), mon)
        finish(method, model, t0, mon.best_epoch)
    for c in curves:
        c.update(fold=fold, seed=seed)
    for r in rows:
        r.update(layer=cfg.layer, speaker_norm=cfg.speaker_norm)
    return {"rows": rows, "curves": curves, "fold": fold, "seed": seed, "models": models, "choice": choice,
            "predictions": {"utt_id": table["utt_id"].iloc[split.test].tolist(),
                            "label": data.y_test.cpu().numpy().tolist(),
                            **{m: p.tolist() for m, p in preds.items()}}}


def run_jobs(jobs: list[tuple], workers: int, desc: str = "folds x seeds") -> list[dict]:
    """Run (cfg_dict, cache, fold, seed) jobs serially or in spawned processes; order is kept."""
    if workers <= 1 or len(jobs) <= 1:
        return [run_job(*j) for j in tqdm(jobs, desc=desc, leave=False)]
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(run_job, *j) for j in jobs]
        return [f.result() for f in tqdm(futures, desc=desc, leave=False)]


def summarise(rows: pd.DataFrame, n_classes: int, conf_by_method: dict | None = None) -> dict:
    """Per method: mean/std of each score over folds x seeds, relative gain and G (from means)."""
    out = {}
    for method, g in rows.groupby("method", sort=False):
        out[method] = {s: mean_std(g[s]) for s in SCORES}
        out[method]["collapsed_runs"] = int(g["collapsed"].sum())
        out[method]["per_fold_macro_f1"] = {str(k): float(v) for k, v in g.groupby("fold")["macro_f1"].mean().items()}
        if conf_by_method and method in conf_by_method:
            out[method]["confusion"] = conf_by_method[method].tolist()
    sup = out.get("supervised", {}).get("macro_f1", {}).get("mean")
    top = out.get("topline", {}).get("macro_f1", {}).get("mean")
    for method, d in out.items():
        if sup is not None:
            d["rel_macro_f1_vs_supervised"] = relative_gain(d["macro_f1"]["mean"], sup)
        if sup is not None and top is not None:
            d["gap_recovered"] = gap_recovered(d["macro_f1"]["mean"], sup, top)
    return out


def git_revision() -> str:
    try:
        root = Path(__file__).resolve().parents[1]
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "trainer", "cli.py"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return rev + ("+dirty" if dirty else "") if rev else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def jobs_for(cfg: TrainConfig, cache_path) -> list[tuple]:
    table = prepared_cache(str(cache_path), cfg.layer, cfg.speaker_norm)[1]
    all_folds = fold_names(table)
    folds = list(cfg.folds) if cfg.folds else all_folds
    bad = [f for f in folds if f not in all_folds]
    if bad:
        raise ValueError(f"--folds {','.join(bad)}: {cache_path} has folds {','.join(all_folds)}")
    return [(cfg.to_dict(), str(cache_path), f, s) for f in folds for s in cfg.seeds]


def collect(results: list[dict], classes: list[str]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict]:
    """Rows, curves, predictions of all jobs and the confusion matrices summed per method."""
    rows = pd.DataFrame([r for res in results for r in res["rows"]])
    curves = pd.DataFrame([c for res in results for c in res["curves"]])
    pred_frames, conf = [], {}
    for res in results:
        p = res["predictions"]
        for m in [k for k in p if k not in ("utt_id", "label")]:
            pred_frames.append(pd.DataFrame({"method": m, "fold": res["fold"], "seed": res["seed"], "utt_id": p["utt_id"],
                                             "label": [classes[i] for i in p["label"]], "pred": [classes[i] for i in p[m]]}))
            conf[m] = conf.get(m, 0) + confusion(p["label"], p[m], len(classes))
    return rows, curves, pd.concat(pred_frames, ignore_index=True) if pred_frames else pd.DataFrame(), conf


def train(cfg: TrainConfig, cache_path, out_dir) -> dict:
    """The `train` command: all folds x seeds, then the run directory's files. Returns results."""
    cache_path, out_dir = Path(cache_path), Path(out_dir)
    t0 = time.perf_counter()
    _, table, attrs, fingerprint = prepared_cache(str(cache_path), cfg.layer, cfg.speaker_norm)
    classes = class_names(table)
    results = run_jobs(jobs_for(cfg, cache_path), cfg.workers)
    rows, curves, preds, conf = collect(results, classes)
    cache_info = {"path": str(cache_path), "fingerprint": fingerprint, "encoder_id": attrs.get("encoder_id", ""),
                  "window": attrs.get("window", ""), "classes": classes, "n_utterances": len(table)}
    summary = {"methods": summarise(rows, len(classes), conf), "config": cfg.to_dict(), "cache": cache_info,
               "choices": [{"fold": r["fold"], "seed": r["seed"], **r["choice"]} for r in results],
               "git_revision": git_revision(), "wall_seconds": round(time.perf_counter() - t0, 2)}
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


def save_models(path: Path, results: list[dict], cfg: TrainConfig, cache_info: dict) -> None:
    policies = {}
    for res in results:
        for name, (state, arch) in res["models"].items():
            pol = Policy(**arch)
            pol.load_state_dict(state)
            policies[name] = pol
    if policies:
        choices = {f"{cfg.methods[0]}_f{r['fold']}_s{r['seed']}": {k: r["choice"][k] for k in ("layer", "speaker_norm")}
                   for r in results}
        save_policies(path, policies, {"method": cfg.methods[0], "layer": cfg.layer, "speaker_norm": cfg.speaker_norm,
                                       "choices": choices, **cache_info})


def format_table(summary: dict) -> str:
    """The printed table: mean ± std per method, relative gain vs supervised, G, collapsed runs."""
    lines = [f"{'method':<14}{'macro-F1':>15}{'UA':>15}{'WA':>15}{'rel vs sup':>12}{'G':>8}{'collapsed':>11}"]
    for m, d in summary["methods"].items():
        cell = lambda s: f"{d[s]['mean']:6.1f} ± {d[s]['std']:4.1f}"  # noqa: E731
        rel = d.get("rel_macro_f1_vs_supervised")
        g = d.get("gap_recovered")
        lines.append(f"{m:<14}{cell('macro_f1'):>15}{cell('ua'):>15}{cell('wa'):>15}"
                     f"{'' if rel is None else f'{rel:+.1f}%':>12}{'' if g is None else f'{g:.2f}':>8}"
                     f"{d['collapsed_runs']:>6}/{d['macro_f1']['n']}")
    return "\n".join(lines)


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: no CUDA device here; use --device cpu")
    return device
