"""CASIA Chinese emotional speech: `<speaker>/<emotion>/<id>.wav`.

Four speakers (liuchanhg, zhaoquanyin female; wangzhe, ZhaoZuoxiang male), six emotions (angry,
fear, happy, neutral, sad, surprise). Four speakers -> leave-one-speaker-out folds.
"""
from __future__ import annotations

import re

import pandas as pd

from ..build import build_manifest, parse_files

GENDERS = {"liuchanhg": "female", "zhaoquanyin": "female", "wangzhe": "male", "zhaozuoxiang": "male"}
NAME = re.compile(r"(?:^|/)(?P<speaker>[^/]+)/(?P<emotion>angry|fear|happy|neutral|sad|surprise)/(?P<name>[^/]+)\.\w+$",
                  re.IGNORECASE)
SCHEME = "<speaker>/<angry|fear|happy|neutral|sad|surprise>/<id>.wav"


def prepare(root, n_folds: int = 5) -> pd.DataFrame:
    rows = parse_files(root, "casia", NAME, SCHEME, lambda rel, m: {
        "utt_id": f"{m['speaker']}_{m['emotion'].lower()}_{m['name']}", "speaker": m["speaker"],
        "gender": GENDERS.get(m["speaker"].lower(), ""), "raw_label": m["emotion"].lower()}, on_path=True)
    return build_manifest(rows, root, "casia", language="zh", n_folds=n_folds)
