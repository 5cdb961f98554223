"""One labelling session behind the page (`cli.py label --serve`): the labels file a person adds to
(and corrects: undo, relabel), the skip list beside it, the latest model (trainer/label_corpus.py's
`label_corpus`, the code `label` runs; its predictions saved beside the labels and loaded at the next
start) and the background retrain after each batch, with its progress and a cross-validated quality
estimate.

Every label is appended to the labels CSV as it is given, flushed and fsync'ed before the answer
goes back: a crash or Ctrl-C loses nothing that the page showed as saved. A relabel or an undo
rewrites the file atomically (temp file, fsync, rename), one label per utterance. The files are
re-read when they change on disk (an edit outside the page counts at the next request).
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd
import torch

from data_manifests.errors import UserError
from data_manifests.schema import CANONICAL_LABELS, CHANNEL_COLUMN
from data_manifests.storage import atomic_path, read_csv_strings, write_text_atomic
from pipeline.audio import Span
from trainer.config import TrainConfig
from trainer.inputs.fold_jobs import raw_cache
from trainer.label_corpus import cache_spans, label_corpus, label_table, read_user_labels
from trainer.metrics import scores

MAP_POINTS = 4000  # at most this many utterances on the map (a seeded sample of larger corpora)
SKIPPED = ".skipped.csv"  # L.csv -> L.skipped.csv: the utterances skipped ("not sure"), never suggested
SAVED_MODEL = ".model.safetensors"  # L.csv -> L.model.safetensors: the last model's predictions
MODEL_KEY = "labelling_page_model"  # the saved model's header metadata (one key: the same model, the same bytes)


def beside(labels_csv: Path, suffix: str) -> Path:
    """The page's other files sit beside the labels CSV: L.csv -> L<suffix>."""
    return labels_csv.with_name(labels_csv.stem + suffix)


