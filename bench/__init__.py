"""Benchmarks: `python bench/extract_speed.py` and `python bench/train_speed.py` (see docs/PERFORMANCE.md)."""
