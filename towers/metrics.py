"""Offline retrieval and ranking metrics over ranked item-id lists.

``ranked`` is one ranked list of item ids per query; ``labels`` maps each query position to a
dict ``{item_id: grade}`` (ESCI grades 0..3; unjudged items count as 0).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


def recall_per_query(
    ranked: Sequence[Sequence[int]], relevant: Sequence[set[int]], k: int
) -> np.ndarray:
    """|top-k ∩ relevant| / |relevant| of each query with >= 1 relevant item (others left out)."""
    return np.asarray(
        [len(set(list(r)[:k]) & rel) / len(rel) for r, rel in zip(ranked, relevant) if rel],
        dtype=np.float64,
    )


def accuracy_per_query(
    ranked: Sequence[Sequence[int]], relevant: Sequence[set[int]], k: int
) -> np.ndarray:
    """Each query's share of top-``k`` accuracy (the held-out positives found in the top
    ``k`` over all positives, the TensorFlow Recommenders tutorial's metric), as
    ``|top-k ∩ relevant| x n / total relevant`` over the ``n`` queries with >= 1 relevant
    item: their mean is the accuracy, and two systems' values over the same queries are
    paired (their mean difference is the accuracy difference), so :func:`paired_gain` and
    :func:`surely_better_choice` apply as to per-query recall."""
    pairs = [(r, rel) for r, rel in zip(ranked, relevant) if rel]
    total = sum(len(rel) for _, rel in pairs)
    if not total:
        return np.zeros(0, dtype=np.float64)
    hits = np.asarray([len(set(list(r)[:k]) & rel) for r, rel in pairs], dtype=np.float64)
    return hits * len(pairs) / total


def paired_gain(
    a: np.ndarray, b: np.ndarray, n_boot: int = 1000, seed: int = 0
) -> tuple[float, float, float]:
    """``mean(a - b)`` of paired per-user values and its 95% percentile bootstrap interval
    (``(0, 0, 0)`` for none): training's "surely better" rule (towers.evaluation.confidence
    has the report's intervals; training may not import evaluation, which imports it)."""
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    if len(d) == 0:
        return 0.0, 0.0, 0.0
    idx = np.random.default_rng(seed).integers(0, len(d), size=(n_boot, len(d)))
    lo, hi = np.percentile(d[idx].mean(axis=1), [2.5, 97.5])
    return float(d.mean()), float(lo), float(hi)


def surely_better_choice(per_user: Mapping[Any, np.ndarray], default: Any) -> Any:
    """The key of ``per_user`` (each one's per-user metric over the same users, in the same
    order) with the best mean, if its paired gain over ``default``'s is surely above 0 (the
    95% interval of :func:`paired_gain` lies above 0); else ``default``. So a setting
    changes from its default only on evidence, not on validation noise."""
    best = max(
        per_user, key=lambda key: float(np.mean(per_user[key])) if len(per_user[key]) else 0.0
    )
    if best != default and paired_gain(per_user[best], per_user[default])[1] > 0:
        return best
    return default


@dataclass(frozen=True)
class FitMetric:
    """What a fit on validation maximises: ``name`` (for logs), the list length ``k`` it reads
    and ``per_query`` (per-query values whose mean is the metric, paired across systems)."""

    name: str
    k: int
    per_query: Callable[[Sequence[Sequence[int]], Sequence[set[int]], int], np.ndarray]

    def per_user(self, ranked: Sequence[Sequence[int]], relevant: Sequence[set[int]]) -> np.ndarray:
        """The per-query values at this metric's ``k``."""
        return self.per_query(ranked, relevant, self.k)

    def mean(self, ranked: Sequence[Sequence[int]], relevant: Sequence[set[int]]) -> float:
        """The metric (0 with no query that has a relevant item)."""
        vals = self.per_user(ranked, relevant)
        return float(vals.mean()) if len(vals) else 0.0


def recall_at_k(ranked: Sequence[Sequence[int]], relevant: Sequence[set[int]], k: int) -> float:
    """Mean over queries with >= 1 relevant item of |top-k ∩ relevant| / |relevant|."""
    vals = recall_per_query(ranked, relevant, k)
    return float(vals.mean()) if len(vals) else 0.0


def ndcg_per_query(
    ranked: Sequence[Sequence[int]], labels: Sequence[Mapping[int, int]], k: int
) -> np.ndarray:
    """NDCG@k (gain ``2**grade - 1``) of each query with a positive grade (others left out)."""
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    vals = []
    for r, lab in zip(ranked, labels):
        ideal = sorted((g for g in lab.values() if g > 0), reverse=True)[:k]
        if not ideal:
            continue
        gains = np.array([2.0 ** lab.get(int(i), 0) - 1 for i in list(r)[:k]])
        dcg = float((gains * discounts[: len(gains)]).sum())
        idcg = float(((2.0 ** np.array(ideal) - 1) * discounts[: len(ideal)]).sum())
        vals.append(dcg / idcg)
    return np.asarray(vals, dtype=np.float64)


def ndcg_at_k(
    ranked: Sequence[Sequence[int]], labels: Sequence[Mapping[int, int]], k: int
) -> float:
    """Mean NDCG@k with gain ``2**grade - 1``; queries with no positive grade are skipped."""
    vals = ndcg_per_query(ranked, labels, k)
    return float(vals.mean()) if len(vals) else 0.0


def mrr_at_k(ranked: Sequence[Sequence[int]], relevant: Sequence[set[int]], k: int) -> float:
    """Mean reciprocal rank of the first relevant item within the top k (0 if none)."""
    vals = []
    for r, rel in zip(ranked, relevant):
        if not rel:
            continue
        rr = 0.0
        for pos, i in enumerate(list(r)[:k]):
            if int(i) in rel:
                rr = 1.0 / (pos + 1)
                break
        vals.append(rr)
    return float(np.mean(vals)) if vals else 0.0


#: The time protocol's metric (each user's Recall@50, averaged over users).
RECALL_AT_50 = FitMetric("Recall@50", 50, recall_per_query)
#: The random protocol's metric (top-100 accuracy over every held-out positive).
ACCURACY_AT_100 = FitMetric("top-100 accuracy", 100, accuracy_per_query)


def fit_metric(validation: str) -> FitMetric:
    """What the fits on validation maximise (the prior's, the co-visitation table's, the
    EASE baseline's ridge) on a ``validation`` (``time`` or ``random``,
    towers.prior.validation_split): per-user Recall@50 for ``time`` (the time
    protocol's metric); for ``random`` (a model of a random split, judged by the random
    protocol's top-100 accuracy over every held-out positive) that accuracy. Measured on the
    demo data's random split with 5,000 users: fitted on Recall@50 the table kept EASE over
    item-kNN by 0.01 of validation Recall@50, and the served path lost top-100 accuracy to the
    item-kNN baseline, 0.929 [0.888, 0.978] (benchmarks/results/larger_samples_2026-11-30.md)."""
    return ACCURACY_AT_100 if validation == "random" else RECALL_AT_50
