"""The reranker's deadline loop, ordering and validation, with a fake clock and scorer."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from serving.bundle import BundleError
from serving.errors import RequestError
from serving.reranker import Blend, ItemTexts, Reranker
from serving.tokenizer import QueryTokenizer
from towers.features import SEP_ID
from towers.lexical import LexicalIndex

MS = 1_000_000
#: Padded width of every test pair (a context of at most 2 tokens, one item token): the cost
#: model is per pair-token, so a per-candidate cost of c ms is c / W ms per token.
W = 8
N = 40
ITEM_IDS = np.arange(500, 500 + N, dtype=np.int64)
#: Item at row r is represented by the single token 2000 + r; its logit is LOGITS[r].
LOGITS = np.random.default_rng(1).normal(size=N).astype(np.float32)
POPULARITY = np.linspace(-1, 1, N).astype(np.float32)


class FakeClock:
    """Wall clock in ns that only moves when told to."""

    def __init__(self, start_ns: int = 10**18) -> None:
        self.now_ns = start_ns

    def __call__(self) -> int:
        return self.now_ns

    def advance_ms(self, ms: float) -> None:
        self.now_ns += int(ms * MS)


class FakeScorer:
    """``score_fn`` that costs ``cost_ms`` per pair on the fake clock and returns LOGITS."""

    def __init__(self, clock: FakeClock, cost_ms: float) -> None:
        self.clock, self.cost_ms = clock, cost_ms
        self.calls: list[int] = []

    def __call__(self, ids: np.ndarray, mask: np.ndarray, types: np.ndarray) -> np.ndarray:
        assert ids.shape == mask.shape == types.shape and ids.dtype == np.int64
        self.calls.append(len(ids))
        self.clock.advance_ms(self.cost_ms * len(ids))
        item_token = np.where((types == 1) & (ids != SEP_ID), ids, 0).max(axis=1)
        return LOGITS[item_token - 2000]


def items() -> ItemTexts:
    tokens = (2000 + np.arange(N)).astype(np.int32)
    titles = [f"title {i}" for i in range(N)]
    return ItemTexts(ITEM_IDS, np.arange(N + 1), tokens, titles, POPULARITY)


BLEND = Blend(np.array([1.0, 0.5, 0.1, 0.0], np.float32), 0.2)


def make(cost_ms: float = 1.0, *, chunk_size: int = 4, initial_cost_ms: float = 1.0, **kw):
    clock = FakeClock()
    scorer = FakeScorer(clock, cost_ms)
    reranker = Reranker(
        items(),
        BLEND,
        scorer,
        chunk_size=chunk_size,
        max_k=N,
        clock_ns=clock,
        initial_cost_us=initial_cost_ms * 1e3 / W,
        **kw,
    )
    return reranker, clock, scorer


def candidates(n: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` items in retrieval order (descending retrieval scores)."""
    order = np.random.default_rng(2).permutation(N)[:n]
    return ITEM_IDS[order], np.linspace(0.9, 0.1, n).astype(np.float32)


def expected_blend(cand: np.ndarray, retrieval: np.ndarray) -> np.ndarray:
    rows = cand - 500
    return BLEND.score(LOGITS[rows], retrieval, POPULARITY[rows])


def test_large_budget_scores_everything_and_sorts_by_blend() -> None:
    reranker, clock, _ = make()
    cand, ret = candidates(20)
    res = reranker.rerank(np.array([7, 8]), cand, ret, k=20, budget_ms=1000, start_ns=clock())
    assert res.n_scored == 20 and not res.degraded
    blended = expected_blend(cand, ret)
    order = np.argsort(-blended, kind="stable")
    np.testing.assert_array_equal(res.item_ids, cand[order])
    np.testing.assert_allclose(res.scores, blended[order], rtol=1e-6)
    assert list(res.titles) == [f"title {i - 500}".encode() for i in cand[order]]


