"""Inference with a trained run: encode audio files with the run's encoder and window, then average
the class probabilities of the run's saved policies (one per fold x seed: an ensemble). Runs with
speaker_norm centre each speaker with their stored speaker prior (a lone file is not zeroed); runs
with text_norm subtract their stored prompt means from files whose prompt (text_id) they know."""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from data_manifests.errors import UserError
from trainer.inputs.feature_store import FeatureRows, policy_rows
from trainer.inputs.features import Standardizer
from trainer.inputs.prompt_norm import PromptCentered
from trainer.method.policy import PROMPT_MEANS, load_policies, stored_speaker_prior


SPEAKER_MEANS = ("shrunk", "own")


def predict_features(policies: dict, meta: dict, feats: np.ndarray, speakers=None, text_ids=None,
                     speaker_means: str = "shrunk") -> np.ndarray:
    """Mean probabilities [n, C] of all policies for pooled hidden states [n, L+1, D].

    The files become the object a training run reads (policy_rows: float16 as in a cache, the
    run's layer), with the run's saved statistics: its prompt means (text_norm runs; files whose
    prompt, `text_ids` ("" = unknown), has none keep their content) and its z-scoring.
    speaker_norm runs centre each file by its speaker (`speakers`) with, by default
    (`speaker_means="shrunk"`), the speaker's mean shrunk toward the run's SpeakerPrior by how few
    files it has here, and files without a speaker each alone: a file's answer does not depend on
    unrelated files beside it. `"own"` uses each speaker's own mean (all files one speaker without
    `speakers`): exactly how `train` scored its test speakers. Runs saved before the prior have only that.
    """
    if speaker_means not in SPEAKER_MEANS:
        raise ValueError(f"speaker_means must be one of {SPEAKER_MEANS}, got {speaker_means!r}")
    feats = np.asarray(feats, dtype=np.float16)
    choices = meta.get("choices", {})  # `auto` runs store each policy's layer / speaker_norm / text_norm
    probs = []
    for name, pol in policies.items():
        c = choices.get(name, meta)
        prior = stored_speaker_prior(meta.get("extra", {}), name) if speaker_means == "shrunk" else None
        alone = np.arange(len(feats)).astype(str) if prior is not None else np.full(len(feats), "predict")
        x = policy_rows(feats, alone if speakers is None else np.asarray(speakers), c["layer"], c["speaker_norm"], prior)
        if c.get("text_norm") is True and text_ids is not None:
            x = PromptCentered.saved(x, text_ids, c["prompts"], meta["extra"][f"{PROMPT_MEANS}/{name}"].numpy())
        rows = FeatureRows([(x, np.arange(len(x)))], Standardizer.from_stats(pol.feat_mean, pol.feat_std),
                           pol.feat_mean.device)
        probs.append(rows.map(pol.probs).cpu())
    return torch.stack(probs).mean(0).numpy()


def has_speaker_prior(meta: dict) -> bool:
    """Whether every speaker_norm policy of a run carries its SpeakerPrior (runs saved before it do not)."""
    choices = meta.get("choices", {}) or {"": meta}
    return all(stored_speaker_prior(meta.get("extra", {}), name) is not None
               for name, c in choices.items() if c.get("speaker_norm") is True)


LIBRARY_PROMPTS = "text_ids= (one prompt per file)"  # how a library caller gives prompts (cli.py names its flag)


def prompt_note(meta: dict, text_ids, n_files: int, give: str = LIBRARY_PROMPTS) -> str | None:
    """What a text_norm run could not do for these files (None when nothing is missing); `give`: how
    the caller passes the prompts, named in the note."""
    known = {str(t) for c in meta.get("choices", {}).values() if c.get("text_norm") is True for t in c.get("prompts", [])}
    if not known:
        return None
    ids = [""] * n_files if text_ids is None else [str(t) for t in text_ids]
    unknown = sum(1 for t in ids if t not in known)
    if not unknown:
        return None
    how = f"give {give}" if text_ids is None else "they are spoken as they are"
    return (f"the run removes prompt means (text_norm; {len(known)} prompts known) but {unknown} of {n_files} "
            f"file(s) have no known prompt: their content is not removed ({how})")


