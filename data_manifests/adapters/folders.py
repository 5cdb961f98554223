"""Bring-your-own corpus, one folder per label: `<label>/<file>.wav` (any depth above the label folder).

The folder directly above each file is its raw label, mapped case-insensitively onto the vocabulary
with common synonyms (anger/angry, fear/fearful, happiness/happy, ...) plus the user's `label_map`.
The speaker comes from `speaker_regex` searched in the file name (named group `speaker`, else the
first group, else the whole match); folds group speakers so no speaker is in two folds.
"""
from __future__ import annotations

import re

import pandas as pd

from ..build import build_manifest, parse_files
from ..schema import ManifestError


def compile_speaker_regex(speaker_regex: str | None) -> re.Pattern:
    if not speaker_regex:
        raise ManifestError(
            "folders: speaker-independent folds need the speaker of every file; pass --speaker-regex, a regex "
            r"over the file name, e.g. '^(?P<speaker>[^_]+)_' for 'spk01_take3.wav'.")
    try:
        return re.compile(speaker_regex)
    except re.error as error:
        raise ManifestError(f"folders: --speaker-regex {speaker_regex!r} is not a valid regex ({error}).") from error


def _speaker(match: re.Match) -> str:
    if "speaker" in match.re.groupindex:
        return match["speaker"]
    return match[1] if match.re.groups else match[0]


def prepare(root, speaker_regex: str | None = None, label_map=None, n_folds: int = 5, language: str = "",
            strict: bool = False) -> pd.DataFrame:
    pattern = compile_speaker_regex(speaker_regex)
    name_then_label = re.compile(r"(?:^|/)(?P<label>[^/]+)/(?P<name>[^/]+)$")

    def parse(rel, match):
        speaker = pattern.search(match["name"])
        if speaker is None or not _speaker(speaker):
            return False
        return {"utt_id": rel.with_suffix("").as_posix().replace("/", "__"), "speaker": _speaker(speaker),
                "raw_label": match["label"]}

    scheme = f"<label>/<file>.wav with a speaker found by --speaker-regex {speaker_regex!r} in the file name"
    rows = parse_files(root, "folders", name_then_label, scheme, parse, on_path=True, strict=strict)
    return build_manifest(rows, root, "folders", language=language, label_map=label_map, n_folds=n_folds)
