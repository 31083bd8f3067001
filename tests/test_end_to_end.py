"""End to end on the real stack: generated data, trained towers, ONNX, FAISS, tritonserver, gRPC.

One module-scoped fixture builds a tiny trained repository (a couple of minutes on 2 cores)
and starts the real ``tritonserver`` from the nvidia-pytriton wheel on free loopback ports.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from collections import Counter

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from client.grpc_client import TowerServeClient, TowerServeError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_model):
    from export.bundle import build_bundle
    from export.repository import write_repository
    from serving.triton import TritonServer, free_ports
    from towers.data import load_dataset

    work = tmp_path_factory.mktemp("e2e")
    bundle = work / "bundle"
    manifest = build_bundle(tiny_model["artifacts"], tiny_model["data"], bundle).to_dict()
    write_repository(bundle, work / "repository")
    grpc_port, http_port, metrics_port = free_ports(3)
    server = TritonServer(
        work / "repository", grpc_port=grpc_port, http_port=http_port, metrics_port=metrics_port
    )
    server.start()
    try:
        server.wait_ready(timeout_s=300)
        with TowerServeClient(f"127.0.0.1:{grpc_port}") as client:
            yield {
                "client": client,
                "server": server,
                "data": load_dataset(tiny_model["data"]),
                "manifest": manifest,
                "bundle": bundle,
                "repository": work / "repository",
                "url": f"127.0.0.1:{grpc_port}",
            }
    finally:
        server.stop()
    assert not server.is_running


def _good(client: TowerServeClient) -> None:
    rec = client.recommend("running shoes", k=5, budget_ms=200)
    assert len(rec.item_ids) == 5
    # user_tower, retriever and reranker of one version folder and model version
    assert len(rec.served_by) == 3 and len(set(rec.served_by)) == 1, rec.served_by


def test_query_for_a_product_type_returns_that_type(stack) -> None:
    items = stack["data"].items.set_index("item_id")
    counts = items["product_type"].value_counts()
    hits = []
    for product_type in counts.index[:5]:
        rec = stack["client"].recommend(product_type, k=10, budget_ms=500)
        assert len(rec.item_ids) == 10 and len(set(rec.item_ids)) == 10
        assert rec.scores == sorted(rec.scores, reverse=True)[: len(rec.scores)] or rec.degraded
        types = Counter(items.loc[rec.item_ids, "product_type"])
        hits.append(types[product_type] / 10)
        assert all(t for t in rec.titles)
    assert np.mean(hits) >= 0.6, hits


def test_history_only_and_stored_user_history(stack) -> None:
    client, events = stack["client"], stack["data"].events
    user = int(events["user_id"].iloc[0])
    by_user = client.recommend("", user_id=user, k=5)
    assert len(by_user.item_ids) == 5
    recent = events[events["user_id"] == user].sort_values("ts").tail(3)
    explicit = client.recommend(
        "", history=recent["item_id"].tolist(), history_ts=recent["ts"].tolist(), k=5
    )
    assert len(explicit.item_ids) == 5


def test_exclude_recent_leaves_the_history_out_of_full_lists(stack, tmp_path) -> None:
    """A repository written with ``exclude_recent`` (the parameters the server's model.py
    reads, through serving.stage_params) never returns the newest history items a
    recommendation carries, and a long history does not shorten the list; the default
    repository does return some."""
    from export.repository import write_repository
    from serving.pipeline import InProcessRecommend

    events = stack["data"].events.sort_values("ts")
    user = int(events["user_id"].value_counts().index[0])
    mine = events[events["user_id"] == user].tail(60)
    history = mine["item_id"].to_numpy(np.int64)
    request = {"history_ids": history, "history_ts": mine["ts"].to_numpy(np.int64), "k": 50}
    repo = write_repository(stack["bundle"], tmp_path / "excl", exclude_recent=1000)
    out = InProcessRecommend.from_repository(repo)("", budget_ms=0, **request)
    assert len(out.item_ids) == 50 and not set(out.item_ids.tolist()) & set(history.tolist())
    served = InProcessRecommend.from_repository(stack["repository"])("", budget_ms=0, **request)
    assert set(served.item_ids.tolist()) & set(history.tolist())


def test_budget_zero_degrades_to_retrieval_order(stack) -> None:
    rec = stack["client"].recommend("blue jeans", k=10, budget_ms=0)
    assert rec.n_scored == 0 and rec.degraded
    full = stack["client"].recommend("blue jeans", k=10, budget_ms=5000)
    assert full.n_scored > 0 and not full.degraded


def test_server_answers_as_the_in_process_served_path(stack) -> None:
    """The real server's top 10 at budget 0 equals InProcessRecommend.from_repository's (the
    served path `towerserve eval --repository` measures) for 50 requests: held-out queries,
    then users' histories with an empty query."""
    from serving.pipeline import InProcessRecommend

    served = InProcessRecommend.from_repository(stack["repository"])
    data = stack["data"]
    test = data.queries[data.queries["split"] == "test"]
    queries = test["query_text"].drop_duplicates().head(25).tolist()
    events = data.events.sort_values("ts")
    users = events["user_id"].drop_duplicates().head(25).tolist()
    requests: list[dict] = [{"query": q} for q in queries]
    for user in users:
        recent = events[events["user_id"] == user].tail(5)
        requests.append(
            {
                "query": "",
                "history": recent["item_id"].tolist(),
                "history_ts": recent["ts"].tolist(),
            }
        )
    assert len(requests) == 50
    for req in requests:
        remote = stack["client"].recommend(k=10, budget_ms=0, **req)
        local = served(
            req["query"],
            history_ids=np.asarray(req.get("history", []), np.int64),
            history_ts=np.asarray(req.get("history_ts", []), np.int64),
            k=10,
            budget_ms=0,
        )
        assert list(remote.item_ids) == [int(i) for i in local.item_ids], req