def speakers_from_names(paths, speaker_regex: str) -> list[str]:
    """The speaker of each file from its name: the regex's first group, or its whole match."""
    matches = [(p, re.search(speaker_regex, Path(p).name)) for p in paths]
    unmatched = [p for p, m in matches if m is None]
    if unmatched:
        raise UserError(f"--speaker-regex {speaker_regex!r} does not match {len(unmatched)} file name(s), "
                         f"e.g. {unmatched[0]}")
    return [_first_group(m) for _, m in matches]


def text_ids_from_names(paths, text_regex: str) -> list[str]:
    """The prompt of each file from its name (first group, or the whole match); "" where it does not match."""
    found = [re.search(text_regex, Path(p).name) for p in paths]
    return ["" if m is None else _first_group(m) for m in found]


def _first_group(match: re.Match) -> str:
    return match.group(1) if match.groups() else match.group(0)


@dataclass
class Run:
    """A run directory written by `train`, loaded: its fold x seed policies (an ensemble) and what
    they were trained on (encoder, window, classes, per-policy choices). `load_run(DIR)` makes one;
    `cli.py predict` is its `predict_proba` with the table printed."""

    path: Path
    policies: dict
    meta: dict

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    def predict_proba(self, paths, speakers=None, text_ids=None, device: str = "auto",
                      unreadable: dict | None = None, speaker_means: str = "shrunk",
                      give_prompts: str = LIBRARY_PROMPTS) -> pd.DataFrame:
        """One row per readable audio file: file, predicted label, the mean probability of every
        class. A file that cannot be read raises BadAudio naming it, or, given an `unreadable`
        dict, is recorded there (path -> why) and left out. `speakers` / `text_ids`: one per file,
        for speaker_norm / text_norm runs (default: no speaker known, prompts unknown);
        `speaker_means`: see predict_features."""
        from pipeline.extract import embed_files
        from pipeline.hub_encoder import WINDOW as WAVEFORM_WINDOW, embed_waveform_files

        meta = self.meta
        speaker_norm = any(c["speaker_norm"] is True for c in [meta, *meta.get("choices", {}).values()])
        as_one = speaker_means == "own" or not has_speaker_prior(meta)  # files without speakers: one speaker
        if speaker_norm and speakers is None and len(paths) < 8 and as_one:
            retrain = "" if has_speaker_prior(meta) else " (or train the run again: runs since the speaker prior centre a lone file)"
            print(f"warning: run {self.path} used speaker_norm; {len(paths)} file(s) are treated as one speaker, "
                  f"give several utterances of the same speaker for reliable predictions{retrain}", file=sys.stderr)
        note = prompt_note(meta, text_ids, len(paths), give_prompts)
        if note:
            print(f"note: {note}", file=sys.stderr)
        paths = [str(p) for p in paths]
        embed = embed_waveform_files if meta["window"] == WAVEFORM_WINDOW else partial(embed_files, window=meta["window"])
        feats = embed(paths, model=meta["encoder_id"], device=device, weights_sha256=meta.get("weights_sha256") or None,
                      unreadable=unreadable)
        read = [i for i, p in enumerate(paths) if unreadable is None or p not in unreadable]
        if not read:
            return pd.DataFrame(columns=["file", "label", *self.classes])
        probs = predict_features(self.policies, meta, feats, None if speakers is None else [speakers[i] for i in read],
                                 None if text_ids is None else [text_ids[i] for i in read], speaker_means)
        out = pd.DataFrame({"file": [paths[i] for i in read], "label": [self.classes[i] for i in probs.argmax(1)]})
        return pd.concat([out, pd.DataFrame(probs, columns=self.classes)], axis=1)

    def predict(self, paths, speakers=None, text_ids=None, device: str = "auto",
                unreadable: dict | None = None, speaker_means: str = "shrunk") -> pd.DataFrame:
        """file, predicted label and its probability, one row per readable file (see predict_proba)."""
        table = self.predict_proba(paths, speakers, text_ids, device, unreadable, speaker_means)
        return table.assign(probability=table[self.classes].max(axis=1))[["file", "label", "probability"]]


def load_run(run_dir) -> Run:
    """The run `train` wrote to `run_dir` (its models.safetensors), ready to label audio files."""
    policies, meta = load_policies(Path(run_dir) / "models.safetensors")
    return Run(Path(run_dir), policies, meta)
