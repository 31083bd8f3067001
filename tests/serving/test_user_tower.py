"""History resolution and user-tower inputs, with a stand-in for the ONNX session."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from serving.errors import RequestError
from serving.user_tower import PAD_TO, StoredHistory, UserEncoder
from towers.features import MAX_HISTORY, recency_weights

DIM = 4
ITEM_IDS = np.arange(100, 150, dtype=np.int64)
VECTORS = np.eye(50, DIM, dtype=np.float32) + 0.01 * np.arange(50, dtype=np.float32)[:, None]
TAU_S = 3600.0
QUERY = (np.array([[101, 2417, 102]]), np.ones((1, 3), np.int64))
EMPTY = (np.array([[101, 102]]), np.ones((1, 2), np.int64))


class StandIn:
    """Records the feeds of each call and returns a fixed unit vector."""

    def __init__(self) -> None:
        self.feeds: list[dict[str, np.ndarray]] = []

    def __call__(self, **feeds: np.ndarray) -> np.ndarray:
        self.feeds.append(feeds)
        return np.full((len(feeds["input_ids"]), DIM), 0.5, np.float32)


def stored() -> StoredHistory:
    # user 7: items 110, 111, 112; user 8: only an unknown item
    return StoredHistory(
        user_ids=np.array([7, 8]),
        offsets=np.array([0, 3, 4]),
        item_ids=np.array([110, 111, 112, 999]),
        ts=np.array([1000, 2000, 3000, 4000]),
    )


def encoder() -> tuple[UserEncoder, StandIn]:
    fn = StandIn()
    return UserEncoder(ITEM_IDS, VECTORS, recency_tau_s=TAU_S, encode_fn=fn, stored=stored()), fn


def test_request_history_wins_and_unknown_ids_are_dropped() -> None:
    enc, _ = encoder()
    h = enc.resolve_history(7, np.array([120, 5, 121, 6]), np.array([10, 20, 30, 40]))
    assert h.source == "request" and h.n_unknown == 2
    assert h.item_ids.tolist() == [120, 121] and h.ts.tolist() == [10, 30]
    assert h.rows.tolist() == [20, 21]


def test_keeps_the_newest_max_history_oldest_first() -> None:
    enc, _ = encoder()
    n = MAX_HISTORY + 5
    ids = ITEM_IDS[:n]
    ts = np.arange(n)[::-1] * 10  # sent newest first
    h = enc.resolve_history(-1, ids, ts)
    assert len(h.item_ids) == MAX_HISTORY
    assert np.all(np.diff(h.ts) >= 0)
    assert set(h.item_ids.tolist()) == set(ids[:MAX_HISTORY].tolist())  # the newest ones


def test_hands_on_a_longer_history_than_it_encodes() -> None:
    """The tower encodes the newest MAX_HISTORY items; HISTORY_USED (the retriever's
    co-visitation input) carries the newest ``hand_on`` known ids, oldest first."""
    fn = StandIn()
    enc = UserEncoder(ITEM_IDS, VECTORS, recency_tau_s=TAU_S, encode_fn=fn, hand_on=30)
    ids = np.concatenate([ITEM_IDS[:40], [999]])  # 999: not in the catalog
    ts = np.arange(len(ids)) * 10
    out = enc.infer(
        {
            "INPUT_IDS": EMPTY[0],
            "ATTENTION_MASK": EMPTY[1],
            "HAS_QUERY": np.array([[0.0]], np.float32),
            "USER_ID": np.array([-1], np.int64),
            "HISTORY_IDS": ids,
            "HISTORY_TS": ts,
        }
    )
    assert out["HISTORY_USED"].tolist() == ITEM_IDS[10:40].tolist()
    assert int((fn.feeds[-1]["history_weights"] > 0).sum()) == MAX_HISTORY
    np.testing.assert_array_equal(
        fn.feeds[-1]["history_vectors"][0, :MAX_HISTORY], VECTORS[40 - MAX_HISTORY : 40]
    )
    with pytest.raises(ValueError, match="hand_on >= max_history"):
        UserEncoder(ITEM_IDS, VECTORS, recency_tau_s=TAU_S, encode_fn=fn, hand_on=5)


def test_stored_history_when_the_request_has_none_or_only_unknown_ids() -> None:
    enc, _ = encoder()
    empty = np.zeros(0, np.int64)
    assert enc.resolve_history(7, empty, empty).item_ids.tolist() == [110, 111, 112]
    h = enc.resolve_history(7, np.array([5, 6]), np.array([1, 2]))
    assert h.source == "stored" and h.n_unknown == 2 and len(h.item_ids) == 3


@pytest.mark.parametrize("user_id", [-1, 8, 123456])
def test_no_history_for_anonymous_unknown_or_fully_dropped_users(user_id: int) -> None:
    enc, _ = encoder()
    empty = np.zeros(0, np.int64)
    h = enc.resolve_history(user_id, empty, empty)
    assert h.source == "none" and len(h.item_ids) == 0


def test_mismatched_history_lengths() -> None:
    enc, _ = encoder()
    with pytest.raises(RequestError, match="HISTORY_TS has 1 entries but HISTORY_IDS has 2"):
        enc.resolve_history(-1, np.array([110, 111]), np.array([5]))


@pytest.mark.parametrize("user_id,who", [(-1, "anonymous user -1"), (987654321, "user 987654321")])
def test_empty_query_and_no_history_is_a_request_error(user_id: int, who: str) -> None:
    enc, fn = encoder()
    empty = np.zeros(0, np.int64)
    history = enc.resolve_history(user_id, empty, empty)
    with pytest.raises(RequestError, match=f"empty query and no known history for {who}: send"):
        enc.encode(*EMPTY, 0.0, history, user_id)
    assert fn.feeds == []


def test_feeds_with_history() -> None:
    enc, fn = encoder()
    history = enc.resolve_history(-1, np.array([103, 101]), np.array([100, 4000]))
    vec = enc.encode(*EMPTY, 0.0, history)
    assert vec.shape == (1, DIM) and vec.dtype == np.float32
    feeds = fn.feeds[-1]
    assert feeds["has_query"].tolist() == [[0.0]] and feeds["has_query"].dtype == np.float32
    assert feeds["history_vectors"].shape == (1, PAD_TO, DIM)  # padded to a few shapes
    np.testing.assert_array_equal(feeds["history_vectors"][0, :2], VECTORS[[3, 1]])
    assert not feeds["history_vectors"][0, 2:].any() and not feeds["history_weights"][0, 2:].any()
    np.testing.assert_allclose(feeds["history_weights"][0, :2], recency_weights([100, 4000], TAU_S))
    assert feeds["input_ids"].dtype == np.int64 and feeds["input_ids"].shape[1] % PAD_TO == 0


def test_query_without_history_gets_one_zero_padded_slot() -> None:
    enc, fn = encoder()
    empty = np.zeros(0, np.int64)
    enc.encode(*QUERY, 1.0, enc.resolve_history(-1, empty, empty))
    feeds = fn.feeds[-1]
    assert feeds["has_query"].tolist() == [[1.0]]
    assert feeds["history_vectors"].shape == (1, PAD_TO, DIM)
    assert not feeds["history_vectors"].any() and not feeds["history_weights"].any()


def test_infer_tensors() -> None:
    enc, fn = encoder()
    out = enc.infer(
        {
            "INPUT_IDS": QUERY[0],
            "ATTENTION_MASK": QUERY[1],
            "HAS_QUERY": np.array([[1.0]], np.float32),
            "USER_ID": np.array([7], np.int64),
            "HISTORY_IDS": np.zeros(0, np.int64),
            "HISTORY_TS": np.zeros(0, np.int64),
        }
    )
    assert out["USER_VECTOR"].shape == (1, DIM)
    assert out["HISTORY_USED"].tolist() == [110, 111, 112]
    with pytest.raises(RequestError, match="ATTENTION_MASK must have the shape of INPUT_IDS"):
        enc.infer({**_tensors(), "ATTENTION_MASK": np.ones((1, 2), np.int64)})
    with pytest.raises(RequestError, match=r"INPUT_IDS must have shape \[1, L\]"):
        enc.infer({**_tensors(), "INPUT_IDS": np.ones((1, 40), np.int64)})


def _tensors() -> dict[str, np.ndarray]:
    return {
        "INPUT_IDS": QUERY[0],
        "ATTENTION_MASK": QUERY[1],
        "HAS_QUERY": np.array([[1.0]], np.float32),
        "USER_ID": np.array([-1], np.int64),
        "HISTORY_IDS": np.zeros(0, np.int64),
        "HISTORY_TS": np.zeros(0, np.int64),
    }


def test_inconsistent_stored_history_is_refused() -> None:
    with pytest.raises(ValueError, match="inconsistent stored history"):
        StoredHistory(np.array([1, 2]), np.array([0, 3]), np.array([1, 2, 3]), np.array([1, 2, 3]))


def test_from_dir_with_the_real_onnx_graph(repository: Path, bundle: Path) -> None:
    enc = UserEncoder.from_dir(repository / "user_tower" / "1", model_version="test-v1")
    vec = enc.infer({**_tensors(), "USER_ID": np.array([2], np.int64)})["USER_VECTOR"]
    assert vec.shape == (1, 8)
    assert np.linalg.norm(vec) == pytest.approx(1.0, abs=1e-5)
    # user 1's stored history holds one item the catalog lacks: it is dropped
    h = enc.resolve_history(1, np.zeros(0, np.int64), np.zeros(0, np.int64))
    assert h.source == "stored" and h.n_unknown == 1 and len(h.item_ids) == 2


def test_warm_up_runs_a_query_and_an_empty_query_with_history() -> None:
    enc, fn = encoder()
    enc.warm_up()
    assert [f["has_query"].tolist() for f in fn.feeds] == [[[1.0]], [[0.0]]]
    assert fn.feeds[0]["input_ids"].shape == (1, 8)  # [CLS] + 6 tokens + [SEP]
    for feeds in fn.feeds:
        np.testing.assert_array_equal(feeds["history_vectors"][0, :5], VECTORS[:5])
        assert np.all(np.diff(feeds["history_weights"][0, :5]) > 0)  # oldest first
    out = enc.infer({**_tensors(), "USER_ID": np.array([7], np.int64)})
    assert out["HISTORY_USED"].tolist() == [110, 111, 112]  # stored history untouched


def test_warm_up_with_an_empty_catalog_runs_the_query_only() -> None:
    fn = StandIn()
    enc = UserEncoder(
        np.zeros(0, np.int64), np.zeros((0, DIM), np.float32), recency_tau_s=TAU_S, encode_fn=fn
    )
    enc.warm_up()
    assert len(fn.feeds) == 1 and fn.feeds[0]["has_query"].tolist() == [[1.0]]


def test_warm_up_with_the_real_onnx_graph_leaves_answers_unchanged(repository: Path) -> None:
    folder = repository / "user_tower" / "1"
    cold = UserEncoder.from_dir(folder, model_version="test-v1")
    warm = UserEncoder.from_dir(folder, model_version="test-v1")
    warm.warm_up()
    for user_id in (-1, 2):
        tensors = {**_tensors(), "USER_ID": np.array([user_id], np.int64)}
        np.testing.assert_array_equal(
            warm.infer(tensors)["USER_VECTOR"], cold.infer(tensors)["USER_VECTOR"]
        )


def test_padding_leaves_the_real_graphs_vector_unchanged(repository: Path) -> None:
    folder = repository / "user_tower" / "1"
    enc = UserEncoder.from_dir(folder, model_version="test-v1")
    raw = enc.encode_fn  # the ONNX session, called here without padding
    ids = np.array([[101, 2054, 2003, 1037, 102]], np.int64)
    history = enc.resolve_history(-1, enc.items.item_ids[:3], np.array([100, 200, 300]))
    for has_query in (1.0, 0.0):
        padded = enc.encode(ids, np.ones_like(ids), has_query, history)
        plain = raw(
            input_ids=ids,
            attention_mask=np.ones_like(ids),
            has_query=np.array([[has_query]], np.float32),
            history_vectors=enc.item_vectors[history.rows][None],
            history_weights=recency_weights(history.ts, enc.recency_tau_s)[None].astype(np.float32),
        )
        np.testing.assert_allclose(padded, plain, atol=1e-6)


def test_an_empty_query_skips_the_graph_with_the_same_vector(untrained_bundle: Path) -> None:
    """The bundle's history head gives an empty-query request the graph's own vector without
    running it; a request with a query still runs the graph."""
    fast = UserEncoder.from_dir(untrained_bundle)
    assert fast.history_head is not None
    calls: list[int] = []
    graph = fast.encode_fn

    def counted(**feeds: np.ndarray) -> np.ndarray:
        calls.append(1)
        return graph(**feeds)

    fast.encode_fn = counted
    slow = UserEncoder.from_dir(untrained_bundle)
    slow.history_head = None
    ids = fast.items.item_ids[[5, 9, 2]]
    history = fast.resolve_history(-1, ids, np.array([100, 2000, 4000]))
    empty = (np.array([[101, 102]]), np.ones((1, 2), np.int64))
    np.testing.assert_allclose(
        fast.encode(*empty, 0.0, history), slow.encode(*empty, 0.0, history), atol=1e-5
    )
    assert calls == []
    query = (np.array([[101, 2000, 3000, 102]]), np.ones((1, 4), np.int64))
    np.testing.assert_allclose(
        fast.encode(*query, 1.0, history), slow.encode(*query, 1.0, history), atol=1e-6
    )
    assert calls == [1]
    with pytest.raises(ValueError, match="history_head must be"):
        UserEncoder(
            fast.items.item_ids, fast.item_vectors, recency_tau_s=60.0, encode_fn=graph,
            history_head=np.zeros((3, 3), np.float32),
        )  # fmt: skip
