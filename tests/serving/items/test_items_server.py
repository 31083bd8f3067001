"""Item changes against the real tritonserver: the ``catalog`` model takes adds, updates and
deletes, the ``retriever`` serves them within 5 s, deletions survive a restart, and bad
changes get clear errors without harming the next request.

One repository (the small session bundle of tests/serving/conftest.py, no Triton warm-up
samples) and two server starts for the module: about 30-40 s on 2 loaded cores.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.serving.conftest import retrieve

pytestmark = pytest.mark.slow

#: The issue's promise: a change is served within this many seconds.
SERVED_WITHIN_S = 5.0
NEW_ID = 777_001
NEW_TEXT = "zebra quantum trombone lantern"


@pytest.fixture(autouse=True)
def _loopback_without_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(name, "127.0.0.1,localhost,::1")


@pytest.fixture(scope="module")
def repo(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from export.repository import write_repository

    return write_repository(bundle, tmp_path_factory.mktemp("items") / "repo", warmup=False)


def start(repo: Path, log_file: Path | None = None):
    from serving.triton import TritonServer, free_ports

    g, h, m = free_ports(3)
    server = TritonServer(repo, grpc_port=g, http_port=h, metrics_port=m, log_file=log_file)
    return server, f"127.0.0.1:{g}"


@pytest.fixture(scope="module")
def server_log(repo: Path) -> Path:
    """The first server's log file (its tail is shown when a change is not served in time)."""
    return repo.parent / "tritonserver.log"


@pytest.fixture(scope="module")
def running(repo: Path, server_log: Path) -> Iterator:
    """The first server of the module."""
    srv, _ = start(repo, server_log)
    with srv:
        yield srv


@pytest.fixture(scope="module")
def server(running) -> str:
    """The first server's gRPC url."""
    return f"127.0.0.1:{running.grpc_port}"


def rerank(url: str, candidates: list[int]) -> tuple[list[int], list[str]]:
    """The ``reranker`` model's answer for ``candidates`` (ids, titles), all scored."""
    import tritonclient.grpc as grpcclient

    arrays = {
        "QUERY": (np.array([b"red shirt"], object), "BYTES"),
        "HISTORY_IDS": (np.zeros(0, np.int64), "INT64"),
        "CANDIDATE_IDS": (np.asarray(candidates, np.int64), "INT64"),
        "CANDIDATE_SCORES": (np.linspace(1, 0, len(candidates), dtype=np.float32), "FP32"),
        "K": (np.array([len(candidates)], np.int32), "INT32"),
        "BUDGET_MS": (np.array([1000.0], np.float32), "FP32"),
        "START_NS": (np.array([0], np.int64), "INT64"),
    }
    inputs = []
    for name, (data, dtype) in arrays.items():
        inputs.append(grpcclient.InferInput(name, list(data.shape), dtype))
        inputs[-1].set_data_from_numpy(data)
    with grpcclient.InferenceServerClient(url) as client:
        result = client.infer("reranker", inputs, client_timeout=30)
    titles = [t.decode() for t in result.as_numpy("ITEM_TITLES").tolist()]
    return result.as_numpy("ITEM_IDS").tolist(), titles


def embed(url: str, text: str) -> np.ndarray:
    from client.grpc_client import TowerServeClient

    with TowerServeClient(url, timeout_s=30) as client:
        return client.embed_items([text])[0]


def wait_until(check, what: str, server_log: Path | None = None) -> float:
    """Poll ``check()`` until true; the seconds it took. Fails after :data:`SERVED_WITHIN_S`,
    with the tail of ``server_log`` (what the server said meanwhile) when given."""
    start_s = time.monotonic()
    while not check():
        if time.monotonic() - start_s > SERVED_WITHIN_S:
            tail = ""
            if server_log is not None and server_log.is_file():
                tail = "\nserver log tail:\n" + "\n".join(
                    server_log.read_text(errors="replace").splitlines()[-40:]
                )
            pytest.fail(f"{what} not served within {SERVED_WITHIN_S} s{tail}")
        time.sleep(0.1)
    return time.monotonic() - start_s


