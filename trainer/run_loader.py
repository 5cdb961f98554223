"""A trained run from Python: `load_run(DIR)` -> a TrainedRun whose predict / predict_proba label
audio files as `cli.py predict` does (the command is a thin wrapper over it): the run's encoder
and window, its fold x seed policies averaged (trainer/predict.py).

    run = load_run("runs/ravdess")
    run.predict(["a.wav", "b.wav"])          # DataFrame: file, label, one probability column per class
    run.predict_features(X)                  # [n, C] probabilities of pooled hidden states [n, L+1, D]
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from data_manifests.errors import UserError
from pipeline.npy_import import IMPORTED_WINDOW
from trainer.method.policy import load_policies
from trainer.predict import predict_features, prompt_note


class TrainedRun:
    """The policies of a `train` run directory (models.safetensors) and what they were trained on."""

    def __init__(self, run_dir, device: str = "auto"):
        self.run_dir = Path(run_dir)
        self.policies, self.meta = load_policies(self.run_dir / "models.safetensors")
        self.device = device
        self.unreadable_: dict = {}  # path -> why, of the last predict's files that could not be read

    @property
    def classes_(self) -> list[str]:
        return list(self.meta["classes"])

    def predict_features(self, features, speakers=None, text_ids=None) -> np.ndarray:
        """Mean class probabilities [n, C] of pooled hidden states [n, L+1, D] (a cache's rows)."""
        return predict_features(self.policies, self.meta, features, speakers, text_ids)

    def predict(self, paths, speakers=None, text_ids=None) -> pd.DataFrame:
        """One row per readable file: file, predicted label, probability of every class (classes_
        order). Files that cannot be read are left out and listed in `unreadable_` (path -> why)."""
        meta, paths = self.meta, [str(p) for p in paths]
        if meta.get("window") == IMPORTED_WINDOW:
            raise UserError(f"run {self.run_dir} was trained on imported features ({meta['encoder_id']!r}), so it "
                            "cannot encode audio: make the files' features with that tool and call "
                            "load_run(DIR).predict_features(X)")
        if any(c["speaker_norm"] is True for c in [meta, *meta.get("choices", {}).values()]) and speakers is None \
                and len(paths) < 8:
            print(f"warning: run {self.run_dir} used speaker_norm; {len(paths)} file(s) are treated as one speaker, "
                  "give several utterances of the same speaker for reliable predictions", file=sys.stderr)
        note = prompt_note(meta, text_ids, len(paths))
        if note:
            print(f"note: {note}", file=sys.stderr)
        from pipeline.extract import embed_files

        self.unreadable_ = {}
        feats = embed_files(paths, model=meta["encoder_id"], window=meta["window"], device=self.device,
                            weights_sha256=meta.get("weights_sha256") or None, unreadable=self.unreadable_)
        read = [i for i, p in enumerate(paths) if p not in self.unreadable_]
        if not read:
            return pd.DataFrame(columns=["file", "label", *self.classes_])
        probs = self.predict_features(feats, None if speakers is None else [speakers[i] for i in read],
                                      None if text_ids is None else [text_ids[i] for i in read])
        out = pd.DataFrame({"file": [paths[i] for i in read], "label": [self.classes_[i] for i in probs.argmax(1)]})
        return pd.concat([out, pd.DataFrame(probs, columns=self.classes_)], axis=1)

    def predict_proba(self, paths, speakers=None, text_ids=None) -> pd.DataFrame:
        """predict's table without the label column: file and the probability of every class."""
        return self.predict(paths, speakers, text_ids).drop(columns="label")


def load_run(run_dir, device: str = "auto") -> TrainedRun:
    """The run a `train --out DIR` wrote, ready to label audio (or pooled features)."""
    return TrainedRun(run_dir, device)
