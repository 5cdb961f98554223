"""IEMOCAP (Busso et al., 2008): `Session{1-5}/dialog/EmoEvaluation/*.txt` +
`Session*/sentences/wav/<dialog>/<utt>.wav`.

The release: 5 sessions x 2 actors (one female, one male) = 10 speakers, 10039 segmented utterances
(16 kHz wav) in `Session*/sentences/wav/<dialog>/<utt>.wav` beside `Session*/dialog/` (whose
EmoEvaluation holds the labels; `dialog/wav` has whole dialogues, not used). The usual 4-class set
with excited merged into happy has 5531 utterances (neutral 1708, happy+excited 1636, angry 1103,
sad 1084). Each evaluation line `[start - end]\tSes01F_impro01_F000\tneu\t[v, a, d]` gives an
utterance's majority label. Default is the standard 4-class set (neutral, happy, sad, angry) with excited merged
into happy; `four_class=False` keeps every label (xxx = no majority is always dropped). Speaker =
session + gender of the talker (10 speakers); folds are leave-one-session-out (Session1 -> fold 0).
text_id stays empty: improvised dialogues repeat no prompt, and the naming does not align scripted lines.
"""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from ..audio_files import check_root
from ..build import build_manifest, missing_audio
from ..schema import ManifestError

LINE = re.compile(
    r"^\[[\d.]+ - [\d.]+\]\t(?P<utt>Ses(?P<session>0[1-5])[FM]_\w+?_(?P<gender>[FM])\w*)\t(?P<emotion>\w+)\t"
)
FOUR_CLASS = {"neutral", "happy", "sad", "angry"}


def _evaluations(root: Path) -> list[Path]:
    files = sorted(
        path for path in root.glob("**/Session*/dialog/EmoEvaluation/*.txt") if not path.name.startswith(".")
    )
    if not files:
        raise ManifestError(f"iemocap: no Session*/dialog/EmoEvaluation/*.txt under {root}; pass --root the "
                            "IEMOCAP release folder (the one holding Session1..Session5).")
    return files


def prepare(root, four_class: bool = True, merge_excited: bool = True, allow_missing: bool = False) -> pd.DataFrame:
    root = check_root(root)
    rows = []
    for evaluation in _evaluations(root):
        session_dir = evaluation.parents[2]
        for line in evaluation.read_text(encoding="utf-8", errors="replace").splitlines():
            match = LINE.match(line)
            if match is None or match["emotion"] == "xxx":
                continue
            utt = match["utt"]
            dialog = utt.rsplit("_", 1)[0]
            rows.append(
                {
                    "utt_id": utt,
                    "path": (session_dir / "sentences/wav" / dialog / f"{utt}.wav").relative_to(root).as_posix(),
                    "speaker": f"Ses{match['session']}{match['gender']}",
                    "gender": "female" if match["gender"] == "F" else "male",
                    "raw_label": match["emotion"],
                    "fold": int(match["session"]) - 1,
                    "dialog": dialog,
                }
            )
    table = pd.DataFrame(rows)
    if table.empty:
        raise ManifestError(f"iemocap: the EmoEvaluation files under {root} hold no labelled utterance lines.")
    table["label"] = table["raw_label"].map({
        "neu": "neutral", "hap": "happy", "exc": "happy" if merge_excited else "excited", "sad": "sad",
        "ang": "angry", "fru": "frustrated", "sur": "surprised", "fea": "fearful", "dis": "disgust", "oth": "other"})
    unknown = table[table["label"].isna()]
    if len(unknown):
        raise ManifestError(f"iemocap: unknown label codes {sorted(unknown['raw_label'].unique())} in the "
                            "EmoEvaluation files; expected neu hap exc sad ang fru sur fea dis oth xxx.")
    if four_class:
        table = table[table["label"].isin(FOUR_CLASS)]
    table = missing_audio(table, root, "iemocap", allow_missing)
    return build_manifest(table, root, "iemocap", language="en")
