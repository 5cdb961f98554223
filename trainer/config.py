"""All hyper-parameters of one training run in one validated, JSON-serialisable dataclass.

Each field is written once: its default, its type (a `Literal` lists the choices), its help and its
allowed range live on the field, and one generic `validate` reads them. `train --set field=value`,
`train --recipe FILE.toml`, `ablate`'s grid file and `config.json` all set fields by name;
`python cli.py recipe` prints every field with its default and help (a valid recipe file).

Defaults = the project's recipe (docs/METHOD.md; chosen with the inner-validation protocol, see
docs/RESULTS.md and, for the choices made per run, docs/CORPORA.md): middle layer, speaker centring
and prompt-mean removal (text_norm) chosen per run from the labelled subset
(trainer/inputs/auto_choices.py), linear head fitted by L-BFGS, B-GRPO in refit
rounds with balanced actions on sqrt(pi_old * T) from a shrinkage-LDA teacher and the assignment
confidence as reward. SPEC section 5's literal form is `SPEC_FORM` below.
"""
from __future__ import annotations

import dataclasses
import functools
import tomllib
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from data_manifests.errors import UserError

Method = Literal["bgrpo", "supervised", "pseudo-label", "dino", "topline"]
METHODS = typing.get_args(Method)


def option(default, help: str, within: str | None = None, check=None, group: str = ""):
    """A config field: default, help text, an optional range ("(0, 1]", ">= 1") and an optional
    check(value) -> error text or None for values a type cannot describe."""
    kw = {"default_factory": lambda: default} if isinstance(default, (list, dict)) else {"default": default}
    return dataclasses.field(metadata={"help": help, "within": within, "check": check, "group": group}, **kw)


def _layer_error(v: str) -> str | None:
    ok = v in ("auto", "weighted", "concat", "middle") or v.lstrip("-").isdigit()
    return None if ok else "'auto', an integer hidden-state index, 'middle', 'weighted' or 'concat'"


def _teacher_error(v: str) -> str | None:
    return None if v in ("ema", "frozen", "lda") or v.startswith("cache:") else "ema, frozen, lda or cache:FILE.h5"


def _label_map_error(v: str) -> str | None:
    from trainer.inputs.source_corpora import parse_label_map  # it imports nothing from here

    try:
        parse_label_map(v)
    except UserError as error:
        return str(error)
    return None


def _cross_field_problem(cfg) -> str | None:
    """What two fields together do not allow (None = fine)."""
    if cfg.labeled_fraction == 0 and not cfg.source_corpora:
        return ("labeled_fraction = 0 leaves no labelled rows: give source_corpora (labels from other corpora) "
                "or a share > 0")
    if cfg.source_corpora and cfg.layer == "auto":
        return ("layer = 'auto' with source_corpora: not supported yet (its CV reads the cache's own labels); "
                "use a fixed layer (e.g. middle)")
    if cfg.source_corpora and cfg.teacher.startswith("cache:"):
        return "teacher = cache:... with source_corpora: the other cache has no source rows; use teacher = lda"
    return None


def _reward_error(v: str) -> str | None:
    from trainer.method.rewards import parse_reward  # rewards imports nothing from here

    try:
        parse_reward(v)
    except ValueError as error:
        return str(error).removeprefix("invalid config: ")
    return None


