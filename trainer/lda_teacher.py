"""A generative teacher for B-GRPO (SPEC 4, `teacher=lda`): shrinkage linear discriminant
analysis on a PCA of the pool's features.

Why: the policy is a discriminative head fitted on a handful of labels, so its errors are the
ones self-training then reinforces. A Gaussian class model with a shared, shrunk covariance
(Ledoit-Wolf) is a different view of the same vectors: it uses the unlabelled pool's geometry
(through the PCA, fitted label-free on the learner's rows) and is refitted each round on the
labelled set plus the actions the round selected, so it follows the clusters of the pool rather
than the decision boundary of the few labels. Its probabilities are mixed into the actions
(geometric mean with pi_old) and give r3-r5 when asked for.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
from sklearn.decomposition import PCA
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis


class LDATeacher:
    """T(c|x) from shrinkage LDA over PCA-`n_components` of flattened standardised features.

    A teacher in trainer/teachers.py's sense: probs(x, pool_idx), a no-op update(policy) (it does
    not follow the policy) and end_round(x, y), which refits it on the round's selection.
    """

    def __init__(self, x_fit: torch.Tensor, n_classes: int, n_components: int = 64, seed: int = 0):
        flat = x_fit.reshape(len(x_fit), -1).cpu().numpy()
        k = int(min(n_components, flat.shape[0] - 1, flat.shape[1]))
        self.pca = PCA(k, random_state=seed).fit(flat)
        self.n_classes = n_classes
        self.lda = None

    def _project(self, x: torch.Tensor) -> np.ndarray:
        return self.pca.transform(x.reshape(len(x), -1).cpu().numpy())

    def fit(self, x: torch.Tensor, y: torch.Tensor) -> "LDATeacher":
        """Refit the class model on (features, labels or selected actions).

        With no more rows than classes a covariance cannot be estimated: the teacher then stays
        uninformative (uniform), so sqrt(pi_old * T) ranks classes as pi_old does.
        """
        y = y.cpu().numpy()
        self.classes_ = np.unique(y)
        self.lda = None
        if len(y) > len(self.classes_) >= 2:
            # a class with one sample makes sklearn warn per fit; `train` says it once (warn_few_labels)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", "Only one sample available", UserWarning)
                self.lda = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto").fit(self._project(x), y)
        return self

    def probs(self, x: torch.Tensor, pool_idx: torch.Tensor | None = None) -> torch.Tensor:
        """[N, C] probabilities; a class the fit never saw gets probability 0."""
        if self.lda is None:
            return torch.full((len(x), self.n_classes), 1.0 / self.n_classes, device=x.device)
        p = np.zeros((len(x), self.n_classes), dtype=np.float32)
        p[:, self.classes_] = self.lda.predict_proba(self._project(x))
        return torch.as_tensor(p, device=x.device)

    def update(self, policy) -> None:
        pass

    def end_round(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.fit(x, y)


def mix_probs(p_policy: torch.Tensor, p_teacher: torch.Tensor) -> torch.Tensor:
    """Normalised geometric mean sqrt(pi * T): a class needs both views' support to be chosen."""
    g = torch.sqrt(p_policy.clamp_min(1e-12) * p_teacher.clamp_min(1e-12))
    return g / g.sum(1, keepdim=True)
