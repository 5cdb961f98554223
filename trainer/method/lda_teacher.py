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

from trainer.inputs.feature_store import CHUNK_ROWS
from trainer.inputs.features import sequential_sum
from trainer.inputs.placement import Placement


def principal_axes(blocks, n_rows: int, n_components: int, seed: int, where="cpu"):
    """A fitted PCA (transform, mean_, components_, n_components_) of the rows of `blocks()`
    ([n, ...] float32 arrays or tensors, on any device).

    Small data: scikit-learn's PCA on the rows in memory. From ten rows per feature on,
    scikit-learn itself switches to the eigenvectors of the covariance ('covariance_eigh'); that is
    computed here from X^T X summed chunk by chunk on `where`'s device, so the pool is never one
    float32 matrix and never leaves the device."""
    dim = None
    for first in blocks():
        dim = first[0].numel() if torch.is_tensor(first) else first[0].size
        break
    k = int(min(n_components, n_rows - 1, dim))
    if n_rows <= 10 * dim:
        flat = [torch.as_tensor(b).reshape(len(b), dim).cpu().numpy() for b in blocks()]
        return PCA(k, random_state=seed).fit(np.concatenate(flat))
    total = gram = None
    for b in blocks():
        block = torch.as_tensor(b).reshape(len(b), dim).contiguous()
        total = sequential_sum(None, block, where) + (0 if total is None else total)  # per block, as numpy's sum(0)
        gram = (block.T @ block).double() + (0 if gram is None else gram)  # torch's matmul: the run's threads
    mean = total / n_rows
    cov = (gram - n_rows * torch.outer(mean, mean)) / (n_rows - 1)
    axes = torch.linalg.eigh(cov)[1].flip(1)[:, :k].T  # descending variance
    largest = axes[torch.arange(k, device=axes.device), axes.abs().argmax(1)]
    axes = axes * torch.sign(largest)[:, None]  # sign convention of svd_flip
    return Projection(mean.float().cpu().numpy(), axes.float().cpu().numpy())


class Projection:
    """x -> (x - mean) W^T: the transform of a PCA whose axes W were found from streamed sums."""

    def __init__(self, mean: np.ndarray, components: np.ndarray):
        self.mean_, self.components_, self.n_components_ = mean, components, len(components)

    def transform(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean_) @ self.components_.T