@dataclass
class TrainConfig:
    # --- protocol (SPEC 2)
    methods: tuple[Method, ...] = option(
        ("bgrpo", "supervised"),
        "Methods to run: bgrpo, supervised, pseudo-label, dino, topline.",
        group="protocol (SPEC 2)",
    )
    labeled_fraction: float = option(0.1, "Stratified labelled share of each training fold.", "[0, 1]")
    val_fraction: float = option(
        0.0, "Share of the labelled subset held out to choose epochs (0 = fixed epochs).", "[0, 1)"
    )
    folds: tuple[str, ...] | None = option(None, "Folds to run (none = every fold of the cache).")
    seeds: tuple[int, ...] = option(
        (0, 1, 2), "Seeds; every fold runs once per seed.", check=lambda v: None if v else "at least one seed"
    )
    transductive: bool = option(False, "Also put the test fold's audio (no labels) into the pool.")
    inner_validation: bool = option(
        False, "Model selection: drop each test fold and score the next fold's speakers instead."
    )
    unlabeled_cache: str | None = option(
        None,
        "Comma list of other caches (same encoder and window) whose utterances join the pool as separate sources "
        "(labels never used; trainer/inputs/sources.py).",
    )
    source_corpora: str | None = option(
        None,
        "Comma list of labelled source corpora: caches (same encoder and window) whose rows of the classes in play "
        "are the labelled rows, each centred and standardised on its own audio; the cache's own labels then come only "
        "from labeled_fraction (trainer/inputs/source_corpora.py, docs/CROSS_CORPUS.md).",
    )
    source_fraction: float = option(
        1.0,
        "source_corpora: stratified share of each source corpus's rows of the classes in play used as labelled rows.",
        "(0, 1]",
    )
    pool_keep: float = option(
        1.0,
        "Share of the pool the pool methods learn from: the rows nearest (z-scored, Euclidean) to a labelled class "
        "mean (label-free trimming of audio of classes the labelled rows lack; 1 = all).",
        "(0, 1]",
    )
    classes: tuple[str, ...] | None = option(
        None,
        "Classes in play (none = the cache's labels; with source_corpora the sources' classes that the cache has "
        "too). Rows of other classes are never trained on or scored; the pool keeps them.",
    )
    label_map: str | None = option(
        None,
        "raw=label pairs, comma separated, renaming labels of the cache and of the source corpora before classes are "
        "matched (e.g. 'joy=happy,anger=angry').",
        check=lambda v: _label_map_error(v),
    )
    source_prior: Literal["joint", "labelled", "em"] = option(
        "labelled",
        "unlabeled_cache: balanced assignment over the union with the labelled prior (joint), or one plan per source: "
        "the labelled prior (labelled) or each source's EM-estimated prior (em).",
    )
    source_gate: Literal["cv", "off"] = option(
        "cv",
        "unlabeled_cache: per fold x seed, speaker-grouped CV of bgrpo on the labelled subset decides (cv: one-sided "
        "paired tests on the held-out rows, p < 0.05): another corpus is kept only if shown to help, a copy of the "
        "labelled corpus (its own utterances through another channel or speed, `shift`) unless shown to hurt; or "
        "always keep it (off).",
    )
    # --- features (SPEC 3)
    layer: str = option(
        "middle",
        "Hidden-state index, 'middle' (L // 2), 'weighted' (softmax layer weights), 'concat', or 'auto' (chosen per "
        "run by speaker-grouped CV on the labelled subset).",
        check=_layer_error,
        group="features (SPEC 3)",
    )
    speaker_norm: Literal[True, False, "auto"] = option(
        "auto",
        "Subtract each speaker's mean embedding (label-free): true, false, or auto (per run: off when the labelled "
        "subset's labels depend on the speaker or speakers have < 8 utterances; trainer/inputs/auto_choices.py).",
    )
    text_norm: Literal[True, False, "auto"] = option(
        "auto",
        "Subtract each prompt's (text_id's) mean embedding after speaker centring, means from the run's training rows "
        "only (label-free; prompts with < 8 of them untouched): true, false, or auto (per run: off without prompt "
        "ids, when the median prompt has < 8 training utterances or a speaker says it in fewer takes than half the "
        "classes, or when the labelled subset's labels follow the prompt; trainer/inputs/auto_choices.py).",
    )
    pool_prior: Literal["labelled", "em"] = option(
        "labelled",
        "Class prior the balanced actions aim at: labelled (of the labelled subset) or em (EM prior adaptation over "
        "the pool, label-free).",
    )
    # --- head
    head: Literal["mlp", "linear"] = option("linear", "Policy head.", group="head")
    hidden: int = option(256, "MLP hidden units (head mlp).", ">= 1")
    dropout: float = option(0.2, "Dropout of the head (supervised training with solver adam).", "[0, 1)")
    weight_decay: float = option(1e-4, "Adam weight decay of supervised training and DINO.", ">= 0")
    # --- supervised warm-up (= `supervised`, pi_ref, start of B-GRPO; also `topline`)
    warmup_epochs: int = option(
        100,
        "Supervised warm-up (and topline) epochs (solver adam).",
        ">= 1",
        group="supervised fits (warm-up, refits, topline)",
    )
    warmup_lr: float = option(1e-3, "Supervised warm-up (and topline) learning rate (solver adam).", "> 0")
    solver: Literal["adam", "lbfgs"] = option(
        "lbfgs", "adam: mini-batch epochs; lbfgs: full-batch L-BFGS to convergence (calibrated head)."
    )
    l2: float = option(
        10.0, "solver lbfgs: penalty l2/2 ||W||^2 per unit of sample weight (= 1/C of a logistic regression).", ">= 0"
    )
    # --- B-GRPO (SPEC 4-5)
    update: Literal["grpo", "refit"] = option(
        "refit",
        "grpo: clipped policy-gradient steps (E6-E8); refit: each round the selected samples (A > 0) join the "
        "labelled set with their action, weighted by A, and the head is refitted.",
        group="B-GRPO (SPEC 4-5)",
    )
    refit_rounds: int = option(3, "Rounds of update refit.", ">= 1")
    reward: str = option(
        "assign",
        "self | teacher | self+teacher | '+'-joined r1..r5, assign (the assignment's confidence).",
        check=_reward_error,
    )
    action: Literal["sample", "greedy", "balanced"] = option(
        "balanced", "E1 actions: sample, greedy, or balanced (Sinkhorn assignment to the labelled class prior)."
    )
    balance_scope: Literal["pool", "batch", "speaker"] = option(
        "pool", "Group of the balanced assignment: the whole pool, each batch, or each speaker."
    )
    sinkhorn_iters: int = option(50, "Sinkhorn iterations of the balanced assignment.", ">= 1")
    sinkhorn_temp: float = option(1.0, "The assignment starts from p^(1/temp); < 1 = nearer a hard assignment.", "> 0")
    teacher: str = option(
        "lda",
        "ema | frozen | lda (shrinkage LDA refitted on each round's selection) | cache:OTHER.h5 (same utterances, "
        "another encoder).",
        check=_teacher_error,
    )
    tau: float = option(0.99, "EMA teacher decay (teacher ema; DINO).", "[0, 1]")
    lda_components: int = option(64, "teacher lda: PCA dimensions.", ">= 1")
    act_on: Literal["policy", "mix"] = option(
        "mix", "E1 acts on pi_old (policy) or on sqrt(pi_old * T) (mix, needs a teacher)."
    )
    baseline: Literal["batch", "class"] = option(
        "batch", "E4 baseline: the group's mean reward, or the mean over the group's samples with the same action."
    )
    adv_std: bool = option(False, "E5: divide r - b by the group's reward std.")
    batch_size: int = option(128, "Group size G (and mini-batch of adam fits and DINO).", ">= 2")
    mu: int = option(1, "update grpo: inner steps per group.", ">= 1")
    eps: float = option(0.2, "update grpo: E8 ratio clip.", "[0, 1)")
    beta: float = option(0.04, "update grpo: E8 weight of the exact KL to the warm-up policy.", ">= 0")
    lr: float = option(1e-4, "update grpo (and DINO): Adam learning rate.", "> 0")
    epochs: int = option(30, "update grpo / DINO: passes over the unlabelled pool.", ">= 0")
    ce_weight: float = option(0.0, "update grpo: weight of labelled cross-entropy added to the loss.", ">= 0")
    # --- baselines (SPEC 6)
    pl_threshold: float = option(0.9, "Pseudo-label confidence threshold.", "(0, 1]", group="baselines (SPEC 6)")
    pl_rounds: int = option(3, "Pseudo-label rounds.", ">= 1")
    dino_center_momentum: float = option(0.9, "DINO: momentum of the teacher's centre.", "[0, 1]")
    dino_teacher_temp: float = option(0.04, "DINO: teacher temperature.", "> 0")
    dino_student_temp: float = option(0.1, "DINO: student temperature.", "> 0")
    dino_noise: float = option(0.1, "DINO: strength of the feature-level augmentation.", "[0, 1)")
    # --- execution
    device: str = option("auto", "auto (cuda when present) | cpu | cuda | cuda:N.", group="execution")
    workers: int = option(1, "Parallel processes over folds x seeds.", ">= 1")
    threads: int = option(1, "Torch threads per process (small matrices: 1 is fastest); 0 = cores / workers.", ">= 0")
    save_models: bool = option(True, "Save the first method's policies (models.safetensors, for `predict`).")
    collapse_entropy: float = option(
        0.75, "Normalised entropy of the pool's prediction histogram below which a run counts as collapsed.", "[0, 1]"
    )

    def __post_init__(self):
        self.methods = tuple(self.methods if not isinstance(self.methods, str) else self.methods.split(","))
        self.seeds = _seeds(self.seeds)
        self.folds = None if self.folds is None else tuple(str(f) for f in _as_list(self.folds))
        self.classes = None if self.classes is None else tuple(c.strip() for c in map(str, _as_list(self.classes))
                                                               if c.strip()) or None
        self.layer = str(self.layer)
        self.speaker_norm = parse_switch(self.speaker_norm)
        self.text_norm = parse_switch(self.text_norm)
        for f in dataclasses.fields(self):  # TOML/JSON integers are fine where a float is meant
            if _hints()[f.name] is float and type(getattr(self, f.name)) is int:
                setattr(self, f.name, float(getattr(self, f.name)))
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the field, the value and what is allowed (from the field itself)."""
        for f in dataclasses.fields(self):
            problem = field_problem(f, getattr(self, f.name))
            if problem:
                raise UserError(f"invalid config: {f.name} = {getattr(self, f.name)!r}: {problem}")
        problem = _cross_field_problem(self)
        if problem:
            raise UserError(f"invalid config: {problem}")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        check_names(d, "config")
        return cls(**d)

    def replace(self, **changes) -> "TrainConfig":
        return TrainConfig.from_dict({**self.to_dict(), **changes})


@functools.cache
def _hints() -> dict:
    return typing.get_type_hints(TrainConfig)


def _type_problem(hint, value) -> str | None:
    """What is wrong with `value` for the annotation `hint` (None = fine)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return None if value in args else f"choose from {', '.join(map(str, args))}"
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        return _type_problem(next(a for a in args if a is not type(None)), value)
    if origin is tuple:
        bad = [v for v in value if _type_problem(args[0], v)]
        return None if not bad else f"{bad[0]!r}: {_type_problem(args[0], bad[0])}"
    if hint is float:
        return None if isinstance(value, (int, float)) and not isinstance(value, bool) else "a number"
    if hint is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else "an integer"
    if hint is bool:
        return None if isinstance(value, bool) else "true or false"
    if hint is str:
        return None if isinstance(value, str) else "a string"
    return None


