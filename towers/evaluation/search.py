"""Search evaluation: labelled queries of the held-out test split, every system side by side.

Each system answers one query at a time (as the server does), so its ``latency_ms_p50`` is
the median time to answer one query on this machine and ``queries_per_s`` the sequential
throughput. Relevant items for Recall@K and MRR@10 are the exact (grade 3) ones; NDCG@10
uses all grades with gain ``2**grade - 1``. Test query texts are never trained on (the
splits are by distinct text).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from towers.evaluation.confidence import bootstrap_ci
from towers.metrics import mrr_at_k, ndcg_per_query, recall_at_k, recall_per_query
from towers.progress import progress

log = logging.getLogger(__name__)

#: Cut-offs of the Recall@K columns; systems are asked for ``max(RECALL_KS)`` items.
RECALL_KS: tuple[int, ...] = (10, 50, 100, 200)

#: Metrics that carry a 95% bootstrap interval over queries (``ci95`` of each system's row).
CI_METRICS = ("recall@100", "ndcg@10")

#: A search system: one query text and a depth -> item ids, best first.
SearchSystem = Callable[[str, int], list[int]]


@dataclass
class SearchTask:
    """Test queries with their graded judgments ``{item_id: grade}``."""

    texts: list[str]
    labels: list[dict[int, int]]

    @property
    def relevant(self) -> list[set[int]]:
        """Exact (grade 3) items per query."""
        return [{i for i, g in lab.items() if g >= 3} for lab in self.labels]


def per_query_metrics(ranked: Sequence[Sequence[int]], task: SearchTask) -> dict[str, np.ndarray]:
    """Recall@100 (exact items) and NDCG@10 (all grades) of each query, for paired
    comparisons; queries without an exact item have no Recall@100 entry."""
    return {
        "recall@100": recall_per_query(ranked, task.relevant, 100),
        "ndcg@10": ndcg_per_query(ranked, task.labels, 10),
    }


def score_search(
    ranked: Sequence[Sequence[int]], task: SearchTask, latencies_s: Sequence[float]
) -> dict[str, object]:
    """Recall@``RECALL_KS``, NDCG@10, MRR@10, throughput, median latency, the query count
    and the 95% bootstrap interval of each of :data:`CI_METRICS` (``ci95``) of one system."""
    relevant = task.relevant
    per_query = per_query_metrics(ranked, task)
    out: dict[str, object] = {f"recall@{k}": recall_at_k(ranked, relevant, k) for k in RECALL_KS}
    ndcg = per_query["ndcg@10"]
    out["ndcg@10"] = float(ndcg.mean()) if len(ndcg) else 0.0
    out["mrr@10"] = mrr_at_k(ranked, relevant, 10)
    total = float(np.sum(latencies_s))
    out["queries_per_s"] = len(ranked) / max(total, 1e-9)
    out["latency_ms_p50"] = float(np.median(latencies_s)) * 1e3 if len(latencies_s) else 0.0
    out["n_queries"] = len(ndcg)
    out["ci95"] = {m: list(bootstrap_ci(per_query[m])) for m in CI_METRICS}
    return out


def run_search(
    task: SearchTask, systems: dict[str, SearchSystem], depth: int = max(RECALL_KS)
) -> tuple[dict[str, dict[str, object]], dict[str, list[list[int]]]]:
    """Every system on every query, one query at a time; metrics and the ranked lists."""
    results: dict[str, dict[str, object]] = {}
    ranked_by: dict[str, list[list[int]]] = {}
    for name, system in systems.items():
        system(task.texts[0], depth)  # warm-up: first-call allocations are not latency
        ranked, latencies = [], []
        for text in progress(task.texts, f"search: {name}"):
            start = time.perf_counter()
            ranked.append(system(text, depth))
            latencies.append(time.perf_counter() - start)
        results[name] = score_search(ranked, task, latencies)
        ranked_by[name] = ranked
        log.info(
            "search %s: recall@100 %.3f ndcg@10 %.3f, %.1f ms/query",
            name,
            results[name]["recall@100"],
            results[name]["ndcg@10"],
            results[name]["latency_ms_p50"],
        )
    return results, ranked_by
