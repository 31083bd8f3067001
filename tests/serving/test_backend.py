"""The python-backend glue: one response per request, errors on the request, config dtypes."""

from __future__ import annotations

import logging
import re

import numpy as np
import pytest

from serving.backend import (
    FAULT_ENV,
    TritonLogHandler,
    float_parameter,
    int_parameter,
    log_to_triton,
    output_dtypes,
    parameters,
    respond,
    responses_for,
    warm_up,
)
from serving.errors import RequestError

CONFIG = {
    "output": [
        {"name": "OUT", "data_type": "TYPE_FP32", "dims": ["-1"]},
        {"name": "FLAG", "data_type": "TYPE_BOOL", "dims": ["1"]},
    ],
    "parameters": {"chunk_size": {"string_value": "8"}, "empty": {"string_value": ""}},
}


def handler(tensors):
    x = tensors["X"]
    if x[0] < 0:
        raise RequestError("X must be >= 0, got a negative value")
    if x[0] == 0:
        raise ZeroDivisionError("division by zero")
    return {"OUT": x * 2, "FLAG": np.array([1])}


def test_one_response_per_request_with_errors_in_place(fake_pb_utils) -> None:
    reqs = [fake_pb_utils.InferenceRequest(X=np.array([v], np.int64)) for v in (3, -1, 0, 5)]
    out = respond(fake_pb_utils, reqs, handler, output_dtypes(CONFIG), model="m")
    assert len(out) == 4
    assert out[0].outputs()["OUT"].dtype == np.float32 and out[0].outputs()["OUT"].tolist() == [6]
    assert out[0].outputs()["FLAG"].dtype == np.bool_
    assert out[1].error().message() == "X must be >= 0, got a negative value"
    assert re.fullmatch(
        r"internal error in m \(id [0-9a-f]{8}\); see the server log", out[2].error().message()
    )
    assert not out[3].has_error()


def test_missing_output_is_an_internal_error(fake_pb_utils, caplog) -> None:
    req = fake_pb_utils.InferenceRequest(X=np.array([1]))
    with caplog.at_level(logging.ERROR, logger="serving.backend"):
        out = respond(fake_pb_utils, [req], lambda t: {"OUT": t["X"]}, output_dtypes(CONFIG))
    message = out[0].error().message()
    assert message.startswith("internal error in model (id ") and "FLAG" not in message
    error_id = message.split("(id ")[1][:8]
    (record,) = caplog.records
    assert f"(id {error_id})" in record.getMessage() and "FLAG" in record.getMessage()
    assert record.exc_info is not None  # the traceback goes to the log, not to the client


def test_internal_error_id_and_traceback_reach_triton_log(fake_pb_utils) -> None:
    log_to_triton(fake_pb_utils)
    assert log_to_triton(fake_pb_utils) is log_to_triton(fake_pb_utils)  # one per process
    assert sum(isinstance(h, TritonLogHandler) for h in logging.getLogger().handlers) == 1
    req = fake_pb_utils.InferenceRequest(X=np.array([0], np.int64))
    (out,) = respond(fake_pb_utils, [req], handler, output_dtypes(CONFIG), model="reranker")
    message = out.error().message()
    assert "ZeroDivisionError" not in message and "division" not in message
    error_id = re.search(r"\(id ([0-9a-f]{8})\)", message)[1]
    errors = [m for level, m in fake_pb_utils.Logger.records if level == "ERROR"]
    (logged,) = [m for m in errors if f"(id {error_id})" in m]
    assert logged.startswith("serving.backend: internal error in reranker (id ")
    assert "Traceback (most recent call last)" in logged and "ZeroDivisionError" in logged


def test_log_levels_map_to_triton_logger(fake_pb_utils) -> None:
    log_to_triton(fake_pb_utils)
    stage_log = logging.getLogger("serving.some_stage")
    stage_log.info("loaded %d items", 3)  # INFO passes: the root level was lowered to INFO
    stage_log.warning("slow")
    stage_log.debug("hidden")  # below the root's INFO level
    assert fake_pb_utils.Logger.records[-2:] == [
        ("INFO", "serving.some_stage: loaded 3 items"),
        ("WARNING", "serving.some_stage: slow"),
    ]
    stage_log.setLevel(logging.DEBUG)
    try:
        stage_log.debug("shown")
    finally:
        stage_log.setLevel(logging.NOTSET)
    assert fake_pb_utils.Logger.records[-1] == ("VERBOSE", "serving.some_stage: shown")


def test_injected_fault_only_when_the_env_names_the_model(fake_pb_utils, monkeypatch) -> None:
    req = fake_pb_utils.InferenceRequest(X=np.array([3], np.int64))
    monkeypatch.setenv(FAULT_ENV, "other")
    (out,) = respond(fake_pb_utils, [req], handler, output_dtypes(CONFIG), model="m")
    assert not out.has_error()
    monkeypatch.setenv(FAULT_ENV, "m")
    (out,) = respond(fake_pb_utils, [req], handler, output_dtypes(CONFIG), model="m")
    assert out.error().message().startswith("internal error in m (id ")


def test_responses_for_precomputed_results(fake_pb_utils) -> None:
    results = [{"OUT": np.ones(2), "FLAG": np.array([0])}, RequestError("bad row")]
    out = responses_for(fake_pb_utils, results, output_dtypes(CONFIG))
    assert not out[0].has_error() and out[1].error().message() == "bad row"


def test_parameters() -> None:
    params = parameters(CONFIG)
    assert int_parameter(params, "chunk_size", 16) == 8
    assert int_parameter(params, "empty", 16) == 16
    assert int_parameter(params, "absent", 3) == 3
    assert float_parameter({"r": "1.5"}, "r", 0.0) == 1.5
    with pytest.raises(ValueError, match="chunk_size must be >= 10"):
        int_parameter(params, "chunk_size", 16, low=10)
    with pytest.raises(ValueError, match="must be an integer"):
        int_parameter({"x": "abc"}, "x", 1)
    with pytest.raises(ValueError, match="finite and >= 0"):
        float_parameter({"r": "-1"}, "r", 0.0)


class Stage:
    def __init__(self, fail: bool = False) -> None:
        self.fail, self.calls = fail, 0

    def warm_up(self) -> None:
        self.calls += 1
        if self.fail:
            raise RuntimeError("session exploded")


def test_warm_up_logs_its_duration(caplog: pytest.LogCaptureFixture) -> None:
    stage = Stage()
    with caplog.at_level(logging.INFO, logger="serving.backend"):
        seconds = warm_up(stage, model="m")
    assert stage.calls == 1 and seconds is not None and seconds >= 0
    assert any(r.levelno == logging.INFO and "m: warm-up took" in r.message for r in caplog.records)


def test_a_failing_warm_up_is_a_warning_not_an_error(caplog: pytest.LogCaptureFixture) -> None:
    stage = Stage(fail=True)
    with caplog.at_level(logging.INFO, logger="serving.backend"):
        assert warm_up(stage, model="m") is None
    (record,) = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert record.levelno == logging.WARNING and "m: warm-up failed" in record.message
    assert record.exc_info is not None and "session exploded" in str(record.exc_info[1])
