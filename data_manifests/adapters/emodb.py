"""EmoDB (Burkhardt et al., 2005): `wav/03a01Fa.wav` = speaker, text, emotion letter, version.

Emotion letters are German: W Ärger (angry), L Langeweile (boredom), E Ekel (disgust), A Angst
(fearful), F Freude (happy), T Trauer (sad), N neutral. 10 speakers; no official split:
`n_folds` speaker groups.
"""
from __future__ import annotations

import re

import pandas as pd

from ..build import build_manifest, parse_files

EMOTIONS = {"W": "angry", "L": "boredom", "E": "disgust", "A": "fearful", "F": "happy", "T": "sad", "N": "neutral"}
GENDERS = {"03": "male", "08": "female", "09": "female", "10": "male", "11": "male",
           "12": "male", "13": "female", "14": "female", "15": "male", "16": "female"}
NAME = re.compile(r"^(?P<speaker>03|08|09|1[0-6])(?P<text>[ab]0\d)(?P<emotion>[WLEAFTN])(?P<version>[a-z])$")
SCHEME = "wav/SSTTTEV.wav (e.g. 03a01Fa.wav: speaker 03, text a01, emotion F, version a)"


def prepare(root, n_folds: int = 5) -> pd.DataFrame:
    rows = parse_files(root, "emodb", NAME, SCHEME, lambda rel, m: {
        "utt_id": rel.stem, "speaker": m["speaker"], "gender": GENDERS[m["speaker"]],
        "label": EMOTIONS[m["emotion"]], "raw_label": m["emotion"], "text": m["text"]})
    return build_manifest(rows, root, "emodb", language="de", n_folds=n_folds)