def test_deadline_stops_before_the_budget_and_keeps_retrieval_order_below() -> None:
    reranker, clock, scorer = make(cost_ms=1.0, chunk_size=4)
    cand, ret = candidates(20)
    start = clock()
    res = reranker.rerank(np.array([7]), cand, ret, k=20, budget_ms=10, start_ns=start)
    # 1 ms per candidate, chunks of 4: two chunks (8 ms) fit, a third would end at 12 ms.
    assert scorer.calls == [4, 4]
    assert res.n_scored == 8 and res.degraded
    assert clock() - start <= 10 * MS
    scored = cand[:8][np.argsort(-expected_blend(cand[:8], ret[:8]), kind="stable")]
    np.testing.assert_array_equal(res.item_ids[:8], scored)
    np.testing.assert_array_equal(res.item_ids[8:], cand[8:])
    np.testing.assert_array_equal(res.scores[8:], ret[8:])  # unscored: retrieval score


def test_max_call_scores_as_many_whole_chunks_as_fit_in_one_call() -> None:
    reranker, clock, scorer = make(cost_ms=1.0, chunk_size=4, max_call=16)
    cand, ret = candidates(20)
    start = clock()
    res = reranker.rerank(np.array([7]), cand, ret, k=20, budget_ms=10, start_ns=start)
    # 10 candidates' time: two whole chunks in one call, not a third chunk that would overrun.
    assert scorer.calls == [8]
    assert res.n_scored == 8 and clock() - start <= 10 * MS
    reranker, clock, scorer = make(cost_ms=1.0, chunk_size=4, max_call=16)
    res = reranker.rerank(np.array([7]), cand, ret, k=20, budget_ms=100, start_ns=clock())
    assert scorer.calls == [16, 4] and res.n_scored == 20 and not res.degraded  # capped calls


def test_max_call_takes_a_short_tail_in_the_same_call() -> None:
    reranker, clock, scorer = make(cost_ms=1.0, chunk_size=4, max_call=32)
    cand, ret = candidates(18)
    res = reranker.rerank(np.array([7]), cand, ret, k=18, budget_ms=21, start_ns=clock())
    # one call, its rows padded to whole chunks (20: one shape per chunk count)
    assert scorer.calls == [20] and res.n_scored == 18
    reranker, clock, scorer = make(cost_ms=1.0, chunk_size=4, max_call=32)
    res = reranker.rerank(np.array([7]), cand, ret, k=18, budget_ms=19, start_ns=clock())
    assert scorer.calls == [16] and res.n_scored == 16  # the padded tail would not fit


def test_time_spent_in_earlier_stages_counts() -> None:
    reranker, clock, scorer = make(cost_ms=1.0, chunk_size=4)
    cand, ret = candidates(20)
    start = clock()
    clock.advance_ms(7)  # tokenizer, user tower and retriever took 7 ms of the 10
    res = reranker.rerank(np.array([7]), cand, ret, k=5, budget_ms=10, start_ns=start)
    assert scorer.calls == [] and res.n_scored == 0 and res.degraded
    np.testing.assert_array_equal(res.item_ids, cand[:5])


@pytest.mark.parametrize("budget_ms", [0.0, -5.0])
def test_zero_or_negative_budget_skips_reranking(budget_ms: float) -> None:
    reranker, clock, scorer = make()
    cand, ret = candidates(20)
    res = reranker.rerank(np.array([7]), cand, ret, k=10, budget_ms=budget_ms, start_ns=clock())
    assert scorer.calls == [] and res.n_scored == 0 and res.degraded
    np.testing.assert_array_equal(res.item_ids, cand[:10])
    np.testing.assert_array_equal(res.scores, ret[:10])


def test_never_overruns_when_the_estimate_was_too_low() -> None:
    # The estimate says 0.1 ms per candidate, the truth is 1 ms: after the first chunk the
    # loop predicts with the cost it just measured, so it stops in time.
    reranker, clock, scorer = make(cost_ms=1.0, chunk_size=4, initial_cost_ms=0.1)
    cand, ret = candidates(20)
    start = clock()
    res = reranker.rerank(np.array([7]), cand, ret, k=20, budget_ms=10, start_ns=start)
    assert res.n_scored == 8 and clock() - start <= 10 * MS


