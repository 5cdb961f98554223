"""All hyper-parameters of one training run in one validated, JSON-serialisable dataclass.

Defaults = the project's recipe (README "Method"; chosen with the inner-validation protocol, see
docs/RESULTS.md and, for the choices made per run, docs/CORPORA.md): layer and speaker centring
chosen per run from the labelled subset (trainer/auto_choices.py), linear head fitted by L-BFGS, B-GRPO in refit
rounds with balanced actions on sqrt(pi_old * T) from a shrinkage-LDA teacher and the assignment
confidence as reward. SPEC section 5's literal form is `--update grpo --action sample
--reward self+teacher --teacher ema --act-on policy --head mlp --solver adam` (docs/RESULTS.md).
`ablate` varies any field by name, `config.json` stores it.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

METHODS = ("bgrpo", "supervised", "pseudo-label", "dino", "topline")
ACTIONS = ("sample", "greedy", "balanced")
BALANCE_SCOPES = ("pool", "batch", "speaker")
HEADS = ("mlp", "linear")


@dataclass
class TrainConfig:
    # --- protocol (SPEC 2)
    methods: tuple = ("bgrpo", "supervised")
    labeled_fraction: float = 0.1
    val_fraction: float = 0.0
    folds: tuple | None = None  # None = every fold of the cache
    seeds: tuple = (0, 1, 2)
    transductive: bool = False
    inner_validation: bool = False  # score on the next fold's speakers, outer test fold dropped (model selection)
    unlabeled_cache: str | None = None
    # --- features (SPEC 3)
    # issue 14: "auto" = chosen per run from the labelled subset only (trainer/auto_choices.py)
    layer: str = "middle"  # "auto", an int as text, "middle" (L // 2), "weighted" (SUPERB softmax weights) or "concat"
    speaker_norm: bool | str = "auto"  # True, False or "auto"
    pool_prior: str = "labelled"  # class prior the balanced actions aim at: "labelled" (of L) or "em" (Saerens EM over the pool)
    # --- head
    head: str = "linear"
    hidden: int = 256
    dropout: float = 0.2
    weight_decay: float = 1e-4
    # --- supervised warm-up (= `supervised`, pi_ref, start of B-GRPO; also `topline`)
    warmup_epochs: int = 100
    warmup_lr: float = 1e-3
    solver: str = "lbfgs"  # adam: mini-batch epochs; lbfgs: full-batch L-BFGS to convergence (calibrated head)
    l2: float = 10.0  # lbfgs: penalty l2/2 ||W||^2 per unit of sample weight (= 1/C of a logistic regression)
    # --- B-GRPO (SPEC 4-5)
    reward: str = "assign"
    action: str = "balanced"
    balance_scope: str = "pool"
    sinkhorn_iters: int = 50
    sinkhorn_temp: float = 1.0  # plan starts from p^(1/temp); < 1 = nearer a hard assignment
    teacher: str = "lda"  # ema | frozen | lda | cache:FILE.h5
    tau: float = 0.99
    lda_components: int = 64  # --teacher lda: PCA dimensions of the shrinkage-LDA teacher
    act_on: str = "mix"  # E1 acts on pi_old ("policy") or on sqrt(pi_old * T) ("mix", needs a teacher)
    adv_std: bool = False
    mu: int = 1
    eps: float = 0.2
    beta: float = 0.04
    lr: float = 1e-4
    batch_size: int = 128
    epochs: int = 30
    ce_weight: float = 0.0
    baseline: str = "batch"  # E4: batch mean, or "class": mean over the batch samples with the same action
    update: str = "refit"  # grpo: E6-E8 gradient steps; refit: selected samples (A>0) join L, fresh head (SPEC 8)
    refit_rounds: int = 3
    # --- baselines (SPEC 6)
    pl_threshold: float = 0.9
    pl_rounds: int = 3
    dino_center_momentum: float = 0.9
    dino_teacher_temp: float = 0.04
    dino_student_temp: float = 0.1
    dino_noise: float = 0.1
    # --- execution
    device: str = "cpu"
    workers: int = 1
    threads: int = 1  # torch threads per worker process (small matrices: 1 is fastest); 0 = cores / workers
    save_models: bool = True
    collapse_entropy: float = 0.75  # normalised entropy of the prediction histogram below which a run "collapsed"

    def __post_init__(self):
        self.methods = tuple(self.methods if not isinstance(self.methods, str) else self.methods.split(","))
        self.seeds = tuple(int(s) for s in self.seeds)
        self.folds = None if self.folds is None else tuple(str(f) for f in self.folds)
        self.layer = str(self.layer)
        self.speaker_norm = parse_speaker_norm(self.speaker_norm)
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the field and its allowed values."""
        def need(ok, msg):
            if not ok:
                raise ValueError(f"invalid config: {msg}")
        unknown = [m for m in self.methods if m not in METHODS]
        need(self.methods and not unknown, f"--method {','.join(unknown) or '(empty)'}: choose from {', '.join(METHODS)}")
        need(0 < self.labeled_fraction <= 1, "--labeled-fraction must be in (0, 1]")
        need(0 <= self.val_fraction < 1, "--val-fraction must be in [0, 1)")
        need(len(self.seeds) > 0, "--seeds must list at least one seed")
        need(self.pool_prior in ("labelled", "em"), f"--pool-prior {self.pool_prior!r}: labelled or em")
        need(self.layer in ("auto", "weighted", "concat", "middle") or self.layer.lstrip("-").isdigit(),
             f"--layer {self.layer!r}: 'auto', an integer hidden-state index, 'middle', 'weighted' or 'concat'")
        need(self.head in HEADS, f"--head {self.head!r}: choose from {', '.join(HEADS)}")
        need(self.action in ACTIONS, f"--action {self.action!r}: choose from {', '.join(ACTIONS)}")
        need(self.balance_scope in BALANCE_SCOPES, f"--balance-scope {self.balance_scope!r}: choose from {', '.join(BALANCE_SCOPES)}")
        need(self.teacher in ("ema", "frozen", "lda") or self.teacher.startswith("cache:"),
             f"--teacher {self.teacher!r}: ema, frozen, lda or cache:FILE.h5")
        need(self.act_on in ("policy", "mix"), f"--act-on {self.act_on!r}: policy or mix")
        need(self.lda_components >= 1, "--lda-components must be >= 1")
        need(self.solver in ("adam", "lbfgs") and self.l2 >= 0, f"--solver {self.solver!r}: adam or lbfgs (--l2 >= 0)")
        need(0 <= self.tau <= 1, "--tau must be in [0, 1]")
        need(self.baseline in ("batch", "class"), f"--baseline {self.baseline!r}: batch or class")
        need(self.update in ("grpo", "refit") and self.refit_rounds >= 1, f"--update {self.update!r}: grpo or refit (--refit-rounds >= 1)")
        need(self.mu >= 1, "--mu must be >= 1")
        need(0 <= self.eps < 1, "--eps must be in [0, 1)")
        need(self.beta >= 0 and self.ce_weight >= 0, "--beta and --ce-weight must be >= 0")
        need(self.lr > 0 and self.warmup_lr > 0, "learning rates must be > 0")
        need(self.batch_size >= 2, "--batch-size must be >= 2 (the batch is the group)")
        need(self.epochs >= 0 and self.warmup_epochs >= 1, "epochs must be >= 0 (warm-up >= 1)")
        need(self.hidden >= 1 and 0 <= self.dropout < 1 and self.weight_decay >= 0, "head sizes/regularisers out of range")
        need(0 < self.pl_threshold <= 1 and self.pl_rounds >= 1, "--pl-threshold in (0, 1], --pl-rounds >= 1")
        need(self.workers >= 1 and self.threads >= 0 and self.sinkhorn_iters >= 1 and self.sinkhorn_temp > 0,
             "workers/threads/sinkhorn_iters/sinkhorn_temp out of range")
        from trainer.rewards import parse_reward  # late import: rewards imports nothing from here
        parse_reward(self.reward)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"invalid config: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
        return cls(**d)

    def replace(self, **changes) -> "TrainConfig":
        return TrainConfig.from_dict({**self.to_dict(), **changes})


# SPEC section 5 read literally (what the first prototypes ran): the baseline form of the method,
# kept runnable for ablations and tests, e.g. TrainConfig(**SPEC_FORM).
SPEC_FORM = dict(layer="weighted", speaker_norm=False, head="mlp", solver="adam", reward="self+teacher",
                 action="sample", sinkhorn_temp=0.1, teacher="ema", act_on="policy", update="grpo",
                 refit_rounds=3)


def parse_speaker_norm(value) -> bool | str:
    """True / False / "auto" from a bool or the CLI's text (auto, on, off, true, false)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    table = {"auto": "auto", "on": True, "true": True, "1": True, "off": False, "false": False, "0": False}
    if text not in table:
        raise ValueError(f"invalid config: --speaker-norm {value!r}: auto, on or off")
    return table[text]


def field_names() -> list[str]:
    return [f.name for f in dataclasses.fields(TrainConfig)]

