"""SAVEE (Haq & Jackson, 2009): `AudioData/DC/a01.wav`, or the flat re-pack `ALL/DC_a01.wav`.

Four male speakers (DC, JE, JK, KL); emotion prefixes a anger, d disgust, f fear, h happiness,
n neutral, sa sadness, su surprise. Four speakers -> leave-one-speaker-out folds.
"""
from __future__ import annotations

import re

import pandas as pd

from ..build import build_manifest, parse_files

EMOTIONS = {"a": "angry", "d": "disgust", "f": "fearful", "h": "happy", "n": "neutral", "sa": "sad", "su": "surprised"}
NAME = re.compile(r"(?:^|/)(?P<speaker>DC|JE|JK|KL)[_/](?P<emotion>sa|su|a|d|f|h|n)(?P<number>\d\d)\.\w+$")
SCHEME = "DC/a01.wav or DC_a01.wav (speaker DC|JE|JK|KL, emotion a|d|f|h|n|sa|su, number)"


def prepare(root, n_folds: int = 5) -> pd.DataFrame:
    rows = parse_files(root, "savee", NAME, SCHEME, lambda rel, m: {
        "utt_id": f"{m['speaker']}_{m['emotion']}{m['number']}", "speaker": m["speaker"], "gender": "male",
        "label": EMOTIONS[m["emotion"]], "raw_label": m["emotion"]}, on_path=True)
    return build_manifest(rows, root, "savee", language="en", n_folds=n_folds)
