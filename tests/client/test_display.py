"""The answer table the command line and the demo print (client/display.py)."""

from __future__ import annotations

from client.display import recommendation_table
from client.grpc_client import Recommendation


def _rec(n_scored: int, degraded: bool) -> Recommendation:
    return Recommendation([7, 8], [0.9, 0.5], ["a", "b"], n_scored, degraded, 3.25)


def test_title_says_what_the_reranker_did() -> None:
    assert (
        recommendation_table("shoes", _rec(2, False)).title == "query 'shoes': 2 reranked, 3.2 ms"
    )
    degraded = recommendation_table("shoes", _rec(0, True)).title
    assert degraded == "query 'shoes': 0 reranked (degraded), 3.2 ms"
    unneeded = recommendation_table("", _rec(0, False)).title
    assert unneeded == "query '': retrieval order (its blend needs no reranking), 3.2 ms"
    assert recommendation_table("", _rec(0, False)).row_count == 2


def test_title_names_the_model_version_that_answered() -> None:
    rec = Recommendation([7], [0.9], ["a"], 1, False, 3.25, ["2:m-v2", "2:m-v2", "2:m-v2"])
    assert (
        recommendation_table("shoes", rec).title == "query 'shoes': 1 reranked, 3.2 ms, model m-v2"
    )
