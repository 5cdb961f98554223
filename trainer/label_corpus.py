"""`cli.py label`: label my corpus. From a cache and the labels a user has (CSV `utt_id,label`; empty
labels = unlabelled), train transductively on everything (the given labels as L, every other
utterance of the cache as the pool) with the recipe of `train` (speaker normalisation decided
from the given labels; the warm-up and B-GRPO built by trainer/method/methods.py, as `train` builds
them), and return for every utterance its label (given labels are kept verbatim) or the prediction
with its probability and runner-up, plus the utterances whose label would help most (the rule
trainer/next_to_label.DEFAULT_RULE, chosen on inner validation).
Its accuracy is that of the transductive protocol (`train --transductive`, docs/RESULTS.md).
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from data_manifests.errors import UserError
from data_manifests.schema import CANONICAL_LABELS
from trainer.inputs.auto_choices import choose
from trainer.config import TrainConfig
from trainer.inputs.feature_store import FeatureRows, policy_rows
from trainer.inputs.fold_jobs import fold_job, raw_cache, source_labels
from trainer.inputs.source_corpora import classes_in_play
from trainer.jobs import job_seed, resolve_device
from trainer.method.methods import monitored_epochs, train_method, warm_up
from trainer.method.monitor import Monitor
from trainer.next_to_label import DEFAULT_RULE, choose_next
from trainer.inputs.protocol import Split
from trainer.method.source_gate import gate_sources


def read_user_labels(path, utt_ids, min_classes: int = 2) -> pd.Series:
    """utt_id -> label of the rows with a label; refuses unknown ids, unknown labels, conflicts and
    fewer than `min_classes` classes. Only the utt_id and label columns are read, so rows may carry
    more fields than the header: the rows of an OUT-to-label.csv (utt_id,label,... with the labels
    filled in, or left empty = unlabelled) appended to a `utt_id,label` file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"labels file {path} not found: give a CSV with columns utt_id,label")
    table = pd.read_csv(path, dtype=str, keep_default_na=False, usecols=lambda c: c in ("utt_id", "label"))
    missing = [c for c in ("utt_id", "label") if c not in table.columns]
    if missing:
        found = pd.read_csv(path, dtype=str, nrows=0).columns
        raise UserError(f"{path}: missing column(s) {', '.join(missing)}; the file needs utt_id,label "
                         f"(found {', '.join(found)})")
    table = table.assign(label=table["label"].str.strip(), utt_id=table["utt_id"].str.strip())
    table = table[table["label"] != ""]
    unknown_ids = sorted(set(table["utt_id"]) - set(map(str, utt_ids)))
    if unknown_ids:
        raise UserError(
            f"{path}: {len(unknown_ids)} utt_id(s) are not in the cache, e.g. {', '.join(unknown_ids[:5])}; "
            "use the utt_id column of the manifest the cache was extracted from"
        )
    unknown = sorted(set(table["label"]) - set(CANONICAL_LABELS))
    if unknown:
        raise UserError(f"{path}: unknown label(s) {', '.join(unknown)}; use the project's vocabulary: "
                         f"{', '.join(CANONICAL_LABELS)}")
    conflicts = table.groupby("utt_id")["label"].nunique()
    if (conflicts > 1).any():
        bad = conflicts[conflicts > 1].index[:5]
        raise UserError(f"{path}: utterance(s) with two different labels: {', '.join(bad)}")
    labels = table.drop_duplicates("utt_id").set_index("utt_id")["label"]
    counts = labels.value_counts()
    if len(counts) < min_classes:
        raise UserError(f"{path}: labels of at least 2 classes are needed (found {', '.join(counts.index) or 'none'})")
    return labels


def cache_spans(table: pd.DataFrame) -> pd.DataFrame | None:
    """The start and end (seconds in the recording) of a segment cache's rows (a clip's: empty), None
    for a cache of clips only."""
    if not {"start", "end"} <= set(table.columns):
        return None
    return table[["start", "end"]].apply(pd.to_numeric, errors="coerce").reset_index(drop=True)


def given_labels_and_classes(cfg: TrainConfig, labels_csv, utt: np.ndarray) -> tuple[pd.Series, list[str]]:
    """(the user's labels, the classes to predict): without source_corpora the given labels' classes;
    with them (`label --source`) `classes` or every class of the sources (a user's few labels do
    not name the vocabulary, so they never narrow it), and the labels file is optional."""
    if not cfg.source_corpora:
        if labels_csv is None:
            raise UserError("give --labels FILE.csv (the labels you have), or --source S.h5 to label from other "
                            "corpora's labels")
        given = read_user_labels(labels_csv, utt)
        return given, sorted(set(given))
    given = read_user_labels(labels_csv, utt, min_classes=0) if labels_csv else pd.Series(dtype=str)
    classes, _ = classes_in_play(cfg, np.zeros(0, str), source_labels(cfg))  # a few labels name no vocabulary
    other = sorted(set(given) - set(classes))
    if other:
        raise UserError(f"{labels_csv}: label(s) {', '.join(other)} are not among the classes in play "
                        f"({', '.join(classes)}); name them with --classes or leave those rows unlabelled")
    return given, classes


