"""The adapters on real corpora as released (../shared/corpora): exact documented counts.
Skipped when the corpora are absent."""
from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from data_manifests import ManifestWarning, prepare

CORPORA = Path(__file__).resolve().parents[2] / "shared/corpora"


def real(name: str) -> Path:
    if not (CORPORA / name).is_dir():
        pytest.skip(f"{CORPORA / name} not present")
    return CORPORA / name


@pytest.mark.slow
def test_real_ravdess_exact_counts():
    with warnings.catch_warnings():
        warnings.simplefilter("error", ManifestWarning)  # nothing skipped, nothing said
        df = prepare("ravdess", real("ravdess"))
    assert len(df) == 1440 and df["speaker"].nunique() == 24
    assert df["label"].value_counts().to_dict() == {
        "neutral": 96, "calm": 192, "happy": 192, "sad": 192, "angry": 192, "fearful": 192, "disgust": 192,
        "surprised": 192}
    assert set(df.groupby("speaker").size()) == {60}
    assert df.groupby("fold")["speaker"].nunique().to_dict() == {f: 4 for f in range(6)}


@pytest.mark.slow
def test_real_casia_exact_counts():
    with pytest.warns(ManifestWarning, match="4 speakers, so 4 leave-one-speaker-out folds instead of the 5") as caught:
        df = prepare("casia", real("casia"))
    assert not [w for w in caught if "do not match" in str(w.message)]  # every file fits the scheme
    assert len(df) == 1200
    assert df.groupby("speaker").size().to_dict() == {"ZhaoZuoxiang": 300, "liuchanhg": 300, "wangzhe": 300,
                                                      "zhaoquanyin": 300}
    assert df["label"].value_counts().to_dict() == {
        "angry": 200, "fearful": 200, "happy": 200, "neutral": 200, "sad": 200, "surprised": 200}
    assert df.groupby("fold")["speaker"].nunique().to_dict() == {0: 1, 1: 1, 2: 1, 3: 1}
    assert df.groupby("speaker")["gender"].first().to_dict() == {
        "ZhaoZuoxiang": "male", "liuchanhg": "female", "wangzhe": "male", "zhaoquanyin": "female"}
    assert sorted(df["utt_id"].str.rsplit("_", n=1).str[1].unique()) == [str(i) for i in range(201, 251)]
