"""The policy pi_theta(c|x): standardisation buffers, SUPERB-style softmax layer weights (when
several layers come in), then a linear or small MLP head. Saved with safetensors.
"""
from __future__ import annotations

import copy
import json
from dataclasses import fields
from pathlib import Path

import torch
from torch import nn

from data_manifests.storage import atomic_path
from trainer.inputs.speaker_prior import SpeakerPrior


class Policy(nn.Module):
    def __init__(self, n_layers: int, dim: int, n_classes: int, head: str = "mlp", hidden: int = 256,
                 dropout: float = 0.2):
        """The standardisation statistics are buffers so that a saved policy is self-contained."""
        super().__init__()
        self.arch = dict(n_layers=n_layers, dim=dim, n_classes=n_classes, head=head, hidden=hidden, dropout=dropout)
        self.register_buffer("feat_mean", torch.zeros(n_layers, dim))
        self.register_buffer("feat_std", torch.ones(n_layers, dim))
        self.layer_logits = nn.Parameter(torch.zeros(n_layers)) if n_layers > 1 else None
        if head == "linear":
            self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, n_classes))
        else:
            self.head = nn.Sequential(
                nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, n_classes)
            )

    def set_standardizer(self, mean, std) -> None:
        self.feat_mean.copy_(torch.as_tensor(mean))
        self.feat_std.copy_(torch.as_tensor(std))

    def layer_weights(self) -> torch.Tensor:
        if self.layer_logits is None:
            return torch.ones(1, device=self.feat_mean.device)
        return torch.softmax(self.layer_logits, 0)

    def standardize(self, x: torch.Tensor) -> torch.Tensor:
        """Prepared features -> the policy's input (training-fold z-scores); done once per fold in training."""
        return (x - self.feat_mean) / self.feat_std

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z: [N, L, D] standardised features -> logits [N, C]."""
        z = torch.matmul(self.layer_weights(), z) if self.layer_logits is not None else z[:, 0]
        return self.head(z)

    @torch.no_grad()
    def probs(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities with dropout off (pi_old, pi_ref, teachers, evaluation)."""
        was = self.training
        self.eval()
        p = torch.softmax(self(x), 1)
        self.train(was)
        return p

    def frozen_copy(self) -> "Policy":
        twin = copy.deepcopy(self).eval()
        for p in twin.parameters():
            p.requires_grad_(False)
        return twin


RUN_KEY = "run"  # the header's metadata: {"meta": the run's cache and choices, "arch": each policy's shape}
PROMPT_MEANS = "~prompt_means"  # key prefix of the saved prompt means (text_norm), one tensor per policy
SPEAKER_PRIOR = "~speaker_prior"  # key prefix of a speaker_norm policy's SpeakerPrior: <prefix>/<policy>/<field>
PRIOR_FIELDS = tuple(f.name for f in fields(SpeakerPrior))  # one tensor each


def speaker_prior_tensors(name: str, prior: SpeakerPrior) -> dict:
    """The extra tensors that store policy `name`'s SpeakerPrior (float64) in models.safetensors."""
    return {f"{SPEAKER_PRIOR}/{name}/{k}": torch.as_tensor(getattr(prior, k)) for k in PRIOR_FIELDS}


def stored_speaker_prior(extra: dict, name: str) -> SpeakerPrior | None:
    """Policy `name`'s SpeakerPrior from load_policies' meta["extra"]; None for runs saved before it."""
    keys = [f"{SPEAKER_PRIOR}/{name}/{k}" for k in PRIOR_FIELDS]
    return SpeakerPrior(*(extra[k].numpy() for k in keys)) if all(k in extra for k in keys) else None


def save_policies(path, policies: dict[str, Policy], meta: dict, extra: dict | None = None) -> Path:
    """Several policies (e.g. one per fold x seed) in one safetensors file, atomically; `extra` holds
    further named tensors (keys outside the policies' names, e.g. PROMPT_MEANS/<policy>)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {f"{name}/{k}": v.detach().cpu().contiguous() for name, pol in policies.items()
               for k, v in pol.state_dict().items()}
    tensors.update({k: v.detach().cpu().contiguous() for k, v in (extra or {}).items()})
    arch = {name: pol.arch for name, pol in policies.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=run_metadata(meta, arch))
    return path


def run_metadata(meta: dict, arch: dict) -> dict:
    """The header metadata of models.safetensors: one key, as safetensors writes several in a random
    order (its issue #584), so the same run would not be the same bytes."""
    return {RUN_KEY: json.dumps({"meta": meta, "arch": arch})}


def stored_run(metadata: dict) -> tuple[dict, dict]:
    """(meta, arch) from a models.safetensors header (RUN_KEY; runs saved before it: "meta" and "arch")."""
    both = (
        json.loads(metadata[RUN_KEY]) if RUN_KEY in metadata else {k: json.loads(metadata[k]) for k in ("meta", "arch")}
    )
    return both["meta"], both["arch"]


def load_policies(path) -> tuple[dict[str, Policy], dict]:
    """(policies by name, meta); meta["extra"] holds the further tensors saved beside them."""
    from safetensors import safe_open

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: train with `python cli.py train ... --out DIR` first")
    with safe_open(str(path), framework="pt") as f:
        meta, arch = stored_run(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    policies = {}
    for name, a in arch.items():
        pol = Policy(**a)
        pol.load_state_dict({k.split("/", 1)[1]: v for k, v in tensors.items() if k.split("/", 1)[0] == name})
        policies[name] = pol.eval()
    meta["extra"] = {k: v for k, v in tensors.items() if k.split("/", 1)[0] not in arch}
    return policies, meta
