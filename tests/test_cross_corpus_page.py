"""bench/cross_corpus_page.py renders docs/CROSS_CORPUS.md from stored JSON alone (no training)."""
from __future__ import annotations

from bench import cross_corpus_page as page


def stored(f1: dict, recall=(1.0, 0.5, 0.5, 0.0)) -> dict:
    """A results.json as train writes it, reduced to what the page reads, plus the LR floor."""
    conf = [[8 if i == j else 0 for j in range(4)] for i in range(4)]
    conf[3] = [4, 0, 0, 4]
    methods = {m: {"macro_f1": {"mean": v, "std": 0.0, "n": 12}, "confusion": conf} for m, v in f1.items()}
    methods["bgrpo"]["gap_recovered"] = (f1["bgrpo"] - f1["supervised"]) / (f1["topline"] - f1["supervised"])
    return {"methods": methods, "lr_floor": [{"macro_f1": 40.0, "recall": list(recall)}] * 2}


def test_the_page_shows_each_pair_its_floor_recall_and_the_inner_choice():
    f1 = {"supervised": 43.0, "bgrpo": 49.0, "pseudo-label": 41.0, "topline": 79.0}
    results = {"ravdess-to-casia": stored(f1), "inner/ravdess-to-casia": stored(f1),
               "inner/ravdess-to-casia-pool_keep=0.5": stored({**f1, "bgrpo": 51.0})}
    text = page.render(results)
    assert "| ravdess -> casia | recipe | 12 | 40.0 | 43.0 | **49.0** | 41.0 | 79.0 | +6.0 | 0.17 | +3.0 |" in text
    assert "| ravdess -> casia | recipe | LR floor | 100 | 50 | 50 | 0 |" in text
    assert "| ravdess -> casia | recipe | bgrpo | 100 | 100 | 100 | 50 |" in text  # recall from the summed confusion
    assert "| pool_keep=0.5 | 1 | 51.0 | +2.0 | 1 |" in text
