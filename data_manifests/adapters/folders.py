"""Bring-your-own corpus, one folder per label: `<label>/<file>.wav` (any depth above the label folder).

The folder directly above each file is its raw label, mapped case-insensitively onto the vocabulary
with common synonyms (anger/angry, fear/fearful, happiness/happy, ...) plus the user's `label_map`.
The speaker comes from `speaker_regex` searched in the file name (named group `speaker`, else the
first group, else the whole match); folds group speakers so no speaker is in two folds. The prompt
(text_id) comes the same way from the optional `text_regex` (named group `text`); files it does not
match get an empty text_id.
"""
from __future__ import annotations

import re

import pandas as pd

from ..audio_files import check_root
from ..build import build_manifest, parse_files
from ..schema import ManifestError


def compile_speaker_regex(speaker_regex: str | None) -> re.Pattern:
    if not speaker_regex:
        raise ManifestError(
            "folders: speaker-independent folds need the speaker of every file; pass --speaker-regex, a regex "
            r"over the file name, e.g. '^(?P<speaker>[^_]+)_' for 'spk01_take3.wav'.")
    return _compile(speaker_regex, "--speaker-regex")


def _compile(regex: str, flag: str) -> re.Pattern:
    try:
        return re.compile(regex)
    except re.error as error:
        raise ManifestError(f"folders: {flag} {regex!r} is not a valid regex ({error}).") from error


def _field(match: re.Match, name: str) -> str:
    """The named group `name`, else the first group, else the whole match."""
    if name in match.re.groupindex:
        return match[name] or ""
    return (match[1] if match.re.groups else match[0]) or ""


def _text_id(pattern: re.Pattern | None, name: str) -> str:
    found = pattern.search(name) if pattern is not None else None
    return _field(found, "text") if found else ""


def prepare(root, speaker_regex: str | None = None, label_map=None, n_folds: int = 5, language: str = "",
            strict: bool = False, text_regex: str | None = None) -> pd.DataFrame:
    check_root(root)  # a wrong --root is the first thing to fix: it says so before asking for a regex
    pattern = compile_speaker_regex(speaker_regex)
    text_pattern = _compile(text_regex, "--text-regex") if text_regex else None
    name_then_label = re.compile(r"(?:^|/)(?P<label>[^/]+)/(?P<name>[^/]+)$")

    def parse(rel, match):
        speaker = pattern.search(match["name"])
        if speaker is None or not _field(speaker, "speaker"):
            return False
        return {"utt_id": rel.with_suffix("").as_posix().replace("/", "__"), "speaker": _field(speaker, "speaker"),
                "raw_label": match["label"], "text_id": _text_id(text_pattern, match["name"])}

    scheme = f"<label>/<file>.wav with a speaker found by --speaker-regex {speaker_regex!r} in the file name"
    rows = parse_files(root, "folders", name_then_label, scheme, parse, on_path=True, strict=strict)
    return build_manifest(rows, root, "folders", language=language, label_map=label_map, n_folds=n_folds)
