"""docs/EXTERNAL.md rendering: each pair against the corpus alone, the gate's choice, selection stats,
and the gate's candidate rules scored on inner-validation runs from their recorded evidence."""
import pandas as pd

from bench import external_page as ep


def summary(sup, bgrpo, choices=(), runs=(), **ext):
    res = {"methods": {"supervised": {"macro_f1": {"mean": sup}}, "bgrpo": {"macro_f1": {"mean": bgrpo}}},
           "choices": list(choices), "runs": list(runs)}
    return {**res, "external_pool": ext} if ext else res


def source(with_, without, p, b=0, c=0, p_loss=0.5, same=False):
    return {"sources": [{"cv_macro_f1_with": with_, "cv_macro_f1_without": without, "gate_p": p, "gate_p_loss": p_loss,
                         "copy": same, "right_only_with": b, "right_only_without": c, "used": p < 0.05}]}


def test_pairs_are_compared_with_the_corpus_alone():
    results = {"ravdess": summary(71.4, 76.6),
               "ravdess+tess": summary(71.4, 76.1, [source(70.0, 68.0, 0.2), source(60.0, 63.0, 0.9)], kept=3,
                                       decisions=18, rows=2800.0, selected=120.0, precision=0.41)}
    table = ep.external_table(results)
    # CV gain: mean of +2.0 and -3.0
    assert ("| ravdess | tess | same language | 71.4 | 76.6 | **76.1** | -0.5 | 3/18 | -0.5 | 2800 (120) | 0.41 |"
            in table)
    assert "casia" not in table and "bgrpo 76.6" in ep.alone_line(results)
    assert ep.external_table({"ravdess": summary(1, 2)}) == "_No runs yet._"


def test_a_rule_takes_the_gate_off_score_where_it_keeps_and_the_alone_score_where_it_drops():
    def runs(*scores):
        return [{"method": "bgrpo", "fold": str(f), "seed": 0, "macro_f1": s} for f, s in enumerate(scores)]
    gated = summary(0, 0, [dict(fold="0", seed=0, **source(70.0, 68.0, 0.20)),  # margin keeps, p < 0.05 drops
                           dict(fold="1", seed=0, **source(80.0, 70.0, 0.01)),  # both keep
                           dict(fold="2", seed=0, **source(60.0, 60.5, 0.60))])  # both drop
    alone, off = summary(0, 0, runs=runs(70.0, 70.0, 70.0)), summary(0, 0, runs=runs(64.0, 76.0, 58.0))
    margin = ep.RULES["macro-F1 margin: CV gain >= 1 point (the first rule)"]
    gain = ep.RULES["every source must show a gain, p < 0.05 (the former default)"]
    default = ep.RULES["a copy kept unless a loss, another corpus only with a gain, p < 0.05 (the default)"]
    assert ep.rule_outcomes(gated, alone, off, margin) == ((64.0 + 76.0 + 70.0) / 3, 2, 3)
    assert ep.rule_outcomes(gated, alone, off, gain) == ((70.0 + 76.0 + 70.0) / 3, 1, 3)
    assert ep.rule_outcomes(gated, alone, off, default) == ((70.0 + 76.0 + 70.0) / 3, 1, 3)  # another corpus
    # the same evidence from a copy of the labelled corpus: kept unless its p of a loss is below 0.05
    copy = summary(0, 0, [dict(fold="0", seed=0, **source(70.0, 68.0, 0.20, same=True)),
                          dict(fold="1", seed=0, **source(80.0, 70.0, 0.01, same=True)),
                          dict(fold="2", seed=0, **source(60.0, 60.5, 0.60, p_loss=0.04, same=True))])
    assert ep.rule_outcomes(copy, alone, off, default) == ((64.0 + 76.0 + 70.0) / 3, 2, 3)
    assert ep.rule_outcomes(gated, alone, off, ep.RULES["never use the pool"]) == (70.0, 0, 3)
    results = {"inner/ravdess": alone, "inner/ravdess+tess": gated, "inner/ravdess+tess-gateoff": off}
    table = ep.rules_table(results)
    assert "| every source must show a gain, p < 0.05 (the former default) | 72.0 (1/3) |" in table
    assert "| ravdess + tess |" in table
    assert "0/0: 70.0/68.0, 0:0, p 0.200" in ep.evidence_lines(results)


def test_source_stats_sum_sources_and_weight_precision_by_rows_selected(tmp_path):
    pd.DataFrame({"method": ["bgrpo"] * 3 + ["supervised"], "epoch": [0, 3, 3, 3],
                  "selected_src1": [9.0, 10.0, 30.0, 99.0], "precision_src1": [0.0, 0.5, 0.9, 0.0],
                  "selected_src2": [9.0, 0.0, 10.0, 99.0], "precision_src2": [0.0, None, 0.1, 0.0]}).to_csv(
        tmp_path / "curves.csv", index=False)
    choices = [{"sources": [{"rows": 100, "used": True}, {"rows": 50, "used": False}]},
               {"sources": [{"rows": 100, "used": True}, {"rows": 50, "used": True}]}]
    out = ep.source_stats(tmp_path, {"choices": choices})
    # last bgrpo round: selected (10 + 0) and (30 + 10) -> mean 25; precision (5 + 27 + 1) / (10 + 30 + 10)
    assert out == {"kept": 3, "decisions": 4, "runs": 2, "rows": 150.0, "selected": 25.0, "precision": 33 / 50}
