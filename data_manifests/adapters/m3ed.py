"""M3ED (Zhao et al., 2022): `annotation.json` + `splitInfo/movie_list_{train,val,test}.txt` + audio
`{speaker}_{utterance}.wav` (e.g. in `modality_speech/`).

The release: 24449 utterances from 990 dialogues of 56 Chinese TV series, 7 emotions (Happy,
Surprise, Sad, Disgust, Anger, Fear, Neutral). annotation.json:
{movie: {clip: {"SpeakerInfo": {A: {"Name": ...}}, "Dialog": {utt: {"Speaker": A,
"EmoAnnotation": {"final_main_emo": "Happy"}}}}}}. Official splits by TV series (val -> valid);
speaker = series + character name; files listed in `depreciated_file_list.txt` are left out.
text_id stays empty (natural dialogue: no prompt repeats).
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ..audio_files import check_root, find_audio
from ..build import build_manifest, missing_audio
from ..schema import ManifestError, _listing

SPLITS = {"train": "train", "val": "valid", "test": "test"}


def _one(root: Path, pattern: str) -> Path:
    found = sorted(root.rglob(pattern))
    if not found:
        raise ManifestError(f"m3ed: {pattern} not found under {root}; pass --root the M3ED folder holding "
                            "annotation.json and splitInfo/.")
    return found[0]


def prepare(root, allow_missing: bool = False) -> pd.DataFrame:
    root = check_root(root)
    annotation_file = _one(root, "annotation.json")
    try:
        annotation = json.loads(annotation_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ManifestError(f"m3ed: {annotation_file} is not valid JSON ({error}); re-download it.") from error
    split_of = {}
    for name, split in SPLITS.items():
        for movie in _one(root, f"movie_list_{name}.txt").read_text(encoding="utf-8").split():
            split_of[movie] = split
    deprecated = set()
    for listing in root.rglob("depreciated_file_list.txt"):
        deprecated |= set(Path(line).stem for line in listing.read_text(encoding="utf-8").split())
    audio = {rel.stem: rel.as_posix() for rel in find_audio(root, "m3ed")}

    unsplit = sorted(set(annotation) - set(split_of))
    if unsplit:
        raise ManifestError(f"m3ed: {len(unsplit)} series in {annotation_file} are in no splitInfo movie list:"
                            f"{_listing(unsplit)}\nUse the splitInfo files of the same M3ED release.")
    rows = []
    for movie, clips in annotation.items():
        for clip in clips.values():
            speakers = clip.get("SpeakerInfo", {})
            for utt, info in clip["Dialog"].items():
                stem = f"{info['Speaker']}_{utt}"
                if stem in deprecated:
                    continue
                who = speakers.get(info["Speaker"], {})
                rows.append({"utt_id": stem, "path": audio.get(stem, f"modality_speech/{stem}.wav"),
                             "speaker": f"{movie}_{who.get('Name', info['Speaker'])}",
                             "gender": {"f": "female", "m": "male"}.get(str(who.get("Gender", ""))[:1].lower(), ""),
                             "raw_label": info["EmoAnnotation"]["final_main_emo"], "split": split_of[movie]})
    rows = missing_audio(pd.DataFrame(rows), root, "m3ed", allow_missing)
    return build_manifest(rows, root, "m3ed", language="zh")
