"""One test per training option, each checking what that option does (not just that a run ends)."""
import tomllib

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from trainer.method.bgrpo import BGRPO, Pool, Scored, Settings, advantage, score_rows
from trainer.config import SPEC_FORM, TrainConfig, field_names, recipe_text
from trainer.inputs.feature_store import CenteredCache, FeatureRows
from trainer.inputs.fold_data import FoldData
from trainer.jobs import run_job
from trainer.method.policy import Policy
from trainer.method.rewards import parse_reward
from trainer.method.teachers import FrozenTeacher


def rows_of(x: torch.Tensor) -> FeatureRows:
    """Rows held as the trainer holds a pool: float16, read a chunk at a time (no centring here)."""
    return FeatureRows([(CenteredCache(x.numpy().astype(np.float16), None, "0", False), np.arange(len(x)))])


def pool_data(n_classes=3, speakers=(0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1), prior=(0.5, 0.25, 0.25), seed=0):
    """A FoldData whose pool rows belong to the given speakers; 2-d features, one layer."""
    g = torch.Generator().manual_seed(seed)
    n = len(speakers)
    x = torch.randn(n, 1, 2, generator=g)
    lab = torch.randn(6, 1, 2, generator=g)
    empty = torch.zeros(0, 1, 2)
    return FoldData(x_lab=lab, y_lab=torch.tensor([0, 0, 0, 1, 2, 2]) % n_classes, x_val=empty,
                    y_val=torch.zeros(0, dtype=torch.long), x_unl=rows_of(x), y_unl_hidden=torch.full((n,), -1),
                    group_speaker=torch.tensor(speakers), x_train_all=rows_of(lab),
                    y_train_all=torch.zeros(6, dtype=torch.long), x_test=rows_of(lab),
                    y_test=torch.zeros(6, dtype=torch.long), prior=torch.tensor(prior),
                    n_classes=n_classes, standardizer=None)


def test_speaker_scope_actions_follow_the_labelled_prior_per_speaker():
    data = pool_data()
    cfg = TrainConfig(action="balanced", balance_scope="speaker", act_on="policy", sinkhorn_temp=0.05,
                      sinkhorn_iters=200, batch_size=4, reward="assign")
    torch.manual_seed(0)
    policy = Policy(1, 2, 3, head="linear", dropout=0.0)
    rows = torch.randperm(12, generator=torch.Generator().manual_seed(0))
    s = score_rows(policy, Pool.of(data), rows, Settings.of(cfg), None, torch.Generator())
    for spk in (0, 1):
        counts = torch.bincount(s.actions[data.group_speaker[s.rows] == spk], minlength=3)
        assert (counts - 6 * data.prior).abs().max() <= 0.5  # 6 rows x (0.5, 0.25, 0.25) = 3, 1.5, 1.5


def test_batch_scope_balances_each_group_on_its_own():
    data = pool_data(speakers=tuple([0] * 8))
    cfg = TrainConfig(action="balanced", balance_scope="batch", act_on="policy", sinkhorn_temp=0.05,
                      sinkhorn_iters=200, batch_size=4, reward="assign")
    torch.manual_seed(0)
    s = score_rows(Policy(1, 2, 3, head="linear"), Pool.of(data), torch.arange(8), Settings.of(cfg), None,
                   torch.Generator())
    for g in (slice(0, 4), slice(4, 8)):
        assert torch.bincount(s.actions[g], minlength=3).tolist() == [2, 1, 1]  # 4 rows x (0.5, 0.25, 0.25)


def test_refit_weights_average_one_over_the_selected():
    adv = torch.tensor([0.0, 0.3, 0.0, 0.1, 0.2])
    scored = Scored(torch.arange(5), torch.full((5, 2), 0.5), torch.tensor([0, 1, 0, 1, 0]), torch.rand(5), adv)
    sel = scored.selection()
    assert sel.rows.tolist() == [1, 3, 4] and sel.labels.tolist() == [1, 1, 0]
    assert sel.weights.mean().item() == pytest.approx(1.0) and sel.weights.tolist() == pytest.approx([1.5, 0.5, 1.0])


def test_adv_std_divides_each_group_by_its_own_std():
    r = torch.tensor([0.2, 0.4, 0.9, 1.0, 1.0, 4.0], dtype=torch.float64)
    groups = torch.tensor([0, 0, 0, 1, 1, 1])
    both = advantage(r, groups, adv_std=True)
    alone = torch.cat([advantage(r[:3], adv_std=True), advantage(r[3:], adv_std=True)])
    assert torch.allclose(both, alone) and both[5] == pytest.approx(2.0 / (np.std([1, 1, 4]) + 1e-6))


def test_reward_terms_are_averaged():
    from trainer.method.rewards import compute_reward

    p = torch.tensor([[0.6, 0.4]])
    plan = torch.tensor([[0.2, 0.8]])
    assert compute_reward(parse_reward("r1+assign"), p, torch.tensor([1]), None, plan).item() == pytest.approx(0.6)


def test_frozen_teacher_never_moves():
    warm = Policy(1, 2, 3, head="linear")
    teacher = FrozenTeacher(warm)
    before = teacher.model.head[1].weight.clone()
    with torch.no_grad():
        warm.head[1].weight.add_(1.0)
    teacher.update(warm)
    assert torch.equal(teacher.model.head[1].weight, before)