def _range_problem(within: str, v) -> str | None:
    """`within` is an interval "(0, 1]" / "[0, 1)" or a bound ">= 1", "> 0"."""
    if within[0] in "([":
        lo, hi = (float(s) for s in within[1:-1].split(","))
        ok = (v > lo if within[0] == "(" else v >= lo) and (v < hi if within[-1] == ")" else v <= hi)
    else:
        op, bound = within.split()
        ok = v >= float(bound) if op == ">=" else v > float(bound)
    return None if ok else f"must be {'in ' if within[0] in '([' else ''}{within}"


def field_problem(f: dataclasses.Field, value) -> str | None:
    """Type (Literal choices), range and custom check of one field's value, in that order."""
    meta = f.metadata
    return (_type_problem(_hints()[f.name], value)
            or (meta["within"] and _range_problem(meta["within"], value))
            or (meta["check"] and value is not None and meta["check"](value)) or None)


def _as_list(value) -> list:
    """A list field's value: a list, or one comma-separated string (`--set seeds=0,1`)."""
    return value.split(",") if isinstance(value, str) else list(value) if isinstance(value, (list, tuple)) else [value]


def _seeds(value) -> tuple[int, ...]:
    """The seeds as integers, or a UserError naming what is not one (not a ValueError traceback)."""
    try:
        seeds = tuple(int(s) for s in _as_list(value) if str(s).strip())
    except (TypeError, ValueError) as error:
        raise UserError(f"invalid config: seeds = {value!r}: integers, e.g. [0, 1, 2] ({error})") from None
    if not seeds:
        raise UserError("invalid config: seeds is empty: list at least one seed, e.g. [0, 1, 2]")
    return seeds


