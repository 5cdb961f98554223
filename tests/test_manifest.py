"""The manifest contract: validation errors, CSV round trip, atomic writes, folds, labels, summary."""
from __future__ import annotations

import pandas as pd
import pytest

from data_manifests import CANONICAL_LABELS, MANIFEST_COLUMNS, ManifestError, read_manifest, summarize, write_manifest
from data_manifests.folds import speaker_folds
from data_manifests.schema import canonical_label, parse_label_map, validate_manifest


def _table(**changes):
    rows = pd.DataFrame({
        "utt_id": ["a", "b", "c", "d"], "path": ["x/a.wav", "x/b.wav", "y/c.flac", "y/d.wav"],
        "speaker": ["s1", "s1", "s2", "s3"], "gender": ["female", "female", "", "male"], "language": "en",
        "label": ["angry", "sad", "happy", "neutral"], "raw_label": ["ANG", "SAD", "HAP", "NEU"],
        "fold": [0, 0, 1, 1], "split": "", "duration": [1.5, 0.1 + 0.2, 1800.0, 1799.4],
        "corpus": "toy", "sample_rate": [16000, 16000, 48000, 16000], "channels": [1, 1, 2, 1],
        "vocal_channel": ["speech", "speech", "song", "speech"]})
    for column, values in changes.items():
        rows[column] = values
    return rows


def test_contract_constants():
    assert CANONICAL_LABELS == ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised",
                                "boredom", "contempt", "excited", "frustrated", "other")
    assert MANIFEST_COLUMNS == ("utt_id", "path", "speaker", "gender", "language", "label", "raw_label",
                                "fold", "split", "duration", "corpus", "sample_rate", "channels", "text_id")


def test_text_id_is_optional_and_filled_empty(tmp_path):
    """An older manifest without text_id still validates (and reads back) with an empty text_id."""
    df = validate_manifest(_table())
    assert (df["text_id"] == "").all()
    path = tmp_path / "old.csv"
    df.drop(columns="text_id").to_csv(path, index=False)
    assert (read_manifest(path)["text_id"] == "").all()


def test_round_trip_keeps_rows_and_dtypes_exactly(tmp_path):
    df = validate_manifest(_table())
    assert str(df["fold"].dtype) == "Int64" and df.columns[-1] == "vocal_channel"
    back = read_manifest(write_manifest(df, tmp_path / "m.csv"))
    pd.testing.assert_frame_equal(back, df)
    assert back.loc[1, "duration"] == 0.1 + 0.2  # float repr survives exactly


def test_round_trip_with_official_split_and_na_folds(tmp_path):
    df = validate_manifest(_table(fold=[pd.NA] * 4, split=["train", "valid", "test", "test"]))
    back = read_manifest(write_manifest(df, tmp_path / "m.csv"))
    pd.testing.assert_frame_equal(back, df)
    assert back["fold"].isna().all()


def test_write_is_atomic_and_never_clobbers_with_bad_data(tmp_path):
    out = tmp_path / "m.csv"
    write_manifest(_table(), out)
    before = out.read_bytes()
    with pytest.raises(ManifestError, match="labels outside the vocabulary"):
        write_manifest(_table(label=["angry", "sad", "joyish", "neutral"]), out)
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.csv"]  # no temp file left behind


@pytest.mark.parametrize("changes, message", [
    ({"label": ["angry", "sad", "joyish", "neutral"]}, r"1 rows with labels outside[\s\S]*y/c.flac: 'joyish'"),
    ({"utt_id": ["a", "a", "c", "d"]}, r"1 duplicate utt_ids[\s\S]*a: x/a.wav[\s\S]*a: x/b.wav"),
    ({"fold": [0, 1, 1, 2]}, r"1 speakers appear in more than one fold[\s\S]*s1: folds \[0, 1\]"),
    ({"fold": [0, pd.NA, 1, 1]}, r"1 rows without a fold or a split[\s\S]*x/b.wav"),
    ({"split": ["", "", "", "dev"]}, r"1 rows without a fold or a split"),
    ({"duration": [1.0, 0.0, 1.0, 1.0]}, r"1 files with empty audio[\s\S]*x/b.wav"),
    ({"fold": [0, 0, -1, -1]}, "negative fold"),
])
def test_validation_names_the_problem(changes, message):
    with pytest.raises(ManifestError, match=message):
        validate_manifest(_table(**changes))


def test_missing_columns_and_missing_file(tmp_path):
    with pytest.raises(ManifestError, match=r"missing columns \['speaker'\]"):
        validate_manifest(_table().drop(columns="speaker"))
    with pytest.raises(ManifestError, match="does not exist"):
        read_manifest(tmp_path / "none.csv")
    (tmp_path / "bad.csv").write_text("utt_id,path\na,b\n")
    with pytest.raises(ManifestError, match="lacks columns"):
        read_manifest(tmp_path / "bad.csv")


def test_summary_counts_by_hand():
    text = summarize(validate_manifest(_table()))
    assert "utterances: 4" in text
    assert "labels: 4 (angry 1, happy 1, neutral 1, sad 1)" in text
    assert "speakers: 3" in text and "folds: 2 (0: 2, 1: 2)" in text
    assert "total hours: 1.00" in text  # (1.5 + 0.3 + 1800 + 1799.4) s / 3600 = 1.0003
    assert "sample rates: 16000 Hz (3), 48000 Hz (1)" in text


def test_speaker_folds_deterministic_balanced_and_order_free():
    speakers = pd.Series(["c"] * 3 + ["a"] * 3 + ["b"] * 2 + ["d"] + ["e"])
    folds = speaker_folds(speakers, k=3)
    # by count then name: a(3)->0, c(3)->1, b(2)->2, d(1)->2 (sizes 3,3,2), e(1)->0 (ties: lowest fold)
    assert dict(zip(speakers, folds)) == {"a": 0, "c": 1, "b": 2, "d": 2, "e": 0}
    shuffled = speakers.sample(frac=1.0, random_state=3)
    assert dict(zip(shuffled, speaker_folds(shuffled, k=3))) == dict(zip(speakers, folds))
    assert speaker_folds(pd.Series(["x", "y"]), k=5).tolist() == [0, 1]  # k capped at the speaker count
    with pytest.raises(ValueError):
        speaker_folds(speakers, k=1)


def test_label_synonyms_and_label_map():
    assert [canonical_label(raw) for raw in ("Anger", "FEAR", "happiness", "Sadness", "surprise", "disgusted",
                                             "pleasant surprise", "joy", "bored")] == [
        "angry", "fearful", "happy", "sad", "surprised", "disgust", "surprised", "happy", "boredom"]
    assert canonical_label("anxious") is None
    mapping = parse_label_map("Anxious=fearful, joy = angry")
    assert canonical_label("ANXIOUS", mapping) == "fearful" and canonical_label("joy", mapping) == "angry"
    with pytest.raises(ManifestError, match="fix --label-map"):
        parse_label_map("anxious=panicky")
    with pytest.raises(ManifestError, match="fix --label-map"):
        parse_label_map("anxious")
