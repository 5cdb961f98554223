"""B-GRPO as a scikit-learn semi-supervised classifier: `fit(X, y)` with y = -1 for unlabelled rows
(the convention of SelfTrainingClassifier and LabelSpreading), on any features.

It is `train`'s code path, not a copy: the rows become a labelled + pool split, the `auto`
choices are resolved on the labelled rows (inputs/auto_choices.resolve_auto), the policy input is
built by inputs/feature_store.policy_rows and the fold's tensors by inputs/fold_jobs.fold_job, and
the warm-up and B-GRPO are trained by method/methods.py with the random streams of jobs.job_seed.
So on a fold's training rows (the protocol's labelled subset labelled, the rest -1), with
`fold_name` = that fold's id and `random_state` = the seed, `predict` on the test fold gives the
labels `train` wrote for it (tests/test_estimator.py). `predict` is trainer/predict.py's
predict_features, the one `cli.py predict` uses.

    clf = BGRPOClassifier(refit_rounds=3).fit(X, y, groups=speakers)   # X [N, D] or [N, L, D]
    clf.predict(X_new, groups=new_speakers)
"""
from __future__ import annotations

import warnings
from functools import partial

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from pipeline.cache import CacheData
from trainer.config import TrainConfig
from trainer.inputs.auto_choices import resolve_auto
from trainer.inputs.feature_store import policy_rows
from trainer.inputs.fold_jobs import fold_job
from trainer.inputs.protocol import Split
from trainer.jobs import job_seed, resolve_device, saved_prompt_means, torch_threads
from trainer.method.methods import monitored_epochs, train_method, warm_up
from trainer.method.monitor import Monitor
from trainer.method.policy import PROMPT_MEANS
from trainer.predict import predict_features

UNLABELLED = -1
# the recipe fields that are estimator parameters of their own (None = the recipe's default);
# any other field goes in `settings`
OWN_FIELDS = ("layer", "speaker_norm", "text_norm", "reward", "update", "refit_rounds", "teacher", "head", "l2")


