from __future__ import annotations

import math

import numpy as np
import pytest

from towers.metrics import mrr_at_k, ndcg_at_k, recall_at_k, surely_better_choice


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
