"""The trainer on its device: a refit round moves no row-sized tensor to the host (checked on the
CPU by counting the copies a GPU run would make), the accelerator's teacher (shrinkage LDA in
torch) is scikit-learn's estimator, and a GPU, where there is one, gives the CPU's numbers."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

from trainer.method.actions import group_sums
from trainer.method.bgrpo import BGRPO, Pool, Settings
from trainer.config import TrainConfig
from trainer.inputs.placement import Placement
from trainer.inputs.feature_store import CenteredCache
from trainer.inputs.fold_data import FoldData
from trainer.jobs import run_job
from trainer.method.lda_teacher import LDATeacher, shrinkage_lda
from trainer.method.monitor import Monitor
from trainer.inputs.prompt_norm import PromptCentered
from trainer.inputs.protocol import Split
from trainer.method.self_training import head_refitter
from trainer.method.supervised import fit_supervised, new_policy

N_CLASSES = 4


ACCELERATOR_CODE = Placement(torch.device("cpu"), host=False)  # the torch code a GPU runs, here on the CPU


def fold(device="cpu", n=1200, dim=12, seed=0) -> FoldData:
    """A fold of a synthetic float16 cache (class means + speaker offsets + noise): 60 labelled
    rows, 20 validation, 720 unlabelled, 400 test; speaker centring on."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % N_CLASSES
    speakers = rng.integers(0, 30, n)
    raw = (rng.normal(size=(N_CLASSES, 1, dim))[y] + rng.normal(size=(30, 1, dim))[speakers] * 0.5
           + rng.normal(size=(n, 1, dim))).astype(np.float16)
    x = CenteredCache(raw, speakers.astype(str), "0", True)
    order = rng.permutation(n)
    split = Split("0", seed, labeled=order[:60], val=order[60:80], unlabeled=order[80:800], test=order[800:],
                  train=order[:800], speaker_overlap=0)
    return FoldData.build(x, y, speakers.astype(str), split, N_CLASSES, device)


def recipe(**kw) -> TrainConfig:
    return TrainConfig(refit_rounds=2, batch_size=32, lda_components=8, device="cpu", **kw)


class HostCopies:
    """Counts the elements of every tensor copied to the host (.cpu(), .numpy(), .tolist(),
    .item()): on the CPU these are no-ops, on a GPU each one is a transfer."""

    def __init__(self, monkeypatch):
        self.sizes: list[int] = []
        for name in ("cpu", "numpy", "tolist", "item"):
            original = getattr(torch.Tensor, name)

            def counted(t, *a, _original=original, **kw):
                self.sizes.append(t.numel())
                return _original(t, *a, **kw)
            monkeypatch.setattr(torch.Tensor, name, counted)


@pytest.mark.parametrize("layer, speaker_norm", [("0", True), ("0", False), ("concat", True)])
def test_device_gathers_centre_rows_as_the_host_does(layer, speaker_norm):
    """take() without the host's numpy gathers (the path a GPU runs) gives the same bits."""
    rng = np.random.default_rng(1)
    raw = (rng.normal(size=(40, 2 if layer == "concat" else 1, 5)) * 4 + 1).astype(np.float16)
    cache = CenteredCache(raw, np.arange(40) % 6, layer, speaker_norm)
    idx = torch.tensor([39, 0, 7, 7, 21])
    on_host = cache.take(idx, "cpu")
    assert torch.equal(cache.take(idx, ACCELERATOR_CODE), on_host) and torch.equal(
        on_host, torch.from_numpy(cache.rows(idx.numpy()))
    )
    assert cache.take(idx[:0], ACCELERATOR_CODE).shape == (0, *cache.row_shape)