class BGRPOClassifier(ClassifierMixin, BaseEstimator):
    """B-GRPO (docs/METHOD.md) with the default recipe (`python cli.py recipe`) on pooled features.

    Parameters: the recipe fields named in OWN_FIELDS (None = recipe default), `settings` (a dict
    of any other recipe field), `random_state` (the seed of `train --seeds`), `fold_name` (names
    the random streams as `train` names a fold's; only for reproducing a `train` run), `device`.

    Fitted attributes: classes_, transduction_ (the given label of each labelled row, the
    prediction for the others), n_rounds_ (B-GRPO rounds or epochs run), selected_ (share of the
    pool selected, A > 0, in each round the monitor recorded), choices_ (what `auto` chose and
    why), n_features_in_, policy_ (the trained head).

    Without `groups`, speaker_norm=auto is off (there are no speakers to centre) and
    speaker_norm=true is refused; with it, predict's `groups` centre the new rows by their own
    speakers (default: all rows of a call are one speaker, as `cli.py predict` does).
    """

    def __init__(self, layer=None, speaker_norm=None, text_norm=None, reward=None, update=None, refit_rounds=None,
                 teacher=None, head=None, l2=None, settings=None, random_state=0, fold_name="fit", device="auto"):
        self.layer = layer
        self.speaker_norm = speaker_norm
        self.text_norm = text_norm
        self.reward = reward
        self.update = update
        self.refit_rounds = refit_rounds
        self.teacher = teacher
        self.head = head
        self.l2 = l2
        self.settings = settings
        self.random_state = random_state
        self.fold_name = fold_name
        self.device = device

    def config(self) -> TrainConfig:
        """The recipe these parameters give (one method, bgrpo; one seed, random_state)."""
        own = {k: getattr(self, k) for k in OWN_FIELDS if getattr(self, k) is not None}
        return TrainConfig.from_dict({**(self.settings or {}), **own, "methods": ["bgrpo"],
                                      "seeds": [int(self.random_state)], "device": resolve_device(self.device)})

    def fit(self, X, y, groups=None, text_ids=None):
        """Train on the rows of X: those with y != -1 are the labelled set L, the others the pool.
        groups: speaker of each row (speaker_norm); text_ids: prompt of each row (text_norm)."""
        X, y = validate_data(self, X, column_or_1d(y, warn=True) if y is not None else y, allow_nd=True,
                             dtype=np.float64, y_numeric=False, ensure_min_samples=1)
        feats = as_states(X)
        y = np.asarray(y, dtype=object) if np.asarray(y).dtype.kind in "OUS" else np.asarray(y)
        labelled = np.flatnonzero(~is_unlabelled(y))
        if not len(labelled):
            raise ValueError("no labelled rows: every y is -1; label at least one row of two classes")
        check_classification_targets(y[labelled])
        self.classes_ = np.unique(y[labelled])
        if len(self.classes_) < 2:
            raise ValueError(f"the labelled rows hold one class only ({self.classes_[0]!r}); B-GRPO needs at "
                             "least 2 classes")
        codes = np.full(len(y), UNLABELLED)
        codes[labelled] = np.searchsorted(self.classes_, y[labelled])
        cfg = self.config()
        if groups is None:
            if cfg.speaker_norm is True:
                raise ValueError("speaker_norm=true centres each speaker's rows: pass groups (a speaker per row)")
            cfg = cfg.replace(speaker_norm=False)
        speakers = np.asarray(["all"] * len(y) if groups is None else column_or_1d(groups), dtype=str)
        prompts = np.asarray([""] * len(y) if text_ids is None else column_or_1d(text_ids), dtype=str)
        if len(speakers) != len(y) or len(prompts) != len(y):
            raise ValueError(f"groups and text_ids need one value per row of X ({len(y)})")
        table = pd.DataFrame({"utt_id": np.arange(len(y)).astype(str), "speaker": speakers, "text_id": prompts})
        pool = np.setdiff1d(np.arange(len(y)), labelled)
        split = Split.labelled_and_pool(labelled, pool)
        n_classes = len(self.classes_)
        cfg, choice = resolve_auto(cfg, CacheData(feats, table, {"num_hidden_states": feats.shape[1]}, "", None),
                                   split, codes, n_classes)
        x = policy_rows(feats, speakers, cfg.layer, cfg.speaker_norm)
        job = fold_job(cfg, x, table, codes, list(self.classes_), split, choice, torch.device(cfg.device))
        seed_of = partial(job_seed, str(self.fold_name), int(self.random_state))
        curves: list = []
        threads = torch.get_num_threads()
        torch.set_num_threads(torch_threads(job.cfg))  # as run_job: the same reduction order, the same numbers
        self.n_rounds_ = monitored_epochs("bgrpo", job.cfg)
        try:
            self.policy_, chosen = train_bgrpo_job(job, seed_of, curves)
        finally:
            torch.set_num_threads(threads)
        self.choices_ = {**chosen, "layer": job.cfg.layer, "speaker_norm": job.cfg.speaker_norm,
                         "text_norm": job.cfg.text_norm}
        self.selected_ = np.asarray([c.get("selection_rate", np.nan) for c in curves], dtype=float)
        saved = saved_prompt_means(job)
        self.prompt_means_ = None if saved is None else {PROMPT_MEANS: saved}
        self.transduction_ = np.where(is_unlabelled(y), self.classes_[self.predict_proba(
            X, groups=groups, text_ids=text_ids).argmax(1)], y) if len(pool) else y.copy()
        if self.transduction_.dtype == object and self.classes_.dtype != object:
            self.transduction_ = self.transduction_.astype(self.classes_.dtype)
        return self

    def predict_proba(self, X, groups=None, text_ids=None) -> np.ndarray:
        """[n, n_classes] (classes_ order): trainer/predict.py's predict_features with this head."""
        check_is_fitted(self, "policy_")
        X = validate_data(self, X, allow_nd=True, dtype=np.float64, reset=False)
        choice = {k: self.choices_[k] for k in ("layer", "speaker_norm", "text_norm")}
        extra = {}
        if self.prompt_means_ is not None:
            choice["prompts"], means = self.prompt_means_[PROMPT_MEANS]
            extra[f"{PROMPT_MEANS}/bgrpo"] = torch.as_tensor(means)
        meta = {"choices": {"bgrpo": choice}, "extra": extra}
        speakers = None if groups is None else column_or_1d(groups)
        prompts = None if text_ids is None else column_or_1d(text_ids)
        with torch.no_grad():
            return predict_features({"bgrpo": self.policy_}, meta, as_states(X), speakers, prompts)

    def predict(self, X, groups=None, text_ids=None) -> np.ndarray:
        check_is_fitted(self, "policy_")
        return self.classes_[self.predict_proba(X, groups, text_ids).argmax(1)]

    def score(self, X, y, sample_weight=None) -> float:
        """Accuracy on the rows with a label (y != -1), so that cross-validation over semi-labelled
        data scores only what it can."""
        y = np.asarray(y)
        keep = ~is_unlabelled(y)
        weights = None if sample_weight is None else np.asarray(sample_weight)[keep]
        return super().score(np.asarray(X)[keep], y[keep], weights)


def train_bgrpo_job(job, seed_of, curves: list):
    """(B-GRPO's head, the job's choices with the pool prior used): the warm-up, then B-GRPO from it
    (method/methods.py), as run_job trains them; the rounds' diagnostics go to `curves`."""
    with warnings.catch_warnings():  # no test rows: the monitor's test score is an empty mean
        warnings.simplefilter("ignore", RuntimeWarning)
        warm, job_bgrpo = warm_up(job, seed_of, Monitor(job.data, "supervised", [],
                                                        monitored_epochs("supervised", job.cfg)))
        policy = train_method("bgrpo", warm, job_bgrpo, seed_of,
                              Monitor(job.data, "bgrpo", curves, monitored_epochs("bgrpo", job.cfg)))
    return policy.eval(), job_bgrpo.choice


def is_unlabelled(y: np.ndarray) -> np.ndarray:
    """y == -1 elementwise (numbers, or -1 among strings and objects)."""
    y = np.asarray(y)
    if y.dtype.kind in "iuf":
        return y == UNLABELLED
    return np.asarray([str(v) == str(UNLABELLED) for v in y.ravel()], dtype=bool).reshape(y.shape)


def as_states(X: np.ndarray) -> np.ndarray:
    """Features as a cache stores them: float16 [N, L, D] (2-D X is one hidden state)."""
    X = np.asarray(X)
    if X.ndim not in (2, 3):
        raise ValueError(f"X must be [N, D] or [N, layers, D], got shape {X.shape}")
    if len(X) and np.abs(X).max() > np.finfo(np.float16).max:
        raise ValueError(f"X holds values up to {np.abs(X).max():.3g}, beyond float16 (the cache's type, "
                         f"{np.finfo(np.float16).max:.0f}): scale the features first")
    return (X[:, None, :] if X.ndim == 2 else X).astype(np.float16)
