"""Where the trainer's work runs: every device runs the same torch code, except the CPU, which
keeps the host's numpy and scikit-learn path. That path gives the reference numbers (the ones the
project had before the trainer ran on GPUs), and numpy's gathers and sequential sums are several
times faster than torch's there. Tests switch HOST_PATHS off to run the GPU's code on the CPU.
"""
from __future__ import annotations

import torch

HOST_PATHS = True


def host_path(device) -> bool:
    """Whether work on `device` takes the host's numpy / scikit-learn path rather than torch's."""
    return torch.device(device).type == "cpu" and HOST_PATHS
