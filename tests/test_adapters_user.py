"""Bring-your-own corpora: `folders` (one folder per label) and `csv` (the user's table), incl. the CLI."""
from __future__ import annotations

import pytest
from test_manifest_audio import write_tone, write_tree
from typer.testing import CliRunner

from cli import app
from data_manifests import ManifestError, prepare, read_manifest

FOLDER_FILES = ["Angry/spk1_a.wav", "Angry/spk2_b.wav", "Sad/spk1_c.wav", "sadness/spk3_d.wav",
                "HAPPINESS/spk4_e.wav", "Fear/spk2_f.wav"]


def test_folders_labels_synonyms_and_speaker_folds(tmp_path):
    write_tree(tmp_path, FOLDER_FILES)
    df = prepare("folders", tmp_path, speaker_regex=r"^(spk\d+)_", n_folds=2).set_index("utt_id")
    assert df["label"].to_dict() == {"Angry__spk1_a": "angry", "Angry__spk2_b": "angry", "Fear__spk2_f": "fearful",
                                     "HAPPINESS__spk4_e": "happy", "Sad__spk1_c": "sad", "sadness__spk3_d": "sad"}
    assert df["raw_label"].tolist() == ["Angry", "Angry", "Fear", "HAPPINESS", "Sad", "sadness"]
    # greedy by count: spk1 (2) -> 0, spk2 (2) -> 1, spk3 (1) -> 0, spk4 (1) -> 1
    assert df.groupby("speaker")["fold"].first().to_dict() == {"spk1": 0, "spk2": 1, "spk3": 0, "spk4": 1}


def test_folders_named_group_label_map_and_unknown_label(tmp_path):
    write_tree(tmp_path, ["corpus/Anxious/take_A01_1.wav", "corpus/Joy/take_B02_1.wav"])
    with pytest.raises(
        ManifestError, match=r"1 files with labels not in the vocabulary[\s\S]*Anxious/take_A01_1\.wav: 'Anxious'"
    ):
        prepare("folders", tmp_path, speaker_regex=r"take_(?P<speaker>[A-Z]\d+)")
    df = prepare("folders", tmp_path, speaker_regex=r"take_(?P<speaker>[A-Z]\d+)", label_map="anxious=fearful")
    assert df[["speaker", "label"]].values.tolist() == [["A01", "fearful"], ["B02", "happy"]]


def test_folders_needs_a_speaker_regex_that_matches(tmp_path):
    write_tree(tmp_path, ["Angry/spk1_a.wav", "Angry/other.wav", "loose.wav"])
    with pytest.raises(ManifestError, match="pass --speaker-regex"):
        prepare("folders", tmp_path)
    with pytest.raises(ManifestError, match="not a valid regex"):
        prepare("folders", tmp_path, speaker_regex="(")
    with pytest.raises(
        ManifestError, match=r"2 of 3 audio files .* do not match[\s\S]*Angry/other\.wav[\s\S]*loose\.wav"
    ):
        prepare("folders", tmp_path, speaker_regex=r"^(spk\d+)_")


def test_cli_folders_writes_manifest_and_summary(tmp_path):
    write_tree(tmp_path / "corpus", FOLDER_FILES)
    write_tone(tmp_path / "corpus/Sad/spk4_g.wav", seconds=0.5, rate=48000, channels=2)
    out = tmp_path / "out/folders.csv"
    result = CliRunner().invoke(app, ["manifest", "--corpus", "folders", "--root", str(tmp_path / "corpus"),
                                      "--out", str(out), "--speaker-regex", r"^(spk\d+)_", "--n-folds", "3",
                                      "--language", "en"])
    assert result.exit_code == 0, result.output
    assert "utterances: 7" in result.output and "speakers: 4" in result.output and "folds: 3" in result.output
    assert "48000 Hz (1)" in result.output
    df = read_manifest(out)
    assert len(df) == 7 and set(df["language"]) == {"en"} and df.groupby("speaker")["fold"].nunique().max() == 1


