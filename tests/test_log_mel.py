"""The batched torch log-mel (computed on the encoder's device) equals WhisperFeatureExtractor's."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import WhisperFeatureExtractor

from pipeline.log_mel import log_mel, mel_filters
from pipeline.window import real_mel_frames


@pytest.fixture(scope="module")
def fe():
    return WhisperFeatureExtractor(feature_size=80)


def clips():
    rng = np.random.default_rng(3)
    t = np.arange(16000 * 3) / 16000
    voiced = (0.3 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 2 * t))).astype(np.float32)
    return [voiced[:20011],  # not a whole number of hops
            (0.05 * rng.standard_normal(480000)).astype(np.float32),  # exactly 30 s
            voiced + 0.01 * rng.standard_normal(len(voiced)).astype(np.float32),
            np.zeros(800, np.float32),  # silence: every value sits at the floor
            (0.5 * rng.standard_normal(161)).astype(np.float32)]  # one hop and a sample


def batch(audio):
    x = torch.zeros(len(audio), max(len(a) for a in audio))
    for i, a in enumerate(audio):
        x[i, :len(a)] = torch.from_numpy(a)
    return x


def test_full_window_equals_the_feature_extractor_to_fp32_precision(fe):
    audio = clips()
    reference = np.stack([fe(a, sampling_rate=16000, return_tensors="np").input_features[0] for a in audio])
    got = log_mel(batch(audio), 3000, mel_filters(fe, "cpu")).numpy()
    assert got.shape == reference.shape == (len(audio), 80, 3000)
    np.testing.assert_allclose(got, reference, atol=2e-5, rtol=0)


def test_fewer_frames_are_the_first_frames_of_the_full_window(fe):
    """Trim and padN compute only the frames they need: the same values (the clip's own maximum)."""
    audio = clips()
    x, filters = batch(audio), mel_filters(fe, "cpu")
    full = log_mel(x, 3000, filters).numpy()
    for i, a in enumerate(audio):
        for frames in {int(real_mel_frames(len(a))), 1000}:
            if frames >= real_mel_frames(len(a)):
                part = log_mel(x[i:i + 1, :len(a)], frames, filters).numpy()[0]
                np.testing.assert_allclose(part, full[i, :, :frames], atol=2e-6, rtol=0)


def test_frames_out_of_range_are_refused(fe):
    with pytest.raises(ValueError, match="frames must be in 1..3000"):
        log_mel(torch.zeros(1, 160), 3001, mel_filters(fe, "cpu"))