class CountingTeacher:
    """Counts policy steps (update is called after each one)."""

    def __init__(self):
        self.steps = 0

    def probs(self, x, rows):
        return torch.full((len(x), 3), 1 / 3)

    def update(self, policy):
        self.steps += 1

    def end_round(self, x, y):
        pass


def test_mu_is_the_number_of_steps_per_group():
    data = pool_data()
    cfg = TrainConfig(**{**SPEC_FORM, "batch_size": 4, "epochs": 2, "mu": 3, "reward": "r1"})
    teacher = CountingTeacher()
    rounds = []
    fitted = BGRPO(Settings.of(cfg), teacher=teacher, on_round=lambda policy, epoch, scored: rounds.append(epoch)).fit(
        Policy(1, 2, 3, head="linear"), Pool.of(data), torch.Generator())
    assert teacher.steps == 2 * 3 * 3  # epochs x groups (12 rows / 4) x mu
    assert rounds == [0, 1] and len(fitted.n_selected_) == 2 and not fitted.policy_.training


@pytest.mark.parametrize("layer,shape", [("1", (1, 16)), ("concat", (1, 48)), ("weighted", (3, 16))])
def test_layer_option_sets_the_policy_input(synthetic_cache, tmp_path, layer, shape):
    cache = synthetic_cache(tmp_path / "c.h5", n_classes=3, n_speakers=3, per_class=4, n_folds=3)
    cfg = TrainConfig(methods=("supervised",), seeds=(0,), layer=layer, device="cpu")
    arch = next(iter(run_job(cfg.to_dict(), str(cache), "0", 0)["models"].values()))[1]
    assert (arch["n_layers"], arch["dim"]) == shape


def test_val_fraction_keeps_the_best_validation_epoch(synthetic_cache, tmp_path):
    cache = synthetic_cache(tmp_path / "c.h5", n_classes=3, n_speakers=3, per_class=10, n_folds=3)
    cfg = TrainConfig(methods=("supervised",), seeds=(0,), val_fraction=0.5, labeled_fraction=0.5, solver="adam",
                      warmup_epochs=6, device="cpu")
    row = run_job(cfg.to_dict(), str(cache), "0", 0)["rows"][0]
    assert row["n_val"] > 0 and row["kept_epoch"] is not None and 0 <= row["kept_epoch"] < 6


def test_recipe_lists_every_field_as_a_valid_recipe_file():
    text = recipe_text()
    parsed = tomllib.loads(text)
    default = TrainConfig().to_dict()
    assert parsed == {k: v for k, v in default.items() if v is not None}
    assert all(f"{name} =" in text for name in field_names())
    assert TrainConfig.from_dict(parsed) == TrainConfig()


def test_train_help_fits_one_screen_and_recipe_and_set_apply(synthetic_cache, tmp_path, monkeypatch):
    from cli import app

    help_text = CliRunner().invoke(app, ["train", "--help"], terminal_width=100).output
    assert len(help_text.splitlines()) <= 45 and "--set" in help_text and "--recipe" in help_text
    seen = {}
    monkeypatch.setattr("trainer.run.train", lambda cfg, cache, out: seen.setdefault("cfg", cfg) and {})
    recipe = tmp_path / "r.toml"
    recipe.write_text('refit_rounds = 5\nlabeled_fraction = 0.3\nteacher = "ema"\n')
    CliRunner().invoke(app, ["train", "--cache", "x.h5", "--recipe", str(recipe), "--set", "teacher=frozen",
                             "--set", "lr=1e-3", "--labeled-fraction", "0.2"])
    cfg = seen["cfg"]
    assert (cfg.refit_rounds, cfg.teacher, cfg.lr, cfg.labeled_fraction) == (5, "frozen", 1e-3, 0.2)


def test_a_method_trains_the_same_whichever_other_methods_run(synthetic_cache, tmp_path):
    """DINO trains with dropout (the global random stream): its weights must not depend on what ran before."""
    cache = synthetic_cache(tmp_path / "c.h5", n_classes=3, n_speakers=3, per_class=6, n_folds=3)
    base = dict(seeds=(0,), epochs=2, solver="adam", warmup_epochs=3, head="mlp", device="cpu")
    alone = run_job(TrainConfig(methods=("dino",), **base).to_dict(), str(cache), "0", 0)
    after = run_job(TrainConfig(methods=("dino", "pseudo-label"), **base).to_dict(), str(cache), "0", 0)
    (a, _), = alone["models"].values()
    (b, _), = after["models"].values()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_train_flag_help_is_the_recipe_fields_help_and_default():
    from cli import app
    from trainer.config import TrainConfig, flag_help

    help_text = " ".join(
        CliRunner().invoke(app, ["train", "--help"], terminal_width=200).output.replace("│", " ").split()
    )
    for name in ("reward", "labeled_fraction", "workers", "methods", "seeds", "transductive"):
        f = TrainConfig.__dataclass_fields__[name]
        assert flag_help(name).startswith(f.metadata["help"]) and flag_help(name) in help_text, name
    assert flag_help("seeds") == "Seeds; every fold runs once per seed. (recipe: 0,1,2)"
    assert flag_help("transductive").endswith("(recipe: off)")
    assert flag_help("folds") == TrainConfig.__dataclass_fields__["folds"].metadata["help"]  # no default to show