def test_prompt_centred_rows_on_the_device_are_the_hosts():
    """PromptCentered.take without the host's path (a GPU's) subtracts the same prompt means, bit for bit."""
    rng = np.random.default_rng(2)
    base = CenteredCache((rng.normal(size=(30, 1, 4)) * 3).astype(np.float16), np.arange(30) % 3, "0", True)
    centred = PromptCentered.fit(base, ["a"] * 12 + ["b"] * 12 + ["c"] * 6, np.arange(24))
    idx = torch.tensor([0, 13, 29, 5])
    on_host = centred.take(idx, "cpu")
    assert torch.equal(on_host, torch.from_numpy(centred.rows(idx.numpy())))
    assert not torch.equal(on_host, base.take(idx, "cpu"))  # prompts a and b lost their means
    assert torch.equal(centred.take(idx, ACCELERATOR_CODE), on_host)


def test_fold_tensors_live_on_the_run_device():
    data = fold()
    dev = torch.device("cpu")
    tensors = [v for v in vars(data).values() if torch.is_tensor(v)]
    assert tensors and all(t.device == dev for t in tensors)
    for rows in (data.x_unl, data.x_test, data.x_train_all):
        assert rows.device == dev and all(r.device == dev for _, r in rows.parts)
        assert rows[torch.arange(3)].device == dev and rows[torch.arange(3)].dtype == torch.float32


def test_a_refit_round_brings_only_aggregates_to_the_host(monkeypatch):
    """Two B-GRPO refit rounds with the default recipe (pool-wide Sinkhorn, LDA teacher on the
    device, L-BFGS refits, per-round curves): no copy larger than a C x C confusion matrix."""
    data, cfg = fold(ACCELERATOR_CODE), recipe()
    warm = fit_supervised(new_policy(cfg, data.standardizer, N_CLASSES, 1, "cpu"), data.x_lab, data.y_lab, cfg,
                          torch.Generator().manual_seed(0))
    teacher = LDATeacher([data.x_lab, data.x_val, data.x_unl], N_CLASSES, 8, seed=0, placement=data.placement)
    teacher.fit(data.x_lab, data.y_lab)
    curves = []
    copies = HostCopies(monkeypatch)
    generator = torch.Generator().manual_seed(0)
    BGRPO(Settings.of(cfg), head_refitter(cfg, data, generator, 3), teacher,
          Monitor(data, "bgrpo", curves, cfg.refit_rounds).end_round).fit(warm, Pool.of(data), generator)
    monkeypatch.undo()
    assert len(curves) == 2 and curves[-1]["selection_rate"] > 0
    assert copies.sizes and max(copies.sizes) <= N_CLASSES * N_CLASSES, sorted(copies.sizes)[-5:]


@pytest.mark.filterwarnings("ignore:Only one sample available")
def test_shrinkage_lda_is_scikit_learns_estimator():
    """coef, intercept and probabilities of the torch port equal scikit-learn's lsqr + Ledoit-Wolf
    LDA (float64 input), with a one-row class and a constant feature among the cases."""
    rng = np.random.default_rng(7)
    for n_classes, n, k in ((3, 90, 5), (2, 40, 3), (4, 61, 6)):
        y = np.concatenate([np.arange(n - 1) % (n_classes - 1), [n_classes - 1]])  # the last class: one row
        z = rng.normal(size=(n, k)) * rng.uniform(0.5, 3, k) + rng.normal(size=(n_classes, k))[y] * 2
        z[:, 0] = 1.5  # constant feature
        ref = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto").fit(z, y)
        coef, intercept = shrinkage_lda(torch.as_tensor(z), torch.as_tensor(y), n_classes)
        probs = torch.softmax(torch.as_tensor(z) @ coef.T + intercept, 1).numpy()
        np.testing.assert_allclose(probs, ref.predict_proba(z), atol=1e-10)
        if n_classes > 2:  # binary: scikit-learn keeps the difference of the two rows
            np.testing.assert_allclose(coef.numpy(), ref.coef_, rtol=1e-8, atol=1e-10)
            np.testing.assert_allclose(intercept.numpy(), ref.intercept_, rtol=1e-8, atol=1e-10)


