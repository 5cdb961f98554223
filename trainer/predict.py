"""Inference with a trained run: encode audio files with the run's encoder and window, then average
the class probabilities of the run's saved policies (one per fold x seed: an ensemble). Runs with
speaker_norm centre each speaker with their stored speaker prior (a lone file is not zeroed); runs
with text_norm subtract their stored prompt means from files whose prompt (text_id) they know."""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
import torch

from data_manifests.errors import UserError
from pipeline.audio import BadAudio, Span
from pipeline.segment import SegmentSettings, onnx_session, segment_file
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
        x = policy_rows(feats, _speaker_of_rows(speakers, len(feats), prior is not None), c["layer"], c["speaker_norm"],
                        prior)
        if c.get("text_norm") is True and text_ids is not None:
            x = PromptCentered.saved(x, text_ids, c["prompts"], meta["extra"][f"{PROMPT_MEANS}/{name}"].numpy())
        rows = FeatureRows([(x, np.arange(len(x)))], Standardizer.from_stats(pol.feat_mean, pol.feat_std),
                           pol.feat_mean.device)
        probs.append(rows.map(pol.probs).cpu())
    return torch.stack(probs).mean(0).numpy()


def _speaker_of_rows(speakers, n: int, alone: bool) -> np.ndarray:
    """Each row's speaker for the centring: the given one; where none is known (None, or no list),
    the row alone (a run with a prior) or all such rows one speaker (without)."""
    unknown = np.arange(n).astype(str) if alone else np.full(n, "predict")
    if speakers is None:
        return unknown
    missing = np.array([s is None for s in speakers], bool)
    if not missing.any():
        return np.asarray(speakers)
    return np.where(missing, np.char.add("<no speaker>#", unknown), np.asarray(speakers, dtype=object)).astype(str)


def has_speaker_prior(meta: dict) -> bool:
    """Whether every speaker_norm policy of a run carries its SpeakerPrior (runs saved before it do not)."""
    choices = meta.get("choices", {}) or {"": meta}
    return all(stored_speaker_prior(meta.get("extra", {}), name) is not None
               for name, c in choices.items() if c.get("speaker_norm") is True)


LIBRARY_PROMPTS = "text_ids= (one prompt per file)"  # how a library caller gives prompts (cli.py names its flag)


def prompt_note(meta: dict, text_ids, n_files: int, give: str = LIBRARY_PROMPTS) -> str | None:
    """What a text_norm run could not do for these files (None when nothing is missing); `give`: how
    the caller passes the prompts, named in the note."""
    known = {
        str(t) for c in meta.get("choices", {}).values() if c.get("text_norm") is True for t in c.get("prompts", [])
    }
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


LONG_SECONDS = 30.0  # longer than one encoder input: `predict` segments the file first


def _header_seconds(path: str) -> float | None:
    """The file's length from its header (None when the header cannot be read: embedding says why)."""
    try:
        info = sf.info(path)
    except Exception:  # soundfile raises several types (LibsndfileError, RuntimeError, ...)
        return None
    return info.frames / info.samplerate


def _rounded(seconds: float | None) -> float:
    """Seconds as the tables store them (0.1 ms, as `segment`'s manifests)."""
    return float("nan") if seconds is None else round(float(seconds), 4)


def _embed_spans(embed, path: str, spans: list, unreadable: dict | None):
    """The pooled states of spans of one file, or None when one cannot be read and `unreadable`
    records why (the file is left out whole: its rows would not line up)."""
    failed: dict = {}
    vectors = embed([path] * len(spans), spans, failed if unreadable is not None else None)
    if failed:
        unreadable[path] = next(iter(failed.values()))
        return None
    return vectors


# predict's segments: `segment`'s defaults with 1 s of padding (never past half the pause to a neighbour). A run
# trained on clips saw each utterance with its surrounding silence; on 4-minute RAVDESS sessions (-80 dBFS noise)
# chosen on three speakers' sessions (agreement with the clips 86.4% at 0.2 s, 91.4% at 1 s: docs/SEGMENTS.md)
PREDICT_SEGMENTS = SegmentSettings(padding=1.0)