def parse_switch(value):
    """True / False / "auto" from a bool or text (auto, on, off, true, false); other values are left
    for validate() to name."""
    table = {"auto": "auto", "on": True, "true": True, "off": False, "false": False}
    return table.get(value.strip().lower(), value) if isinstance(value, str) else value


def field_names() -> list[str]:
    return [f.name for f in dataclasses.fields(TrainConfig)]


def check_names(settings: dict, where: str) -> None:
    unknown = sorted(set(settings) - set(field_names()))
    if unknown:
        raise UserError(f"invalid {where}: unknown field(s) {', '.join(unknown)}; "
                         f"`python cli.py recipe` lists them all")


def parse_set(pairs: list[str]) -> dict:
    """`--set field=value` pairs -> settings; each value is read as a TOML value (3, 1e-3, true,
    ["a", "b"]) and, when it is not one, as plain text (so `--set teacher=lda` needs no quotes)."""
    out = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name.strip():
            raise UserError(f"--set {pair!r}: write field=value, e.g. --set refit_rounds=5")
        try:
            value = tomllib.loads(f"v = {text.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = text.strip()
        out[name.strip()] = value
    check_names(out, "--set")
    return out


def read_toml(path) -> dict:
    """A TOML file as a dict, with a clear error naming the file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found (`python cli.py recipe > {path.name}` writes one with every field)")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise UserError(f"{path}: not valid TOML ({error})") from error


def read_recipe(path) -> dict:
    """A recipe file: top-level `field = value` lines, the format of `ablate`'s [base] table."""
    settings = read_toml(path)
    check_names(settings, str(path))
    return settings


def _default(f: dataclasses.Field):
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


def flag_help(name: str) -> str:
    """The help of a command-line flag that sets field `name`: the field's help and its default."""
    f = TrainConfig.__dataclass_fields__[name]
    default = _default(f)
    if default is None:
        return f.metadata["help"]
    if isinstance(default, bool):
        shown = "on" if default else "off"
    else:
        shown = ",".join(map(str, default)) if isinstance(default, (list, tuple)) else str(default)
    return f"{f.metadata['help']} (recipe: {shown})"


def recipe_text() -> str:
    """Every field as `name = default` with its help above it: a recipe file of the defaults."""
    lines = []
    for f in dataclasses.fields(TrainConfig):
        if f.metadata["group"]:
            lines.append(f"\n# --- {f.metadata['group']}")
        default = _default(f)
        choices = typing.get_args(_hints()[f.name]) if typing.get_origin(_hints()[f.name]) is Literal else ()
        note = f"  [one of {', '.join(c if isinstance(c, str) else _toml_value(c) for c in choices)}]" if choices else \
            (f"  [range {f.metadata['within']}]" if f.metadata["within"] else "")
        lines.append(f"# {f.metadata['help']}{note}")
        lines.append(f"{f.name} = {_toml_value(default)}" if default is not None else f"# {f.name} = (unset)")
    return "\n".join(lines).lstrip("\n") + "\n"


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(v)


# SPEC section 5 read literally (what the first prototypes ran): the baseline form of the method,
# kept runnable for ablations and tests, e.g. TrainConfig(**SPEC_FORM).
SPEC_FORM = dict(layer="weighted", speaker_norm=False, head="mlp", solver="adam", reward="self+teacher",
                 action="sample", sinkhorn_temp=0.1, teacher="ema", act_on="policy", update="grpo",
                 refit_rounds=3)
