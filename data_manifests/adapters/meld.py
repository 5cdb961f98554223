"""MELD (Poria et al., 2019): `{train,dev,test}_sent_emo.csv` + audio `dia{D}_utt{U}.wav` per split folder.

The release (MELD.Raw): 13708 annotated utterances of Friends, train 9989 / dev 1109 / test 2610
rows in the three CSVs, 7 emotions (neutral, joy, sadness, anger, fear, disgust, surprise). It ships
*video* (.mp4) clips in `train_splits/`, `dev_splits_complete/`, `output_repeated_splits_test/`,
which soundfile cannot read: extract 16 kHz mono wav with the same stem in place (ffmpeg), or use a
wav re-pack whose folders still say train/dev/test. Known gaps: dev `dia110_utt7` has no clip (use
--allow-missing), and some clips have no CSV row (ignored). The splits are official (dev -> valid);
speaker = character. text_id stays empty (natural dialogue: no prompt repeats).
"""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from ..audio_files import AUDIO_SUFFIXES, check_root, find_audio
from ..build import build_manifest, missing_audio
from ..schema import ManifestError

TABLES = {"train": "train", "dev": "valid", "test": "test"}
CLIP = re.compile(r"^dia(?P<dialogue>\d+)_utt(?P<utterance>\d+)$")


def _split_of(rel: Path) -> str | None:
    """The split a file's folders name (first folder that says train, dev/val or test)."""
    for part in rel.parts[:-1]:
        part = part.lower()
        for word, split in (("train", "train"), ("dev", "valid"), ("val", "valid"), ("test", "test")):
            if word in part:
                return split
    return None


def prepare(root, allow_missing: bool = False) -> pd.DataFrame:
    root = check_root(root)
    audio = {(_split_of(rel), rel.stem): rel.as_posix() for rel in find_audio(root, "meld") if CLIP.match(rel.stem)}
    frames = []
    for prefix, split in TABLES.items():
        tables = sorted(root.rglob(f"{prefix}_sent_emo.csv"))
        if not tables:
            raise ManifestError(f"meld: {prefix}_sent_emo.csv not found under {root}; put the MELD csv files "
                                "(train/dev/test_sent_emo.csv) under the corpus root.")
        table = pd.read_csv(tables[0], dtype=str, encoding_errors="replace")
        stems = "dia" + table["Dialogue_ID"].str.strip() + "_utt" + table["Utterance_ID"].str.strip()
        fallback = f"{split}/" + stems + AUDIO_SUFFIXES[0]
        frames.append(pd.DataFrame({
            "utt_id": f"{split}_" + stems,
            "path": [audio.get((split, stem), default) for stem, default in zip(stems, fallback)],
            "speaker": table["Speaker"].str.strip(), "raw_label": table["Emotion"].str.strip().str.lower(),
            "split": split, "sentiment": table["Sentiment"].str.strip()}))
    rows = missing_audio(pd.concat(frames, ignore_index=True), root, "meld", allow_missing)
    return build_manifest(rows, root, "meld", language="en")
