"""trainer: B-GRPO, baselines and the evaluation protocol over cached embeddings.

The Python API: `from trainer import BGRPOClassifier, load_run` (docs/PYTHON_API.md). They are
imported on first use, so that the command line's start does not pay for scikit-learn and torch."""

__all__ = ["BGRPOClassifier", "load_run"]


def __getattr__(name):
    if name == "BGRPOClassifier":
        from trainer.estimator import BGRPOClassifier
        return BGRPOClassifier
    if name == "load_run":
        from trainer.predict import load_run
        return load_run
    raise AttributeError(f"module 'trainer' has no attribute {name!r}")
