"""Errors a user can reach from the command line end in `error: ...` and exit 2, not a traceback."""
import pytest
from typer.testing import CliRunner

from cli import app


def run(*args):
    return CliRunner().invoke(app, list(args))


def test_extract_without_corpus_or_manifest_says_what_to_give():
    result = run("extract")
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "give --corpus NAME [--root DIR], or --manifest FILE.csv" in result.output


@pytest.mark.parametrize("args, says", [
    (["--seeds", "a"], "seeds = 'a': integers"),
    (["--seeds", ","], "seeds is empty"),
    (["--set", "seeds=3x"], "seeds = '3x': integers"),
    (["--set", "seeds=[1.5, \"b\"]"], "integers"),
])
def test_train_settings_that_are_not_seeds_exit_2_naming_the_field(synthetic_cache, tmp_path, args, says):
    cache = synthetic_cache(tmp_path / "cache.h5")
    result = run("train", "--cache", str(cache), "--out", str(tmp_path / "run"), *args)
    assert result.exit_code == 2, result.output
    assert says in result.output
    assert not (tmp_path / "run").exists()  # refused before anything is written


def test_train_seeds_flag_and_set_give_the_same_config():
    from trainer.config import TrainConfig

    assert TrainConfig(seeds="0, 2").seeds == TrainConfig(seeds=[0, 2]).seeds == (0, 2)
