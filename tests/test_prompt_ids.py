"""Prompt ids (text_id) from every adapter's naming scheme, with its quirks, and from user tables."""
from __future__ import annotations

import warnings

import pytest
from test_manifest_audio import write_tree
from test_real_corpora import real

from data_manifests import ManifestWarning, prepare, summarize


def _ids(df):
    return df.set_index("utt_id")["text_id"].to_dict()


def test_ravdess_statement_field_speech_and_song(tmp_path):
    write_tree(tmp_path, ["Actor_01/03-01-05-01-02-01-01.wav", "Actor_02/03-01-01-01-01-02-02.flac",
                          "Actor_01/03-02-03-02-02-01-01.wav"])
    df = prepare("ravdess", tmp_path, include_song=True)
    assert _ids(df) == {"03-01-05-01-02-01-01": "02", "03-01-01-01-01-02-02": "01", "03-02-03-02-02-01-01": "02"}


def test_casia_file_id_with_a_stray_root_file(tmp_path):
    write_tree(tmp_path, ["CASIA/liuchanhg/angry/201.wav", "CASIA/wangzhe/surprise/201.wav",
                          "CASIA/ZhaoZuoxiang/neutral/250.wav", "CASIA/stray.wav"])
    with pytest.warns(ManifestWarning, match="stray"):
        df = prepare("casia", tmp_path)
    assert _ids(df) == {"liuchanhg_angry_201": "201", "wangzhe_surprise_201": "201", "ZhaoZuoxiang_neutral_250": "250"}


def test_emodb_text_code_including_b10(tmp_path):
    write_tree(tmp_path, ["wav/03a01Fa.wav", "wav/16b10Wb.wav", "wav/08a01Nc.wav"])
    assert _ids(prepare("emodb", tmp_path, n_folds=2)) == {"03a01Fa": "a01", "16b10Wb": "b10", "08a01Nc": "a01"}


def test_cremad_sentence_code_with_levels(tmp_path):
    write_tree(
        tmp_path, ["AudioWAV/1001_IEO_HAP_HI.wav", "AudioWAV/1002_IEO_ANG_LO.wav", "AudioWAV/1003_DFA_SAD_XX.wav"]
    )
    assert _ids(prepare("cremad", tmp_path, n_folds=2)) == {
        "1001_IEO_HAP_HI": "IEO", "1002_IEO_ANG_LO": "IEO", "1003_DFA_SAD_XX": "DFA"}


def test_tess_word_lower_cased_with_the_oa_prefix_quirk(tmp_path):
    write_tree(tmp_path, ["OAF_neutral/OA_bite_neutral.wav", "YAF_Pleasant_surprise/YAF_Bite_ps.wav",
                          "OAF_angry/OAF_back_angry.wav"])
    assert _ids(prepare("tess", tmp_path)) == {"OA_bite_neutral": "bite", "YAF_Bite_ps": "bite",
                                               "OAF_back_angry": "back"}


def test_savee_emotion_and_number_in_both_layouts(tmp_path):
    write_tree(tmp_path / "orig", ["AudioData/DC/a01.wav", "AudioData/JE/a01.wav", "AudioData/KL/sa02.wav"])
    write_tree(tmp_path / "flat", ["ALL/DC_a01.wav", "ALL/JE_a01.wav", "ALL/KL_sa02.wav"])
    expected = {"DC_a01": "a01", "JE_a01": "a01", "KL_sa02": "sa02"}
    assert _ids(prepare("savee", tmp_path / "orig")) == expected == _ids(prepare("savee", tmp_path / "flat"))


def test_cafe_sentence_with_and_without_intensity(tmp_path):
    write_tree(tmp_path, ["Colère/Faible/01-C-1-1.wav", "Neutre/03-N-1.wav", "Joie/Fort/02-J-2-6.wav"])
    assert _ids(prepare("cafe", tmp_path)) == {"01-C-1-1": "1", "03-N-1": "1", "02-J-2-6": "6"}


def test_folders_text_regex_named_group_and_unmatched_files(tmp_path):
    write_tree(tmp_path, ["Angry/spk1_s03_a.wav", "Sad/spk2_s03_b.wav", "Sad/spk1_free_c.wav"])
    df = prepare("folders", tmp_path, speaker_regex=r"^(spk\d)_", text_regex=r"_(?P<text>s\d\d)_", n_folds=2)
    assert _ids(df) == {"Angry__spk1_s03_a": "s03", "Sad__spk2_s03_b": "s03", "Sad__spk1_free_c": ""}
    assert (prepare("folders", tmp_path, speaker_regex=r"^(spk\d)_", n_folds=2)["text_id"] == "").all()


def test_csv_text_id_as_given_or_from_normalised_text(tmp_path):
    write_tree(tmp_path, ["a.wav", "b.wav", "c.wav"])
    table = tmp_path / "t.csv"
    table.write_text('path,label,speaker,text\na.wav,angry,s1,"Kids are talking!"\nb.wav,sad,s2,kids  ARE talking\n'
                     "c.wav,sad,s1,\n")
    assert prepare("csv", table, n_folds=2)["text_id"].tolist() == ["kids are talking", "kids are talking", ""]
    table.write_text("path,label,speaker,text,text_id\na.wav,angry,s1,hi,p1\nb.wav,sad,s2,yo,p1\nc.wav,sad,s1,x,\n")
    assert prepare("csv", table, n_folds=2)["text_id"].tolist() == ["p1", "p1", ""]


def test_summary_prints_prompts_and_utterances_per_prompt(tmp_path):
    write_tree(tmp_path, ["wav/03a01Fa.wav", "wav/16a01Wb.wav", "wav/08b10Nc.wav"])
    assert "prompts: 2 (3 of 3 utterances with a text_id; utterances per prompt min 1, median 1.5, max 2)" in \
        summarize(prepare("emodb", tmp_path, n_folds=2))


@pytest.mark.slow
def test_real_corpora_prompt_counts():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ManifestWarning)
        ravdess, casia = prepare("ravdess", real("ravdess")), prepare("casia", real("casia"))
    assert ravdess["text_id"].value_counts().to_dict() == {"01": 720, "02": 720}
    per = casia["text_id"].value_counts()
    assert sorted(per.index) == [str(i) for i in range(201, 251)] and set(per) == {24}
    assert (casia.groupby(["text_id", "speaker"])["label"].nunique() == 6).all()  # every text in every emotion
