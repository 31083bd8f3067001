"""Hot swap against the real tritonserver: ``publish`` a new model version while four clients
send ``recommend`` the whole time, then ``rollback``; a corrupt or mismatched version is
refused and the old one keeps serving; the control API needs the key.

One server for the module (explicit model control, every model loaded, a control key on
loopback: the restricted-protocol flags are exercised here), the small hand-built bundles of
tests/serving/conftest.py (no warm-up samples).
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from tests.serving.conftest import make_bundle, retrieve

pytestmark = pytest.mark.slow

KEY = "swap-test-key-0123456789"
CLIENTS = 4


@pytest.fixture(autouse=True)
def _loopback_without_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(name, "127.0.0.1,localhost,::1")


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("swap")


@pytest.fixture(scope="module")
def repo(bundle: Path, work: Path) -> Path:
    from export.repository import write_repository

    return write_repository(bundle, work / "repo", warmup=False)


@pytest.fixture(scope="module")
def bundle_v2(work: Path) -> Path:
    """Another model version: other weights and vectors, same dimension and catalog."""
    return make_bundle(work / "bundle_v2", seed=1, model_version="test-v2")


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator:
    from serving.triton import TritonServer, free_ports

    g, h, m = free_ports(3)
    server = TritonServer(
        repo,
        grpc_port=g,
        http_port=h,
        metrics_port=m,
        model_control_mode="explicit",
        load_models=["*"],
        control_key=KEY,
    )
    with server:
        yield server


@pytest.fixture(scope="module")
def url(server) -> str:
    return server.url_grpc


def recommend(client, query: str = "red shirt") -> list[str]:
    """The SERVED_BY labels of one ``recommend`` answer (raises on an error answer)."""
    import tritonclient.grpc as grpcclient

    arrays = [
        ("QUERY", np.array([query.encode()], dtype=np.object_), "BYTES"),
        ("USER_ID", np.array([-1], np.int64), "INT64"),
        ("HISTORY_IDS", np.array([1000, 1007], np.int64), "INT64"),
        ("HISTORY_TS", np.array([1_700_000_000, 1_700_000_060], np.int64), "INT64"),
        ("K", np.array([5], np.int32), "INT32"),
        ("BUDGET_MS", np.array([50.0], np.float32), "FP32"),
    ]
    inputs = []
    for name, data, dtype in arrays:
        tensor = grpcclient.InferInput(name, list(data.shape), dtype)
        tensor.set_data_from_numpy(data)
        inputs.append(tensor)
    outputs = [grpcclient.InferRequestedOutput(n) for n in ("ITEM_IDS", "SERVED_BY")]
    result = client.infer("recommend", inputs, outputs=outputs, client_timeout=60)
    assert len(result.as_numpy("ITEM_IDS")) == 5
    return [x.decode() for x in result.as_numpy("SERVED_BY")]


@dataclass
class Load:
    """Four clients sending ``recommend`` back to back until stopped."""

    url: str
    answers: list[tuple[float, float, list[str]]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def _client(self) -> None:
        import tritonclient.grpc as grpcclient

        with grpcclient.InferenceServerClient(self.url) as client:
            while not self.stop.is_set():
                sent = time.monotonic()
                try:
                    labels = recommend(client)
                except Exception as exc:  # every failure is counted, none hidden
                    self.failures.append(repr(exc))
                    continue
                self.answers.append((sent, time.monotonic(), labels))

    def run(self, action, settle_answers: int = 40):
        """Run ``action()`` under load; keep the load until ``settle_answers`` more answers
        arrived after it returned. Returns ``(action's result, its end time)``."""
        with ThreadPoolExecutor(CLIENTS) as pool:
            futures = [pool.submit(self._client) for _ in range(CLIENTS)]
            while len(self.answers) < 20 and not self.failures:
                time.sleep(0.05)
            try:
                result = action()
                done = time.monotonic()
                target = len(self.answers) + settle_answers
                while len(self.answers) < target and len(self.failures) < 5:
                    time.sleep(0.05)
            finally:
                self.stop.set()
                for f in futures:
                    f.result()
        return result, done

    def mixed(self) -> list[list[str]]:
        return [labels for _, _, labels in self.answers if len(set(labels)) != 1]


def served(url: str) -> list[str]:
    import tritonclient.grpc as grpcclient

    with grpcclient.InferenceServerClient(url) as client:
        return recommend(client)


def test_publish_under_load_switches_with_no_failed_or_mixed_answer(
    repo: Path, url: str, bundle_v2: Path
) -> None:
    from client.publish import publish

    assert served(url) == ["1:test-v1"] * 3
    load = Load(url)
    result, done = load.run(lambda: publish(repo, bundle_v2, url=url, control_key=KEY))
    assert (result.version, result.model_version, result.previous) == (2, "test-v2", 1)
    assert load.failures == []
    assert load.mixed() == []
    seen = [labels[0] for _, _, labels in load.answers]
    assert seen[0] == "1:test-v1" and "2:test-v2" in seen
    after = {labels[0] for sent, _, labels in load.answers if sent > done}
    assert after == {"2:test-v2"}
    # Once an answer came from version 2, no request sent later got version 1.
    first_new = min(end for _, end, labels in load.answers if labels[0] == "2:test-v2")
    assert {labels[0] for sent, _, labels in load.answers if sent > first_new} == {"2:test-v2"}


def test_rollback_under_load_switches_back(repo: Path, url: str) -> None:
    from client.publish import rollback

    load = Load(url)
    result, done = load.run(lambda: rollback(repo, url=url, control_key=KEY))
    assert (result.version, result.model_version, result.previous) == (1, "test-v1", 2)
    assert load.failures == [] and load.mixed() == []
    assert {labels[0] for sent, _, labels in load.answers if sent > done} == {"1:test-v1"}
    assert served(url) == ["1:test-v1"] * 3


def test_a_corrupt_index_version_is_refused_and_the_old_version_keeps_serving(
    repo: Path, url: str, bundle_v2: Path, work: Path
) -> None:
    from client.publish import PublishError, publish
    from towers.index_version import build_index_version

    index = work / "index_v2"
    build_index_version(
        np.load(bundle_v2 / "item_embeddings.npy"),
        np.load(bundle_v2 / "item_ids.npy"),
        index,
        model_version="test-v2",
        kind="flat",
    )
    data = bytearray((index / "index.faiss").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (index / "index.faiss").write_bytes(bytes(data))
    before = sorted(p.name for p in (repo / "retriever").iterdir())
    with pytest.raises(PublishError, match=r"index version .* refused: corrupt: .*checksum"):
        publish(repo, bundle_v2, url=url, index=index, control_key=KEY)
    assert sorted(p.name for p in (repo / "retriever").iterdir()) == before
    assert served(url) == ["1:test-v1"] * 3


def test_a_mismatched_bundle_is_refused(
    repo: Path, url: str, work: Path, bundle: Path, bundle_v2: Path
) -> None:
    from client.publish import PublishError, publish

    broken = work / "broken"
    shutil.copytree(bundle_v2, broken)
    (broken / "user_tower.onnx").write_bytes(b"not a graph")
    with pytest.raises(PublishError, match=r"refused: .*user_tower\.onnx"):
        publish(repo, broken, url=url, control_key=KEY)
    with pytest.raises(PublishError, match=r"model version 'test-v1' is already served"):
        publish(repo, bundle, url=url, control_key=KEY)
    assert served(url) == ["1:test-v1"] * 3


def test_a_version_triton_cannot_load_leaves_the_old_one_serving(
    repo: Path, url: str, work: Path
) -> None:
    """Checksums fine, but the index is not a FAISS file: the retriever fails to load."""

    from client.publish import PublishError, publish
    from serving.bundle import sha256

    bad = make_bundle(work / "bad_index", seed=2, model_version="test-v3")
    (bad / "index.faiss").write_bytes(b"\0" * 64)
    doc = json.loads((bad / "manifest.json").read_text())
    doc["checksums"]["index.faiss"] = sha256(bad / "index.faiss")
    (bad / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(
        PublishError,
        match=r"(?s)load_model\(retriever\).*not a readable FAISS index.*version 1 keeps serving",
    ):
        publish(repo, bad, url=url, control_key=KEY)
    assert served(url) == ["1:test-v1"] * 3
    assert 3 not in [int(p.name) for p in (repo / "retriever").iterdir() if p.name.isdigit()]


def test_the_control_api_needs_the_key(repo: Path, url: str, server) -> None:
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    from client.publish import PublishError, rollback
    from serving.launcher.control import CONTROL_HEADER, GRPC_CONTROL_HEADER

    with grpcclient.InferenceServerClient(url) as client:
        wrong = "wrong-key-0123456789"
        for headers in (None, {GRPC_CONTROL_HEADER: wrong}, {CONTROL_HEADER: KEY}):
            with pytest.raises(InferenceServerException):
                client.load_model("recommend", headers=headers)
            with pytest.raises(InferenceServerException):
                client.unload_model("recommend", headers=headers)
        assert client.is_model_ready("recommend")  # inference APIs stay open
    with pytest.raises(PublishError, match="control key"):
        rollback(repo, url=url)
    assert served(url) == ["1:test-v1"] * 3
    # HTTP: the same APIs behind the plain header name (the repository index is harmless)
    import urllib.error
    import urllib.request

    index_url = f"{server.url_http}/v2/repository/index"
    for headers in ({}, {CONTROL_HEADER: wrong}, {GRPC_CONTROL_HEADER: KEY}):
        request = urllib.request.Request(index_url, data=b"{}", headers=headers)
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(request, timeout=10)
    request = urllib.request.Request(index_url, data=b"{}", headers={CONTROL_HEADER: KEY})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert any(m["name"] == "recommend" for m in json.loads(response.read()))


def test_publishing_an_index_version_keeps_two_versions(
    repo: Path, url: str, bundle_v2: Path, work: Path
) -> None:
    """After the rollback, version 1 serves and 2 is loaded: publishing an index version of
    model test-v2 makes version 3, keeps 1 for rollback and removes 2."""
    from client.publish import publish, served_state
    from towers.index_version import build_index_version

    index = work / "index_v2_ok"
    build_index_version(
        np.load(bundle_v2 / "item_embeddings.npy"),
        np.load(bundle_v2 / "item_ids.npy"),
        index,
        model_version="test-v2",
        kind="flat",
    )
    result = publish(repo, bundle_v2, url=url, index=index, control_key=KEY)
    assert (result.version, result.previous) == (3, 1)
    assert served(url) == ["3:test-v2"] * 3
    state = served_state(repo)
    assert (state.active, state.versions) == (3, (1, 3))
    assert (repo / "retriever" / "3" / "index.faiss").stat().st_ino == (
        (index / "index.faiss").stat().st_ino
    )


def test_a_reembedding_job_reads_the_published_version_and_stops_on_a_swap(
    repo: Path, url: str, bundle_v2: Path, tmp_path: Path
) -> None:
    """A published repository's configs leave ``model_version`` empty: the ``triton`` engine
    takes it from the item tower's answer. A rollback during a job (here: between the
    engine's start and its requests) is an error naming both versions, never shards of two
    models under one manifest; run again with ``--restart`` on the served model, the job
    completes."""
    import pandas as pd

    from client.embed import EngineError, TritonEngine, read_job_vectors, run_embed
    from client.publish import publish, rollback, served_state

    if served_state(repo).previous is None:  # run alone: publish, so there is a rollback
        publish(repo, bundle_v2, url=url, control_key=KEY)
    state = served_state(repo)
    assert state.previous is not None
    now, other = (state.model_versions[v] for v in (state.active, state.previous))
    assert {now, other} == {"test-v1", "test-v2"}
    texts = [f"item {i} red shirt" for i in range(40)]
    catalog = tmp_path / "catalog.parquet"
    pd.DataFrame({"item_id": range(40), "text": texts}).to_parquet(catalog)
    engine = TritonEngine(url, batch_size=8, sort_by_tokens=False)
    assert engine.model_version == now
    rollback(repo, url=url, control_key=KEY)  # the item tower moves to the other model
    with pytest.raises(EngineError, match=f"now serves model version '{other}'.*'{now}'"):
        run_embed(catalog, tmp_path / "emb", engine, shard_size=10)
    engine.close()
    engine = TritonEngine(url, batch_size=8, sort_by_tokens=False)
    assert engine.model_version == other
    run_embed(catalog, tmp_path / "emb", engine, shard_size=10, restart=True)
    engine.close()
    manifest, ids, _, _ = read_job_vectors(tmp_path / "emb")
    assert manifest.model_version == other and ids.tolist() == list(range(40))


def test_items_changed_while_serving_stay_served_across_a_model_change(
    repo: Path, url: str, bundle_v2: Path
) -> None:
    """An item added through ``catalog`` was embedded by the served model; after a rollback
    to the other model its retriever still returns it first for its own text's vector
    (publish and rollback re-embed the live changes with the model they switch to; before,
    that version skipped the item until an index rebuild)."""
    from client.grpc_client import TowerServeClient
    from client.items import ItemsClient
    from client.publish import publish, rollback, served_state

    if served_state(repo).previous is None:  # run alone: publish, so there is a rollback
        publish(repo, bundle_v2, url=url, control_key=KEY)
    item_id, text = 880_001, "saffron glacier harmonica"

    def first_hit() -> bool:
        version = served_state(repo).active
        with TowerServeClient(url, timeout_s=30) as client:
            vector = client.embed_items([text])[0]  # the served item tower's vector
        return retrieve(url, vector, version=version)[0] == item_id

    with ItemsClient(url) as items:
        items.add({item_id: text})
    deadline = time.monotonic() + 5
    while not first_hit():
        assert time.monotonic() < deadline, "the added item is not served within 5 s"
        time.sleep(0.1)
    before = served_state(repo)
    rollback(repo, url=url, control_key=KEY)
    after = served_state(repo)
    assert after.model_versions[after.active] != before.model_versions[before.active]
    deadline = time.monotonic() + 5
    while not first_hit():
        assert time.monotonic() < deadline, "the added item is not served after the rollback"
        time.sleep(0.1)