def test_estimate_follows_measurements_across_requests() -> None:
    reranker, clock, _ = make(cost_ms=2.0, chunk_size=4, initial_cost_ms=1.0)
    cand, ret = candidates(20)
    for _ in range(20):
        reranker.rerank(np.array([7]), cand, ret, k=5, budget_ms=1000, start_ns=clock())
    assert reranker.cost_ns * W == pytest.approx(2.0 * MS, rel=1e-3)
    start = clock()
    res = reranker.rerank(np.array([7]), cand, ret, k=5, budget_ms=17, start_ns=start)
    assert res.n_scored == 8 and clock() - start <= 17 * MS  # 2 chunks of 8 ms fit, not 3


def test_an_inflated_estimate_decays_back_to_the_floor() -> None:
    reranker, clock, _ = make(cost_ms=1.0, chunk_size=4, initial_cost_ms=1.0)
    reranker.cost_ns = 100.0 * MS / W  # left behind by a slow spell
    cand, ret = candidates(20)
    n_scored = []
    for _ in range(40):
        res = reranker.rerank(np.array([7]), cand, ret, k=5, budget_ms=10, start_ns=clock())
        n_scored.append(res.n_scored)
        assert reranker.cost_ns >= reranker.floor_ns
    assert n_scored[0] == 0 and n_scored[-1] == 8


def test_a_calibration_taken_under_load_does_not_lock_scoring_out() -> None:
    # calibrated at 4 ms per candidate while the server was loading; the truth is 1 ms
    reranker, clock, _ = make(cost_ms=1.0, chunk_size=4, initial_cost_ms=4.0)
    cand, ret = candidates(20)
    n_scored = [
        reranker.rerank(np.array([7]), cand, ret, k=5, budget_ms=10, start_ns=clock()).n_scored
        for _ in range(30)
    ]
    assert n_scored[0] == 0 and n_scored[-1] == 8


def test_calibrate_sets_estimate_and_floor() -> None:
    reranker, _, scorer = make(cost_ms=0.25, chunk_size=8, initial_cost_ms=5.0)
    # the calibration context is 16 tokens: pairs of 16 + 1 + 3 tokens, padded to 24
    assert reranker.calibrate(rounds=3) == pytest.approx(0.25e3 / 24)
    assert scorer.calls == [8, 8, 8]
    assert reranker.cost_ns * 24 == pytest.approx(0.25 * MS)
    assert reranker.floor_ns == pytest.approx(0.25 * reranker.cost_ns)  # FLOOR_SHARE


def test_reserve_is_kept_for_answering() -> None:
    reranker, clock, _ = make(cost_ms=1.0, chunk_size=4, reserve_ms=3.0)
    cand, ret = candidates(20)
    start = clock()
    res = reranker.rerank(np.array([7]), cand, ret, k=5, budget_ms=12, start_ns=start)
    assert res.n_scored == 8 and clock() - start <= 9 * MS


def test_top_k_unknown_candidates_and_future_start() -> None:
    reranker, clock, _ = make()
    cand, ret = candidates(10)
    cand = np.concatenate([cand[:3], [-1, 123456], cand[3:]])
    ret = np.concatenate([ret[:3], [0.5, 0.5], ret[3:]]).astype(np.float32)
    res = reranker.rerank(np.array([7]), cand, ret, k=4, budget_ms=1000, start_ns=clock() + 10**12)
    assert len(res.item_ids) == 4 and res.n_scored == 10 and res.n_candidates == 10
    assert -1 not in res.item_ids and 123456 not in res.item_ids


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"k": 0}, r"K must be in 1\.\.40"),
        ({"k": 41}, r"K must be in 1\.\.40"),
        ({"budget_ms": math.nan}, "BUDGET_MS must be a finite"),
        ({"budget_ms": math.inf}, "BUDGET_MS must be a finite"),
        ({"budget_ms": 10_001}, "<= 10000"),
    ],
)
def test_bad_arguments_are_request_errors(kwargs: dict, message: str) -> None:
    reranker, clock, _ = make()
    cand, ret = candidates(5)
    args = {"k": 5, "budget_ms": 10.0, **kwargs}
    with pytest.raises(RequestError, match=message):
        reranker.rerank(np.array([7]), cand, ret, start_ns=clock(), **args)


