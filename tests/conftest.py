"""Shared test fixtures: synthetic caches with a known structure (class signal + speaker offset +
noise), written through the real cache writer, so the trainer is tested without audio."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.cache import write_cache_arrays


def write_synthetic_cache(path, n_classes: int = 4, n_speakers: int = 12, per_class: int = 10, n_folds: int = 3,
                    n_layers: int = 3, dim: int = 16, signal: float = 1.0, speaker_scale: float = 1.0,
                    seed: int = 0, corpus: str = "synthetic", window: str = "full"):
    """Every speaker says `per_class` utterances of every class; speakers are split round-robin
    into `n_folds` folds. Class signal lives in all layers, strongest in the middle one."""
    rng = np.random.default_rng(seed)
    class_means = rng.normal(size=(n_classes, dim))
    layer_gain = 1.0 - np.abs(np.linspace(-1, 1, n_layers)) * 0.7
    rows, emb = [], []
    for s in range(n_speakers):
        offset = speaker_scale * rng.normal(size=dim)
        for c in range(n_classes):
            for k in range(per_class):
                z = class_means[c] * signal + rng.normal(size=dim)
                emb.append([offset + g * z + 0.3 * rng.normal(size=dim) for g in layer_gain])
                rows.append({"utt_id": f"s{s:02d}_c{c}_{k:02d}", "label": f"class{c}", "speaker": f"spk{s:02d}",
                             "fold": s % n_folds, "corpus": corpus, "duration": 1.0, "num_frames": 50})
    table = pd.DataFrame(rows)
    attrs = {"encoder_id": "synthetic", "window": window, "sample_rate": 16000}
    return write_cache_arrays(path, np.asarray(emb), table, attrs)


@pytest.fixture(scope="session")
def synthetic_cache():
    """The writer itself: synthetic_cache(path, **structure) -> path of a complete cache."""
    return write_synthetic_cache
