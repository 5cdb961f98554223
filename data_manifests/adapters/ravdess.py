"""RAVDESS (Livingstone & Russo, 2018): `Actor_XX/MM-VV-EE-II-SS-RR-AA.wav|flac`.

The audio-only release: 1440 speech files (Audio_Speech_Actors_01-24, 48 kHz wav) = 24 actors x 60
(8 emotions; neutral at normal intensity only: 2 x 2 x 2 = 8 takes, others 16), 96 neutral and 192
of each other emotion; plus 1012 song files (Audio_Song_Actors_01-24; actor 18 has no song).
Fields: modality, vocal channel (01 speech, 02 song), emotion (01..08), intensity (01 normal,
02 strong), statement, repetition, actor (01..24; odd = male). Folds are the standard 6 groups of
4 actors (1-4 -> fold 0, ..., 21-24 -> fold 5), so speech and song of one actor share a fold.
text_id = the statement field: 2 prompts, 01 "Kids are talking by the door" and 02 "Dogs are sitting
by the door", 720 speech utterances each (every actor says both in every emotion; song: 506 each).
"""
from __future__ import annotations

import re

import pandas as pd

from ..build import build_manifest, parse_files

EMOTIONS = {"01": "neutral", "02": "calm", "03": "happy", "04": "sad",
            "05": "angry", "06": "fearful", "07": "disgust", "08": "surprised"}
NAME = re.compile(r"^0[1-3]-(?P<channel>0[12])-(?P<emotion>0[1-8])-(?P<intensity>0[12])-"
                  r"(?P<statement>0[12])-(?P<repetition>0[12])-(?P<actor>0[1-9]|1\d|2[0-4])$")
SCHEME = "Actor_XX/MM-VV-EE-II-SS-RR-AA.wav (seven two-digit fields, actor 01-24)"


def prepare(root, include_song: bool = False, strict: bool = False) -> pd.DataFrame:
    """Manifest of RAVDESS speech (and song, flagged in `vocal_channel`, when include_song)."""
    def parse(rel, match):
        channel = "speech" if match["channel"] == "01" else "song"
        if channel == "song" and not include_song:
            return None
        actor = int(match["actor"])
        return {"utt_id": rel.stem, "speaker": f"Actor_{actor:02d}", "gender": "male" if actor % 2 else "female",
                "label": EMOTIONS[match["emotion"]], "raw_label": match["emotion"], "fold": (actor - 1) // 4,
                "vocal_channel": channel, "intensity": "normal" if match["intensity"] == "01" else "strong",
                "statement": match["statement"], "text_id": match["statement"], "repetition": match["repetition"]}

    rows = parse_files(root, "ravdess", NAME, SCHEME, parse, strict=strict)
    return build_manifest(rows, root, "ravdess", language="en")
