"""Adapters whose labels live in annotation files (IEMOCAP, MELD, M3ED), on tiny trees of the real layout."""
from __future__ import annotations

import json

import pytest
from test_manifest_audio import write_tone, write_tree

from data_manifests import ManifestError, prepare

IEMOCAP_LINES = {
    1: [("Ses01F_impro01_F000", "neu"), ("Ses01F_impro01_M001", "exc"), ("Ses01F_impro01_F002", "fru"),
        ("Ses01F_impro01_M003", "xxx")],
    2: [("Ses02M_script01_1_F000", "ang"), ("Ses02M_script01_1_M001", "sad"), ("Ses02M_script01_1_M002", "hap")],
}


def _iemocap(root):
    for session, lines in IEMOCAP_LINES.items():
        dialog = lines[0][0].rsplit("_", 1)[0]
        text = "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n" + "".join(
            f"[{i}.0000 - {i}.5000]\t{utt}\t{emotion}\t[2.5000, 2.5000, 2.5000]\nC-E1:\tNeutral;\t()\n\n"
            for i, (utt, emotion) in enumerate(lines))
        evaluation = root / f"Session{session}/dialog/EmoEvaluation/{dialog}.txt"
        evaluation.parent.mkdir(parents=True)
        evaluation.write_text(text)
        (evaluation.parent / "Categorical").mkdir()
        (evaluation.parent / "Categorical" / f"{dialog}_e1_cat.txt").write_text(f"{lines[0][0]} :Anger; ()\n")
        for utt, _ in lines:
            write_tone(root / f"Session{session}/sentences/wav/{dialog}/{utt}.wav")
    return root


def test_iemocap_four_class_with_excited_merged_and_session_folds(tmp_path):
    df = prepare("iemocap", _iemocap(tmp_path)).set_index("utt_id")
    assert df["label"].to_dict() == {"Ses01F_impro01_F000": "neutral", "Ses01F_impro01_M001": "happy",
                                     "Ses02M_script01_1_F000": "angry", "Ses02M_script01_1_M001": "sad",
                                     "Ses02M_script01_1_M002": "happy"}
    assert df.loc["Ses01F_impro01_M001", ["speaker", "gender", "fold", "raw_label"]].tolist() == [
        "Ses01M",
        "male",
        0,
        "exc",
    ]
    assert df.loc["Ses02M_script01_1_F000", ["speaker", "fold"]].tolist() == ["Ses02F", 1]
    assert df.loc["Ses01F_impro01_F000", "path"] == "Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_F000.wav"


def test_iemocap_options_keep_excited_and_all_labels(tmp_path):
    _iemocap(tmp_path)
    kept = prepare("iemocap", tmp_path, merge_excited=False)
    assert "Ses01F_impro01_M001" not in set(kept["utt_id"]) and len(kept) == 4
    everything = prepare("iemocap", tmp_path, four_class=False, merge_excited=False).set_index("utt_id")
    assert everything.loc["Ses01F_impro01_M001", "label"] == "excited"
    assert everything.loc["Ses01F_impro01_F002", "label"] == "frustrated"
    assert "Ses01F_impro01_M003" not in everything.index  # xxx: no majority


def test_iemocap_missing_audio_is_named_or_dropped(tmp_path):
    _iemocap(tmp_path)
    (tmp_path / "Session2/sentences/wav/Ses02M_script01_1/Ses02M_script01_1_M001.wav").unlink()
    with pytest.raises(ManifestError, match=r"1 annotated utterances have no audio[\s\S]*Ses02M_script01_1_M001\.wav"):
        prepare("iemocap", tmp_path)
    assert len(prepare("iemocap", tmp_path, allow_missing=True)) == 4


def test_iemocap_without_evaluations(tmp_path):
    write_tree(tmp_path, ["Session1/sentences/wav/a/a_F000.wav"])
    with pytest.raises(ManifestError, match="no Session\\*/dialog/EmoEvaluation"):
        prepare("iemocap", tmp_path)


MELD_HEADER = "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,StartTime,EndTime\n"


def _meld(root):
    tables = {"train": [("Chandler", "joy", 0, 0), ("Monica", "anger", 0, 1)],
              "dev": [("Ross", "neutral", 0, 0)],
              "test": [("Rachel", "sadness", 0, 0), ("Joey", "surprise", 3, 2)]}
    folders = {"train": "train_splits", "dev": "dev_splits_complete", "test": "output_repeated_splits_test"}
    for split, rows in tables.items():
        (root / f"{split}_sent_emo.csv").write_text(MELD_HEADER + "".join(
            f'{i},"Hi, there",{speaker},{emotion},positive,{dialogue},{utt},1,1,00:00:01,00:00:02\n'
            for i, (speaker, emotion, dialogue, utt) in enumerate(rows)))
        for _, _, dialogue, utt in rows:
            write_tone(root / folders[split] / f"dia{dialogue}_utt{utt}.wav")
    return root


