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

from towers.metrics import mrr_at_k, ndcg_at_k, recall_at_k
from towers.progress import progress

log = logging.getLogger(__name__)

#: Cut-offs of the Recall@K columns; systems are asked for ``max(RECALL_KS)`` items.
RECALL_KS: tuple[int, ...] = (10, 50, 100, 200)

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


def score_search(
    ranked: Sequence[Sequence[int]], task: SearchTask, latencies_s: Sequence[float]
) -> dict[str, float]:
    """Recall@``RECALL_KS``, NDCG@10, MRR@10, throughput and median latency of one system."""
    relevant = task.relevant
    out = {f"recall@{k}": recall_at_k(ranked, relevant, k) for k in RECALL_KS}
    out["ndcg@10"] = ndcg_at_k(ranked, task.labels, 10)
    out["mrr@10"] = mrr_at_k(ranked, relevant, 10)
    total = float(np.sum(latencies_s))
    out["queries_per_s"] = len(ranked) / max(total, 1e-9)
    out["latency_ms_p50"] = float(np.median(latencies_s)) * 1e3 if len(latencies_s) else 0.0
    return out


def run_search(
    task: SearchTask, systems: dict[str, SearchSystem], depth: int = max(RECALL_KS)
) -> tuple[dict[str, dict[str, float]], dict[str, list[list[int]]]]:
    """Every system on every query, one query at a time; metrics and the ranked lists."""
    results: dict[str, dict[str, float]] = {}
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