def test_the_trained_sequence_block_serves_homepage_requests_as_the_graph(stack) -> None:
    """The tiny preset keeps the user tower's sequence block: the served stage computes a
    request without a query in numpy (head + towers.history_sequence) and gets the exported
    graph's vector, for real users' histories."""
    from serving.user_tower import UserEncoder

    folder = stack["repository"] / "user_tower" / "1"
    fast = UserEncoder.from_dir(folder)
    assert fast.history_sequence is not None and fast.history_head is not None
    slow = UserEncoder.from_dir(folder)
    slow.history_head = None  # the graph for every request
    events = stack["data"].events.sort_values("ts")
    empty = (np.array([[101, 102]]), np.ones((1, 2), np.int64))
    for user in events["user_id"].drop_duplicates().head(10):
        recent = events[events["user_id"] == user].tail(12)
        ids, ts = recent["item_id"].to_numpy(np.int64), recent["ts"].to_numpy(np.int64)
        history = fast.resolve_history(-1, ids, ts)
        np.testing.assert_allclose(
            fast.encode(*empty, 0.0, history), slow.encode(*empty, 0.0, history), atol=2e-5
        )


def test_eval_systems_over_grpc_equal_the_in_process_ones(stack) -> None:
    """`towerserve eval --url` (connect_served) ranks as `--repository` (load_served) does:
    the served recommendation systems at budget 0 over 30 users' long histories of a real
    next-item task, and the search system over 10 test queries; settings read from the
    server."""
    from client.served_eval import (
        connect_served,
        load_served,
        served_recommendation_systems,
        served_search_systems,
    )
    from towers.next_item import next_item_task

    remote, local = connect_served(stack["url"]), load_served(stack["repository"])
    try:
        assert (remote.max_k, remote.exclude_recent) == (local.max_k, local.exclude_recent)
        events = stack["data"].events
        cut = int(events["ts"].quantile(0.8))
        task = next_item_task(events, cut, int(events["ts"].max()) + 1, max_users=30, seed=3)
        assert len(task) >= 10
        lists = [served_recommendation_systems(p)["served"](task, 20) for p in (remote, local)]
        assert lists[0] == lists[1] and all(len(x) > 0 for x in lists[0])
        test = stack["data"].queries
        queries = test[test["split"] == "test"]["query_text"].drop_duplicates().head(10)
        search = [served_search_systems(p)["served"] for p in (remote, local)]
        for query in queries:
            assert search[0](query, 10) == search[1](query, 10), query
    finally:
        remote.close()


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"query": ""}, "empty query"),
        ({"query": "", "user_id": 987654321}, "empty query"),
        ({"query": "shoes", "k": 0}, "K"),
        ({"query": "shoes", "k": 100000}, "K"),
        ({"query": "shoes", "history": [1, 2], "history_ts": [5]}, "HISTORY_TS"),
    ],
)
def test_bad_requests_get_errors_and_server_keeps_serving(stack, kwargs, message) -> None:
    client = stack["client"]
    with pytest.raises(TowerServeError, match=message):
        client.recommend(**kwargs)
    _good(client)


