"""Recommendation (next-item) evaluation: what does each user engage with after a time cut?

A *task* is built from the behaviour log at a window ``[start_ts, end_ts)``:

- the users with at least one positive event (click, add_to_cart, purchase) in the window
  and at least one event before ``start_ts``;
- each user's history: their newest ``MAX_HISTORY`` events before ``start_ts`` (the history a
  request at ``start_ts`` would carry; events after the training cut may be in it, since the
  server always gets fresh histories);
- each user's targets: the distinct items of their positive events in the window that are
  not already in that history (the *new* items they went on to want).

Every system is asked for items outside the history, so re-showing what the user just saw
earns nothing. Metrics: Recall@K over the targets, NDCG@10 with binary gains, and catalog
coverage@10 (distinct items in all top-10 lists over the catalog size).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from towers.metrics import ndcg_at_k, recall_at_k
from towers.next_item import (  # the task is defined below training; re-exported here
    NextItemTask,
    exclude_history,
    history_matrix,
    next_item_task,
    pooled_history,
)

log = logging.getLogger(__name__)

__all__ = [
    "NextItemTask",
    "RecSystem",
    "exclude_history",
    "history_matrix",
    "next_item_task",
    "pooled_history",
    "run_systems",
    "score_recommendations",
]

#: A system maps a task to one ranked list of item ids per user (history items excluded).
RecSystem = Callable[["NextItemTask", int], list[list[int]]]


def score_recommendations(
    ranked: list[list[int]], task: NextItemTask, n_items: int, seconds: float
) -> dict[str, float]:
    """Recall@10/50, NDCG@10, coverage@10 and users per second of one system's lists."""
    labels = [dict.fromkeys(t, 1) for t in task.targets]
    top10 = {i for r in ranked for i in r[:10]}
    return {
        "recall@10": recall_at_k(ranked, task.targets, 10),
        "recall@50": recall_at_k(ranked, task.targets, 50),
        "ndcg@10": ndcg_at_k(ranked, labels, 10),
        "coverage@10": len(top10) / max(n_items, 1),
        "users_per_s": len(task) / max(seconds, 1e-9),
    }


def run_systems(
    task: NextItemTask, systems: dict[str, RecSystem], n_items: int, k: int = 50
) -> dict[str, dict[str, float]]:
    """Each system's metrics on ``task``, timed over the whole task."""
    results = {}
    for name, system in systems.items():
        start = time.perf_counter()
        ranked = system(task, k)
        results[name] = score_recommendations(ranked, task, n_items, time.perf_counter() - start)
        log.info("recommendation %s: %s", name, results[name])
    return results
