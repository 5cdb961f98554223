"""One labelling session behind the page (`cli.py label --serve`): the labels file a person adds to,
the latest model (trainer/label_corpus.py's `label_corpus`, the code `label` runs) and the
background retrain after each batch, with its progress and a cross-validated quality estimate.

Every label is appended to the labels CSV as it is given, flushed and fsync'ed before the answer
goes back: a crash or Ctrl-C loses nothing that the page showed as saved.
"""
from __future__ import annotations

import csv
import io
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from data_manifests.errors import UserError
from data_manifests.schema import CANONICAL_LABELS
from data_manifests.storage import write_text_atomic
from trainer.config import TrainConfig
from trainer.inputs.fold_jobs import raw_cache
from trainer.label_corpus import label_corpus, read_user_labels
from trainer.metrics import scores

MAP_POINTS = 4000  # at most this many utterances on the map (a seeded sample of larger corpora)


def append_label(path: Path, utt_id: str, label: str) -> None:
    """Append one `utt_id,label` row (in the file's own column order, other columns empty) and
    make it durable: write, flush, fsync. A file without a final newline gets one first."""
    with open(path, "rb") as f:
        header = f.readline().decode("utf-8").strip("\r\n")
        f.seek(0, os.SEEK_END)
        ends_open = f.tell() > 0 and (f.seek(-1, os.SEEK_END), f.read(1))[1] not in (b"\n", b"\r")
    columns = next(csv.reader([header]))
    row = io.StringIO()
    csv.writer(row, lineterminator="\n").writerow(
        [utt_id if c.strip() == "utt_id" else label if c.strip() == "label" else "" for c in columns])
    with open(path, "a", encoding="utf-8", newline="") as f:
        f.write(("\n" if ends_open else "") + row.getvalue())
        f.flush()
        os.fsync(f.fileno())


def corpus_audio_root(cache_path, root=None, manifest=None) -> Path:
    """The folder the cache's audio paths are relative to: `root`, else the corpus root recorded beside
    `manifest`, else the data home's folder of the cache's corpus; UserError when its first file is
    not there."""
    from data_manifests.home import default_root, manifest_root

    table = raw_cache(str(cache_path)).table
    folder = Path(root) if root else manifest_root(manifest) if manifest else \
        default_root(str(table["corpus"].iloc[0]))
    first = folder / str(table["path"].iloc[0])
    if not first.is_file():
        raise UserError(f"audio of {table['utt_id'].iloc[0]} not found at {first}: pass --root, the corpus folder "
                        "the manifest's paths are relative to (or --manifest, the manifest the cache came from)")
    return folder


def speaker_folds(speakers: np.ndarray, k: int) -> np.ndarray:
    """Fold index per row: speakers dealt round-robin (sorted) into min(k, #speakers) folds, so that
    no speaker is on both sides; a single speaker's rows are dealt round-robin instead."""
    names = np.unique(speakers)
    if len(names) < 2:
        return np.arange(len(speakers)) % k
    fold_of = {s: i % min(k, len(names)) for i, s in enumerate(names)}
    return np.array([fold_of[s] for s in speakers])


def labelled_cv(cache_path, labels_csv, cfg: TrainConfig, k: int = 3, log=lambda line: None) -> dict | None:
    """Quality estimate from the given labels alone: k folds by speaker; each fold's labels are
    hidden, `label_corpus` trains on the rest (transductively, as `label` does) and the hidden
    labels score its predictions. Accuracy and macro-F1 over every held-out label; None when fewer
    than 2 folds leave 2 classes to train on."""
    table = raw_cache(str(cache_path)).table.set_index("utt_id")
    given = read_user_labels(labels_csv, table.index.astype(str))
    speakers = table.loc[given.index, "speaker"].astype(str).to_numpy()
    folds = speaker_folds(speakers, k)
    truth, pred = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for f in np.unique(folds):
            train = given[folds != f]
            if train.nunique() < 2:
                continue
            part = Path(tmp) / f"fold{f}.csv"
            pd.DataFrame({"utt_id": train.index, "label": train.to_numpy()}).to_csv(part, index=False)
            log(f"quality estimate: fold {f + 1} of {len(np.unique(folds))}")
            out, _, _ = label_corpus(cache_path, part, cfg, n_suggest=0)
            held = given[folds == f]
            truth.extend(held.to_numpy())
            pred.extend(out.set_index("utt_id").loc[held.index, "label"].to_numpy())
    if not truth:
        return None
    names = sorted(set(truth) | set(pred))
    s = scores(np.array([names.index(t) for t in truth]), np.array([names.index(p) for p in pred]), len(names))
    return {"accuracy": s["wa"], "macro_f1": s["macro_f1"],
            "n_labels": len(truth), "n_folds": int(len(np.unique(folds)))}


