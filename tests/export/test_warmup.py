"""Triton ``model_warmup`` samples written by ``export.repository`` on a small real bundle
(the serving fixtures' bundle: real tokenizer, tiny ONNX graphs, real FAISS index).

The samples are decoded from their files the way Triton reads them and run through the
models' own ``execute`` (with a stand-in ``pb_utils``): a sample that gets an error response
would make Triton refuse to load the model. The slow tests start the real tritonserver.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from export.repository import (
    MODELS,
    TEMPLATES,
    WARMUP_FOLDER,
    WARMUP_MODELS,
    RepositoryError,
    RepositorySettings,
    encode_tensor,
    render_config,
    warmup_sample,
    write_repository,
)
from serving.backend import TRITON_DTYPES
from serving.bundle import load_manifest
from serving.reranker import MAX_BUDGET_MS
from tests.serving.conftest import (
    InferenceRequest,
    _load_model,
    fake_pb_utils,  # noqa: F401  (a fixture, used by name)
    make_bundle,
)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("warmup") / "bundle")


@pytest.fixture(scope="module")
def repo(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_repository(bundle, tmp_path_factory.mktemp("warmup") / "repository")


def parse(path: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def decode(raw: bytes, data_type: str, dims: list[int]) -> np.ndarray:
    """A warm-up input file as Triton reads it (independent of ``encode_tensor``)."""
    if data_type == "TYPE_STRING":
        values, pos = [], 0
        while pos < len(raw):
            (n,) = struct.unpack_from("<I", raw, pos)
            values.append(raw[pos + 4 : pos + 4 + n])
            pos += 4 + n
        assert pos == len(raw), "truncated string element"
        arr = np.array(values, dtype=object)
    else:
        arr = np.frombuffer(raw, dtype=np.dtype(TRITON_DTYPES[data_type]).newbyteorder("<"))
    assert arr.size == math.prod(dims), (data_type, dims, arr.size)
    return arr.reshape(dims)


def sample_of(repo: Path, model: str) -> dict[str, np.ndarray]:
    """The model's warm-up request as its ``execute`` gets it (batch dim added if batching)."""
    config = parse(repo / model / "config.pbtxt")
    (entry,) = config.model_warmup
    out = {}
    for name, spec in entry.inputs.items():
        data_type = model_config_pb2.DataType.Name(spec.data_type)
        raw = (repo / model / WARMUP_FOLDER / spec.input_data_file).read_bytes()
        dims = list(spec.dims)
        arr = decode(raw, data_type, dims)
        out[name] = arr[None] if config.max_batch_size > 0 else arr
    return out


def test_every_served_model_gets_one_sample_matching_its_inputs(repo: Path) -> None:
    # the ensemble has no execute of its own; a warm-up of events would record an event
    assert set(WARMUP_MODELS) == set(MODELS) - {"recommend", "events", "catalog"}
    for model in WARMUP_MODELS:
        config = parse(repo / model / "config.pbtxt")
        assert len(config.model_warmup) == 1, model
        (entry,) = config.model_warmup
        assert entry.batch_size == 1 and entry.count == 1
        declared = {i.name: i for i in config.input}
        required = {n for n, i in declared.items() if not i.optional}
        assert required <= set(entry.inputs) <= set(declared), model
        for name, spec in entry.inputs.items():
            assert spec.WhichOneof("input_data_type") == "input_data_file"
            assert spec.input_data_file == name
            assert (repo / model / WARMUP_FOLDER / name).is_file()
            assert spec.data_type == declared[name].data_type, (model, name)
            dims = list(declared[name].dims)
            assert len(spec.dims) == len(dims), (model, name)
            assert all(d in (-1, s) and s >= 1 for d, s in zip(dims, spec.dims)), (model, name)
        assert sorted(p.name for p in (repo / model / WARMUP_FOLDER).iterdir()) == sorted(
            entry.inputs
        )
    assert not parse(repo / "recommend" / "config.pbtxt").model_warmup
    assert not (repo / "recommend" / WARMUP_FOLDER).exists()
    # the retriever's optional HAS_QUERY is sent, as the ensemble does
    assert "HAS_QUERY" in parse(repo / "retriever" / "config.pbtxt").model_warmup[0].inputs