def test_added_updated_and_deleted_items_are_served_within_5_s(
    server: str, bundle: Path, server_log: Path
) -> None:
    from client.items import ItemsClient

    query = embed(server, NEW_TEXT)
    assert NEW_ID not in retrieve(server, query)
    with ItemsClient(server) as items:
        items.add({NEW_ID: NEW_TEXT})
    wait_until(lambda: retrieve(server, query)[0] == NEW_ID, "the added item", server_log)
    # the reranker scores it and answers with its text as the title
    base = [int(i) for i in np.load(bundle / "item_ids.npy")[:3]]
    wait_until(
        lambda: NEW_ID in rerank(server, [NEW_ID, *base])[0], "the added item's text", server_log
    )
    ids, titles = rerank(server, [NEW_ID, *base])
    assert titles[ids.index(NEW_ID)] == NEW_TEXT

    other = embed(server, "violet accordion submarine")
    with ItemsClient(server) as items:
        items.update({NEW_ID: "violet accordion submarine"})
    wait_until(lambda: retrieve(server, other)[0] == NEW_ID, "the updated item")

    ids = np.load(bundle / "item_ids.npy")
    vectors = np.load(bundle / "item_embeddings.npy")
    victim = int(ids[5])
    assert retrieve(server, vectors[5])[0] == victim
    with ItemsClient(server) as items:
        items.delete([victim])
    wait_until(lambda: victim not in retrieve(server, vectors[5]), "the deletion")
    for _ in range(3):  # and it stays gone, also from the whole pipeline
        assert victim not in retrieve(server, vectors[5], k=20)
    from client.grpc_client import TowerServeClient

    with TowerServeClient(server, timeout_s=30) as client:
        got = client.recommend("red shirt", k=10, budget_ms=1000)
    assert victim not in np.asarray(got.item_ids).tolist()


def test_bad_changes_get_clear_errors_and_the_next_good_one_works(server: str) -> None:
    from client.grpc_client import TowerServeError
    from client.items import ItemsClient

    with ItemsClient(server) as items:
        with pytest.raises(TowerServeError, match="is not in the catalog"):
            items.delete([123_456_789])
        with pytest.raises(TowerServeError, match="the text is empty"):
            items.add({777_002: "   "})
        with pytest.raises(TowerServeError, match="appears more than once"):
            items.change([777_003, 777_003], ["add", "add"], ["a b", "c d"])
        with pytest.raises(TowerServeError, match="is not one of add, update, delete"):
            items.change([777_004], ["upsert"], ["x y"])
        version = items.add({777_005: "orange kayak paddle"})
        assert items.delete([777_005]) > version  # checked against the latest changes
        items.add({777_005: "orange kayak paddle"})
    # the same through the command line
    from typer.testing import CliRunner

    from client.cli import app

    runner = CliRunner()
    refused = runner.invoke(app, ["items", "delete", "--id", "123456789", "-u", server])
    assert refused.exit_code == 1 and "is not in the catalog" in refused.output, refused.output
    done = runner.invoke(app, ["items", "delete", "--id", "777005", "-u", server])
    assert done.exit_code == 0 and "deleted 1 item(s)" in done.output, done.output


def test_changes_survive_a_restart(server: str, repo: Path, bundle: Path) -> None:
    """A second server started on the same repository reads the changes from the log."""
    ids = np.load(bundle / "item_ids.npy")
    vectors = np.load(bundle / "item_embeddings.npy")
    victim = int(ids[5])
    query = embed(server, "violet accordion submarine")
    srv, url = start(repo)
    with srv:
        assert victim not in retrieve(url, vectors[5], k=20)
        assert retrieve(url, query)[0] == NEW_ID


def test_index_metrics_are_served_on_the_metrics_port(running, server: str) -> None:
    import re
    import urllib.request

    from client.items import ItemsClient

    with ItemsClient(server) as items:
        items.add({777_100: "teal origami lamp"})

    def scrape() -> str:
        retrieve(server, embed(server, "teal origami lamp"))  # gauges update per request
        with urllib.request.urlopen(running.url_metrics, timeout=10) as answer:
            return answer.read().decode()

    wait_until(
        lambda: re.search(r'towerserve_items_pending_changes\{model="retriever"\} [1-9]', scrape()),
        "the pending-changes gauge",
    )
    text = scrape()
    for name in ("towerserve_index_age_seconds", "towerserve_index_items"):
        assert re.search(rf'{name}{{model="retriever"}} [0-9.e+]+', text), text[-3000:]
    assert 'towerserve_index_info{created_at="' in text
    assert re.search(r'towerserve_items_log_version\{model="retriever"\} [1-9]', text)
