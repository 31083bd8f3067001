"""The ``triton`` engine against the real tritonserver serving the exported (untrained) item
tower: the job's vectors match the in-process tower's, and it records the served version."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from client.embed import EngineError, LocalEngine, TritonEngine, read_job_vectors, run_embed
from client.embed.engines import PARITY_MIN_COSINE


@pytest.fixture(autouse=True)
def _loopback_without_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """gRPC must reach 127.0.0.1 even if a proxy is set."""
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(name, "127.0.0.1,localhost,::1")


@pytest.fixture(scope="module")
def item_server(untrained_id_bundle, tmp_path_factory) -> Iterator[str]:
    """The real tritonserver on the untrained bundle's repository; yields its gRPC url."""
    from export.repository import write_repository
    from serving.triton import TritonServer, free_ports

    work = tmp_path_factory.mktemp("embed_triton")
    repo = write_repository(untrained_id_bundle, work / "repository", warmup=False)
    grpc_port, http_port, metrics_port = free_ports(3)
    server = TritonServer(
        repo,
        grpc_port=grpc_port,
        http_port=http_port,
        metrics_port=metrics_port,
        log_file=work / "tritonserver.log",
    )
    with server:
        yield f"127.0.0.1:{grpc_port}"


@pytest.mark.slow
def test_triton_engine_matches_the_local_tower(
    item_server, untrained_id_bundle, tmp_path, make_catalog, texts_for
) -> None:
    n = 700
    catalog = make_catalog(tmp_path / "c.parquet", list(range(n)), texts_for(n))
    engine = TritonEngine(item_server, batch_size=32, max_in_flight=6)
    result = run_embed(catalog, tmp_path / "emb", engine, shard_size=100)
    engine.close()
    manifest, ids, vecs, _ = read_job_vectors(tmp_path / "emb")
    local = LocalEngine(untrained_id_bundle, runtime="onnxruntime", precision="fp32", threads=1)
    assert manifest.model_version == local.model_version
    assert manifest.engine["name"] == "triton" and result.items_embedded == n
    assert manifest.engine["sort_by"] == "tokens"
    assert ids.tolist() == list(range(n))
    local.prepare([])
    assert local.encoder is not None
    want = local.encoder.embed(texts_for(n), ids)  # with the items' learned id vectors
    cosine = (vecs * want).sum(1)
    assert cosine.min() >= PARITY_MIN_COSINE, cosine.min()  # served in OpenVINO bf16
    text_only = (vecs * local.encoder.embed(texts_for(n))).sum(1)
    assert text_only.min() < 0.95, "the server's vectors are text-only: ids were not sent"


def test_no_server_is_a_clear_error() -> None:
    from serving.triton import free_ports

    (port,) = free_ports(1)
    with pytest.raises(EngineError, match="no Triton server answers"):
        TritonEngine(f"127.0.0.1:{port}")


@pytest.mark.slow
def test_a_server_restart_during_a_job_is_waited_out(
    untrained_id_bundle, tmp_path, make_catalog, texts_for
) -> None:
    """The server goes away after the engine connected and is started again on the same ports
    2 s later (ready some seconds after that): the requests that found it gone
    (``UNAVAILABLE``) are sent again, and the job completes with every item once. With
    ``retry_s=0`` the same outage stops the job."""
    from concurrent.futures import ThreadPoolExecutor

    from export.repository import write_repository
    from serving.triton import TritonServer, free_ports

    repo = write_repository(untrained_id_bundle, tmp_path / "repository", warmup=False)
    ports = dict(zip(("grpc_port", "http_port", "metrics_port"), free_ports(3), strict=True))
    n = 300
    catalog = make_catalog(tmp_path / "c.parquet", list(range(n)), texts_for(n))
    url = f"127.0.0.1:{ports['grpc_port']}"
    with TritonServer(repo, **ports, log_file=tmp_path / "triton.log"):
        engine = TritonEngine(url, batch_size=32, sort_by_tokens=False, retry_s=0)
    with pytest.raises(EngineError, match="UNAVAILABLE"):  # no server, no retry
        run_embed(catalog, tmp_path / "emb", engine, shard_size=100)
    engine.close()
    with TritonServer(repo, **ports, log_file=tmp_path / "triton-2.log"):
        engine = TritonEngine(url, batch_size=32, sort_by_tokens=False, retry_s=60)
    again = TritonServer(repo, **ports, log_file=tmp_path / "triton-3.log")
    with ThreadPoolExecutor(1) as pool:  # the job starts while no server is up
        job = pool.submit(run_embed, catalog, tmp_path / "emb", engine, shard_size=100)
        time.sleep(2.0)
        assert not job.done()
        with again:  # the server is back (started on this thread: it installs handlers)
            result = job.result(timeout=120)
    engine.close()
    assert result.items_embedded == n
    _, ids, _, _ = read_job_vectors(tmp_path / "emb")
    assert sorted(ids.tolist()) == list(range(n))