def test_cli_bad_input_exits_2_with_message_and_no_file(tmp_path):
    out = tmp_path / "never.csv"
    runner = CliRunner()
    result = runner.invoke(app, ["manifest", "--corpus", "folders", "--root", str(tmp_path / "missing"),
                                 "--out", str(out), "--speaker-regex", "(x)"])
    assert result.exit_code == 2 and "does not exist" in result.output and not out.exists()
    result = runner.invoke(app, ["manifest", "--corpus", "nope", "--root", str(tmp_path), "--out", str(out)])
    assert result.exit_code == 2 and "unknown corpus 'nope'" in result.output


def test_folders_names_a_missing_root_before_asking_for_a_speaker_regex(tmp_path):
    result = CliRunner().invoke(app, ["manifest", "--corpus", "folders", "--root", str(tmp_path / "nonexistent")])
    assert result.exit_code == 2, result.output
    assert f"corpus root {tmp_path / 'nonexistent'} does not exist" in result.output
    assert "--speaker-regex" not in result.output


def _table(tmp_path, text):
    write_tree(tmp_path / "audio", ["a.wav", "b.wav", "c.wav", "d.wav"])
    path = tmp_path / "table.csv"
    path.write_text(text)
    return path


def test_csv_speakers_make_folds_and_extra_columns_survive(tmp_path):
    table = _table(tmp_path, "path,label,speaker,text\naudio/a.wav,Anger,s1,hi\naudio/b.wav,joy,s2,yo\n"
                             f"{tmp_path}/audio/c.wav,sad,s1,x\naudio/d.wav,neutral,s3,y\n")
    df = prepare("csv", table, n_folds=2)
    assert df["path"].tolist() == ["audio/a.wav", "audio/b.wav", "audio/c.wav", "audio/d.wav"]
    assert df["label"].tolist() == ["angry", "happy", "sad", "neutral"] and df["text"].tolist() == [
        "hi",
        "yo",
        "x",
        "y",
    ]
    assert df["fold"].tolist() == [0, 1, 0, 1] and df["utt_id"].tolist() == [
        "audio__a",
        "audio__b",
        "audio__c",
        "audio__d",
    ]


def test_csv_splits_and_given_folds(tmp_path):
    table = _table(tmp_path, "path,label,split\naudio/a.wav,angry,train\naudio/b.wav,sad,dev\naudio/c.wav,sad,test\n")
    df = prepare("csv", table)
    assert df["split"].tolist() == ["train", "valid", "test"] and df["fold"].isna().all()
    table.write_text("path,label,speaker,fold\naudio/a.wav,angry,s1,0\naudio/b.wav,sad,s2,1\naudio/c.wav,sad,s2,1\n")
    assert prepare("csv", table)["fold"].tolist() == [0, 1, 1]


def test_csv_errors(tmp_path):
    table = _table(tmp_path, "path,label,speaker,fold\naudio/a.wav,angry,s1,0\naudio/b.wav,sad,s1,1\n")
    with pytest.raises(ManifestError, match=r"1 speakers appear in more than one fold[\s\S]*s1: folds \[0, 1\]"):
        prepare("csv", table)
    table.write_text("path,label\naudio/a.wav,angry\n")
    with pytest.raises(ManifestError, match="speaker column is missing"):
        prepare("csv", table)
    table.write_text("file,label\naudio/a.wav,angry\n")
    with pytest.raises(ManifestError, match=r"lacks column\(s\) \['path'\]"):
        prepare("csv", table)
    table.write_text("path,label,split\naudio/a.wav,angry,train\naudio/zz.wav,sad,test\n")
    with pytest.raises(ManifestError, match=r"1 annotated utterances have no audio[\s\S]*audio/zz\.wav"):
        prepare("csv", table)
    assert len(prepare("csv", table, allow_missing=True)) == 1
    table.write_text("path,label,split\naudio/a.wav,angry,train\naudio/a.wav,sad,test\n")
    with pytest.raises(ManifestError, match="duplicate utt_ids"):
        prepare("csv", table)
    with pytest.raises(ManifestError, match="is a folder"):
        prepare("csv", tmp_path)
    assert table.read_text() == "path,label,split\naudio/a.wav,angry,train\naudio/a.wav,sad,test\n"  # untouched
