"""Adapters whose labels are coded in file names, each on a tiny tree that mimics its real layout."""
from __future__ import annotations

import pytest
from test_manifest_audio import write_tone, write_tree

from data_manifests import ManifestError, prepare


def _by_id(df):
    return df.set_index("utt_id")


def test_cremad_codes_gender_table_and_speaker_folds(tmp_path):
    names = [f"AudioWAV/{actor}_{sentence}_{emotion}_{level}.wav"
             for actor in (1001, 1002, 1003, 1004, 1005, 1006)
             for sentence, emotion, level in (("DFA", "ANG", "XX"), ("IEO", "HAP", "HI"))]
    write_tree(tmp_path, names)
    write_tone(tmp_path / "AudioWAV/1007_TIE_SAD_LO.wav", rate=48000, channels=2)
    (tmp_path / "VideoDemographics.csv").write_text("ActorID,Age,Sex,Race,Ethnicity\n1001,51,Male,C,N\n1002,21,Female,C,N\n")
    df = prepare("cremad", tmp_path)
    assert len(df) == 13 and df["speaker"].nunique() == 7
    row = _by_id(df).loc["1001_DFA_ANG_XX"]
    assert (row["label"], row["gender"], row["sentence"], row["intensity"]) == ("angry", "male", "DFA", "XX")
    assert _by_id(df).loc["1002_IEO_HAP_HI", "gender"] == "female"
    assert _by_id(df).loc["1003_IEO_HAP_HI", "gender"] == ""  # not in the demographics table
    assert _by_id(df).loc["1007_TIE_SAD_LO", ["label", "sample_rate", "channels"]].tolist() == ["sad", 48000, 2]
    # greedy by count: 1001..1005 (2 each) -> folds 0..4, then 1006 (2) -> fold 0, 1007 (1) -> fold 1
    assert df.groupby("speaker")["fold"].first().to_dict() == {
        "1001": 0, "1002": 1, "1003": 2, "1004": 3, "1005": 4, "1006": 0, "1007": 1}


def test_emodb_letter_codes(tmp_path):
    write_tree(tmp_path, ["wav/03a01Fa.wav", "wav/08b02Wb.wav", "wav/10a05Lc.wav", "wav/16a01Ta.wav"])
    df = _by_id(prepare("emodb", tmp_path, n_folds=2))
    assert df["label"].to_dict() == {"03a01Fa": "happy", "08b02Wb": "angry", "10a05Lc": "boredom", "16a01Ta": "sad"}
    assert df["gender"].tolist() == ["male", "female", "male", "female"]
    assert set(df["language"]) == {"de"} and sorted(df["fold"].tolist()) == [0, 0, 1, 1]


def test_tess_folders_and_pleasant_surprise(tmp_path):
    write_tree(tmp_path, ["OAF_angry/OAF_back_angry.wav", "YAF_pleasant_surprised/YAF_bath_ps.wav",
                          "OAF_Fear/OAF_bean_fear.wav", "YAF_sad/YAF_back_sad.wav"])
    df = _by_id(prepare("tess", tmp_path))
    assert df["label"].to_dict() == {"OAF_back_angry": "angry", "OAF_bean_fear": "fearful",
                                     "YAF_back_sad": "sad", "YAF_bath_ps": "surprised"}
    assert df.groupby("speaker")["fold"].first().to_dict() == {"OAF": 0, "YAF": 1}  # leave-one-speaker-out


def test_savee_original_and_flat_repack(tmp_path):
    write_tree(tmp_path / "orig", ["AudioData/DC/a01.wav", "AudioData/JE/sa02.wav", "AudioData/KL/su15.wav"])
    write_tree(tmp_path / "flat", ["ALL/DC_a01.wav", "ALL/JE_sa02.wav", "ALL/KL_su15.wav"])
    original, flat = prepare("savee", tmp_path / "orig"), prepare("savee", tmp_path / "flat")
    expected = {"DC_a01": "angry", "JE_sa02": "sad", "KL_su15": "surprised"}
    assert _by_id(original)["label"].to_dict() == expected == _by_id(flat)["label"].to_dict()
    assert original["fold"].nunique() == 3 and set(original["gender"]) == {"male"}


def test_casia_speaker_emotion_folders(tmp_path):
    write_tree(tmp_path, ["CASIA/liuchanhg/angry/201.wav", "CASIA/wangzhe/surprise/201.wav",
                          "CASIA/ZhaoZuoxiang/neutral/210.wav"])
    df = _by_id(prepare("casia", tmp_path))
    assert df.loc["liuchanhg_angry_201", ["label", "gender"]].tolist() == ["angry", "female"]
    assert df.loc["wangzhe_surprise_201", ["label", "gender"]].tolist() == ["surprised", "male"]
    assert df.loc["ZhaoZuoxiang_neutral_210", "path"] == "CASIA/ZhaoZuoxiang/neutral/210.wav"
    assert set(df["language"]) == {"zh"}


def test_cafe_with_and_without_intensity(tmp_path):
    write_tree(tmp_path, ["Colère/Faible/01-C-1-1.wav", "Joie/Fort/02-J-2-6.wav", "Neutre/03-N-4.wav"])
    df = _by_id(prepare("cafe", tmp_path))
    assert df[["label", "gender", "intensity", "sentence"]].values.tolist() == [
        ["angry", "male", "low", "1"], ["happy", "female", "high", "6"], ["neutral", "male", "", "4"]]
    assert set(df["language"]) == {"fr"}


@pytest.mark.parametrize("corpus, stray", [("emodb", "wav/03a01Xa.wav"), ("cremad", "AudioWAV/1001_DFA_XYZ_XX.wav"),
                                           ("tess", "OAF_angry/back_angry.wav"), ("savee", "DC/x01.wav")])
def test_files_off_the_scheme_stop_the_run(tmp_path, corpus, stray):
    write_tree(tmp_path, [stray])
    with pytest.raises(ManifestError, match=f"1 files .* do not match the {corpus} scheme[\\s\\S]*{stray}"):
        prepare(corpus, tmp_path)


def test_n_folds_must_be_at_least_two(tmp_path):
    write_tree(tmp_path, ["wav/03a01Fa.wav", "wav/08b02Wb.wav"])
    with pytest.raises(ManifestError, match="--n-folds must be at least 2"):
        prepare("emodb", tmp_path, n_folds=1)