def write_durable(path: Path, text: str) -> None:
    """Replace `path` by `text` atomically and durably (temp file, fsync, rename): a reader or a
    crash sees the old file or the new one, never half of one."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())


def csv_text(rows) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue()


def append_label(path: Path, utt_id: str, label: str) -> None:
    """Append one `utt_id,label` row (in the file's own column order, other columns empty) and
    make it durable: write, flush, fsync. A file without a final newline gets one first."""
    with open(path, "rb") as f:
        header = f.readline().decode("utf-8").strip("\r\n")
        f.seek(0, os.SEEK_END)
        ends_open = f.tell() > 0 and (f.seek(-1, os.SEEK_END), f.read(1))[1] not in (b"\n", b"\r")
    columns = next(csv.reader([header]))
    row = csv_text([[utt_id if c.strip() == "utt_id" else label if c.strip() == "label" else "" for c in columns]])
    with open(path, "a", encoding="utf-8", newline="") as f:
        f.write(("\n" if ends_open else "") + row)
        f.flush()
        os.fsync(f.fileno())


def set_label_in_file(path: Path, utt_id: str, label: str) -> None:
    """Rewrite the labels CSV (write_durable) so that utt_id's first row carries `label` ('': none)
    and no other row of it carries one: the file stays one label per utterance, as `label --labels`
    reads it. A row of it with nothing but utt_id and label is dropped when its label goes; a row
    with other columns keeps them. Every other row is kept as it was (blank lines dropped)."""
    with open(path, encoding="utf-8", newline="") as f:
        rows = [r for r in csv.reader(f) if r]
    header = [c.strip() for c in rows[0]]
    iu, il = header.index("utt_id"), header.index("label")
    out, seen = [rows[0]], False
    for row in rows[1:]:
        if len(row) <= iu or row[iu].strip() != utt_id:
            out.append(row)
            continue
        row = row + [""] * (len(header) - len(row))
        row[il], seen = ("" if seen else label), True
        if row[il] or any(v.strip() for k, v in enumerate(row) if k not in (iu, il)):
            out.append(row)
    if not seen and label:
        out.append([utt_id if k == iu else label if k == il else "" for k in range(len(header))])
    write_durable(path, csv_text(out))


def read_skipped(path: Path, utt_ids) -> dict:
    """The skip list (a CSV with a column utt_id), as an ordered set (dict keys); {} when absent."""
    if not path.exists():
        return {}
    table = read_csv_strings(path, UserError, "skip list", "")
    if "utt_id" not in table.columns:
        raise UserError(f"skip list {path}: no utt_id column (the page writes one column, utt_id; delete the file "
                        "to un-skip everything)")
    ids = [u.strip() for u in table["utt_id"] if u.strip()]
    unknown = sorted(set(ids) - set(utt_ids))
    if unknown:
        raise UserError(f"skip list {path}: {len(unknown)} utt_id(s) are not in the cache, "
                        f"e.g. {', '.join(unknown[:5])}")
    return dict.fromkeys(ids, True)


def file_stamp(path: Path):
    """What tells a file changed (or appeared, or went): inode, size and mtime; None when absent."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def clock(seconds: float) -> str:
    """A time in a recording as a person reads it: 83.4 -> 1:23.4, 3723.0 -> 1:02:03.0."""
    tenths = round(seconds * 10)
    h, rest = divmod(tenths, 36000)
    m, t = divmod(rest, 600)
    return (f"{h}:{m:02d}:" if h else f"{m}:") + f"{t // 10:02d}.{t % 10}"


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
    """What one retrain gives the page (and what is saved beside the labels: the page needs the
    model's predictions, not its weights)."""

    probs: np.ndarray  # [N, C] seed-averaged, in cache order
    classes: list  # the model's classes (those of the labels it saw)
    suggest: list  # utt_ids, the rule's order
    predicted_counts: dict
    map_xy: np.ndarray  # [N, 2] PCA of the policy's input
    labels: dict  # utt_id -> label: what it was trained on
    version: int
    quality: dict | None = None

    @property
    def n_labels(self) -> int:
        return len(self.labels)


def utt_digest(utt) -> str:
    """Names the cache's utterances (and their order): a saved model fits only the cache it came from."""
    return hashlib.sha256("\n".join(map(str, utt)).encode()).hexdigest()


def save_model(path: Path, model: Model, utt) -> None:
    """The model's predictions in one safetensors file, atomically."""
    from safetensors.numpy import save_file

    meta = {"utt_ids": utt_digest(utt), "version": model.version, "classes": list(model.classes),
            "suggest": list(model.suggest), "labels": model.labels, "quality": model.quality,
            "predicted_counts": {k: int(v) for k, v in model.predicted_counts.items()}}
    with atomic_path(path) as tmp:
        save_file({"probabilities": np.ascontiguousarray(model.probs, np.float32),
                   "map_xy": np.ascontiguousarray(model.map_xy, np.float32)}, str(tmp),
                  metadata={MODEL_KEY: json.dumps(meta)})


def load_model(path: Path, utt) -> Model:
    """The model save_model wrote; UserError when it does not fit this cache or cannot be read."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="np") as f:
            meta = json.loads(f.metadata()[MODEL_KEY])
            probs, map_xy = f.get_tensor("probabilities"), f.get_tensor("map_xy")
    except Exception as err:  # noqa: BLE001 - any unreadable file is one the first retrain replaces
        raise UserError(f"{path} is not a saved labelling-page model ({type(err).__name__}: {err})") from None
    if meta["utt_ids"] != utt_digest(utt) or probs.shape != (len(utt), len(meta["classes"])):
        raise UserError(f"{path} was saved for another cache (other utterances)")
    return Model(probs.astype(np.float64), meta["classes"], meta["suggest"], meta["predicted_counts"],
                 map_xy.astype(np.float64), meta["labels"], int(meta["version"]), meta["quality"])


@dataclass
class Training:
    """The background retrain's progress, as the page shows it."""

    running: bool = False
    steps_done: int = 0
    steps: int = 1
    phase: str = ""  # "training" (a new model), then "estimating quality" (the model is in use already)
    message: str = ""
    error: str = ""
    queued: bool = False


@dataclass
class Change:
    """One change made on the page, for undo: a label (before None: there was none) or a skip."""

    kind: str  # "label" or "skip"
    utt_id: str
    before: str | None
    after: str | None


@dataclass
class LabellingSession:
    cache_path: str
    labels_csv: Path
    audio_root: Path
    out_csv: Path
    cfg: TrainConfig = field(default_factory=TrainConfig)
    batch: int = 10  # label changes between automatic retrains
    n_suggest: int = 20
    cv_folds: int = 3  # 0: no quality estimate
    classes: list = field(default_factory=list)  # the buttons; default: the cache's and the file's labels

    def __post_init__(self):
        self.labels_csv = Path(self.labels_csv)
        self.skipped_csv, self.model_path = beside(self.labels_csv, SKIPPED), beside(self.labels_csv, SAVED_MODEL)
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
        self.skipped = read_skipped(self.skipped_csv, self.row_of)
        self.stamps = self._stamps()
        self.file_error = ""  # set while a file edited outside the page does not read: writes wait
        self.revision = 0  # counts the changes of the labels and skips (the page's or the files')
        self.history: list[Change] = []
        self.front: list[str] = []  # undone or un-skipped utterances: suggested first
        self.random_order = [self.utt[i] for i in np.random.default_rng(0).permutation(len(self.utt))]
        self.training = Training()
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None
        self.model: Model | None = None
        if self.model_path.exists():
            try:
                self.model = load_model(self.model_path, self.utt)
                self.training.message = (f"model {self.model.version} ({self.model.n_labels} labels) loaded "
                                         f"from {self.model_path.name}")
            except UserError as err:
                self.training.error = f"{err}: not used; the next retrain replaces it"
        self.version = self.model.version if self.model else 0

    # --- the files --------------------------------------------------------------------------------
    def _stamps(self):
        return file_stamp(self.labels_csv), file_stamp(self.skipped_csv)

    def _sync(self) -> None:
        """Re-read the labels and the skip list when either changed on disk since the page last read
        or wrote them (an edit outside the page). While they do not read, the page keeps what it had
        and refuses to write (file_error says why). Call with the lock held."""
        stamps = self._stamps()
        if stamps == self.stamps:
            return
        self.stamps = stamps
        try:
            given = read_user_labels(self.labels_csv, self.utt, min_classes=0)
            skipped = read_skipped(self.skipped_csv, self.row_of)
        except (UserError, OSError, ValueError) as err:
            self.file_error = (f"{err} -- the page keeps the {len(self.given)} labels it read before and saves "
                               "nothing until the file reads again")
            return
        self.file_error = ""
        if dict(given) != self.given or skipped != self.skipped:
            self.given, self.skipped = dict(given), skipped
            self.classes = sorted(set(self.classes) | set(self.given.values()))
            self.revision += 1

    def _writable(self) -> None:
        self._sync()
        if self.file_error:
            raise UserError(self.file_error)

    def _check_utt(self, utt_id: str) -> None:
        if utt_id not in self.row_of:
            raise UserError(f"utt_id {utt_id!r} is not in the cache {self.cache_path}")

    def _check_label(self, label: str) -> None:
        if label not in self.classes:
            raise UserError(f"unknown label {label!r}: use one of {', '.join(self.classes)}")

    def _set_label(self, utt_id: str, label: str | None) -> None:
        """Write utt_id's label (None: remove it) to the file, durably, then to memory. Lock held."""
        if utt_id not in self.given and label:
            append_label(self.labels_csv, utt_id, label)
        elif utt_id in self.given:
            set_label_in_file(self.labels_csv, utt_id, label or "")
        self.given.pop(utt_id, None)
        if label:
            self.given[utt_id] = label  # the latest change last
        self._wrote()

    def _set_skipped(self, utt_id: str, skipped: bool) -> None:
        if skipped:
            if not self.skipped_csv.exists():
                write_durable(self.skipped_csv, "utt_id\n")
            append_label(self.skipped_csv, utt_id, "")
            self.skipped[utt_id] = True
        else:
            self.skipped.pop(utt_id)
            write_durable(self.skipped_csv, csv_text([["utt_id"], *([u] for u in self.skipped)]))
        self._wrote()

    def _wrote(self) -> None:
        self.stamps = self._stamps()
        self.revision += 1

    def _bring_back(self, utt_id: str) -> None:
        """Suggest utt_id first (an undone label, an un-skip: the person wants it back)."""
        self.front = [utt_id] + [u for u in self.front if u != utt_id]

    # --- labels -----------------------------------------------------------------------------------
    def add_label(self, utt_id: str, label: str) -> dict:
        """Save one label (durably, before returning); start a retrain when a batch is complete."""
        self._check_label(label)
        self._check_utt(utt_id)
        with self.lock:
            self._writable()
            if utt_id in self.given:
                raise UserError(f"{utt_id} is already labelled {self.given[utt_id]!r}: relabel it instead "
                                "(the page's given labels, or POST /api/relabel)")
            self._set_label(utt_id, label)
            self.history.append(Change("label", utt_id, None, label))
        return self._answer({"saved": utt_id, "label": label})

    def relabel(self, utt_id: str, label: str) -> dict:
        """Change a given label ('': remove it), the file rewritten atomically."""
        if label:
            self._check_label(label)
        self._check_utt(utt_id)
        with self.lock:
            self._writable()
            before = self.given.get(utt_id)
            if before is None:
                raise UserError(f"{utt_id} has no label to change: label it instead")
            if before != label:
                self._set_label(utt_id, label or None)
                self.history.append(Change("label", utt_id, before, label or None))
                if not label:
                    self._bring_back(utt_id)
        return self._answer({"saved": utt_id, "label": label, "before": before})

    def skip(self, utt_id: str) -> dict:
        """'Not sure': the utterance goes to the skip list beside the labels and is not suggested again."""
        self._check_utt(utt_id)
        with self.lock:
            self._writable()
            if utt_id in self.given:
                raise UserError(f"{utt_id} is labelled {self.given[utt_id]!r}: relabel it (or remove its label) "
                                "instead")
            if utt_id not in self.skipped:
                self._set_skipped(utt_id, True)
                self.history.append(Change("skip", utt_id, None, "skipped"))
        return self._answer({"skipped": utt_id})

    def unskip(self, utt_id: str) -> dict:
        """Take an utterance off the skip list; it is suggested first."""
        self._check_utt(utt_id)
        with self.lock:
            self._writable()
            if utt_id not in self.skipped:
                raise UserError(f"{utt_id} is not skipped")
            self._set_skipped(utt_id, False)
            self._bring_back(utt_id)
        return self._answer({"unskipped": utt_id})

    def undo(self) -> dict:
        """Revert the last label, relabel or skip given on the page since it started; the utterance is
        suggested first again. Refused when the file has changed that utterance since."""
        with self.lock:
            self._writable()
            if not self.history:
                raise UserError("nothing to undo: no label, relabel or skip given on this page since it started")
            ch = self.history[-1]
            now = self.given.get(ch.utt_id) if ch.kind == "label" else \
                ("skipped" if ch.utt_id in self.skipped else None)
            if now != ch.after:
                self.history.pop()
                raise UserError(f"the last change ({ch.utt_id}: {ch.after or 'no label'}) was changed outside the "
                                f"page since (now {now or 'none'}); nothing undone")
            if ch.kind == "label":
                self._set_label(ch.utt_id, ch.before)
            else:
                self._set_skipped(ch.utt_id, False)
            self.history.pop()
            if ch.utt_id not in self.given:
                self._bring_back(ch.utt_id)
        return self._answer({"undone": {"kind": ch.kind, "utt_id": ch.utt_id, "label": ch.before}})

    def _answer(self, body: dict) -> dict:
        """The answer to a change: the counts, and a retrain started when a batch of changes is complete."""
        with self.lock:
            due = self.changes_since_model() >= self.batch
            n = len(self.given)
        return {**body, "n_labelled": n, "retrain": self.retrain() if due else ""}

    def changes_since_model(self) -> int:
        """Labels added, changed or removed since the latest model was trained (all of them before one). Lock held."""
        base = self.model.labels if self.model else {}
        return sum(self.given.get(u) != base.get(u) for u in set(self.given) | set(base))

    def labels(self, query: str = "", limit: int = 50) -> dict:
        """The given labels (latest first) and the skipped utterances whose utt_id contains `query`
        (case-insensitive), at most `limit` of each, for relabel and un-skip."""
        q = query.strip().lower()
        with self.lock:
            self._sync()
            given = [{"utt_id": u, "label": c} for u, c in reversed(self.given.items()) if q in u.lower()]
            skipped = [u for u in reversed(self.skipped) if u not in self.given and q in u.lower()]
            return {"labels": given[:limit], "n_labels": len(given),
                    "skipped": skipped[:limit], "n_skipped": len(skipped)}

    # --- the model --------------------------------------------------------------------------------
    def can_train(self) -> bool:
        return len(set(self.given.values())) >= 2

    def stale(self) -> bool:
        """Whether a retrain is due at start: labels to train on and no model, or one trained on other labels."""
        with self.lock:
            self._sync()
            return self.can_train() and (self.model is None or self.changes_since_model() > 0)

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
            steps = 1 + len(self.cfg.seeds) + self.cv_folds
            self.training = Training(running=True, steps=steps, phase="training", message="starting")
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
                    self._sync()
                    labels, skipped = dict(self.given), list(self.skipped)
                pd.DataFrame({"utt_id": list(labels), "label": list(labels.values())}).to_csv(snapshot, index=False)
                _, suggest, info = label_corpus(self.cache_path, snapshot, self.cfg, self.n_suggest,
                                                log=self._progress, never_suggest=skipped)
                with self.lock:
                    self.version += 1
                    model = Model(info["probabilities"], info["classes"], suggest["utt_id"].tolist(),
                                  info["predicted_counts"], pca_2d(info["policy_input"].cpu()), labels, self.version,
                                  self.model.quality if self.model else None)  # the old estimate until the new one
                    self.model = model
                    self.training.phase = "estimating quality"
                save_model(self.model_path, model, self.utt)
                if self.cv_folds:
                    quality = labelled_cv(self.cache_path, snapshot, self.cfg.replace(seeds=list(self.cfg.seeds[:1])),
                                          self.cv_folds, log=self._progress)
                    with self.lock:
                        model.quality = quality
                    save_model(self.model_path, model, self.utt)
            done = Training(message=f"model {model.version}: trained on {model.n_labels} labels")
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
        """The next utterances to label, with the latest model's top guesses: the undone and
        un-skipped ones first, then the model's picks, then (before any model, or once its picks are
        used up) a seeded shuffle; never a labelled or skipped one. Lock held."""
        m = self.model
        out, seen = [], set()
        for source, ids in (("back", self.front), ("pick", m.suggest if m else []), ("random", self.random_order)):
            for u in ids:
                if len(out) == self.n_suggest:
                    return out
                if u in seen or u in self.given or u in self.skipped:
                    continue
                seen.add(u)
                out.append(self._row(u, source))
        return out

    def _row(self, utt_id: str, source: str) -> dict:
        i, m = self.row_of[utt_id], self.model
        guesses = []
        if m is not None:
            p = m.probs[i]
            guesses = [{"label": m.classes[j], "p": round(float(p[j]), 4)} for j in np.argsort(-p, kind="stable")[:3]]
        span = self.span_of(utt_id)
        where = "" if span is None else (f"{Path(str(self.table['path'].iloc[i])).name} "
                                         f"{clock(span.start)}-{clock(span.end)}")
        return {"utt_id": utt_id, "speaker": str(self.table["speaker"].iloc[i]), "audio": f"/audio/{quote(utt_id)}",
                "duration": float(self.table["duration"].iloc[i]), "where": where, "guesses": guesses, "from": source}

    def status(self) -> str:
        """What the retrain is doing, in words. Lock held."""
        t, m = self.training, self.model
        if not t.running:
            return t.message
        queued = " (one more retrain queued)" if t.queued else ""
        if t.phase == "training":
            return f"training model {self.version + 1}: {t.message}{queued}"
        return f"model {m.version} in use; estimating its quality: {t.message}{queued}"

    def state(self) -> dict:
        with self.lock:
            self._sync()
            t, m = self.training, self.model
            return {"classes": self.classes, "n_labelled": len(self.given), "n_utterances": len(self.utt),
                    "n_skipped": sum(u not in self.given for u in self.skipped), "batch": self.batch,
                    "labels_since_model": self.changes_since_model(), "revision": self.revision,
                    "can_undo": bool(self.history), "file_error": self.file_error,
                    "model": None if m is None else {"version": m.version, "n_labels": m.n_labels,
                                                     "predicted_counts": m.predicted_counts, "quality": m.quality},
                    "training": {"running": t.running, "progress": t.steps_done / t.steps, "phase": t.phase,
                                 "status": self.status(), "error": t.error, "queued": t.queued},
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
        self._check_utt(utt_id)
        path = (self.audio_root / str(self.table["path"].iloc[self.row_of[utt_id]])).resolve()
        if not path.is_file():
            raise UserError(f"audio of {utt_id} not found at {path}: pass --root, the corpus folder the "
                            "manifest's paths are relative to")
        return path

    def span_of(self, utt_id: str) -> Span | None:
        """The utterance's span of its recording (a segment cache's start, end and channel), None for a
        clip (a whole file)."""
        self._check_utt(utt_id)
        row = self.table.iloc[self.row_of[utt_id]]
        if "start" not in row.index or "end" not in row.index or pd.isna(row["start"]) or pd.isna(row["end"]):
            return None
        channel = row.get(CHANNEL_COLUMN)  # a cache stores "the downmix" as -1
        known = channel is not None and not pd.isna(channel) and int(channel) >= 0
        return Span(float(row["start"]), float(row["end"]), int(channel) if known else None)

    def export(self) -> Path:
        """Write the every-utterance table as `label` does: the labels given now (source given), the
        latest model's predictions for the rest. Written to a temp file, then renamed."""
        with self.lock:
            self._sync()
            if self.model is None:
                raise UserError("no model yet: label utterances of at least 2 classes first")
            m, given = self.model, pd.Series(self.given, dtype=str)
        table = label_table(self.utt, self.table["speaker"].astype(str).to_numpy(), given, m.probs, m.classes,
                            cache_spans(self.table))
        return write_text_atomic(self.out_csv, table.to_csv(index=False))