def test_overlong_query_is_truncated_not_rejected(stack) -> None:
    rec = stack["client"].recommend("red cotton shirt " * 200, k=3)
    assert len(rec.item_ids) == 3


def _raw(name, data, dtype):
    t = grpcclient.InferInput(name, list(data.shape), dtype)
    t.set_data_from_numpy(data)
    return t


def _inputs(query=b"shoes", k=None, drop=None):
    k = np.array([5], np.int32) if k is None else k
    parts = {
        "QUERY": _raw("QUERY", np.array([query], dtype=np.object_), "BYTES"),
        "USER_ID": _raw("USER_ID", np.array([-1], np.int64), "INT64"),
        "HISTORY_IDS": _raw("HISTORY_IDS", np.zeros(0, np.int64), "INT64"),
        "HISTORY_TS": _raw("HISTORY_TS", np.zeros(0, np.int64), "INT64"),
        "K": _raw("K", k, "INT32" if k.dtype == np.int32 else "FP32"),
        "BUDGET_MS": _raw("BUDGET_MS", np.array([50], np.float32), "FP32"),
    }
    return [v for n, v in parts.items() if n != drop]


@pytest.mark.parametrize(
    "inputs",
    [
        pytest.param(lambda: _inputs(query=b"\xff\xfe bad bytes"), id="non-utf8"),
        pytest.param(lambda: _inputs(k=np.array([5.0], np.float32)), id="wrong-dtype"),
        pytest.param(lambda: _inputs(k=np.array([5, 6], np.int32)), id="wrong-shape"),
        pytest.param(lambda: _inputs(drop="K"), id="missing-input"),
    ],
)
def test_malformed_tensors_get_errors(stack, inputs) -> None:
    raw = grpcclient.InferenceServerClient(stack["url"])
    with pytest.raises(InferenceServerException):
        raw.infer("recommend", inputs())
    _good(stack["client"])


def _embed_with_ids(url: str, texts: list[str], ids: np.ndarray | None) -> np.ndarray:
    """The served ``item_tower`` over gRPC, with ``ITEM_ID`` when ``ids`` is given."""
    raw = grpcclient.InferenceServerClient(url)
    data = np.array([t.encode() for t in texts], dtype=np.object_).reshape(-1, 1)
    inputs = [_raw("ITEM_TEXT", data, "BYTES")]
    if ids is not None:
        inputs.append(_raw("ITEM_ID", np.asarray(ids, np.int64).reshape(-1, 1), "INT64"))
    return raw.infer("item_tower", inputs).as_numpy("ITEM_VECTOR")


