"""TESS (Dupuis & Pichora-Fuller, 2010): `OAF_angry/OAF_back_angry.wav` = speaker_word_emotion.

Two female speakers (OAF older, YAF younger), 7 emotions; pleasant surprise is `ps` (some re-packs
spell it out). With two speakers the speaker-independent folds are leave-one-speaker-out.
"""
from __future__ import annotations

import re

import pandas as pd

from ..build import build_manifest, parse_files

NAME = re.compile(r"^(?P<speaker>OAF|YAF)_(?P<word>[A-Za-z]+)_"
                  r"(?P<emotion>angry|disgust|fear|happy|neutral|sad|ps|pleasant_surprised?)$", re.IGNORECASE)
SCHEME = "<OAF|YAF>_<word>_<emotion>.wav (e.g. OAF_angry/OAF_back_angry.wav)"


def prepare(root, n_folds: int = 5) -> pd.DataFrame:
    rows = parse_files(root, "tess", NAME, SCHEME, lambda rel, m: {
        "utt_id": rel.stem, "speaker": m["speaker"].upper(), "gender": "female",
        "raw_label": m["emotion"].lower(), "word": m["word"].lower()})
    return build_manifest(rows, root, "tess", language="en", n_folds=n_folds)