def test_lda_teacher_on_the_device_gives_the_host_teachers_probabilities():
    data = fold()
    sources = [data.x_lab, data.x_val, data.x_unl]
    host = LDATeacher(sources, N_CLASSES, 8, seed=0).fit(data.x_lab, data.y_lab)
    device = LDATeacher(sources, N_CLASSES, 8, seed=0, placement=ACCELERATOR_CODE).fit(data.x_lab, data.y_lab)
    assert not host.on_device and device.on_device and torch.is_tensor(device.classes_)
    x = data.x_unl[:]
    p_host, p_device = host.probs(x), device.probs(x)
    assert p_device.dtype == torch.float32 and p_device.device == x.device
    assert torch.allclose(p_host, p_device, atol=1e-4)  # scikit-learn computes in float32 here
    # a fit on three of the four classes: the missing one gets probability 0 on both
    three = data.y_lab < 3
    assert torch.equal(host.fit(data.x_lab[three], data.y_lab[three]).probs(x)[:, 3], torch.zeros(len(x)))
    assert torch.equal(device.fit(data.x_lab[three], data.y_lab[three]).probs(x)[:, 3], torch.zeros(len(x)))


def test_group_sums_add_rows_in_order_on_the_cpu():
    """The Sinkhorn column sums: on the CPU rows are added one after the other, one group or many."""
    q = torch.rand(3000, 3) * torch.logspace(-5, 3, 3000)[:, None]
    for n_groups in (1, 4):
        gid = torch.randint(0, n_groups, (3000,))
        expected = torch.zeros(n_groups, 3)
        for i in range(3000):  # the sequential reference
            expected[gid[i]] += q[i]
        assert torch.equal(group_sums(q, gid, n_groups), expected)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_a_gpu_fold_gives_the_cpu_fold_numbers():
    """Where a GPU is present: the same fold's inputs bit for bit, and the trained policies'
    probabilities to float32 rounding (reductions run in another order there)."""
    cpu, gpu = fold("cpu"), fold("cuda")
    assert torch.equal(cpu.x_unl[:], gpu.x_unl[:].cpu()) and torch.equal(cpu.x_lab, gpu.x_lab.cpu())
    cfg = recipe()
    heads = [fit_supervised(new_policy(cfg, d.standardizer, N_CLASSES, 1, dev), d.x_lab, d.y_lab, cfg,
                            torch.Generator().manual_seed(0)) for d, dev in ((cpu, "cpu"), (gpu, "cuda"))]
    assert torch.allclose(heads[0].probs(cpu.x_unl[:]), heads[1].probs(gpu.x_unl[:]).cpu(), atol=1e-4)


def test_the_accelerators_code_path_trains_like_the_hosts(synthetic_cache, tmp_path, monkeypatch):
    """A whole fold x seed of the default recipe through the torch code every non-CPU device runs
    (here on the CPU): the warm-up is the host's bit for bit (same inputs, same fit), and B-GRPO,
    whose teacher is now the torch LDA rather than scikit-learn's, predicts the test fold alike."""
    cache = synthetic_cache(tmp_path / "c.h5", n_classes=4, n_speakers=12, per_class=10, n_folds=3, signal=0.5)
    cfg = TrainConfig(methods=("supervised", "bgrpo"), seeds=(0,), device="cpu").to_dict()
    host = run_job(cfg, str(cache), "0", 0)
    monkeypatch.setattr(Placement, "HOST_TYPES", ())  # the one decision: no device takes the host's path
    device = run_job(cfg, str(cache), "0", 0)
    preds = [np.array(r["predictions"]["bgrpo"]) for r in (host, device)]
    assert host["predictions"]["supervised"] == device["predictions"]["supervised"]
    assert (preds[0] == preds[1]).mean() >= 0.95, (preds[0] != preds[1]).sum()
