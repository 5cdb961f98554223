"""Per-epoch diagnostics and validation-based epoch selection for every training loop.

Test scores are recorded per epoch for the curves only; the epoch that is kept is chosen on the
labelled validation part (when val_fraction > 0) or is simply the last one.
"""
from __future__ import annotations

import copy

import numpy as np
import torch

from trainer.inputs.fold_data import FoldData
from trainer.metrics import confusion_macro_f1, counts_entropy, device_confusion, normalised_entropy


class Monitor:
    """Validation every epoch (cheap); test/pool diagnostics on about `points` evenly spaced epochs."""

    def __init__(self, data: FoldData, method: str, curves: list, n_epochs: int, points: int = 25):
        self.data, self.method, self.curves = data, method, curves
        self.every, self.last = max(1, n_epochs // points), n_epochs - 1
        self.best_val, self.best_state, self.best_epoch = -1.0, None, None

    def end_epoch(self, policy, epoch: int, **diag) -> None:
        d = self.data
        if len(d.x_val):
            val_f1 = confusion_macro_f1(device_confusion(d.y_val, policy.probs(d.x_val).argmax(1), d.n_classes))
            if val_f1 > self.best_val:
                self.best_val, self.best_epoch = val_f1, epoch
                self.best_state = copy.deepcopy(policy.state_dict())
        if epoch % self.every and epoch != self.last:
            return
        row = {"method": self.method, "epoch": epoch}
        if len(d.x_test):  # BGRPOClassifier.fit has no test rows
            pred_test = d.x_test.map(policy.probs).argmax(1)
            row["test_macro_f1"] = confusion_macro_f1(device_confusion(d.y_test, pred_test, d.n_classes))
        if len(d.x_unl):
            pred_unl = d.x_unl.map(policy.probs).argmax(1)
            row["pool_pred_entropy"] = counts_entropy(
                torch.bincount(pred_unl, minlength=d.n_classes).cpu(), d.n_classes
            )
        if len(d.x_val):
            row["val_macro_f1"] = val_f1
        row.update(diag)
        self.curves.append(row)

    def end_round(self, policy, rnd: int, scored) -> None:
        """B-GRPO's on_round callback (trainer/method/bgrpo.py): the round's E1-E5 (a Scored) with
        their diagnostics against the pool's hidden labels, which B-GRPO itself never sees."""
        self.end_epoch(policy, rnd, **scored_diagnostics(scored, self.data))

    def finish(self, policy) -> int | None:
        """Restore the best-validation epoch (if a validation part exists); return the kept epoch."""
        if self.best_state is not None:
            policy.load_state_dict(self.best_state)
            return self.best_epoch
        return None


def selection_diagnostics(actions: torch.Tensor, adv: torch.Tensor, reward: torch.Tensor,
                          hidden: torch.Tensor, p_old: torch.Tensor, n_classes: int) -> dict:
    """Epoch aggregates of E1/E5: selection rate, precision of selected actions vs hidden labels
    (reported, never used), mean reward, mean prediction entropy, action histogram; reduced where
    the tensors are and brought to the host in one copy."""
    sel = adv > 0
    known = sel & (hidden >= 0)
    ent = normalised_entropy(p_old)
    stats = torch.stack([sel.float().mean(), ((actions == hidden) & known).sum() / known.sum(),  # 0/0 = nan
                         reward.mean(), ent.mean()])
    host = torch.cat([stats.double(), torch.bincount(actions, minlength=n_classes).double()]).cpu().numpy()
    hist = host[4:].astype(np.int64)
    return {"selection_rate": float(host[0]), "selection_precision": float(host[1]), "mean_reward": float(host[2]),
            "mean_pred_entropy": float(host[3]), "action_entropy": counts_entropy(hist, n_classes),
            "action_hist": "|".join(str(int(h)) for h in hist)}


def scored_diagnostics(scored, data: FoldData) -> dict:
    """selection_diagnostics of a B-GRPO round (rows, p_old, actions, reward, adv), and with
    external pools the selection per source."""
    hidden = data.y_unl_hidden[scored.rows]
    diagnostics = selection_diagnostics(scored.actions, scored.adv, scored.reward, hidden, scored.p_old, data.n_classes)
    if data.pool_source is not None and bool((data.pool_source > 0).any()):
        diagnostics.update(selection_by_source(scored.rows, scored.adv > 0, scored.actions, hidden, data.pool_source))
    return diagnostics


def selection_by_source(rows: torch.Tensor, selected: torch.Tensor, actions: torch.Tensor, hidden: torch.Tensor,
                        pool_source: torch.Tensor) -> dict:
    """Per external source k: rows selected (`selected_src{k}`) and the share whose action is the
    hidden label (`precision_src{k}`, nan without hidden labels): diagnostics only."""
    src = pool_source[rows]
    out = {}
    for k in range(1, int(pool_source.max()) + 1):
        sel = selected & (src == k)
        known = sel & (hidden >= 0)
        out[f"selected_src{k}"] = int(sel.sum())
        out[f"precision_src{k}"] = (
            float(((actions == hidden) & known).sum() / known.sum()) if known.any() else float("nan")
        )
    return out