def test_embed_items_matches_the_index_table(stack) -> None:
    """The served item_tower gives a re-embedding job the exported vector: text plus the
    item's id vector for items with training interactions (sent with ``ITEM_ID``), the text
    vector alone for new items."""
    from towers.bundle_contract import ItemIdTable
    from towers.data import item_texts

    items = stack["data"].items
    id_table = ItemIdTable.load(stack["bundle"])
    assert id_table is not None and len(id_table.item_ids) > 0
    all_ids = items["item_id"].to_numpy(np.int64)
    _, known = id_table.lookup(all_ids)
    rows = np.concatenate([np.flatnonzero(known)[:40], np.flatnonzero(~known)[:24]])
    texts = item_texts(items.iloc[rows])
    ids = all_ids[rows]
    table = np.load(stack["bundle"] / "item_embeddings.npy")[rows]
    vecs = _embed_with_ids(stack["url"], texts, ids)
    assert vecs.shape == table.shape
    cos = (vecs * table).sum(1)
    assert cos.min() > 0.99, cos.min()  # served precision vs the bf16 table used for the index
    text_only = stack["client"].embed_items(texts)  # no ITEM_ID: text only
    n_known = int(known[rows].sum())
    # new items: the same vector with or without their (unknown) id
    np.testing.assert_allclose(vecs[n_known:], text_only[n_known:], atol=1e-5)
    # items with ids: the id vector moved them away from their text vector
    assert float((vecs[:n_known] * text_only[:n_known]).sum(1).mean()) < 0.999


def _request_counts(url: str) -> dict[tuple[str, str], float]:
    """``(metric, model) -> value`` of the ``nv_inference_request_success`` and ``_failure``
    counters of Triton's Prometheus endpoint, summed over the other labels (version, reason)."""
    body = urllib.request.urlopen(url, timeout=10).read().decode()
    pattern = re.compile(
        r'(nv_inference_request_(?:success|failure))\{[^}]*model="([^"]+)"[^}]*\} (\S+)$'
    )
    counts: dict[tuple[str, str], float] = {}
    for line in body.splitlines():
        if m := pattern.match(line):
            counts[(m[1], m[2])] = counts.get((m[1], m[2]), 0.0) + float(m[3])
    return counts


def test_metrics_count_the_requests_sent(stack) -> None:
    """Triton's request counters move by what this test sends: 3 good ``recommend`` requests
    and 1 that the retriever refuses (K = 0).

    As Triton 2.51 counts them (checked on the small serving bundle): each stage the requests
    reach counts them as successes, the refused one included (a python-backend request
    answered with an error response still counts as executed), so the tokenizer, user tower
    and retriever see 4 and the reranker 3; the ensemble counts 3 successes and its one failed
    request at least once (2.51 counts it twice).
    """
    url, client = stack["server"].url_metrics, stack["client"]
    before = _request_counts(url)
    for query in ("blue jeans", "red shirt", "running shoes"):
        client.recommend(query, k=5, budget_ms=200)
    with pytest.raises(TowerServeError, match="K must be in"):
        client.recommend("shoes", k=0)
    expected = {
        ("nv_inference_request_success", "recommend"): 3,
        ("nv_inference_request_success", "tokenizer"): 4,
        ("nv_inference_request_success", "user_tower"): 4,
        ("nv_inference_request_success", "retriever"): 4,
        ("nv_inference_request_success", "reranker"): 3,
    }
    failed = ("nv_inference_request_failure", "recommend")
    deadline = time.monotonic() + 10.0  # counters are updated as requests complete
    while True:
        after = _request_counts(url)
        delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in [*expected, failed]}
        done = all(delta[k] == v for k, v in expected.items()) and delta[failed] >= 1
        if done or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert {k: delta[k] for k in expected} == expected
    assert 1 <= delta[failed] <= 2, delta
    manifest = json.loads((stack["bundle"] / "manifest.json").read_text())
    assert manifest["model_version"] == stack["manifest"]["model_version"]
