"""EmoDB (Burkhardt et al., 2005): `wav/03a01Fa.wav` = speaker, text, emotion letter, version.

The release: 535 utterances in `wav/` (16 kHz), 10 speakers (03 08 09 10 11 12 13 14 15 16; 5 female,
5 male), 10 texts coded a01 a02 a04 a05 a07 b01 b02 b03 b09 b10 (note b10: three digits after the
letter are not assumed, but the texts are not 01-09 only), versions a..f. Emotion letters are German:
W Ärger (angry, 127), L Langeweile (boredom, 81), E Ekel (disgust, 46), A Angst (fearful, 69),
F Freude (happy, 71), T Trauer (sad, 62), N neutral (79). text_id = the text code: 10 prompts
sharing the 535 utterances unevenly (not every speaker says every text in every emotion). No official
split: `n_folds` speaker groups.
"""
from __future__ import annotations

import re

import pandas as pd

from ..build import build_manifest, parse_files

EMOTIONS = {"W": "angry", "L": "boredom", "E": "disgust", "A": "fearful", "F": "happy", "T": "sad", "N": "neutral"}
GENDERS = {"03": "male", "08": "female", "09": "female", "10": "male", "11": "male",
           "12": "male", "13": "female", "14": "female", "15": "male", "16": "female"}
NAME = re.compile(r"^(?P<speaker>03|08|09|1[0-6])(?P<text>[ab]\d\d)(?P<emotion>[WLEAFTN])(?P<version>[a-z])$")
SCHEME = "wav/SSTTTEV.wav (e.g. 03a01Fa.wav: speaker 03, text a01, emotion F, version a)"


def prepare(root, n_folds: int = 5, strict: bool = False) -> pd.DataFrame:
    rows = parse_files(
        root,
        "emodb",
        NAME,
        SCHEME,
        lambda rel, m: {
            "utt_id": rel.stem,
            "speaker": m["speaker"],
            "gender": GENDERS[m["speaker"]],
            "label": EMOTIONS[m["emotion"]],
            "raw_label": m["emotion"],
            "text": m["text"],
            "text_id": m["text"],
        },
        strict=strict,
    )
    return build_manifest(rows, root, "emodb", language="de", n_folds=n_folds)