def test_mismatched_candidate_lengths() -> None:
    reranker, clock, _ = make()
    with pytest.raises(RequestError, match="CANDIDATE_SCORES has 2 values but CANDIDATE_IDS has 3"):
        reranker.rerank(
            np.array([7]), ITEM_IDS[:3], np.ones(2, np.float32), k=3, budget_ms=5, start_ns=0
        )


def test_empty_query_context_is_the_last_two_history_titles(teacher_tokenizer) -> None:
    clock = FakeClock()
    reranker = Reranker(
        items(),
        BLEND,
        FakeScorer(clock, 0.0),
        clock_ns=clock,
        tokenizer=QueryTokenizer(teacher_tokenizer),
    )
    tok = reranker.tokenizer
    history = np.array([ITEM_IDS[1], ITEM_IDS[2], 99999, ITEM_IDS[3]])  # oldest first
    got = reranker.context_tokens("", history)
    np.testing.assert_array_equal(got, tok.text_tokens("title 3 title 2", 30))
    np.testing.assert_array_equal(reranker.context_tokens("", np.zeros(0, np.int64)), [])
    np.testing.assert_array_equal(
        reranker.context_tokens("red shoes", history), tok.query_tokens("red shoes")
    )


def test_infer_tensors(teacher_tokenizer) -> None:
    clock = FakeClock()
    reranker = Reranker(
        items(),
        BLEND,
        FakeScorer(clock, 0.5),
        chunk_size=4,
        max_k=N,
        clock_ns=clock,
        tokenizer=QueryTokenizer(teacher_tokenizer),
    )
    cand, ret = candidates(12)
    out = reranker.infer(
        {
            "QUERY": np.array([b"red shirt"], dtype=object),
            "HISTORY_IDS": np.zeros(0, np.int64),
            "CANDIDATE_IDS": cand,
            "CANDIDATE_SCORES": ret,
            "K": np.array([5], np.int32),
            "BUDGET_MS": np.array([1000], np.float32),
            "START_NS": np.array([clock()], np.int64),
        }
    )
    assert out["ITEM_IDS"].dtype == np.int64 and out["ITEM_IDS"].shape == (5,)
    assert out["SCORES"].dtype == np.float32 and out["ITEM_TITLES"].dtype == object
    assert out["N_SCORED"].tolist() == [12] and out["DEGRADED"].tolist() == [False]
    with pytest.raises(RequestError, match="QUERY must be UTF-8 text"):
        reranker.infer({"QUERY": np.array([b"\xff"], dtype=object)})


def test_blend_file_must_name_the_features(tmp_path: Path) -> None:
    path = tmp_path / "blend.json"
    path.write_text(json.dumps({"features": ["a", "b", "c"], "weights": [1, 2, 3], "bias": 0}))
    with pytest.raises(BundleError, match="features must be"):
        Blend.from_json(path)


def test_blend_without_the_lexical_feature_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "blend.json"
    legacy = {"features": ["rerank", "retrieval", "popularity"], "weights": [1, 2, 3], "bias": 0}
    path.write_text(json.dumps(legacy))
    blend = Blend.from_json(path)
    np.testing.assert_array_equal(blend.weights, [1, 2, 3, 0])
    one = np.ones(2, np.float32)
    np.testing.assert_allclose(blend.score(one, one, one, np.full(2, 9.0, np.float32)), [6, 6])


