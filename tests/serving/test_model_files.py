"""The generated repository's ``model.py`` files, run in-process with a stand-in ``pb_utils``.

No server: each model is imported and initialized the way the python backend does it, and the
``recommend`` ensemble is emulated by following its ``ensemble_scheduling`` steps, so the
wiring in ``config.pbtxt`` is exercised together with the stage code.
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from export.repository import MODELS

PYTHON_MODELS = [m for m in MODELS if m != "recommend"]


def config(repository: Path, name: str) -> model_config_pb2.ModelConfig:
    return text_format.Parse(
        (repository / name / "config.pbtxt").read_text(), model_config_pb2.ModelConfig()
    )


@pytest.fixture
def models(repository: Path, load_model) -> dict:
    return {name: load_model(repository, name) for name in PYTHON_MODELS}


def run_ensemble(repository: Path, models: dict, pb_utils, **inputs: np.ndarray) -> dict:
    """Follow ``recommend``'s steps; returns its outputs, or ``{"error": message}``."""
    ens = config(repository, "recommend")
    tensors = dict(inputs)
    for step in ens.ensemble_scheduling.step:
        request = pb_utils.InferenceRequest(
            **{key: tensors[value] for key, value in step.input_map.items()}
        )
        (response,) = models[step.model_name].execute([request])
        if response.has_error():
            return {"error": f"{step.model_name}: {response.error().message()}"}
        outputs = response.outputs()
        for key, value in step.output_map.items():
            tensors[value] = outputs[key]
    return {o.name: tensors[o.name] for o in ens.output}


def request(
    query: bytes = b"red shirt",
    *,
    user_id: int = -1,
    history: list[int] = (),
    history_ts: list[int] | None = None,
    k: int = 5,
    budget_ms: float = 1000.0,
) -> dict[str, np.ndarray]:
    ts = history_ts if history_ts is not None else [1_700_000_000 + i for i in range(len(history))]
    return {
        "QUERY": np.array([query], dtype=object),
        "USER_ID": np.array([user_id], np.int64),
        "HISTORY_IDS": np.array(history, np.int64),
        "HISTORY_TS": np.array(ts, np.int64),
        "K": np.array([k], np.int32),
        "BUDGET_MS": np.array([budget_ms], np.float32),
    }


def test_recommend_end_to_end_in_process(repository, models, fake_pb_utils, bundle) -> None:
    out = run_ensemble(repository, models, fake_pb_utils, **request(k=7))
    assert "error" not in out, out
    assert out["ITEM_IDS"].shape == (7,) and out["ITEM_IDS"].dtype == np.int64
    assert len(set(out["ITEM_IDS"].tolist())) == 7
    assert set(out["ITEM_IDS"].tolist()) <= set(np.load(bundle / "item_ids.npy").tolist())
    assert out["SCORES"].dtype == np.float32
    assert np.all(np.diff(out["SCORES"]) <= 1e-6)  # fully scored: sorted by blended score
    assert out["N_SCORED"].tolist() == [30] and out["DEGRADED"].tolist() == [False]
    assert all(isinstance(t, bytes) and t for t in out["ITEM_TITLES"])


def test_stored_history_and_explicit_history(repository, models, fake_pb_utils, bundle) -> None:
    out = run_ensemble(repository, models, fake_pb_utils, **request(b"", user_id=3))
    assert "error" not in out and len(out["ITEM_IDS"]) == 5
    ids = np.load(bundle / "item_ids.npy")[:3].tolist()
    out = run_ensemble(repository, models, fake_pb_utils, **request(b"", history=ids))
    assert "error" not in out and len(out["ITEM_IDS"]) == 5


def test_budget_zero_is_retrieval_order(repository, models, fake_pb_utils) -> None:
    out = run_ensemble(repository, models, fake_pb_utils, **request(budget_ms=0))
    assert out["N_SCORED"].tolist() == [0] and out["DEGRADED"].tolist() == [True]


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"query": b""}, "user_tower: empty query and no known history for anonymous user -1"),
        ({"query": b"", "user_id": 987654321}, "no known history for user 987654321"),
        ({"k": 0}, r"retriever: K must be in 1\.\.20, got 0"),
        ({"k": 100000}, r"K must be in 1\.\.20"),
        ({"history": [1, 2], "history_ts": [5]}, "HISTORY_TS has 1 entries"),
        ({"query": b"\xff\xfe bad"}, "tokenizer: QUERY must be UTF-8 text"),
        ({"budget_ms": float("nan")}, "reranker: BUDGET_MS must be a finite"),
        ({"budget_ms": 20000}, "BUDGET_MS must be a finite number of milliseconds <= 10000"),
    ],
)
def test_bad_requests_get_error_responses(
    repository, models, fake_pb_utils, kwargs, message
) -> None:
    out = run_ensemble(repository, models, fake_pb_utils, **request(**kwargs))
    assert "error" in out
    assert re.search(message, out["error"]), out["error"]
    good = run_ensemble(repository, models, fake_pb_utils, **request())
    assert "error" not in good