def _segments(path: str, settings: SegmentSettings, session, unreadable: dict | None):
    """[k, 2] speech segments (seconds) of a long file (the downmix), or None when it cannot be
    read and `unreadable` records why (without it: BadAudio naming the file)."""
    try:
        return segment_file(path, settings, session).streams[None]
    except BadAudio as exc:
        if unreadable is None:
            raise BadAudio(f"{path}: {exc}") from exc
        unreadable[path] = str(exc)
        return None


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
                      give_prompts: str = LIBRARY_PROMPTS, segment: bool = False,
                      segment_settings: SegmentSettings | None = None, spans=None) -> pd.DataFrame:
        """One row per readable audio file: file, start, end (0 and its duration), predicted label, the
        mean probability of every class. A file longer than LONG_SECONDS (every file with `segment`)
        is cut into speech segments first (`segment_settings`, default PREDICT_SEGMENTS) and gets
        one row per segment, its segments centred as one speaker (the recording, or its speaker in
        `speakers`); one without speech gets a line on stderr and no row. The files segmented are
        listed in the table's attrs["segmented"] (timeline.write_timeline draws them). A file that
        cannot be read raises BadAudio naming it, or, given an `unreadable` dict, is recorded there
        (path -> why) and left out. `speakers` / `text_ids`: one per file, for speaker_norm /
        text_norm runs (default: no speaker known, prompts unknown; a segment's prompt is unknown);
        `speaker_means`: see predict_features. `spans` (one Span or None per path, e.g. a segment
        manifest's rows): a file's span is labelled as it is (not segmented), the spans of one
        recording centred as one speaker unless `speakers` says otherwise."""
        meta = self.meta
        paths = [str(p) for p in paths]
        spans = [None] * len(paths) if spans is None else list(spans)
        seconds = [_header_seconds(p) if span is None else None for p, span in zip(paths, spans)]
        long = [span is None and (segment or (s is not None and s > LONG_SECONDS)) for s, span in zip(seconds, spans)]
        n_short = sum(1 for is_long, span in zip(long, spans) if not is_long and span is None)
        speaker_norm = any(c["speaker_norm"] is True for c in [meta, *meta.get("choices", {}).values()])
        with_prior = has_speaker_prior(meta)
        if speaker_norm and speakers is None and 0 < n_short < 8 and (speaker_means == "own" or not with_prior):
            # files without speakers are centred as one speaker
            retrain = "" if with_prior else " (or train the run again: runs since the speaker prior centre a lone file)"
            print(f"warning: run {self.path} used speaker_norm; {n_short} file(s) are treated as one speaker, "
                  f"give several utterances of the same speaker for reliable predictions{retrain}", file=sys.stderr)
        note = prompt_note(meta, text_ids, len(paths), give_prompts)
        if note:
            print(f"note: {note}", file=sys.stderr)
        embed = self.embedder(device)
        given = [i for i, is_long in enumerate(long) if not is_long and spans[i] is not None]
        short = [i for i, is_long in enumerate(long) if not is_long and spans[i] is None]
        feats = embed([paths[i] for i in short], None, unreadable)
        pieces = {i: (feats[k:k + 1], [(0.0, _rounded(seconds[i]))]) for k, i in enumerate(
            i for i in short if unreadable is None or paths[i] not in unreadable)}
        session = onnx_session() if any(long) else None
        for i in (i for i, is_long in enumerate(long) if is_long):
            found = _segments(paths[i], segment_settings or PREDICT_SEGMENTS, session, unreadable)
            if found is None:
                continue
            if not len(found):
                print(f"no speech found in {paths[i]}: no rows", file=sys.stderr)
                continue
            vectors = _embed_spans(embed, paths[i], [Span(float(a), float(b)) for a, b in found], unreadable)
            if vectors is not None:
                pieces[i] = (vectors, [(_rounded(a), _rounded(b)) for a, b in found])
        for path in dict.fromkeys(paths[i] for i in given):  # a table's segments, by recording
            mine = [i for i in given if paths[i] == path]
            vectors = _embed_spans(embed, path, [spans[i] for i in mine], unreadable)
            for k, i in enumerate(mine if vectors is not None else []):
                pieces[i] = (vectors[k:k + 1], [(_rounded(spans[i].start), _rounded(spans[i].end))])
        read = sorted(pieces)
        if not read:
            table = pd.DataFrame(columns=["file", "start", "end", "label", *self.classes])
            table.attrs["segmented"] = []
            return table
        rows = [(i, *bounds) for i in read for bounds in pieces[i][1]]
        owner = [i for i, *_ in rows]
        who = None if speakers is None and n_short == len(paths) else [
            speakers[i] if speakers is not None else (paths[i] if long[i] or spans[i] else None) for i in owner]
        prompts = None if text_ids is None else [text_ids[i] if not long[i] else "" for i in owner]
        probs = predict_features(self.policies, meta, np.concatenate([pieces[i][0] for i in read]), who, prompts,
                                 speaker_means)
        out = pd.DataFrame({"file": [paths[i] for i in owner], "start": [r[1] for r in rows],
                            "end": [r[2] for r in rows], "label": [self.classes[i] for i in probs.argmax(1)]})
        table = pd.concat([out, pd.DataFrame(probs, columns=self.classes)], axis=1)
        table.attrs["segmented"] = [paths[i] for i in read if long[i]]
        return table

    def embedder(self, device: str):
        """embed(paths, spans, unreadable) -> pooled states with the run's encoder and window (the
        Whisper encoder loaded once for all calls)."""
        from pipeline.extract import embed_files
        from pipeline.hub_encoder import WINDOW as WAVEFORM_WINDOW, embed_waveform_files

        meta = self.meta
        weights = meta.get("weights_sha256") or None
        if meta["window"] == WAVEFORM_WINDOW:
            return lambda paths, spans, unreadable: embed_waveform_files(
                paths, model=meta["encoder_id"], device=device, weights_sha256=weights, unreadable=unreadable,
                spans=spans)
        from pipeline.encoder import load_encoder

        encoder = None

        def embed(paths, spans, unreadable):
            nonlocal encoder
            encoder = encoder or load_encoder(meta["encoder_id"], device)
            return embed_files(paths, window=meta["window"], encoder=encoder, weights_sha256=weights,
                               unreadable=unreadable, spans=spans)
        return embed

    def predict(self, paths, speakers=None, text_ids=None, device: str = "auto",
                unreadable: dict | None = None, speaker_means: str = "shrunk") -> pd.DataFrame:
        """file, start, end, predicted label and its probability, one row per readable file or segment
        (see predict_proba)."""
        table = self.predict_proba(paths, speakers, text_ids, device, unreadable, speaker_means)
        table = table.assign(probability=table[self.classes].max(axis=1))
        return table[["file", "start", "end", "label", "probability"]]


def load_run(run_dir) -> Run:
    """The run `train` wrote to `run_dir` (its models.safetensors), ready to label audio files."""
    policies, meta = load_policies(Path(run_dir) / "models.safetensors")
    return Run(Path(run_dir), policies, meta)
