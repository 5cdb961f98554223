"""CREMA-D (Cao et al., 2014): `AudioWAV/1001_DFA_ANG_XX.wav` = actor_sentence_emotion_level.

The release: 7442 clips in `AudioWAV/` (16 kHz) = 91 actors (1001-1091; 48 male, 43 female) x
12 sentences (IEO, TIE, IOM, IWW, TAI, MTI, IWL, ITH, DFA, ITS, TSI, WSI) x 6 emotions (ANG DIS FEA
HAP NEU SAD); levels LO/MD/HI for sentence IEO only, XX (unspecified) otherwise. A few clips of the
release are known to be empty or near-silent; extraction records them as failed. Gender comes from
`VideoDemographics.csv` (ActorID, Sex) when it is anywhere under the root. text_id = the sentence
code: 12 prompts, about 546 clips each (91 actors x 6 emotions) and about 1456 for IEO (its 5
emotions at 3 levels). No official split:
`n_folds` speaker groups.
"""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from ..build import build_manifest, parse_files

NAME = re.compile(
    r"^(?P<actor>10\d\d)_(?P<sentence>[A-Z]{3})_(?P<emotion>ANG|DIS|FEA|HAP|NEU|SAD)_(?P<level>[A-Z]{1,3})$"
)
SCHEME = "AudioWAV/AAAA_SSS_EEE_LL.wav (e.g. 1001_DFA_ANG_XX.wav)"


def _genders(root: Path) -> dict[str, str]:
    tables = sorted(root.rglob("VideoDemographics.csv"))
    if not tables:
        return {}
    demographics = pd.read_csv(tables[0], dtype=str)
    return {row.ActorID.strip(): row.Sex.strip().lower() for row in demographics.itertuples()}


def prepare(root, n_folds: int = 5, strict: bool = False) -> pd.DataFrame:
    genders = _genders(Path(root))
    rows = parse_files(
        root,
        "cremad",
        NAME,
        SCHEME,
        lambda rel, m: {
            "utt_id": rel.stem,
            "speaker": m["actor"],
            "gender": genders.get(m["actor"], ""),
            "raw_label": m["emotion"],
            "sentence": m["sentence"],
            "text_id": m["sentence"],
            "intensity": m["level"],
        },
        strict=strict,
    )
    return build_manifest(rows, root, "cremad", language="en", n_folds=n_folds)