def test_sample_values_are_valid(repo: Path, bundle: Path) -> None:
    manifest = load_manifest(bundle)
    item_ids = set(np.load(bundle / "item_ids.npy").tolist())
    tok = sample_of(repo, "tokenizer")
    assert tok["QUERY"].tolist() == [b"red shirt"]
    assert sample_of(repo, "item_tower")["ITEM_TEXT"].tolist() == [[b"red shirt"]]

    user = sample_of(repo, "user_tower")
    ids, mask = user["INPUT_IDS"], user["ATTENTION_MASK"]
    assert ids.shape == mask.shape and ids.shape[0] == 1 and ids.shape[1] > 2
    assert ids[0, 0] == 101 and ids[0, -1] == 102 and (mask == 1).all()
    assert user["HAS_QUERY"].tolist() == [[1.0]] and user["USER_ID"].tolist() == [-1]
    assert 1 <= len(user["HISTORY_IDS"]) == len(user["HISTORY_TS"])
    assert set(user["HISTORY_IDS"].tolist()) <= item_ids

    ret = sample_of(repo, "retriever")
    vec = ret["USER_VECTOR"]
    assert vec.shape == (1, manifest.dim) and np.isfinite(vec).all()
    assert np.linalg.norm(vec) == pytest.approx(1.0, abs=1e-5)
    assert ret["K"].tolist() == [5] and ret["HAS_QUERY"].tolist() == [[1.0]]

    rr = sample_of(repo, "reranker")
    assert rr["QUERY"].tolist() == [b"red shirt"]
    assert set(rr["HISTORY_IDS"].tolist()) <= item_ids
    cand = rr["CANDIDATE_IDS"]
    # the largest call (rerank_max_call 64), or the whole catalog when it is smaller
    assert len(cand) == min(64, len(item_ids)) and set(cand.tolist()) <= item_ids
    assert len(rr["CANDIDATE_SCORES"]) == len(cand) and np.isfinite(rr["CANDIDATE_SCORES"]).all()
    assert rr["K"].tolist() == [5] and rr["START_NS"].tolist() == [0]
    assert 100 <= float(rr["BUDGET_MS"][0]) <= MAX_BUDGET_MS


@pytest.mark.usefixtures("fake_pb_utils")
def test_samples_run_through_the_models_without_errors(repo: Path) -> None:
    outputs = {}
    for model in WARMUP_MODELS:
        served = _load_model(repo, model)
        (response,) = served.execute([InferenceRequest(**sample_of(repo, model))])
        assert not response.has_error(), (model, response.error().message())
        outputs[model] = response.outputs()
    assert outputs["user_tower"]["USER_VECTOR"].shape == (1, 8)
    assert len(outputs["retriever"]["CANDIDATE_IDS"]) >= 5
    assert outputs["item_tower"]["ITEM_VECTOR"].shape == (1, 8)
    rr = outputs["reranker"]
    assert len(rr["ITEM_IDS"]) == 5
    # the budget let the cross-encoder score the whole chunk: the sample warms it up
    assert rr["N_SCORED"].tolist() == [60] and rr["DEGRADED"].tolist() == [False]


@pytest.mark.usefixtures("fake_pb_utils")
def test_settings_shape_the_sample(bundle: Path, tmp_path: Path) -> None:
    repo = write_repository(bundle, tmp_path / "repo", max_k=3, rerank_max_call=4)
    rr = sample_of(repo, "reranker")
    assert rr["K"].tolist() == [3] and len(rr["CANDIDATE_IDS"]) == 4
    assert sample_of(repo, "retriever")["K"].tolist() == [3]
    (response,) = _load_model(repo, "reranker").execute([InferenceRequest(**rr)])
    assert not response.has_error() and response.outputs()["N_SCORED"].tolist() == [4]


def test_warmup_off(bundle: Path, repo: Path, tmp_path: Path) -> None:
    off = write_repository(bundle, tmp_path / "repo", warmup=False)
    for model in MODELS:
        assert not (off / model / WARMUP_FOLDER).exists()
        config = parse(off / model / "config.pbtxt")
        assert not config.model_warmup
        on = parse(repo / model / "config.pbtxt")
        del on.model_warmup[:]
        assert config == on, model  # nothing else changes
    assert RepositorySettings(max_k=1, n_candidates=1).warmup is True


def test_samples_that_do_not_fit_the_config_are_refused(bundle: Path) -> None:
    manifest = load_manifest(bundle)
    settings = RepositorySettings(max_k=20, n_candidates=30)
    template = TEMPLATES / "retriever" / "config.pbtxt"
    good = warmup_sample(bundle, "retriever", manifest, settings)
    assert "model_warmup" in render_config(template, "retriever", manifest, settings, good)
    assert "model_warmup" not in render_config(template, "retriever", manifest, settings)
    bad_cases = [
        ({k: v for k, v in good.items() if k != "K"}, "lacks inputs \\['K'\\]"),
        ({**good, "EXTRA": np.zeros(1, np.int32)}, "EXTRA.*not in its config"),
        ({**good, "USER_VECTOR": np.zeros((2, 8), np.float32)}, "USER_VECTOR has shape"),
        ({**good, "K": np.array([2**40])}, "do not fit TYPE_INT32"),
    ]
    for sample, message in bad_cases:
        with pytest.raises(RepositoryError, match=message):
            render_config(template, "retriever", manifest, settings, sample)
    item = TEMPLATES / "item_tower" / "config.pbtxt"
    with pytest.raises(RepositoryError, match="batch dimension 1 first"):
        two = np.array([["a"], ["b"]], dtype=object)
        render_config(item, "item_tower", manifest, settings, {"ITEM_TEXT": two})
    with pytest.raises(RepositoryError, match=r"ITEM_TEXT has shape \[\], config dims \[1\]"):
        render_config(item, "item_tower", manifest, settings, {"ITEM_TEXT": np.array(["a"])})


