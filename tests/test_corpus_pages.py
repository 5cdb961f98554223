"""The corpus pages: the development table (mean over corpora) and the per-corpus results table."""
import pandas as pd

from bench.corpus_page import choice_summary, corpus_table, plan
from bench.dev_corpora import dev_markdown


def summary(f1):
    return {"macro_f1": {"mean": f1, "std": 1.0, "n": 3}, "collapsed_runs": 0}


def test_dev_markdown_means_over_corpora():
    rows = []
    for corpus, sup, bg in (("a", 50.0, 60.0), ("b", 40.0, 38.0)):
        for method, f1, rel, g in (("supervised", sup, 0.0, 0.0), ("bgrpo", bg, 100 * (bg - sup) / sup, 0.5)):
            rows.append({"variant": "v", "corpus": corpus, "method": method, "macro_f1_mean": f1,
                         "rel_vs_supervised": rel, "gap_recovered": g, "collapsed": 0})
    md = dev_markdown(pd.DataFrame(rows))
    assert "| bgrpo | 60.0 | 38.0 | **49.0** |" in md
    assert "| bgrpo rel | +20.0% | -5.0% | **+7.5%** |" in md


def test_corpus_table_flags_where_bgrpo_loses():
    def run(sup, pl, bg, top):
        m = {"supervised": summary(sup), "pseudo-label": summary(pl), "bgrpo": summary(bg), "topline": summary(top)}
        m["bgrpo"].update(rel_macro_f1_vs_supervised=100 * (bg - sup) / sup, gap_recovered=(bg - sup) / (top - sup))
        return {"methods": m, "choices": [{"layer": "3", "speaker_norm": True}, {"layer": "4", "speaker_norm": False}]}
    results = {"ravdess-f0.1-inductive": run(70, 71, 76, 82), "ravdess-confounded-f0.1-inductive": run(50, 52, 51, 60)}
    t = corpus_table(results, ["ravdess", "ravdess-confounded"], 0.1, "inductive")
    lines = t.splitlines()
    assert "| ravdess | 70.0 ± 1.0 | 71.0 ± 1.0 | 76.0 ± 1.0 | 82.0 ± 1.0 | +8.6% | +0.50 | yes |" in lines[2]
    assert "EmoBox 75.19" in lines[2] and "norm on 1/2; layer 3:1 4:1" in lines[2]
    assert "| **no** |" in lines[3] and "EmoBox" not in lines[3]
    assert "Mean relative gain of bgrpo over supervised across these corpora: **+5.3%**" in t
    assert choice_summary({}) == ""
    assert [s.name for s in plan(["c"], [0.1])] == ["c-f0.1-inductive", "c-f0.1-transductive"]
