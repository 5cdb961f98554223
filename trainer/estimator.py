"""B-GRPO as a scikit-learn estimator on any features: `fit(X, y)` with y = -1 for unlabelled rows,
as sklearn's SelfTrainingClassifier and LabelSpreading take it.

It is `train`'s code path, not a copy: the rows become a FoldJob as a cache's do in prepare_fold
(resolve_auto's label-only choices, policy_rows: the one builder of what the policy sees,
fold_jobs.fold_job: text_norm and the FoldData), the warm-up and B-GRPO are
trainer/method/methods.py's, and predictions go through trainer/predict.predict_features, the
function `cli.py predict` scores files with. Given a cache's training-fold rows with the protocol's
labelled subset, `fold` and `random_state` equal to a `train` run's fold and seed, it gives that
run's bgrpo predictions (tests/test_estimator.py).

Features are stored as float16, as in a cache, so that array rows and cached rows score alike.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.metrics import accuracy_score
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_array, check_is_fitted, column_or_1d

from pipeline.cache import CacheData
from trainer.config import TrainConfig
from trainer.inputs.auto_choices import resolve_auto
from trainer.inputs.feature_store import policy_rows
from trainer.inputs.fold_jobs import fold_job
from trainer.inputs.protocol import Split
from trainer.jobs import job_seed, resolve_device
from trainer.method.methods import monitored_epochs, train_method, warm_up
from trainer.method.monitor import Monitor
from trainer.method.policy import PROMPT_MEANS, speaker_prior_tensors
from trainer.predict import predict_features

UNLABELLED = -1
CONFIG_PARAMS = ("layer", "speaker_norm", "text_norm", "refit_rounds", "l2", "reward", "teacher", "update", "device")
POLICY = "bgrpo"  # the name of the fitted policy in predict_features' ensemble of one
NO_GROUPS = "fit got no groups (speakers): speaker norm off"  # choices_["reason"] then starts so
ROUTING = ("inside GridSearchCV / cross_validate: sklearn.set_config(enable_metadata_routing=True) and "
           "BGRPOClassifier().set_fit_request(groups=True).set_score_request(groups=True), docs/PYTHON_API.md")


def _rows(X) -> np.ndarray:
    """[N, D] or [N, layers, D] -> float16 [N, layers, D] (a cache's rows)."""
    X = check_array(X, allow_nd=True, dtype=np.float32)  # finite, numeric, non-empty
    if X.ndim == 2:
        X = X[:, None, :]
    if X.ndim != 3:
        raise ValueError(f"X must be [n_samples, n_features] or [n_samples, n_layers, n_features], got {X.shape}")
    return X.astype(np.float16)


def _targets(y) -> tuple[np.ndarray, np.ndarray]:
    """(y, unlabelled mask) for labels of any dtype with -1 for unlabelled rows: numbers, strings in an
    object array, and numbers in an object array (made a numeric array: scikit-learn's target checks
    call an object array of numbers "unknown"); in a string array (numpy makes ["a", -1] one) "-1"
    marks the unlabelled rows."""
    y = column_or_1d(y, warn=True)
    if y.dtype.kind == "U":
        return y, y == str(UNLABELLED)
    unlabelled = pd.Series(y).eq(UNLABELLED).to_numpy()
    if y.dtype == object:
        strings = [isinstance(v, str) for v in y[~unlabelled]]
        if any(strings) and not all(strings):
            raise ValueError("y mixes strings and numbers as labels: give every labelled row the same kind of "
                             "label (-1 marks the unlabelled rows)")
        if not any(strings):
            y = np.asarray(y.tolist())
    return y, unlabelled


def _labels(values, n: int, what: str) -> np.ndarray:
    """One string per row (None: one value for every row)."""
    if values is None:
        return np.full(n, "", dtype=object) if what == "text_ids" else np.full(n, "all", dtype=object)
    values = np.asarray(values).astype(str)
    if values.shape != (n,):
        raise ValueError(f"{what} must have one entry per row of X ({n}), got shape {values.shape}")
    return values.astype(object)


class BGRPOClassifier(ClassifierMixin, BaseEstimator):
    """B-GRPO semi-supervised classifier (SPEC 2-8): the supervised warm-up on the labelled rows,
    then B-GRPO over the unlabelled ones (y = -1), with `train`'s default recipe.

    Parameters are TrainConfig fields (`python cli.py recipe` lists them all): the common ones by
    name, any other through `recipe` (a dict of field -> value). `fold` names the random streams
    (`train` seeds each fold x seed from the fold's name and the seed): set it and `random_state`
    to a train run's fold and seed to reproduce that run.

    fit(X, y, groups=None, text_ids=None): groups = speaker of each row (speaker_norm; without
    groups speaker_norm=auto is off, with a warning: there is no speaker to centre), text_ids =
    prompt of each row (text_norm; default: unknown). predict, predict_proba and score take the same
    optional groups / text_ids of the rows they score. Inside a search, groups reach fit and score
    only through scikit-learn's metadata routing (ROUTING).

    Fitted attributes: classes_, transduction_ (a label for every training row: given or
    predicted), n_rounds_ (B-GRPO rounds or epochs run), selected_ (pool rows selected, A > 0, per
    monitored round), choices_ (what `auto` chose and why), curves_ (per-round diagnostics),
    policy_ (the torch head), n_features_in_.
    """

    def __init__(self, layer="middle", speaker_norm="auto", text_norm="auto", refit_rounds=3, l2=10.0,
                 reward="assign", teacher="lda", update="refit", random_state=0, fold="0", device="cpu",
                 recipe=None):
        self.layer = layer
        self.speaker_norm = speaker_norm
        self.text_norm = text_norm
        self.refit_rounds = refit_rounds
        self.l2 = l2
        self.reward = reward
        self.teacher = teacher
        self.update = update
        self.random_state = random_state
        self.fold = fold
        self.device = device
        self.recipe = recipe

    def config(self) -> TrainConfig:
        """The TrainConfig this estimator's parameters make (defaults of `train` elsewhere)."""
        fields = {k: getattr(self, k) for k in CONFIG_PARAMS}
        twice = sorted(set(CONFIG_PARAMS) & set(self.recipe or {}))
        if twice:
            raise ValueError(f"recipe sets {', '.join(twice)}: give them as BGRPOClassifier parameters instead")
        cfg = TrainConfig.from_dict({**TrainConfig().to_dict(), **dict(self.recipe or {}), **fields})
        if cfg.val_fraction > 0:
            raise ValueError("val_fraction: BGRPOClassifier trains on every labelled row; choose settings with "
                             "GridSearchCV (GroupKFold over speakers) instead of a validation part")
        if cfg.unlabeled_cache:
            raise ValueError("unlabeled_cache: BGRPOClassifier reads no caches; append the other audio's vectors "
                             "to X with y = -1 (their groups = their speakers)")
        return cfg

    def fit(self, X, y, groups=None, text_ids=None):
        if y is None:
            raise ValueError("BGRPOClassifier requires y to be passed, but the target y is None "
                             "(y = -1 marks the unlabelled rows)")
        raw = _rows(X)
        y, unlabelled = _targets(y)
        if len(y) != len(raw):
            raise ValueError(f"X has {len(raw)} rows, y {len(y)}")
        check_classification_targets(y[~unlabelled] if (~unlabelled).any() else y)
        self.classes_ = np.unique(y[~unlabelled])
        if len(self.classes_) < 2:
            raise ValueError(f"y needs labelled rows of at least 2 classes, got {len(self.classes_)} class")
        codes = np.full(len(y), UNLABELLED, dtype=np.int64)
        codes[~unlabelled] = np.searchsorted(self.classes_, y[~unlabelled])
        self.n_features_in_ = raw.shape[1] * raw.shape[2]
        self.n_layers_in_ = raw.shape[1]
        speakers, prompts = _labels(groups, len(raw), "groups"), _labels(text_ids, len(raw), "text_ids")
        table = pd.DataFrame({"utt_id": np.arange(len(raw)).astype(str), "speaker": speakers,
                              "text_id": prompts if text_ids is not None else None})
        if text_ids is None:
            table = table.drop(columns="text_id")
        cfg = self.config()
        no_groups = groups is None and cfg.speaker_norm == "auto"
        if no_groups:  # one speaker: centring would shift by each batch's mean
            warnings.warn(f"BGRPOClassifier.{NO_GROUPS}. Pass groups=speakers ({ROUTING}), or speaker_norm=False "
                          "to say that there are none", UserWarning, stacklevel=2)
            cfg = cfg.replace(speaker_norm=False)
        rows = np.arange(len(raw))
        split = Split.labelled_and_pool(rows[~unlabelled], rows[unlabelled])
        names = [str(c) for c in self.classes_]
        # as prepare_fold does for a cache: the label-only `auto` choices, the rows the policy sees, the FoldJob
        attrs = {"num_hidden_states": raw.shape[1]}
        cfg, choice = resolve_auto(cfg, CacheData(raw, table, attrs, "", None), split, codes, len(names))
        if no_groups:  # the reason says why, not "fixed" (what resolve_auto calls a given setting)
            choice["reason"] = "; ".join([NO_GROUPS, *choice["reason"].split("; ")[1:]])
        x = policy_rows(raw, speakers, cfg.layer, cfg.speaker_norm)
        job = fold_job(cfg, x, table, codes, names, split, choice, torch.device(resolve_device(cfg.device)))

        def seed_of(salt):
            return job_seed(str(self.fold), int(self.random_state), salt)

        curves = []
        warm, job = warm_up(
            job, seed_of, Monitor(job.data, "supervised", curves, monitored_epochs("supervised", job.cfg))
        )
        self.n_rounds_ = monitored_epochs(POLICY, job.cfg) if len(job.data.x_unl) else 0
        policy = train_method(POLICY, warm, job, seed_of, Monitor(job.data, POLICY, curves, self.n_rounds_))
        self.policy_ = policy.eval()
        self.choices_ = job.choice
        self.curves_ = pd.DataFrame([c for c in curves if c["method"] == POLICY])
        rates = self.curves_.get("selection_rate", pd.Series(dtype=float))
        self.selected_ = np.rint(rates.to_numpy(float) * len(job.data.x_unl)).astype(int)
        self._meta = {
            "classes": names,
            "choices": {
                POLICY: {"layer": job.cfg.layer, "speaker_norm": job.cfg.speaker_norm, "text_norm": job.cfg.text_norm}
            },
            "extra": {},
        }
        if job.prompts is not None:  # the prompt means fitted on the training rows (text_norm), as `train` saves them
            names_kept, means = job.prompts.to_save()
            self._meta["choices"][POLICY]["prompts"] = names_kept
            self._meta["extra"][f"{PROMPT_MEANS}/{POLICY}"] = torch.as_tensor(means)
        speaker_prior = job.speaker_prior()  # how predict centres speakers with few rows (speaker_prior.py)
        if speaker_prior is not None:
            self._meta["extra"].update(speaker_prior_tensors(POLICY, speaker_prior))
        self.transduction_ = np.asarray(y).copy()
        if unlabelled.any():  # the pool rows as the policy saw them in training (centred with all a speaker's rows)
            pool = job.data.x_unl.map(self.policy_.probs).argmax(1).cpu().numpy()
            self.transduction_[unlabelled] = self.classes_[pool]
        return self

    def predict_proba(self, X, groups=None, text_ids=None, speaker_means="shrunk") -> np.ndarray:
        """[n, n_classes] class probabilities (columns in classes_ order). With speaker centring, each
        row is centred by its group's mean shrunk toward the training speakers' (rows without
        groups: each alone), so a row's answer does not depend on unrelated rows beside it;
        speaker_means="own": each group's own mean, as `train` scores its test speakers."""
        check_is_fitted(self, "policy_")
        raw = _rows(X)
        if raw.shape[1] * raw.shape[2] != self.n_features_in_ or raw.shape[1] != self.n_layers_in_:
            raise ValueError(f"X has {raw.shape[1] * raw.shape[2]} features, but BGRPOClassifier is expecting "
                             f"{self.n_features_in_} features as input ({self.n_layers_in_} layer(s) at fit, "
                             f"{raw.shape[1]} now)")
        speakers = None if groups is None else _labels(groups, len(raw), "groups")
        prompts = None if text_ids is None else _labels(text_ids, len(raw), "text_ids")
        return predict_features({POLICY: self.policy_}, self._meta, raw, speakers, prompts, speaker_means)

    def predict(self, X, groups=None, text_ids=None, speaker_means="shrunk") -> np.ndarray:
        check_is_fitted(self, "policy_")
        return self.classes_[self.predict_proba(X, groups, text_ids, speaker_means).argmax(1)]

    def score(self, X, y, groups=None, text_ids=None, speaker_means="shrunk", sample_weight=None) -> float:
        """Accuracy on the labelled rows (y != -1). Every row is predicted, so the unlabelled rows of a
        speaker also inform its mean (speaker centring); groups / text_ids as in predict."""
        check_is_fitted(self, "policy_")
        y, unlabelled = _targets(y)
        if unlabelled.all():
            raise ValueError("score needs labelled rows (y != -1); every row of y is -1")
        if groups is None and self._meta["choices"][POLICY]["speaker_norm"]:
            warnings.warn("BGRPOClassifier.score got no groups but fit centred speakers: each row is centred alone "
                          f"by the speaker prior. Pass groups=speakers ({ROUTING})", UserWarning, stacklevel=2)
        labelled = ~unlabelled
        pred = self.predict(X, groups, text_ids, speaker_means)
        weight = None if sample_weight is None else np.asarray(sample_weight)[labelled]
        return float(accuracy_score(y[labelled], pred[labelled], sample_weight=weight))
