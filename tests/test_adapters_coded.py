"""Adapters whose labels are coded in file names, each on a tiny tree that mimics its real layout."""
from __future__ import annotations

import pytest
from test_manifest_audio import write_tone, write_tree

from data_manifests import ManifestError, ManifestWarning, prepare


def _by_id(df):
    return df.set_index("utt_id")


def test_cremad_codes_gender_table_and_speaker_folds(tmp_path):
    names = [f"AudioWAV/{actor}_{sentence}_{emotion}_{level}.wav"
             for actor in (1001, 1002, 1003, 1004, 1005, 1006)
             for sentence, emotion, level in (("DFA", "ANG", "XX"), ("IEO", "HAP", "HI"))]
    write_tree(tmp_path, names)
    write_tone(tmp_path / "AudioWAV/1007_TIE_SAD_LO.wav", rate=48000, channels=2)
    (tmp_path / "VideoDemographics.csv").write_text(
        "ActorID,Age,Sex,Race,Ethnicity\n1001,51,Male,C,N\n1002,21,Female,C,N\n"
    )
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
def test_a_corpus_where_nothing_fits_stops_the_run(tmp_path, corpus, stray):
    write_tree(tmp_path, [stray])
    with pytest.raises(ManifestError, match=f"1 of 1 audio files .* do not match the {corpus} scheme[\\s\\S]*{stray}"
                                            "[\\s\\S]*no file fits"):
        prepare(corpus, tmp_path)


# --- real releases as users have them -------------------------------------------------------------
EMODB_TEXTS = ["a01", "a02", "a04", "a05", "a07", "b01", "b02", "b03", "b09", "b10"]


def test_emodb_accepts_every_text_code_of_the_release_including_b10(tmp_path):
    write_tree(tmp_path, [f"wav/03{text}Fa.wav" for text in EMODB_TEXTS] + ["wav/16b10Wb.wav"])
    df = _by_id(prepare("emodb", tmp_path, n_folds=2))
    assert sorted(df["text"].unique()) == EMODB_TEXTS
    assert df.loc["16b10Wb", ["speaker", "label"]].tolist() == ["16", "angry"]


def test_tess_oa_prefix_quirk_takes_the_speaker_from_the_folder(tmp_path):
    write_tree(tmp_path, ["OAF_neutral/OAF_back_neutral.wav", "OAF_neutral/OA_bite_neutral.wav",
                          "YAF_neutral/YAF_bite_neutral.wav", "OAF_Pleasant_surprise/OAF_back_ps.wav"])
    df = _by_id(prepare("tess", tmp_path))
    assert df["speaker"].to_dict() == {"OAF_back_neutral": "OAF", "OA_bite_neutral": "OAF",
                                       "YAF_bite_neutral": "YAF", "OAF_back_ps": "OAF"}
    assert df.loc["OA_bite_neutral", "label"] == "neutral"


def test_stray_files_are_skipped_with_one_warning_listing_them(tmp_path):
    good = [f"{spk}/{emo}/20{i}.wav" for spk in ("liuchanhg", "wangzhe") for emo in ("angry", "sad") for i in (1, 2)]
    write_tree(tmp_path, good + ["readme.wav", "backup/copy.wav"])
    (tmp_path / ".DS_Store").write_bytes(b"\0")
    with pytest.warns(ManifestWarning) as caught:
        df = prepare("casia", tmp_path)
    assert len(df) == 8
    skipped = [w for w in caught if "do not match" in str(w.message)]
    assert len(skipped) == 1
    text = str(skipped[0].message)
    assert "2 of 10 audio files" in text and "readme.wav" in text and "backup/copy.wav" in text and "--strict" in text


def test_strict_keeps_the_old_stop_on_any_stray(tmp_path):
    write_tree(tmp_path, ["wav/03a01Fa.wav", "wav/08b02Wb.wav", "wav/10a05Lc.wav", "wav/notes.wav"])
    with pytest.raises(ManifestError, match="1 of 4 audio files[\\s\\S]*notes.wav[\\s\\S]*--strict"):
        prepare("emodb", tmp_path, n_folds=2, strict=True)


def test_a_corpus_mostly_off_the_scheme_stops_even_without_strict(tmp_path):
    write_tree(tmp_path, ["wav/03a01Fa.wav", "other/a.wav", "other/b.wav"])
    with pytest.raises(ManifestError, match="2 of 3 audio files[\\s\\S]*as many files are off the scheme"):
        prepare("emodb", tmp_path, n_folds=2)


def test_fewer_folds_than_asked_is_said(tmp_path):
    write_tree(tmp_path, ["OAF_angry/OAF_back_angry.wav", "YAF_angry/YAF_back_angry.wav"])
    with pytest.warns(ManifestWarning, match="2 speakers, so 2 leave-one-speaker-out folds instead of the 5 asked for"):
        prepare("tess", tmp_path)


def test_meld_as_shipped_mp4_gets_a_conversion_hint(tmp_path):
    (tmp_path / "train_splits").mkdir()
    (tmp_path / "train_splits" / "dia0_utt0.mp4").write_bytes(b"\0")
    with pytest.raises(ManifestError, match="1 video.*ffmpeg"):
        prepare("meld", tmp_path)


def test_n_folds_must_be_at_least_two(tmp_path):
    write_tree(tmp_path, ["wav/03a01Fa.wav", "wav/08b02Wb.wav"])
    with pytest.raises(ManifestError, match="--n-folds must be at least 2"):
        prepare("emodb", tmp_path, n_folds=1)
