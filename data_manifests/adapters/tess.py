"""TESS (Dupuis & Pichora-Fuller, 2010): `OAF_angry/OAF_back_angry.wav` = speaker_word_emotion.

The release: 2800 wav files (24.4 kHz) = 2 female speakers (OAF aged 64, YAF aged 26) x 200 target
words ("Say the word ...") x 7 emotions (angry, disgust, fear, happy, neutral, sad, pleasant surprise
= `ps`; some re-packs spell it out), one folder per speaker and emotion (14 x 200). Known quirk:
`OAF_neutral/OA_bite_neutral.wav` has the prefix `OA`, so the speaker is taken from the folder's
prefix when there is one. text_id = the word, lower-cased: 200 prompts, 14 utterances each (2
speakers x 7 emotions). With two speakers the folds are leave-one-speaker-out (2 folds).
"""
from __future__ import annotations

import re

import pandas as pd

from ..build import build_manifest, parse_files

NAME = re.compile(r"(?:^|/)(?:(?P<folder>OAF|YAF)_[^/]*/)?(?P<speaker>OAF|YAF|OA|YA)_(?P<word>[A-Za-z]+)_"
                  r"(?P<emotion>angry|disgust|fear|happy|neutral|sad|ps|pleasant_surprised?)\.\w+$", re.IGNORECASE)
SCHEME = "<OAF|YAF>_<word>_<emotion>.wav (e.g. OAF_angry/OAF_back_angry.wav)"


def _speaker(match: re.Match) -> str:
    """OAF or YAF: the folder's prefix when present (it is right for `OA_bite_neutral`), else the name's."""
    speaker = (match["folder"] or match["speaker"]).upper()
    return {"OA": "OAF", "YA": "YAF"}.get(speaker, speaker)


def prepare(root, n_folds: int = 5, strict: bool = False) -> pd.DataFrame:
    rows = parse_files(
        root,
        "tess",
        NAME,
        SCHEME,
        lambda rel, m: {
            "utt_id": rel.stem,
            "speaker": _speaker(m),
            "gender": "female",
            "raw_label": m["emotion"].lower(),
            "word": m["word"].lower(),
            "text_id": m["word"].lower(),
        },
        on_path=True,
        strict=strict,
    )
    return build_manifest(rows, root, "tess", language="en", n_folds=n_folds)
