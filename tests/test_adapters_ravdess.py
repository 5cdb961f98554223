"""RAVDESS adapter: generated tree (speech, song, re-pack quirks) and the real corpus when present."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from test_manifest_audio import write_tone, write_tree

from data_manifests import ManifestError, prepare, read_manifest, write_manifest

REAL_RAVDESS = Path(__file__).resolve().parents[2] / "shared/corpora/ravdess"


def _name(actor, emotion=1, channel=1, intensity=1, statement=1, repetition=1, suffix="wav"):
    fields = (channel, emotion, intensity, statement, repetition, actor)
    return f"Actor_{actor:02d}/03-" + "-".join(f"{f:02d}" for f in fields) + f".{suffix}"


def test_generated_tree_labels_gender_folds_and_song_flag(tmp_path):
    names = [_name(1, emotion=5), _name(2, emotion=8, suffix="flac"), _name(8, emotion=2),
             _name(24, emotion=7, intensity=2), _name(1, emotion=3, channel=2)]
    write_tree(tmp_path, names)
    write_tone(tmp_path / _name(5, emotion=4), rate=48000, channels=2)

    speech = prepare("ravdess", tmp_path)
    assert len(speech) == 5 and set(speech["vocal_channel"]) == {"speech"}
    row = speech.set_index("utt_id").loc["03-01-05-01-01-01-01"]
    assert (row["label"], row["speaker"], row["gender"], row["fold"]) == ("angry", "Actor_01", "male", 0)
    row = speech.set_index("utt_id").loc["03-01-07-02-01-01-24"]
    assert (row["label"], row["gender"], row["fold"], row["intensity"]) == ("disgust", "female", 5, "strong")
    assert speech.set_index("speaker")["fold"].to_dict() == {
        "Actor_01": 0, "Actor_02": 0, "Actor_05": 1, "Actor_08": 1, "Actor_24": 5}
    stereo = speech[speech["speaker"] == "Actor_05"].iloc[0]
    assert (stereo["sample_rate"], stereo["channels"], stereo["path"]) == (48000, 2, _name(5, emotion=4))

    with_song = prepare("ravdess", tmp_path, include_song=True)
    song = with_song[with_song["vocal_channel"] == "song"]
    assert song[["utt_id", "label", "fold"]].values.tolist() == [["03-02-03-01-01-01-01", "happy", 0]]


def test_files_off_the_scheme_are_listed_with_their_count(tmp_path):
    write_tree(
        tmp_path, [_name(1)] + [f"Actor_01/take{i}.wav" for i in range(12)] + ["Actor_30/03-01-01-01-01-01-30.wav"]
    )
    with pytest.raises(ManifestError) as error:
        prepare("ravdess", tmp_path)
    message = str(error.value)
    assert "13 of 14 audio files" in message and "Actor_01/take0.wav" in message and "... and 3 more" in message


def test_duplicate_copies_in_a_repack_are_refused(tmp_path):
    write_tree(tmp_path, [_name(3), "audio_speech_actors_01-24/" + _name(3)])
    with pytest.raises(ManifestError, match=r"duplicate utt_ids[\s\S]*03-01-01-01-01-01-03"):
        prepare("ravdess", tmp_path)


def test_unknown_option_is_a_clear_error(tmp_path):
    write_tree(tmp_path, [_name(1)])
    with pytest.raises(ManifestError, match="does not take --speaker-regex; it takes --include-song"):
        prepare("ravdess", tmp_path, speaker_regex="x")


@pytest.mark.slow
def test_real_ravdess_speech(tmp_path):
    if not REAL_RAVDESS.is_dir():
        pytest.skip(f"{REAL_RAVDESS} not present")
    df = prepare("ravdess", REAL_RAVDESS)
    assert len(df) == 1440
    assert df["speaker"].nunique() == 24 and df["label"].nunique() == 8
    assert sorted(df["fold"].unique().tolist()) == [0, 1, 2, 3, 4, 5]
    speakers_per_fold = df.groupby("fold")["speaker"].apply(set)
    assert all(len(s) == 4 for s in speakers_per_fold)
    assert sum(len(s) for s in speakers_per_fold) == 24  # disjoint
    assert (df.groupby("speaker")["gender"].first() == "male").sum() == 12
    assert 1.4 < df["duration"].sum() / 3600 < 1.55
    assert df["utt_id"].is_unique and set(df["label"].value_counts()) == {96, 192}

    out = write_manifest(df, tmp_path / "rav.csv")
    pd.testing.assert_frame_equal(read_manifest(out), df)
