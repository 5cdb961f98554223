"""docs/SCALE.md rendering: external-pool rows against the same corpus alone, the pool benchmark table."""
from bench import scale_page as sp


def run(sup, bg, top, pool):
    score = lambda m: {"macro_f1": {"mean": m, "std": 1.0, "n": 3}}  # noqa: E731
    return {"pool_size": pool, "methods": {
        "supervised": score(sup), "topline": score(top),
        "bgrpo": {**score(bg), "rel_macro_f1_vs_supervised": 100 * (bg - sup) / sup,
                  "gap_recovered": (bg - sup) / (top - sup)}}}


def test_external_rows_compare_with_the_corpus_alone():
    results = {"ravdess": run(70.0, 76.0, 82.0, 1080), "ravdess+casia-pool": run(70.0, 73.0, 82.0, 2280)}
    table = sp.external_table(results)
    lines = table.splitlines()
    assert len(lines) == 4  # header, rule, two runs (the CASIA runs are missing)
    assert lines[2].startswith("| ravdess | - | 1080 | 70.0 ± 1.0 | 76.0 ± 1.0 | 82.0 ± 1.0 | +8.6% | +0.50 |")
    assert lines[3].endswith("| -3.0 pts |") and "| casia |" in lines[3]
    assert sp.external_table({}) == "_No runs yet._"


def test_pool_table_and_page():
    bench = {"title": "Synthetic caches", "rows": [
        {"utterances": 10000, "pool": 7200, "wall_s": 10.0, "warmup_s": 1.0, "s_per_epoch": 0.5,
         "growth_vs_linear": None, "peak_rss_mb": 500.0},
        {"utterances": 1000000, "pool": 720000, "timeout": 600}]}
    table = sp.pool_table(bench)
    assert "| 10,000 | 7,200 | 10.0 | 1.00 | 0.50 | - | 500 |" in table and "timed out after 600 s" in table
    page = sp.render({}, bench)
    assert "Synthetic caches" in page and "## External pools" in page
    assert "_Not measured yet._" in sp.render({}, None)
