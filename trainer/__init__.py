"""trainer: B-GRPO, baselines and the evaluation protocol over cached embeddings."""
