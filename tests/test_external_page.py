"""docs/EXTERNAL.md rendering: each pair against the corpus alone, the gate's choice, selection stats."""
from bench import external_page as ep


def summary(sup, bgrpo, **ext):
    res = {"methods": {"supervised": {"macro_f1": {"mean": sup}}, "bgrpo": {"macro_f1": {"mean": bgrpo}}}}
    return {**res, "external_pool": ext} if ext else res


def test_pairs_are_compared_with_the_corpus_alone():
    results = {"ravdess": summary(71.4, 76.6),
               "ravdess+tess": summary(71.4, 76.1, kept=3, runs=18, rows=2800.0, selected=120.0, precision=0.41)}
    table = ep.external_table(results)
    assert "| ravdess | tess | same language | 71.4 | 76.6 | **76.1** | -0.5 | 3/18 | 2800 (120) | 0.41 |" in table
    assert "casia" not in table and "bgrpo 76.6" in ep.alone_line(results)
    assert ep.external_table({"ravdess": summary(1, 2)}) == "_No runs yet._"
