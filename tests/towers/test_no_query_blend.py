"""The blend for requests without a query (towers/no_query_blend.py): chosen on the
co-visitation validation's served candidates, the retrieval order unless the cross-encoder
raises validation Recall@50."""

from __future__ import annotations

import numpy as np
import pytest

from tests.towers.test_covisit import fit_inputs
from towers.bundle_contract import BLEND_FEATURES
from towers.covisit import fit_model_covisit, validation_ranking
from towers.no_query_blend import CE_WEIGHTS, fit_no_query_blend, logit_scale


def _validation(n_candidates: int = 5):
    events, at, users, vectors = fit_inputs()
    kw = {"validation_s": at - 300_000, "n_candidates": n_candidates}
    table, _ = fit_model_covisit(events, np.arange(400), at, users, vectors, kind="ease", **kw)
    val = validation_ranking(events, np.arange(400), at, users, vectors, kind="ease", **kw)
    assert val is not None and len(val.task) > 20
    return val, table


def _weight(blend, name: str) -> float:
    return float(blend.weights[BLEND_FEATURES.index(name)])


def test_logit_scale_is_the_ratio_of_within_user_spreads() -> None:
    retrieval = [np.array([3.0, 1.0]), np.array([10.0, 8.0])]
    logits = [np.array([1.0, 0.0]), np.array([5.0, 4.0])]
    assert logit_scale(retrieval, logits) == pytest.approx(2.0)
    assert logit_scale([np.ones(3)], [np.array([1.0, 2.0, 3.0])]) == 1.0
    assert logit_scale([], []) == 1.0


def test_a_cross_encoder_that_knows_the_targets_gets_weight() -> None:
    # ranked by the (random) cosine alone, 100 deep: the targets are often below the 50th
    val, _ = _validation(n_candidates=100)
    targets = {u: t for u, t in enumerate(val.task.targets)}
    histories = [h.tobytes() for h in val.task.long_histories]

    def oracle(history: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        u = histories.index(history.tobytes())
        return np.array([5.0 if int(c) in targets[u] else 0.0 for c in candidates], np.float32)

    blend, scores = fit_no_query_blend(val, oracle, None)
    assert _weight(blend, "retrieval") == 1.0 and _weight(blend, "rerank") > 0
    assert max(scores[f"a={a:g}"] for a in CE_WEIGHTS[1:]) > scores["a=0"]
    assert scores["gain_lo"] > 0  # surely better, so kept
    assert _weight(blend, "popularity") == 0 and _weight(blend, "lexical") == 0


def test_a_cross_encoder_against_the_targets_keeps_the_retrieval_order() -> None:
    val, table = _validation(n_candidates=100)
    targets = [set(t) for t in val.task.targets]
    histories = [h.tobytes() for h in val.task.long_histories]

    def wrong(history: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        u = histories.index(history.tobytes())
        return np.array([-5.0 if int(c) in targets[u] else 0.0 for c in candidates], np.float32)

    blend, scores = fit_no_query_blend(val, wrong, table)
    assert blend.weights.tolist() == [0.0, 1.0, 0.0, 0.0] and blend.bias == 0.0
    assert scores["a=0"] >= max(scores[f"a={a:g}"] for a in CE_WEIGHTS)
    # without the table (a model trained without co-visitation) it still fits
    blend, _ = fit_no_query_blend(val, wrong, None)
    assert _weight(blend, "rerank") == 0.0
