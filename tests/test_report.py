"""The printed table of `train` (trainer/report.py): its legend and the notes under it."""
from trainer.report import format_table, table_legend


def summary(methods: dict, collapse_entropy: float = 0.75) -> dict:
    """A two-fold, one-seed run's summary with these methods' (macro-F1 mean, collapsed runs)."""
    cell = lambda f1: {"mean": f1, "std": 0.0, "n": 2}  # noqa: E731
    return {"choices": [{"fold": "0"}, {"fold": "1"}], "config": {"seeds": [0], "collapse_entropy": collapse_entropy},
            "methods": {m: {"macro_f1": cell(f1), "ua": cell(f1), "wa": cell(f1), "collapsed_runs": k,
                            "rel_macro_f1_vs_supervised": 0.0} for m, (f1, k) in methods.items()}}


def test_a_blank_g_says_it_needs_a_topline():
    text = format_table(summary({"supervised": (60.0, 0), "bgrpo": (65.0, 0)}))
    assert "G (gap recovered) is blank: it needs both `supervised` and `topline`" in text
    assert "note:" not in text  # nothing collapsed, nothing to explain
    with_top = summary({"supervised": (60.0, 0), "topline": (80.0, 0)})
    with_top["methods"]["topline"]["gap_recovered"] = 1.0
    assert "is blank" not in format_table(with_top) and "G = gap recovered" in format_table(with_top)


def test_a_collapse_is_explained_under_the_table():
    lines = format_table(summary({"supervised": (100.0, 0), "bgrpo": (55.6, 2)})).splitlines()
    assert lines[2].startswith("bgrpo") and lines[2].endswith("     2/2")  # the table itself is unchanged
    (note,) = [line for line in lines if line.startswith("note:")]
    assert note.startswith("note: bgrpo collapsed in 2/2 runs (its predictions on the unlabelled pool piled onto "
                           "few classes) while supervised did not: learning from the pool reinforced")
    assert "supervised is the safer result" in note and "--labeled-fraction" in note and note == lines[-1]
    both = format_table(summary({"supervised": (40.0, 1), "bgrpo": (41.0, 2)})).splitlines()
    assert [line.split(" (")[0] for line in both if line.startswith("note:")] == [
        "note: supervised collapsed in 1/2 runs", "note: bgrpo collapsed in 2/2 runs"]
    assert both[-1].endswith("as supervised's did: the labelled subset alone predicts few classes there: either "
                             "the pool's classes are that unbalanced (then it is expected; --set collapse_entropy, "
                             "now 0.75, is the threshold) or the features do not separate them.")


COLLAPSED_LEGEND = ("collapsed = runs (of folds x seeds) whose predictions on the unlabelled pool piled onto few "
                    "classes (normalised prediction entropy < {}).")


def test_the_legend_states_the_runs_collapse_threshold():
    methods = {"supervised": (60.0, 0), "bgrpo": (65.0, 0)}
    assert COLLAPSED_LEGEND.format("0.75") in format_table(summary(methods)).splitlines()  # the default's text
    assert COLLAPSED_LEGEND.format("0.6") in format_table(summary(methods, collapse_entropy=0.6)).splitlines()
    assert COLLAPSED_LEGEND.format("0.75") in table_legend("each row's folds x seeds", False).splitlines()
