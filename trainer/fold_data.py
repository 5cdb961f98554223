"""The tensors of one fold x seed, on the device once, shared by every method's training loop."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from trainer.features import Standardizer


@dataclass
class FoldData:
    x_lab: torch.Tensor  # [n_L, L, D] labelled (training part)
    y_lab: torch.Tensor  # [n_L]
    x_val: torch.Tensor  # [n_V, L, D] validation carved from the labelled subset (may be empty)
    y_val: torch.Tensor
    x_unl: torch.Tensor  # [n_U, L, D] unlabelled pool
    y_unl_hidden: torch.Tensor  # [n_U] hidden labels, -1 where unknown: diagnostics only, never trained on
    group_speaker: torch.Tensor  # [n_U] speaker ids of the pool (for --balance-scope speaker)
    x_train_all: torch.Tensor  # whole training fold (topline only)
    y_train_all: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor  # used only to score; never by any training decision
    prior: torch.Tensor  # [C] class distribution of the labelled subset (labelled + val)
    n_classes: int
    standardizer: Standardizer  # fitted on the rows the learner sees (labelled, val, pool); every x_* is z-scored

    @classmethod
    def build(cls, x: np.ndarray, y: np.ndarray, speakers: np.ndarray, split, n_classes: int, device,
              x_ext: np.ndarray | None = None, speakers_ext: np.ndarray | None = None) -> "FoldData":
        dev = torch.device(device)
        t = lambda a, dt=torch.float32: torch.as_tensor(np.ascontiguousarray(a), dtype=dt, device=dev)  # noqa: E731
        x_unl, y_unl, spk_unl = x[split.unlabeled], y[split.unlabeled], speakers[split.unlabeled]
        if x_ext is not None and len(x_ext):
            x_unl = np.concatenate([x_unl, x_ext])
            y_unl = np.concatenate([y_unl, -np.ones(len(x_ext), dtype=y.dtype)])
            spk_unl = np.concatenate([spk_unl, np.array(["ext:" + str(s) for s in speakers_ext])])
        # The test fold's hidden labels must not even reach the pool's diagnostics in transductive mode.
        if len(split.test):
            in_test = np.isin(np.arange(len(x))[split.unlabeled], split.test)
            y_unl = y_unl.copy()
            y_unl[: len(in_test)][in_test] = -1
        _, spk_ids = np.unique(spk_unl.astype(str), return_inverse=True)
        st = Standardizer().fit(np.concatenate([x[split.labeled], x[split.val], x_unl]))
        x, x_unl = st.transform(x), st.transform(x_unl)
        lab_all = np.concatenate([y[split.labeled], y[split.val]])
        prior = np.bincount(lab_all, minlength=n_classes).astype(np.float64)
        return cls(x_lab=t(x[split.labeled]), y_lab=t(y[split.labeled], torch.long),
                   x_val=t(x[split.val]), y_val=t(y[split.val], torch.long),
                   x_unl=t(x_unl), y_unl_hidden=t(y_unl, torch.long), group_speaker=t(spk_ids, torch.long),
                   x_train_all=t(x[split.train]), y_train_all=t(y[split.train], torch.long),
                   x_test=t(x[split.test]), y_test=t(y[split.test], torch.long),
                   prior=t(prior / prior.sum()), n_classes=n_classes, standardizer=st)
