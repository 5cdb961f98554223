"""The comparison methods of SPEC 6 besides the warm-up: pseudo-labelling (the self-training loop
with a confidence threshold as its selection) and DINO."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from trainer.inputs.fold_data import FoldData
from trainer.method.monitor import Monitor, selection_diagnostics
from trainer.method.policy import Policy
from trainer.method.self_training import Selection, head_refitter, self_train
from trainer.method.teachers import EMATeacher


def pseudo_label_selection(policy: Policy, data: FoldData, threshold: float) -> Selection:
    """Pool rows whose max probability exceeds `threshold`, labelled with the prediction."""
    p = data.x_unl.map(policy.probs)
    conf, pred = p.max(1)
    keep = conf > threshold
    return Selection(keep.nonzero().flatten(), pred[keep], None,
                     selection_diagnostics(pred, keep.float(), conf, data.y_unl_hidden, p, data.n_classes))


def train_pseudo_label(warm: Policy, data: FoldData, cfg, seed: int,
                       generator: torch.Generator, monitor: Monitor) -> Policy:
    """Self-training: each round the confident pool predictions join the labelled set."""
    select = lambda policy, rnd: pseudo_label_selection(policy, data, cfg.pl_threshold)  # noqa: E731
    return self_train(warm, data, select, cfg.pl_rounds, head_refitter(cfg, data, generator, seed), monitor)


def augment(z: torch.Tensor, noise: float, generator: torch.Generator) -> torch.Tensor:
    """Feature-level view of standardised features: dims dropped to the training mean (p = noise),
    Gaussian noise of `noise` training standard deviations, and with several layers each layer
    rescaled at random (a perturbation of the layer mix)."""
    g = dict(generator=generator)
    keep = (torch.rand(z.shape, **g) >= noise).to(z.device, z.dtype)
    layer_scale = (1 + noise * torch.randn(z.shape[0], z.shape[1], 1, **g)).to(z.device, z.dtype)
    return z * keep * layer_scale + noise * torch.randn(z.shape, **g).to(z.device, z.dtype)


def train_dino(warm: Policy, data: FoldData, cfg, generator: torch.Generator, monitor: Monitor) -> Policy:
    """Self-distillation on the pool (student vs EMA teacher on two views, teacher centred and
    sharpened) plus labelled cross-entropy; same epochs, batch size and lr as B-GRPO."""
    student = warm.frozen_copy()
    for p in student.parameters():
        p.requires_grad_(True)
    student.train()
    teacher = EMATeacher(warm, cfg.tau)
    center = torch.zeros(data.n_classes, device=data.x_unl.device)
    opt = torch.optim.Adam(student.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=False, fused=True)
    n_u, dev = len(data.x_unl), data.x_unl.device
    for epoch in range(cfg.epochs):
        for idx in torch.randperm(n_u, generator=generator).to(dev).split(cfg.batch_size):
            views = [augment(data.x_unl[idx], cfg.dino_noise, generator) for _ in range(2)]
            with torch.no_grad():
                t_logits = [teacher.model(v) for v in views]
                t_probs = [F.softmax((t - center) / cfg.dino_teacher_temp, 1) for t in t_logits]
            s_logp = [F.log_softmax(student(v) / cfg.dino_student_temp, 1) for v in views]
            distill = -((t_probs[0] * s_logp[1]).sum(1).mean() + (t_probs[1] * s_logp[0]).sum(1).mean()) / 2
            lab = torch.randint(len(data.x_lab), (min(cfg.batch_size, len(data.x_lab)),), generator=generator).to(dev)
            loss = distill + F.cross_entropy(student(data.x_lab[lab]), data.y_lab[lab])
            opt.zero_grad()
            loss.backward()
            opt.step()
            teacher.update(student)
            with torch.no_grad():
                center = cfg.dino_center_momentum * center + (1 - cfg.dino_center_momentum) * torch.cat(t_logits).mean(
                    0
                )
        monitor.end_epoch(student, epoch)
    monitor.finish(student)
    return student.eval()
