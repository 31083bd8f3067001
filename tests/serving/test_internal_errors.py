"""Internal errors against the real tritonserver: the client gets a short message with an error
id, and Triton's log holds the same id next to the traceback; the stages' INFO lines reach
Triton's log too.

The internal error is injected with ``TOWERSERVE_FAULT_MODEL=reranker`` in the server's
environment (a hook in ``serving.backend``, off unless set): every request that reaches the
reranker fails there. The repository is written without Triton ``model_warmup`` samples,
which would otherwise fail too and keep the reranker from loading. About 15 s.
"""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path

import pytest

from serving.backend import FAULT_ENV

pytestmark = pytest.mark.slow

#: What runs each stage of a CPU repository, as its ``towerserve_stage_backend`` metric says.
STAGE_BACKENDS = {
    "user_tower": "onnxruntime-cpu",  # the default user_engine
    "retriever": "faiss-cpu",
    "reranker": "openvino-cpu-bf16",
    "item_tower": "openvino-cpu-bf16",
}


@pytest.fixture(autouse=True)
def _loopback_without_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(name, "127.0.0.1,localhost,::1")


def test_internal_error_has_an_id_that_is_in_the_log_with_its_traceback(
    bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from client.grpc_client import TowerServeClient, TowerServeError
    from export.repository import write_repository
    from serving.triton import TritonServer, free_ports

    repo = write_repository(bundle, tmp_path / "repo", warmup=False)
    monkeypatch.setenv(FAULT_ENV, "reranker")  # the server's environment is built from ours
    g, h, m = free_ports(3)
    log_file = tmp_path / "server.log"
    server = TritonServer(repo, grpc_port=g, http_port=h, metrics_port=m, log_file=log_file)
    with server, TowerServeClient(f"127.0.0.1:{g}", timeout_s=30) as client:
        with pytest.raises(TowerServeError) as failed:
            client.recommend("blue jeans", k=5, budget_ms=1000)
        message = str(failed.value)
        found = re.search(
            r"internal error in reranker \(id ([0-9a-f]{8})\); see the server log", message
        )
        assert found, message
        assert "InjectedFault" not in message and FAULT_ENV not in message  # no internals
        # a bad request keeps its precise message (it fails before the reranker)
        with pytest.raises(TowerServeError, match="empty query"):
            client.recommend("", k=5)
        # the item tower is not affected and the server keeps serving
        assert client.embed_items(["red shirt"]).shape[0] == 1
        # each stage reports what runs it (serving/stage_metrics.py) on the metrics port
        with urllib.request.urlopen(server.url_metrics, timeout=10) as answer:
            metrics = answer.read().decode()
        for model, backend in STAGE_BACKENDS.items():
            line = f'towerserve_stage_backend{{backend="{backend}",model="{model}"}} 1'
            assert line in metrics, metrics[-2000:]
    log = log_file.read_text(errors="replace")
    error_id = found[1]
    at = log.index(f"internal error in reranker (id {error_id})")
    after = log[at : at + 4000]
    assert "Traceback (most recent call last)" in after, after
    assert f"InjectedFault: fault injected into reranker by {FAULT_ENV}" in after, after
    assert log.count(f"(id {error_id})") == 1  # the id names this one failure
    # the stages' own INFO lines (their warm-up in initialize) reach Triton's log
    assert re.search(r"serving\.backend: reranker: warm-up took [\d.]+ ms", log), log[-3000:]
