"""CaFE, Canadian French Emotional speech (Gournay et al., 2018): `AA-E-I-S.wav`.

The release: 936 utterances (48 kHz; a 192 kHz edition exists) = 12 actors (01-12, odd = man) x
6 sentences x (6 emotions at 2 intensities + neutral once): letters C colère, D dégoût, J joie,
N neutre, P peur, S surprise, T tristesse; intensity 1 faible / 2 fort (absent for neutral); files
sit in emotion/intensity folders. text_id = the sentence digit: 6 prompts, 156 utterances each
(12 actors x 13). No official split: `n_folds` speaker groups.
"""
from __future__ import annotations

import re

import pandas as pd

from ..build import build_manifest, parse_files

EMOTIONS = {"C": "angry", "D": "disgust", "J": "happy", "N": "neutral", "P": "fearful", "S": "surprised", "T": "sad"}
NAME = re.compile(r"^(?P<actor>0[1-9]|1[0-2])-(?P<emotion>[CDJNPST])(?:-(?P<intensity>[12]))?-(?P<sentence>[1-6])$")
SCHEME = "AA-E-I-S.wav (e.g. 01-C-1-1.wav: actor, emotion letter, intensity, sentence)"


def prepare(root, n_folds: int = 5, strict: bool = False) -> pd.DataFrame:
    rows = parse_files(
        root,
        "cafe",
        NAME,
        SCHEME,
        lambda rel, m: {
            "utt_id": rel.stem,
            "speaker": m["actor"],
            "gender": "male" if int(m["actor"]) % 2 else "female",
            "label": EMOTIONS[m["emotion"]],
            "raw_label": m["emotion"],
            "intensity": {"1": "low", "2": "high", None: ""}[m["intensity"]],
            "sentence": m["sentence"],
            "text_id": m["sentence"],
        },
        strict=strict,
    )
    return build_manifest(rows, root, "cafe", language="fr", n_folds=n_folds)