def test_lexical_feature_lifts_exact_word_matches() -> None:
    titles = [f"plain item {i}" for i in range(N)]
    titles[7] = "walnut bookcase"  # the only item that shares a word with the query
    blend = Blend(np.array([0.0, 1.0, 0.0, 1.0], np.float32), 0.0)
    table = ItemTexts(
        ITEM_IDS, np.arange(N + 1), (2000 + np.arange(N)).astype(np.int32), titles, POPULARITY
    )
    clock = FakeClock()
    reranker = Reranker(
        table,
        blend,
        FakeScorer(clock, 0.1),
        max_k=N,
        clock_ns=clock,
        lexical=LexicalIndex.build(titles),
    )
    cand = ITEM_IDS[[3, 5, 7, 9]]
    ret = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    res = reranker.rerank(np.array([5, 6]), cand, ret, k=4, budget_ms=1e3, query="Walnut shelf")
    assert res.item_ids[0] == ITEM_IDS[7]
    # without a query (recommendation) the lexical feature is 0: retrieval order
    res = reranker.rerank(np.array([5, 6]), cand, ret, k=4, budget_ms=1e3)
    np.testing.assert_array_equal(res.item_ids, cand)
    with pytest.raises(ValueError, match="lexical index"):
        Reranker(table, blend, FakeScorer(clock, 0.1), lexical=LexicalIndex.build(titles[:5]))


def test_item_tables_must_agree() -> None:
    with pytest.raises(ValueError, match="item tables disagree"):
        ItemTexts(ITEM_IDS, np.arange(N + 1), np.arange(N), ["t"] * (N - 1), POPULARITY)


def test_from_dir_loads_a_version_folder(repository: Path) -> None:
    reranker = Reranker.from_dir(repository / "reranker" / "1", model_version="test-v1")
    assert reranker.cost_ns > 0 and reranker.max_k == 20
    with pytest.raises(BundleError, match="configured for version 'other'"):
        Reranker.from_dir(repository / "reranker" / "1", model_version="other", calibrate=False)


@pytest.mark.parametrize("with_tokenizer", [True, False], ids=["tokenizer", "no-tokenizer"])
def test_warm_up_scores_two_chunks_and_keeps_the_cost_estimate(
    teacher_tokenizer, with_tokenizer: bool
) -> None:
    tokenizer = QueryTokenizer(teacher_tokenizer) if with_tokenizer else None
    reranker, clock, scorer = make(
        cost_ms=3.0, chunk_size=4, initial_cost_ms=0.5, tokenizer=tokenizer
    )
    reranker.warm_up()
    # every shape once (calls of 4 rows, widths 8 to 40: items of 1 token, contexts of 0 to
    # 30), then a query and an empty query: one whole chunk each
    assert reranker.shapes() == [(4, w) for w in (8, 16, 24, 32, 40)]
    assert scorer.calls == [4] * 5 + [4, 4]
    assert reranker.cost_ns * W == pytest.approx(0.5 * MS)
    assert reranker.floor_ns * W == pytest.approx(0.25 * 0.5 * MS)
    fresh, fresh_clock, _ = make(cost_ms=3.0, chunk_size=4, initial_cost_ms=0.5)
    cand, ret = candidates(20)
    res = reranker.rerank(np.array([7]), cand, ret, k=10, budget_ms=10, start_ns=clock())
    ref = fresh.rerank(np.array([7]), cand, ret, k=10, budget_ms=10, start_ns=fresh_clock())
    assert res.n_scored == ref.n_scored
    np.testing.assert_array_equal(res.item_ids, ref.item_ids)


def test_warm_up_on_a_loaded_version_folder(repository: Path) -> None:
    reranker = Reranker.from_dir(repository / "reranker" / "1", model_version="test-v1")
    cost = reranker.cost_ns, reranker.floor_ns
    reranker.warm_up()
    assert (reranker.cost_ns, reranker.floor_ns) == cost
    ids = reranker.items.rows.item_ids[:12]
    res = reranker.rerank(
        reranker.tokenizer.query_tokens("red shirt"),
        ids,
        np.linspace(1, 0, 12).astype(np.float32),
        k=5,
        budget_ms=1000,
    )
    assert res.n_scored == 12 and len(res.item_ids) == 5


