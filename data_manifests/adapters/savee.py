"""SAVEE (Haq & Jackson, 2009): `AudioData/DC/a01.wav`, or the flat re-pack `ALL/DC_a01.wav`.

The release: 480 utterances (44.1 kHz) = 4 male speakers (DC, JE, JK, KL) x 120: 30 neutral and
15 each of a anger, d disgust, f fear, h happiness, sa sadness, su surprise (numbered 01..30 /
01..15). text_id = emotion code + number (a05, n12): the speakers read the same sentences, so
an id is one sentence said by each of the 4 speakers (120 prompts, 4 utterances each); which
sentences recur across emotions the naming does not say, so every prompt has a single emotion
(text normalisation must stay off for them: their mean is their emotion). Four speakers -> 4
leave-one-speaker-out folds.
"""
from __future__ import annotations

import re

import pandas as pd

from ..build import build_manifest, parse_files

EMOTIONS = {"a": "angry", "d": "disgust", "f": "fearful", "h": "happy", "n": "neutral", "sa": "sad", "su": "surprised"}
NAME = re.compile(r"(?:^|/)(?P<speaker>DC|JE|JK|KL)[_/](?P<emotion>sa|su|a|d|f|h|n)(?P<number>\d\d)\.\w+$")
SCHEME = "DC/a01.wav or DC_a01.wav (speaker DC|JE|JK|KL, emotion a|d|f|h|n|sa|su, number)"


def prepare(root, n_folds: int = 5, strict: bool = False) -> pd.DataFrame:
    rows = parse_files(
        root,
        "savee",
        NAME,
        SCHEME,
        lambda rel, m: {
            "utt_id": f"{m['speaker']}_{m['emotion']}{m['number']}",
            "speaker": m["speaker"],
            "gender": "male",
            "label": EMOTIONS[m["emotion"]],
            "raw_label": m["emotion"],
            "text_id": f"{m['emotion']}{m['number']}",
        },
        on_path=True,
        strict=strict,
    )
    return build_manifest(rows, root, "savee", language="en", n_folds=n_folds)
