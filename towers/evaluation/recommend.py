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
earns nothing. Metrics: Recall@K over the targets, NDCG@10 with binary gains, top-100
accuracy, and catalog coverage@10 (distinct items in all top-10 lists over the catalog size).

That is the *time* protocol (the default). The *random* protocol
(:func:`towers.next_item.random_split_task`, data from ``towerserve data split``) holds out
a random 20% of events instead, and excludes all of a user's training items: it is there to
compare with published figures, never to be mixed with time-split ones.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np

from towers.evaluation.confidence import bootstrap_ci, paired_ci
from towers.metrics import ndcg_per_query, recall_per_query
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
    "cold_recall",
    "cold_recall_per_user",
    "exclude_history",
    "history_matrix",
    "next_item_task",
    "pooled_history",
    "run_systems",
    "score_recommendations",
]

#: A system maps a task to one ranked list of item ids per user (history items excluded).
RecSystem = Callable[["NextItemTask", int], list[list[int]]]


#: Metrics that carry a 95% bootstrap interval over users (``ci95`` of each system's row).
CI_METRICS = ("recall@50", "ndcg@10")


def per_user_metrics(ranked: list[list[int]], task: NextItemTask) -> dict[str, np.ndarray]:
    """Recall@10/50/100 and NDCG@10 (binary gains) of each user of ``task``, in order."""
    labels = [dict.fromkeys(t, 1) for t in task.targets]
    return {
        "recall@10": recall_per_query(ranked, task.targets, 10),
        "recall@50": recall_per_query(ranked, task.targets, 50),
        "recall@100": recall_per_query(ranked, task.targets, 100),
        "ndcg@10": ndcg_per_query(ranked, labels, 10),
    }


def top_k_hits(ranked: list[list[int]], task: NextItemTask, k: int = 100) -> np.ndarray:
    """Each user's number of targets in their top ``k``."""
    return np.asarray([len(set(r[:k]) & t) for r, t in zip(ranked, task.targets)], dtype=np.float64)


def cold_recall_per_user(
    ranked: list[list[int]], task: NextItemTask, cold_items: set[int], k: int = 50
) -> np.ndarray:
    """Recall@``k`` over each user's targets that are cold items (no interaction before the
    cut), for the users who have one, in task order (so aligned across systems)."""
    return recall_per_query(ranked, [t & cold_items for t in task.targets], k)


def cold_recall(
    ranked: list[list[int]], task: NextItemTask, cold_items: set[int], k: int = 50
) -> tuple[float, int]:
    """Recall@``k`` over the targets that are cold items (no interaction before the cut),
    mean over the users who have one, and how many users that is."""
    vals = cold_recall_per_user(ranked, task, cold_items, k)
    return (float(vals.mean()) if len(vals) else 0.0), len(vals)


def score_recommendations(
    ranked: list[list[int]],
    task: NextItemTask,
    n_items: int,
    seconds: float,
    per_user: dict[str, np.ndarray] | None = None,
    cold_items: set[int] | None = None,
) -> dict[str, object]:
    """Recall@10/50/100, NDCG@10, top-100 accuracy (held-out positives whose item is in the
    user's top 100, over all of them: the metric of the TensorFlow Recommenders retrieval
    tutorial), coverage@10, users per second, the user count and the 95% bootstrap interval
    of each of :data:`CI_METRICS` and of the accuracy (``ci95``) of one system's lists; with
    ``cold_items``, also ``cold_recall@50`` (:func:`cold_recall`, with its interval over
    the cold users) and ``n_cold_users``."""
    per_user = per_user if per_user is not None else per_user_metrics(ranked, task)
    top10 = {i for r in ranked for i in r[:10]}
    out: dict[str, object] = {
        name: float(vals.mean()) if len(vals) else 0.0 for name, vals in per_user.items()
    }
    hits = top_k_hits(ranked, task, 100)
    n_targets = np.asarray([len(t) for t in task.targets], dtype=np.float64)
    accuracy, lo, hi = paired_ci(hits, n_targets, "ratio")
    out["accuracy@100"] = accuracy if len(hits) else 0.0
    cold_ci: dict[str, list[float]] = {}
    if cold_items is not None:
        cold_vals = cold_recall_per_user(ranked, task, cold_items)
        out["cold_recall@50"] = float(cold_vals.mean()) if len(cold_vals) else 0.0
        out["n_cold_users"] = len(cold_vals)
        if len(cold_vals):
            cold_ci["cold_recall@50"] = list(bootstrap_ci(cold_vals))
    out["coverage@10"] = len(top10) / max(n_items, 1)
    out["users_per_s"] = len(task) / max(seconds, 1e-9)
    out["n_users"] = len(task)
    out["ci95"] = {
        **{m: list(bootstrap_ci(per_user[m])) for m in CI_METRICS},
        "accuracy@100": [lo, hi],
        **cold_ci,
    }
    return out


def run_systems(
    task: NextItemTask,
    systems: dict[str, RecSystem],
    n_items: int,
    k: int = 100,
    per_user: dict[str, dict[str, np.ndarray]] | None = None,
    cold_items: set[int] | None = None,
) -> dict[str, dict[str, object]]:
    """Each system's metrics on ``task``, timed over the whole task; ``per_user`` (when
    given) receives each system's per-user metrics and ``hits@100`` (targets in the top
    100: for paired comparisons of the top-100 accuracy; and, with ``cold_items``,
    ``cold_recall@50`` of the users with a cold target); ``cold_items`` adds Recall@50 among
    targets no one had interacted with before the task."""
    results = {}
    for name, system in systems.items():
        start = time.perf_counter()
        ranked = system(task, k)
        seconds = time.perf_counter() - start
        values = per_user_metrics(ranked, task)
        if per_user is not None:  # with each user's top-100 hits, for paired accuracy checks
            per_user[name] = {**values, "hits@100": top_k_hits(ranked, task, 100)}
            if cold_items is not None:
                per_user[name]["cold_recall@50"] = cold_recall_per_user(ranked, task, cold_items)
        results[name] = score_recommendations(
            ranked, task, n_items, seconds, values, cold_items=cold_items
        )
        log.info("recommendation %s: %s", name, results[name])
    return results
