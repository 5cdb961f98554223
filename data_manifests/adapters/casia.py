"""CASIA Chinese emotional speech: `<speaker>/<emotion>/<id>.wav`.

The public subset (the one EmoBox and most papers use): 1200 utterances (16 kHz mono) = 4 speakers
(liuchanhg, zhaoquanyin female; wangzhe, ZhaoZuoxiang male) x 6 emotions (angry, fear, happy,
neutral, sad, surprise) x 50 parallel texts (ids 201-250), 200 per emotion; the full corpus (9600)
is not public. text_id = the file's id: 50 prompts (201-250), 24 utterances each (every speaker says
each text in every emotion). Four speakers -> 4 leave-one-speaker-out folds. Copies often carry stray audio at
the root; files off `<speaker>/<emotion>/` are skipped with a warning.
"""
from __future__ import annotations

import re

import pandas as pd

from ..build import build_manifest, parse_files

GENDERS = {"liuchanhg": "female", "zhaoquanyin": "female", "wangzhe": "male", "zhaozuoxiang": "male"}
NAME = re.compile(r"(?:^|/)(?P<speaker>[^/]+)/(?P<emotion>angry|fear|happy|neutral|sad|surprise)/(?P<name>[^/]+)\.\w+$",
                  re.IGNORECASE)
SCHEME = "<speaker>/<angry|fear|happy|neutral|sad|surprise>/<id>.wav"


def prepare(root, n_folds: int = 5, strict: bool = False) -> pd.DataFrame:
    rows = parse_files(
        root,
        "casia",
        NAME,
        SCHEME,
        lambda rel, m: {
            "utt_id": f"{m['speaker']}_{m['emotion'].lower()}_{m['name']}",
            "speaker": m["speaker"],
            "gender": GENDERS.get(m["speaker"].lower(), ""),
            "raw_label": m["emotion"].lower(),
            "text_id": m["name"],
        },
        on_path=True,
        strict=strict,
    )
    return build_manifest(rows, root, "casia", language="zh", n_folds=n_folds)