def test_one_execute_answers_each_request(repository, models, fake_pb_utils) -> None:
    reqs = [
        fake_pb_utils.InferenceRequest(QUERY=np.array([q], dtype=object))
        for q in (b"shoes", b"\xff", b"")
    ]
    responses = models["tokenizer"].execute(reqs)
    assert [r.has_error() for r in responses] == [False, True, False]


def test_item_tower_batches_requests(repository, models, fake_pb_utils, bundle) -> None:
    import json

    titles = json.loads((bundle / "item_titles.json").read_text())[:4]
    reqs = [
        fake_pb_utils.InferenceRequest(
            ITEM_TEXT=np.array([t.encode() for t in titles[:3]], dtype=object).reshape(-1, 1)
        ),
        fake_pb_utils.InferenceRequest(ITEM_TEXT=np.array([[b"\xff"]], dtype=object)),
        fake_pb_utils.InferenceRequest(ITEM_TEXT=np.array([[titles[3].encode()]], dtype=object)),
    ]
    first, bad, last = models["item_tower"].execute(reqs)
    table = np.load(bundle / "item_embeddings.npy")
    np.testing.assert_allclose(first.outputs()["ITEM_VECTOR"], table[:3], atol=1e-5)
    assert "row 0 is not UTF-8" in bad.error().message()
    np.testing.assert_allclose(last.outputs()["ITEM_VECTOR"], table[3:4], atol=1e-5)


def test_retriever_refuses_another_model_version(repository, load_model, tmp_path) -> None:
    copy = tmp_path / "repo"
    shutil.copytree(repository, copy)
    cfg = copy / "retriever" / "config.pbtxt"
    text = cfg.read_text().replace('string_value: "test-v1"', 'string_value: "other-version"')
    cfg.write_text(text)
    from serving.bundle import BundleError

    with pytest.raises(BundleError, match="built by model version 'test-v1'"):
        load_model(copy, "retriever")


def test_ensemble_wiring_matches_the_model_configs(repository: Path) -> None:
    ens = config(repository, "recommend")
    assert ens.platform == "ensemble"
    known = {i.name: i.data_type for i in ens.input}
    for step in ens.ensemble_scheduling.step:
        model = config(repository, step.model_name)
        inputs = {i.name: i.data_type for i in model.input}
        outputs = {o.name: o.data_type for o in model.output}
        assert set(step.input_map) == set(inputs), step.model_name
        for key, value in step.input_map.items():
            assert value in known, f"{step.model_name}.{key} reads {value} before it exists"
            assert known[value] == inputs[key], f"{step.model_name}.{key}: dtype differs"
        for key, value in step.output_map.items():
            assert key in outputs, f"{step.model_name} has no output {key}"
            known[value] = outputs[key]
    for out in ens.output:
        assert known.get(out.name) == out.data_type, out.name


def test_every_model_warms_up_when_it_loads(
    repository: Path, load_model, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="serving.backend"):
        for name in PYTHON_MODELS:
            load_model(repository, name)
    warmed = {r.message.split(":")[0] for r in caplog.records if "warm-up took" in r.message}
    assert warmed == set(PYTHON_MODELS)


def test_a_failing_warm_up_does_not_stop_the_load(
    repository: Path, load_model, fake_pb_utils, monkeypatch, caplog: pytest.LogCaptureFixture
) -> None:
    from serving.reranker import Reranker

    def broken(self) -> None:
        raise RuntimeError("warm-up exploded")

    monkeypatch.setattr(Reranker, "warm_up", broken)
    with caplog.at_level(logging.WARNING, logger="serving.backend"):
        models = {name: load_model(repository, name) for name in PYTHON_MODELS}
    assert any("reranker: warm-up failed" in r.message for r in caplog.records)
    out = run_ensemble(repository, models, fake_pb_utils, **request(k=5))
    assert "error" not in out and out["N_SCORED"].tolist() == [30]