def test_encode_tensor() -> None:
    raw = encode_tensor(np.array(["red", "café", b""], dtype=object), "TYPE_STRING")
    assert raw == b"\x03\x00\x00\x00red" + b"\x05\x00\x00\x00caf\xc3\xa9" + b"\x00\x00\x00\x00"
    assert encode_tensor(np.array([1, 2], np.int64), "TYPE_INT32") == b"\x01\0\0\0\x02\0\0\0"
    assert encode_tensor(np.array([[0.5]]), "TYPE_FP32") == struct.pack("<f", 0.5)
    with pytest.raises(RepositoryError, match="not supported"):
        encode_tensor(np.zeros(1), "TYPE_BF16")


# ---------------------------------------------------------------------------------------------
# Slow: the real tritonserver
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_real_server_loads_every_model_with_warmup(repo: Path, tmp_path: Path) -> None:
    from client.grpc_client import TowerServeClient
    from serving.triton import TritonServer, free_ports

    g, h, m = free_ports(3)
    log_file = tmp_path / "server.log"
    server = TritonServer(
        repo,
        grpc_port=g,
        http_port=h,
        metrics_port=m,
        log_verbose=1,
        log_file=log_file,
    )
    with server:
        log = log_file.read_text(errors="replace")
        for model in WARMUP_MODELS:  # Triton ran each model's sample before marking it ready
            assert f"model '{model}' instance {model}_0_0 is running warmup sample" in log, model
        assert "failed to run warmup sample" not in log
        with TowerServeClient(f"127.0.0.1:{g}") as client:
            assert client.ready()
            rec = client.recommend("blue jeans", k=5, budget_ms=1000)
        assert len(rec.item_ids) == 5 and rec.n_scored > 0


@pytest.mark.slow
def test_real_server_refuses_a_model_whose_warmup_fails(bundle: Path, tmp_path: Path) -> None:
    """Why every sample must be valid: Triton does not load a model whose sample errs.

    The load goes through the model-control API of a server that is already up, so the test
    tells a refused model from a crash. Refused (passes): the API answers 400 with the
    sample's error, the server keeps running, the model is UNAVAILABLE, the server exits
    cleanly. Crashed (reported as xfail, never as a pass): Triton 2.51, while it tears down
    the refused instance, sometimes dies (SIGSEGV) or signals itself (``Signal (2) received``
    in its log, sent by no one else, after which the load call is never answered); seen in
    3 runs in 9 on this machine. Anything else fails. The repository writer never lets an
    invalid sample through (``test_samples_that_do_not_fit_the_config_are_refused``,
    ``test_samples_run_through_the_models_without_errors``), so a served model never takes
    this path.
    """
    import json
    import urllib.error
    import urllib.request

    from serving.triton import TritonServer, free_ports

    repo = write_repository(bundle, tmp_path / "repo")
    (repo / "retriever" / WARMUP_FOLDER / "K").write_bytes(np.array([0], "<i4").tobytes())
    g, h, m = free_ports(3)
    log_file = tmp_path / "server.log"
    server = TritonServer(
        repo,
        grpc_port=g,
        http_port=h,
        metrics_port=m,
        model_control_mode="explicit",  # nothing loaded at start: the server becomes ready
        log_file=log_file,
    )
    no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with server:
        url = f"{server.url_http}/v2/repository/models/retriever/load"
        answer: urllib.error.HTTPError | None = None
        try:
            no_proxy.open(urllib.request.Request(url, data=b"", method="POST"), timeout=30)
        except urllib.error.HTTPError as exc:
            answer = exc
        except (TimeoutError, urllib.error.URLError, ConnectionError):
            pass  # no answer: told apart below
        log = log_file.read_text(errors="replace")  # before our own stop signals the server
        refused_at = log.find("failed to load 'retriever'")
        if not server.is_running or (refused_at >= 0 and "Signal (" in log[refused_at:]):
            pytest.xfail(
                "Triton 2.51 crashed while tearing down the refused model (status "
                f"{server.returncode}, or it signalled itself): a Triton bug, not a refusal"
            )
        assert answer is not None, f"the load call got no answer:\n{log[-3000:]}"
        text = answer.read().decode(errors="replace")
        assert answer.code == 400, text
        assert "K must be in 1..20, got 0" in text, text
        index = no_proxy.open(
            urllib.request.Request(f"{server.url_http}/v2/repository/index", data=b"{}"),
            timeout=30,
        )
        states = {m["name"]: m.get("state") for m in json.loads(index.read())}
        assert states["retriever"] == "UNAVAILABLE", states
        live = no_proxy.open(f"{server.url_http}/v2/health/live", timeout=30)
        assert live.status == 200  # still serving after the refusal
    assert server.returncode == 0, log_file.read_text(errors="replace")[-3000:]