def pca_2d(x: torch.Tensor) -> np.ndarray:
    """[N, 2]: the first two principal components of the rows of x (flattened), via an SVD of the
    centred rows (deterministic)."""
    x = x.reshape(len(x), -1).double()
    x = x - x.mean(0)
    _, _, v = torch.linalg.svd(x, full_matrices=False)
    xy = (x @ v[:2].T).numpy()
    return xy * np.sign(xy[np.abs(xy).argmax(0), [0, 1]])  # a fixed sign per axis


@dataclass
class Model:
    """What one retrain gives the page."""

    table: pd.DataFrame  # label_corpus's every-utterance table
    probs: np.ndarray  # [N, C] seed-averaged, in table order
    classes: list  # the model's classes (those of the labels it saw)
    suggest: list  # utt_ids, the rule's order
    predicted_counts: dict
    map_xy: np.ndarray  # [N, 2] PCA of the policy's input
    n_labels: int  # labels it was trained on
    version: int
    quality: dict | None = None


@dataclass
class Training:
    """The background retrain's progress, as the page shows it."""

    running: bool = False
    steps_done: int = 0
    steps: int = 1
    message: str = ""
    error: str = ""
    queued: bool = False


@dataclass
class LabellingSession:
    cache_path: str
    labels_csv: Path
    audio_root: Path
    out_csv: Path
    cfg: TrainConfig = field(default_factory=TrainConfig)
    batch: int = 10  # labels between automatic retrains
    n_suggest: int = 20
    cv_folds: int = 3  # 0: no quality estimate
    classes: list = field(default_factory=list)  # the buttons; default: the cache's and the file's labels

    def __post_init__(self):
        self.labels_csv = Path(self.labels_csv)
        self.audio_root, self.out_csv = Path(self.audio_root), Path(self.out_csv)
        self.table = raw_cache(str(self.cache_path)).table
        self.utt = self.table["utt_id"].astype(str).to_numpy()
        self.row_of = {u: i for i, u in enumerate(self.utt)}
        if not self.labels_csv.exists():
            write_text_atomic(self.labels_csv, "utt_id,label\n")
        given = read_user_labels(self.labels_csv, self.utt, min_classes=0)  # the page starts from no labels too
        wanted = self.classes or sorted(set(self.table["label"].astype(str)) - {""} | set(given))
        unknown = sorted(set(wanted) - set(CANONICAL_LABELS))
        if unknown or len(wanted) < 2:
            raise UserError(f"labels {', '.join(unknown) or '(fewer than 2)'}: give --classes, 2 or more of "
                            f"{', '.join(CANONICAL_LABELS)}")
        self.classes = sorted(wanted)
        self.given = dict(given)
        self.model: Model | None = None
        self.training = Training()
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None
        self.version = 0

    # --- labels -----------------------------------------------------------------------------------
    def add_label(self, utt_id: str, label: str) -> dict:
        """Save one label (durably, before returning); start a retrain when a batch is complete."""
        if label not in self.classes:
            raise UserError(f"unknown label {label!r}: use one of {', '.join(self.classes)}")
        if utt_id not in self.row_of:
            raise UserError(f"utt_id {utt_id!r} is not in the cache {self.cache_path}")
        with self.lock:
            if utt_id in self.given:
                raise UserError(f"{utt_id} is already labelled {self.given[utt_id]!r} in {self.labels_csv}; "
                                "edit that file to change it")
            append_label(self.labels_csv, utt_id, label)
            self.given[utt_id] = label
            since = len(self.given) - (self.model.n_labels if self.model else 0)
        retrain = self.retrain() if since >= self.batch else ""
        return {"saved": utt_id, "label": label, "n_labelled": len(self.given), "retrain": retrain}

    # --- the model --------------------------------------------------------------------------------
    def can_train(self) -> bool:
        return len(set(self.given.values())) >= 2

    def retrain(self) -> str:
        """Start a background retrain on the labels given so far ('started'); if one is running, queue
        one more, which starts when the running one ends ('queued'); '' when there is nothing to train
        on yet."""
        with self.lock:
            if not self.can_train():
                return ""
            if self.training.running:
                self.training.queued = True
                return "queued"
            steps = 1 + len(self.cfg.seeds) + (2 * self.cv_folds if self.cv_folds else 0)
            self.training = Training(running=True, steps=steps, message="starting")
            self.thread = threading.Thread(target=self._train, daemon=True, name="label-retrain")
            self.thread.start()
            return "started"

    def _progress(self, line: str) -> None:
        with self.lock:
            self.training.steps_done = min(self.training.steps_done + 1, self.training.steps)
            self.training.message = line

    def _train(self) -> None:
        try:
            with tempfile.TemporaryDirectory() as tmp:
                snapshot = Path(tmp) / "labels.csv"
                with self.lock:  # the labels as they are now; labels given meanwhile wait for the next retrain
                    shutil.copyfile(self.labels_csv, snapshot)
                    n_labels = len(self.given)
                table, suggest, info = label_corpus(self.cache_path, snapshot, self.cfg, self.n_suggest,
                                                    log=self._progress)
                self.version += 1
                model = Model(table, info["probabilities"], info["classes"], suggest["utt_id"].tolist(),
                              info["predicted_counts"], pca_2d(info["policy_input"].cpu()), n_labels, self.version)
                with self.lock:
                    model.quality = self.model.quality if self.model else None  # until the new estimate is in
                    self.model = model
                if self.cv_folds:
                    quality = labelled_cv(self.cache_path, snapshot, self.cfg.replace(seeds=list(self.cfg.seeds[:1])),
                                          self.cv_folds, log=self._progress)
                    with self.lock:
                        model.quality = quality
            done = Training(message=f"model {model.version}: trained on {n_labels} labels")
        except Exception as err:  # noqa: BLE001 - shown on the page; the labels are safe in the file
            done = Training(error=f"{type(err).__name__}: {err}")
        with self.lock:
            queued, self.training = self.training.queued, done
        if queued:
            self.retrain()

    def wait(self) -> None:
        """Block until no retrain runs or is queued (tests, scripts)."""
        while self.thread is not None and self.thread.is_alive():
            self.thread.join()

    # --- what the page shows ----------------------------------------------------------------------
    def suggestions(self) -> list[dict]:
        """The next utterances to label with the model's top guesses: the latest model's picks not yet
        labelled; before any model, the first unlabelled utterances of a seeded shuffle."""
        if self.model is None:
            order = np.random.default_rng(0).permutation(len(self.utt))
            picks = [self.utt[i] for i in order if self.utt[i] not in self.given][:self.n_suggest]
            return [self._row(u, []) for u in picks]
        out = []
        for u in self.model.suggest:
            if u in self.given:
                continue
            p = self.model.probs[self.row_of[u]]
            top = np.argsort(-p, kind="stable")[:3]
            out.append(self._row(u, [{"label": self.model.classes[j], "p": round(float(p[j]), 4)} for j in top]))
        return out

    def _row(self, utt_id: str, guesses: list) -> dict:
        i = self.row_of[utt_id]
        return {"utt_id": utt_id, "speaker": str(self.table["speaker"].iloc[i]), "audio": f"/audio/{utt_id}",
                "duration": float(self.table["duration"].iloc[i]), "guesses": guesses}

    def state(self) -> dict:
        with self.lock:
            t, m = self.training, self.model
            return {"classes": self.classes, "n_labelled": len(self.given), "n_utterances": len(self.utt),
                    "batch": self.batch, "labels_since_model": len(self.given) - (m.n_labels if m else 0),
                    "model": None if m is None else {"version": m.version, "n_labels": m.n_labels,
                                                     "predicted_counts": m.predicted_counts, "quality": m.quality},
                    "training": {"running": t.running, "progress": t.steps_done / t.steps, "message": t.message,
                                 "error": t.error, "queued": t.queued},
                    "suggestions": self.suggestions()}

    def map_points(self) -> dict:
        """The PCA map of the latest model: a seeded sample of at most MAP_POINTS utterances with their
        given label (or '') and predicted label."""
        with self.lock:
            m = self.model
            if m is None:
                return {"points": []}
            rows = np.arange(len(self.utt))
            if len(rows) > MAP_POINTS:
                rows = np.sort(np.random.default_rng(0).choice(rows, MAP_POINTS, replace=False))
            pred = np.asarray(m.classes)[m.probs.argmax(1)]
            return {"points": [{"utt_id": self.utt[i], "x": round(float(m.map_xy[i, 0]), 4),
                                "y": round(float(m.map_xy[i, 1]), 4), "given": self.given.get(self.utt[i], ""),
                                "predicted": str(pred[i])} for i in rows]}

    def audio_path(self, utt_id: str) -> Path:
        """The utterance's audio file under the corpus root; UserError if unknown or missing."""
        if utt_id not in self.row_of:
            raise UserError(f"utt_id {utt_id!r} is not in the cache {self.cache_path}")
        path = (self.audio_root / str(self.table["path"].iloc[self.row_of[utt_id]])).resolve()
        if not path.is_file():
            raise UserError(f"audio of {utt_id} not found at {path}: pass --root, the corpus folder the "
                            "manifest's paths are relative to")
        return path

    def export(self) -> Path:
        """Write the every-utterance table as `label` does (the latest model's predictions), with the
        labels given since that model marked given. Written to a temp file, then renamed."""
        with self.lock:
            if self.model is None:
                raise UserError("no model yet: label utterances of at least 2 classes first")
            table = self.model.table.copy()
            given = pd.Series(self.given)
        mine = table["utt_id"].isin(given.index)
        table.loc[mine, "label"] = table.loc[mine, "utt_id"].map(given)
        table.loc[mine, "source"] = "given"
        table.loc[mine, ["probability", "second_probability", "margin"]] = np.nan
        table.loc[mine, "second"] = ""
        return write_text_atomic(self.out_csv, table.to_csv(index=False))
