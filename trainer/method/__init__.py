"""The method over a FoldData: the policy head, supervised fits, teachers, E1-E8 (actions, rewards,
advantage), the self-training loop, the B-GRPO round and the baselines."""