class TokenScorer(FakeScorer):
    """``score_fn`` that costs ``cost_ms`` per pair-token (padding included)."""

    def __call__(self, ids: np.ndarray, mask: np.ndarray, types: np.ndarray) -> np.ndarray:
        self.widths = [*getattr(self, "widths", []), ids.shape[1]]
        self.calls.append(len(ids))
        self.clock.advance_ms(self.cost_ms * ids.size)
        item_token = np.where((types == 1) & (ids != SEP_ID), ids, 0).max(axis=1)
        return LOGITS[item_token - 2000]


def test_the_cost_model_is_per_token_so_long_contexts_do_not_overrun() -> None:
    """Learnt on short search pairs, the estimate still holds for homepage pairs twice as
    long (a per-candidate estimate overran them by half)."""
    clock = FakeClock()
    scorer = TokenScorer(clock, 0.125)  # 1 ms per candidate at width 8
    reranker = Reranker(
        items(), BLEND, scorer, chunk_size=4, max_call=16, max_k=N, clock_ns=clock,
        initial_cost_us=125.0,
    )  # fmt: skip
    cand, ret = candidates(20)
    for _ in range(10):  # search: context of 1 token, width 8
        reranker.rerank(np.array([7]), cand, ret, k=5, budget_ms=1e3, start_ns=clock())
    assert reranker.cost_ns == pytest.approx(0.125 * MS, rel=1e-3)
    long_context = np.full(12, 7)  # 12 + 1 + 3 = 16 tokens: 2 ms per candidate
    start = clock()
    res = reranker.rerank(long_context, cand, ret, k=5, budget_ms=17, start_ns=start)
    assert res.n_scored == 8 and clock() - start <= 17 * MS
    assert scorer.calls[-1] == 8 and scorer.widths[-1] == 16  # one call, not 16 that overrun


def test_pair_segments_are_cut_to_the_configured_lengths() -> None:
    tokens = np.tile(2000 + np.arange(N), 30).reshape(30, N).T.reshape(-1).astype(np.int32)
    table = ItemTexts(ITEM_IDS, np.arange(0, 30 * N + 1, 30), tokens, ["t"] * N, POPULARITY)
    clock = FakeClock()
    scorer = TokenScorer(clock, 0.0)
    reranker = Reranker(
        table, BLEND, scorer, chunk_size=4, max_k=N, clock_ns=clock,
        max_item_tokens=10, max_context_tokens=4,
    )  # fmt: skip
    cand, ret = candidates(8)
    res = reranker.rerank(np.full(20, 7), cand, ret, k=8, budget_ms=1e3, start_ns=clock())
    assert res.n_scored == 8
    assert scorer.widths == [24, 24]  # 4 + 10 + 3 = 17, padded to 24
    for bad in ({"max_item_tokens": 0}, {"max_item_tokens": 49}, {"max_context_tokens": -1}):
        with pytest.raises(ValueError, match="max_"):
            Reranker(table, BLEND, scorer, **bad)


def test_max_scored_caps_the_depth_and_ends_the_request_early() -> None:
    reranker, clock, scorer = make(cost_ms=1.0, chunk_size=4, max_scored=8)
    cand, ret = candidates(20)
    start = clock()
    res = reranker.rerank(np.array([7]), cand, ret, k=20, budget_ms=1000, start_ns=start)
    assert sum(scorer.calls) == 8 and res.n_scored == 8 and res.degraded
    assert clock() - start <= 9 * MS  # two chunks of 1 ms each per candidate, not the budget
    np.testing.assert_array_equal(res.item_ids[8:], cand[8:])
    with pytest.raises(ValueError, match="max_scored"):
        make(max_scored=0)


