"""Popularity and BM25 baselines, search scoring, drift windows and the checks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from towers.evaluation.baselines import BM25Ranker, PopularityRanker
from towers.evaluation.drift import window_edges
from towers.evaluation.harness import checks
from towers.evaluation.search import RECALL_KS, SearchTask, run_search, score_search

ITEMS = np.array([10, 11, 12, 13])
TEXTS = ["red cotton t-shirt", "blue denim jeans", "red wool scarf", "green cotton socks"]


def test_popularity_orders_by_count_before_the_cut() -> None:
    events = pd.DataFrame({"item_id": [12, 12, 11, 13, 13, 13], "ts": [1, 2, 3, 10, 11, 12]})
    assert PopularityRanker(events, ITEMS).top(2) == [13, 12]
    assert PopularityRanker(events, ITEMS, until_ts=10).top(2) == [12, 11]
    assert PopularityRanker(events, ITEMS, since_ts=3, until_ts=10).top(1) == [11]
    assert PopularityRanker(events, ITEMS).top(2, exclude=[13]) == [12, 11]


def test_bm25_finds_word_matches_only() -> None:
    bm25 = BM25Ranker(TEXTS, ITEMS)
    assert set(bm25.search("red", 10)) == {10, 12}
    assert bm25.search("cotton socks", 1) == [13]
    assert bm25.search("the", 10) == []  # stop words only
    assert bm25.search("zeppelin", 10) == []  # unknown word
    assert bm25.search("", 10) == []


def test_score_search_metrics() -> None:
    task = SearchTask(["q"], [{10: 3, 11: 2, 12: 0}])
    res = score_search([[10, 11, 13]], task, [0.002])
    assert res["recall@10"] == 1.0 and res["mrr@10"] == 1.0 and res["ndcg@10"] == 1.0
    assert res["latency_ms_p50"] == pytest.approx(2.0)
    assert {f"recall@{k}" for k in RECALL_KS} <= set(res)
    worse = score_search([[13, 11, 10]], task, [0.001])
    assert worse["mrr@10"] == pytest.approx(1 / 3) and worse["ndcg@10"] < 1.0


def test_run_search_times_every_query() -> None:
    bm25 = BM25Ranker(TEXTS, ITEMS)
    task = SearchTask(["red scarf", "jeans"], [{12: 3}, {11: 3}])
    res, ranked = run_search(task, {"bm25": bm25.search})
    assert ranked["bm25"][0][0] == 12 and ranked["bm25"][1] == [11]
    assert res["bm25"]["recall@10"] == 1.0 and res["bm25"]["queries_per_s"] > 0


def test_window_edges() -> None:
    assert window_edges(0, 90, 3) == [0, 30, 60, 90]
    with pytest.raises(ValueError, match="at least 2"):
        window_edges(0, 90, 1)


def test_checks_report_pass_and_fail() -> None:
    results = {
        "search": {
            "systems": {
                "teacher_exact": {"recall@100": 0.9, "ndcg@10": 0.8},
                "student_exact": {"recall@100": 0.88, "ndcg@10": 0.8},
                "student_faiss": {"recall@100": 0.88, "ndcg@10": 0.8},
                "student_faiss_rerank": {"recall@100": 0.88, "ndcg@10": 0.83},
                "bm25": {"ndcg@10": 0.5},
            }
        },
        "recommendation": {
            "systems": {"popularity": {"recall@50": 0.1}, "student_faiss": {"recall@50": 0.3}}
        },
        "drift": {"update": {"recovered_fraction": 0.7, "time_fraction": 0.2}},
    }
    by_name = {c["name"]: c for c in checks(results)}
    assert by_name["student keeps teacher Recall@100"]["passed"]
    assert not by_name["rerank NDCG@10 gain"]["passed"]
    assert by_name["rerank beats bm25 NDCG@10"]["passed"]
    assert by_name["two-tower Recall@50 vs popularity"]["value"] == pytest.approx(3.0)
    assert by_name["update recovers lost quality"]["passed"]
    assert not by_name["update time vs full training"]["passed"]
    assert checks({}) == []
