"""Where a run's rows live and which code computes on them, decided once (`Placement.of`).

Every device runs the same torch code, except the CPU, which keeps the host's numpy and
scikit-learn path. That path gives the reference numbers (the ones the project had before the
trainer ran on GPUs), and numpy's gathers and sequential sums are several times faster than
torch's there. FoldData's rows carry their Placement (FeatureRows.placement) and every fork reads
it from there: CenteredCache / PromptCentered `take`, `sequential_sum` (standardisation, PCA), the
LDA teacher. Tests build `Placement(cpu, host=False)` to run the accelerator's code on the CPU.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Placement:
    device: torch.device
    host: bool  # the host's numpy / scikit-learn path rather than torch's

    HOST_TYPES = ("cpu",)  # device types on the host's path (a test empties it: the accelerator's code on the CPU)

    @classmethod
    def of(cls, where) -> "Placement":
        """The one decision: `where` (a device, its name, or a Placement, returned as is) -> the CPU
        takes the host's path, any other device torch's."""
        if isinstance(where, Placement):
            return where
        device = torch.device(where)
        return cls(device, device.type in cls.HOST_TYPES)