def test_a_one_layer_cross_encoder_is_served_in_its_context_once_form(
    untrained_bundle: Path,
) -> None:
    """The exported 1-layer cross-encoder takes the context once per call: the served stage
    reads the form from the graph and scores what the PyTorch pair model scores; every call
    shape (rows, item width, context width) is warmed."""
    import torch

    from towers.features import build_pairs
    from towers.models import load_module

    reranker = Reranker.from_dir(untrained_bundle, calibrate=False)
    assert reranker.context_once
    rows = np.arange(20)
    items = [reranker.items.item_tokens(r) for r in rows]
    module = load_module("reranker", untrained_bundle.parent / "artifacts" / "reranker")
    for context in (reranker.tokenizer.query_tokens("red cotton shirt"), np.zeros(0, np.int64)):
        with torch.no_grad():
            expected = module(*(torch.from_numpy(a) for a in build_pairs(context, items)))
        got = reranker._score_rows(context, rows)
        np.testing.assert_allclose(got, expected.numpy(), atol=1e-4)
    shapes = reranker.shapes()
    assert shapes and all(len(s) == 3 and s[1] % 8 == 0 and s[2] % 8 == 0 for s in shapes)
    assert reranker.warm_shapes() == len(shapes)
    result = reranker.rerank(
        reranker.tokenizer.query_tokens("red shirt"),
        reranker.items.rows.item_ids[:30],
        np.linspace(1, 0, 30).astype(np.float32),
        k=10,
        budget_ms=10_000,
    )
    assert result.n_scored == 30 and len(result.item_ids) == 10


def test_requests_without_a_query_use_the_no_query_blend(tmp_path: Path) -> None:
    """With a ``no_query`` blend (here the retrieval order), a request without a query keeps
    the retrieval order while one with a query is still ordered by the search blend; a
    ``blend.json`` without it serves both with the search blend."""
    reranker, clock, scorer = make(no_query_blend=Blend.retrieval_only())
    cand = ITEM_IDS[:12]
    ret = np.linspace(1.0, 0.5, 12).astype(np.float32)
    searched = BLEND.score(LOGITS[:12], ret, POPULARITY[:12])
    res = reranker.rerank(np.array([7]), cand, ret, k=12, budget_ms=1e3, start_ns=clock())
    # the retrieval order needs no cross-encoder: nothing scored, nothing degraded
    assert res.n_scored == 0 and not res.degraded and not scorer.calls
    np.testing.assert_array_equal(res.item_ids, cand)
    np.testing.assert_array_equal(res.scores, ret)
    res = reranker.rerank(
        np.array([7]), cand, ret, k=12, budget_ms=1e3, start_ns=clock(), query="title"
    )
    np.testing.assert_array_equal(res.item_ids, cand[np.argsort(-searched, kind="stable")])
    assert not np.array_equal(res.item_ids, cand) and res.n_scored == 12
    # a no_query blend that uses the cross-encoder scores as before
    weighted = Blend(np.array([1.0, 1.0, 0.0, 0.0], np.float32), 0.0)
    reranker, clock, _ = make(no_query_blend=weighted)
    res = reranker.rerank(np.array([7]), cand, ret, k=12, budget_ms=1e3, start_ns=clock())
    expected = weighted.score(LOGITS[:12], ret, POPULARITY[:12])
    assert res.n_scored == 12 and not res.degraded
    np.testing.assert_array_equal(res.item_ids, cand[np.argsort(-expected, kind="stable")])

    path = tmp_path / "blend.json"
    BLEND.write(tmp_path, no_query=Blend.retrieval_only())
    no_query = Blend.no_query_from_json(path)
    assert no_query is not None and no_query.weights.tolist() == [0, 1, 0, 0]
    np.testing.assert_array_equal(Blend.from_json(path).weights, BLEND.weights)
    BLEND.write(tmp_path)
    assert Blend.no_query_from_json(path) is None
    path.write_text(json.dumps({**BLEND.to_dict(), "no_query": [1, 2]}))
    with pytest.raises(BundleError, match="no_query must be a JSON object"):
        Blend.no_query_from_json(path)
    path.write_text(json.dumps({**BLEND.to_dict(), "no_query": {"features": ["x"]}}))
    with pytest.raises(BundleError, match=r"\(no_query\): features must be"):
        Blend.no_query_from_json(path)