def shrinkage_lda(z: torch.Tensor, y: torch.Tensor, n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(coef [C, k], intercept [C]) of scikit-learn's LinearDiscriminantAnalysis(solver='lsqr',
    shrinkage='auto') on rows z [n, k] with labels y in 0..C-1, every class present, in z's dtype
    and on its device: class means; the shared covariance sum_c prior_c S_c, S_c the Ledoit-Wolf
    shrunk covariance of class c's rows taken on features scaled to unit variance, then scaled
    back; coef = Sigma^-1 mu_c, intercept = -mu_c coef_c / 2 + log prior_c."""
    n, k = z.shape
    counts = torch.bincount(y, minlength=n_classes).to(z.dtype)
    priors = counts / n
    onehot = torch.nn.functional.one_hot(y, n_classes).to(z.dtype)
    means = (onehot.T @ z) / counts[:, None]
    centred = z - means[y]
    var = (onehot.T @ centred ** 2) / counts[:, None]  # [C, k], population variance per class
    eps = torch.finfo(torch.float64).eps  # scikit-learn's test for constant features, then scale 1
    constant = var <= counts[:, None] * eps * var + (counts[:, None] * means * eps) ** 2
    scale = torch.where(constant, torch.ones_like(var), var.sqrt())
    scaled = centred / scale[y]
    cov = torch.zeros(k, k, dtype=z.dtype, device=z.device)
    for c in range(n_classes):
        xc = scaled * onehot[:, c:c + 1]  # the class's rows, the others zero
        gram, n_c = xc.T @ xc, counts[c]
        trace = torch.diagonal(gram) / n_c
        mu = trace.sum() / k
        sq = xc ** 2
        beta_ = (sq.T @ sq).sum()
        delta_ = (gram ** 2).sum() / n_c ** 2
        beta = (beta_ / n_c - delta_) / (k * n_c)
        delta = (delta_ - 2.0 * mu * trace.sum() + k * mu ** 2) / k
        beta = torch.minimum(beta, delta)
        shrink = torch.where(beta == 0, torch.zeros_like(beta), beta / delta)
        shrunk = (1.0 - shrink) * gram / n_c + shrink * mu * torch.eye(k, dtype=z.dtype, device=z.device)
        cov += priors[c] * scale[c][:, None] * shrunk * scale[c][None, :]
    coef = torch.linalg.lstsq(cov, means.T).solution.T
    return coef, -0.5 * (means * coef).sum(1) + torch.log(priors)


class LDATeacher:
    """T(c|x) from shrinkage LDA over PCA-`n_components` of flattened standardised features.

    A teacher in trainer/method/teachers.py's sense: probs(x, pool_idx), a no-op update(policy) (it does
    not follow the policy) and end_round(x, y), which refits it on the round's selection.
    `x_fit`: the rows the PCA is fitted on (label-free), a tensor or a list of tensors and
    FeatureRows (labelled, validation and pool), read a chunk at a time.
    On the host's path (`placement`, by default that of x_fit's device) the class model is
    scikit-learn's estimator; on a device's it is `shrinkage_lda` (the same estimator in torch,
    float64), so the rows never leave the device.
    """

    def __init__(
        self, x_fit, n_classes: int, n_components: int = 64, seed: int = 0, placement: Placement | None = None
    ):
        sources = [x_fit] if torch.is_tensor(x_fit) else list(x_fit)

        def blocks():
            for src in sources:
                if torch.is_tensor(src):
                    yield src
                else:
                    yield from (src[pos] for pos in src.position_chunks())
        place = Placement.of(sources[0].device if placement is None else placement)
        self.pca = principal_axes(blocks, sum(len(s) for s in sources), n_components, seed, place)
        self.n_classes = n_classes
        self.lda = self._pending = None
        self.on_device = not place.host
        self.axes = [torch.as_tensor(np.asarray(a, np.float32), device=place.device)
                     for a in (self.pca.mean_, self.pca.components_)]

    def _project(self, x: torch.Tensor):
        """PCA coordinates: a float64 tensor on x's device (on_device), else a numpy array."""
        if self.on_device:
            mean, components = self.axes
            return ((x.reshape(len(x), components.shape[1]) - mean) @ components.T).double()
        flat = x.reshape(len(x), self.pca.components_.shape[1]).cpu().numpy()
        out = np.empty((len(flat), self.pca.n_components_), np.result_type(flat, self.pca.components_))
        for i in range(0, len(flat), CHUNK_ROWS):  # into one array: a round's projection never exists twice
            out[i:i + CHUNK_ROWS] = self.pca.transform(flat[i:i + CHUNK_ROWS])
        return out

    def fit(self, x: torch.Tensor, y: torch.Tensor) -> "LDATeacher":
        """Refit the class model on (features, labels or selected actions)."""
        return self._fit_projected(self._project(x), y)

    def _fit_projected(self, z, y: torch.Tensor) -> "LDATeacher":
        """The class model on PCA coordinates z of the rows labelled y.

        With no more rows than classes a covariance cannot be estimated: the teacher then stays
        uninformative (uniform), so sqrt(pi_old * T) ranks classes as pi_old does.
        """
        self._pending = None
        classes = torch.unique(y)
        self.classes_ = classes if self.on_device else classes.cpu().numpy()
        self.lda = None
        if len(y) > len(classes) >= 2:
            if self.on_device:
                self.lda = shrinkage_lda(z, torch.searchsorted(classes, y), len(classes))
            else:
                # a class with one sample makes sklearn warn per fit; `train` says it once (warn_few_labels)
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", "Only one sample available", UserWarning)
                    self.lda = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto").fit(z, y.cpu().numpy())
        return self

    def probs(self, x: torch.Tensor, pool_idx: torch.Tensor | None = None) -> torch.Tensor:
        """[N, C] probabilities; a class the fit never saw gets probability 0."""
        if self._pending is not None:
            self._fit_projected(*self._pending)
        if self.lda is None:
            return torch.full((len(x), self.n_classes), 1.0 / self.n_classes, device=x.device)
        if self.on_device:
            coef, intercept = self.lda
            p = torch.zeros(len(x), self.n_classes, dtype=torch.float32, device=x.device)
            p[:, self.classes_] = torch.softmax(self._project(x) @ coef.T + intercept, 1).float()
            return p
        p = np.zeros((len(x), self.n_classes), dtype=np.float32)
        p[:, self.classes_] = self.lda.predict_proba(self._project(x))
        return torch.as_tensor(p, device=x.device)

    def update(self, policy) -> None:
        pass

    def end_round(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Refit on the round's selection: its PCA coordinates now (x, the round's largest tensor,
        is freed after the head's refit), the class model when the teacher is next asked, so the
        model's scratch memory never adds to x's (the same fit as fit(x, y), later)."""
        self._pending = (self._project(x), y)