def label_table(utt: np.ndarray, speakers: np.ndarray, given: pd.Series, p: np.ndarray, classes: list,
                spans: pd.DataFrame | None = None) -> pd.DataFrame:
    """`label --out`'s every-utterance table: the given labels verbatim (source given), every other
    row the top class of its probabilities p [N, C] with the runner-up and the margin; with `spans`
    (cache_spans) each segment's start and end after its speaker."""
    is_given = np.isin(utt, given.index)
    order = np.argsort(-p, 1)
    where = {} if spans is None else {"start": spans["start"].to_numpy(), "end": spans["end"].to_numpy()}
    out = pd.DataFrame({"utt_id": utt, "speaker": speakers, **where,
                        "label": np.where(is_given, pd.Series(utt).map(given).astype(object).fillna("").to_numpy(),
                                          np.asarray(classes)[order[:, 0]]),
                        "source": np.where(is_given, "given", "predicted"),
                        "probability": np.where(is_given, np.nan, p[np.arange(len(p)), order[:, 0]]),
                        "second": np.where(is_given, "", np.asarray(classes)[order[:, 1]]),
                        "second_probability": np.where(is_given, np.nan, p[np.arange(len(p)), order[:, 1]])})
    out["margin"] = out["probability"] - out["second_probability"]
    return out


def label_corpus(cache_path, labels_csv, cfg: TrainConfig | None = None, n_suggest: int = 20,
                 log=lambda line: None, never_suggest=()) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """(every utterance's label table, the to-annotate list, info). Probabilities average cfg.seeds;
    `log` gets one line per step (the steps take from seconds to minutes on large corpora); the
    utt_ids in `never_suggest` (the page's skipped ones) are predicted but never suggested."""
    cfg = cfg or TrainConfig()
    cfg = cfg.replace(device=resolve_device(cfg.device))
    cache = raw_cache(str(cache_path))
    table = cache.table
    utt = table["utt_id"].astype(str).to_numpy()
    given, classes = given_labels_and_classes(cfg, labels_csv, utt)
    is_given = np.isin(utt, given.index)
    lab = np.flatnonzero(is_given)
    pool = np.flatnonzero(~is_given)
    if len(pool) == 0:
        raise UserError(f"{labels_csv}: every utterance already has a label; nothing to predict")
    y = np.full(len(table), -1)
    y[lab] = pd.Series(utt[lab]).map(given).map({c: i for i, c in enumerate(classes)}).to_numpy()
    speakers = table["speaker"].astype(str).to_numpy()
    log(f"{len(lab)} given labels, {len(pool)} utterances to predict: choosing the layer and speaker "
        "normalisation from the given labels")
    choice = choose(cache.features, speakers, lab, y[lab], len(classes), cfg.layer, cfg.speaker_norm, cfg.l2)
    cfg = cfg.replace(layer=choice.layer, speaker_norm=choice.speaker_norm)
    x = policy_rows(cache.features, speakers, cfg.layer, cfg.speaker_norm)
    job = fold_job(cfg, x, table, y, classes, Split.labelled_and_pool(lab, pool), choice.to_dict(),
                   torch.device(cfg.device), cache.attrs)
    cfg, choice, data = job.cfg, job.choice, job.data
    z_all = FeatureRows([(x if job.prompts is None else job.prompts, np.arange(len(x)))], data.standardizer, cfg.device)
    probs, gated = [], []
    for i, seed in enumerate(cfg.seeds):
        log(f"seed {seed} ({i + 1} of {len(cfg.seeds)}): warm-up, then B-GRPO ({cfg.refit_rounds} rounds) over "
            f"the {len(pool)} unlabelled utterances")
        seed_of = partial(job_seed, "label", seed)
        job_g = gate_sources(job, seed_of, log)  # each seed decides whether each unlabeled_cache helps
        gated.append(job_g.choice.get("sources", []))
        warm, job_s = warm_up(job_g, seed_of, Monitor(data, "supervised", [], monitored_epochs("supervised", cfg)))
        model = train_method("bgrpo", warm, job_s, seed_of, Monitor(data, "bgrpo", [], monitored_epochs("bgrpo", cfg)))
        probs.append(z_all.map(model.probs).cpu().numpy())
    p = np.mean(probs, 0)
    spans = cache_spans(table)
    out = label_table(utt, speakers, given, p, classes, spans)
    policy_input = z_all[:]
    candidates = pool[~np.isin(utt[pool], list(never_suggest))]
    nxt = choose_next(DEFAULT_RULE, n_suggest, candidates, probs=p, features=policy_input, labelled=lab,
                      labelled_labels=y[lab], rng=np.random.default_rng(cfg.seeds[0]))
    where = [] if spans is None else ["start", "end"]
    suggest = out.iloc[nxt][["utt_id", "speaker", *where, "label", "probability", "second", "margin"]].rename(
        columns={"label": "predicted"}).reset_index(drop=True)
    suggest.insert(1, "label", "")  # to fill in: utt_id,label first, as in the labels file the rows join
    info = {"classes": classes, "n_given": len(lab), "n_predicted": len(pool), "choice": choice,
            "sources": gated,  # per seed: each unlabeled_cache, used or not, and why
            "predicted_counts": out.loc[~is_given, "label"].value_counts().to_dict(),
            "probabilities": p, "policy_input": policy_input}  # [N, C] seed-averaged; [N, L, D] what the head reads
    return out, suggest, info
