"""A generative teacher for B-GRPO (SPEC 4, `teacher=lda`): shrinkage linear discriminant
analysis on a PCA of the pool's features.

Why: the policy is a discriminative head fitted on a handful of labels, so its errors are the
ones self-training then reinforces. A Gaussian class model with a shared, shrunk covariance
(Ledoit-Wolf) is a different view of the same vectors: it uses the unlabelled pool's geometry
(through the PCA, fitted label-free on the learner's rows) and is refitted each round on the
labelled set plus the actions the round selected, so it follows the clusters of the pool rather
than the decision boundary of the few labels. Its probabilities are mixed into the actions
(geometric mean with pi_old, bgrpo.acting_distribution) and give r3-r5 when asked for.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
from sklearn.decomposition import PCA
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

from trainer.feature_store import CHUNK_ROWS


def principal_axes(blocks, n_rows: int, n_components: int, seed: int):
    """A fitted PCA (transform, n_components_) of the rows of `blocks()` ([n, ...] float32).

    Small data: scikit-learn's PCA on the rows in memory. From ten rows per feature on,
    scikit-learn itself switches to the eigenvectors of the covariance ('covariance_eigh'); that is
    computed here from X^T X summed chunk by chunk, so the pool is never one float32 matrix."""
    dim = None
    for first in blocks():
        dim = first[0].size
        break
    k = int(min(n_components, n_rows - 1, dim))
    if n_rows <= 10 * dim:
        return PCA(k, random_state=seed).fit(np.concatenate([b.reshape(len(b), dim) for b in blocks()]))
    total, gram = np.zeros(dim), np.zeros((dim, dim))
    for b in blocks():
        flat = b.reshape(len(b), dim)
        total += flat.sum(0, dtype=np.float64)
        block = torch.from_numpy(np.ascontiguousarray(flat))  # torch's matmul: the run's thread budget
        gram += (block.T @ block).double().numpy()
    mean = total / n_rows
    cov = (gram - n_rows * np.outer(mean, mean)) / (n_rows - 1)
    vectors = torch.linalg.eigh(torch.from_numpy(cov))[1].numpy()
    axes = vectors[:, ::-1][:, :k].T  # descending variance
    axes *= np.sign(axes[np.arange(k), np.abs(axes).argmax(1)])[:, None]  # sign convention of svd_flip
    return Projection(mean.astype(np.float32), axes.astype(np.float32))


class Projection:
    """x -> (x - mean) W^T: the transform of a PCA whose axes W were found from streamed sums."""

    def __init__(self, mean: np.ndarray, components: np.ndarray):
        self.mean_, self.components_, self.n_components_ = mean, components, len(components)

    def transform(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean_) @ self.components_.T


class LDATeacher:
    """T(c|x) from shrinkage LDA over PCA-`n_components` of flattened standardised features.

    A teacher in trainer/teachers.py's sense: probs(x, pool_idx), a no-op update(policy) (it does
    not follow the policy) and end_round(x, y), which refits it on the round's selection.
    `x_fit`: the rows the PCA is fitted on (label-free), a tensor or a list of tensors and
    FeatureRows (labelled, validation and pool), read a chunk at a time.
    """

    def __init__(self, x_fit, n_classes: int, n_components: int = 64, seed: int = 0):
        sources = [x_fit] if torch.is_tensor(x_fit) else list(x_fit)

        def blocks():
            for src in sources:
                if torch.is_tensor(src):
                    yield src.cpu().numpy()
                else:
                    yield from (src[pos].cpu().numpy() for pos in src.position_chunks())
        self.pca = principal_axes(blocks, sum(len(s) for s in sources), n_components, seed)
        self.n_classes = n_classes
        self.lda = None

    def _project(self, x: torch.Tensor) -> np.ndarray:
        flat = x.reshape(len(x), self.pca.components_.shape[1]).cpu().numpy()
        return np.concatenate([self.pca.transform(flat[i:i + CHUNK_ROWS])
                               for i in range(0, len(flat), CHUNK_ROWS)] or [np.zeros((0, self.pca.n_components_))])

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

