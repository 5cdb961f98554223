"""trainer: B-GRPO, baselines and the evaluation protocol over cached embeddings.

The Python face (docs/PYTHON_API.md): `BGRPOClassifier` (a scikit-learn estimator, trainer/estimator.py)
and `load_run` (a trained run's predict, trainer/run_loader.py), imported on first use so that
`import trainer.config` (the CLI) does not load scikit-learn and torch.
"""
from __future__ import annotations

import importlib

__all__ = ["BGRPOClassifier", "load_run"]
_HOMES = {"BGRPOClassifier": "trainer.estimator", "load_run": "trainer.run_loader"}


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'trainer' has no attribute {name!r}")