def test_meld_official_splits_resolve_same_stem_per_split(tmp_path):
    df = prepare("meld", _meld(tmp_path)).set_index("utt_id")
    assert df["split"].to_dict() == {"train_dia0_utt0": "train", "train_dia0_utt1": "train", "valid_dia0_utt0": "valid",
                                     "test_dia0_utt0": "test", "test_dia3_utt2": "test"}
    assert df.loc["valid_dia0_utt0", "path"] == "dev_splits_complete/dia0_utt0.wav"
    assert df.loc["test_dia0_utt0", ["label", "speaker"]].tolist() == ["sad", "Rachel"]
    assert df.loc["train_dia0_utt0", "label"] == "happy"
    assert df["fold"].isna().all()


def test_meld_missing_clip_and_missing_table(tmp_path):
    _meld(tmp_path)
    (tmp_path / "output_repeated_splits_test/dia3_utt2.wav").unlink()
    with pytest.raises(ManifestError, match="1 annotated utterances have no audio"):
        prepare("meld", tmp_path)
    assert len(prepare("meld", tmp_path, allow_missing=True)) == 4
    (tmp_path / "dev_sent_emo.csv").unlink()
    with pytest.raises(ManifestError, match="dev_sent_emo.csv not found"):
        prepare("meld", tmp_path)


def _m3ed(root):
    annotation = {
        "Anjia": {
            "Anjia_1": {
                "SpeakerInfo": {"A": {"Name": "FangSijin", "Gender": "Female"}, "B": {"Name": "XuWenchang"}},
                "Dialog": {
                    "Anjia_1_1": {"Speaker": "A", "EmoAnnotation": {"final_main_emo": "Happy"}},
                    "Anjia_1_2": {"Speaker": "B", "EmoAnnotation": {"final_main_emo": "Anger"}},
                },
            }
        },
        "Qiaojia": {
            "Qiaojia_1": {
                "SpeakerInfo": {"A": {"Name": "QiaoYicheng"}},
                "Dialog": {"Qiaojia_1_1": {"Speaker": "A", "EmoAnnotation": {"final_main_emo": "Neutral"}}},
            }
        },
        "Doctor": {
            "Doctor_1": {
                "SpeakerInfo": {"A": {"Name": "Li"}},
                "Dialog": {"Doctor_1_1": {"Speaker": "A", "EmoAnnotation": {"final_main_emo": "Fear"}}},
            }
        },
    }
    (root / "annotation.json").write_text(json.dumps(annotation, ensure_ascii=False))
    (root / "splitInfo").mkdir()
    for name, movies in (("train", "Anjia\n"), ("val", "Qiaojia\n"), ("test", "Doctor\n")):
        (root / f"splitInfo/movie_list_{name}.txt").write_text(movies)
    write_tree(root, ["modality_speech/A_Anjia_1_1.wav", "modality_speech/B_Anjia_1_2.wav",
                      "modality_speech/A_Qiaojia_1_1.wav", "modality_speech/A_Doctor_1_1.wav"])
    return root


def test_m3ed_json_and_official_splits(tmp_path):
    df = prepare("m3ed", _m3ed(tmp_path)).set_index("utt_id")
    assert df[["label", "split", "speaker"]].values.tolist() == [
        ["happy", "train", "Anjia_FangSijin"], ["angry", "train", "Anjia_XuWenchang"],
        ["neutral", "valid", "Qiaojia_QiaoYicheng"], ["fearful", "test", "Doctor_Li"]]
    assert df.loc["A_Anjia_1_1", ["gender", "path"]].tolist() == ["female", "modality_speech/A_Anjia_1_1.wav"]


def test_m3ed_deprecated_files_are_left_out_and_unsplit_series_refused(tmp_path):
    _m3ed(tmp_path)
    (tmp_path / "depreciated_file_list.txt").write_text("B_Anjia_1_2.wav\n")
    assert "B_Anjia_1_2" not in set(prepare("m3ed", tmp_path)["utt_id"])
    (tmp_path / "splitInfo/movie_list_test.txt").write_text("")
    with pytest.raises(ManifestError, match=r"1 series .* in no splitInfo movie list[\s\S]*Doctor"):
        prepare("m3ed", tmp_path)
