from __future__ import annotations

import math

import numpy as np
import pytest

from towers.metrics import (
    ACCURACY_AT_100,
    RECALL_AT_50,
    accuracy_per_query,
    mrr_at_k,
    ndcg_at_k,
    paired_gain,
    recall_at_k,
    surely_better_choice,
)


def test_recall_skips_queries_without_relevant_items() -> None:
    assert recall_at_k([[1, 2, 3], [4]], [{1, 9}, set()], k=2) == pytest.approx(0.5)


def test_ndcg_perfect_and_swapped() -> None:
    labels = [{1: 3, 2: 1}]
    assert ndcg_at_k([[1, 2, 3]], labels, 10) == pytest.approx(1.0)
    swapped = ndcg_at_k([[2, 1]], labels, 10)
    ideal = 7 + 1 / math.log2(3)
    assert swapped == pytest.approx((1 + 7 / math.log2(3)) / ideal)


def test_mrr() -> None:
    assert mrr_at_k([[5, 6, 7], [1]], [{7}, {2}], 10) == pytest.approx((1 / 3 + 0) / 2)


def test_a_setting_leaves_its_default_only_when_surely_better() -> None:
    base = np.r_[np.ones(100), np.zeros(200)]
    sure = np.r_[np.ones(200), np.zeros(100)]  # 100 more users hit, none lost
    noise = np.r_[np.ones(101), np.zeros(199)]  # one more user
    assert surely_better_choice({"a": base, "b": sure}, "a") == "b"
    assert surely_better_choice({"a": base, "b": noise}, "a") == "a"
    assert surely_better_choice({"a": sure, "b": base}, "a") == "a"  # the default is best
    assert surely_better_choice({"a": np.zeros(0), "b": np.zeros(0)}, "a") == "a"


def test_accuracy_per_query_averages_to_the_accuracy_and_pairs() -> None:
    ranked = [[1, 2, 3], [4, 5, 6], [7], [9]]
    relevant = [{1, 2, 9, 10}, {4}, set(), {8}]  # 3 hits of 6 positives; query 3 left out
    vals = accuracy_per_query(ranked, relevant, 3)
    assert len(vals) == 3 and vals.mean() == pytest.approx(3 / 6)
    # a heavy user's positives weigh more than in recall (mean of 2/4, 1/1, 0/1 = 0.5 too,
    # but not in general): one more hit for the heavy user moves accuracy by 1/6
    other = accuracy_per_query([[1, 2, 9], [4, 5, 6], [7], [9]], relevant, 3)
    gain, _, _ = paired_gain(other, vals)
    assert gain == pytest.approx(1 / 6)
    assert recall_at_k([[1, 2, 9], [4], [7], [9]], relevant, 3) == pytest.approx((3 / 4 + 1) / 3)
    assert len(accuracy_per_query([[1]], [set()], 1)) == 0


def test_fit_metrics_read_their_own_depth() -> None:
    ranked = [list(range(100))]
    relevant = [{10, 60, 99}]
    assert RECALL_AT_50.mean(ranked, relevant) == pytest.approx(1 / 3)
    assert ACCURACY_AT_100.mean(ranked, relevant) == pytest.approx(1.0)
    assert ACCURACY_AT_100.mean([[1]], [set()]) == 0.0
