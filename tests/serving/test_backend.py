"""The python-backend glue: one response per request, errors on the request, config dtypes."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from serving.backend import (
    float_parameter,
    int_parameter,
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
    assert out[2].error().message().startswith("internal error: ZeroDivisionError")
    assert not out[3].has_error()


def test_missing_output_is_an_internal_error(fake_pb_utils) -> None:
    req = fake_pb_utils.InferenceRequest(X=np.array([1]))
    out = respond(fake_pb_utils, [req], lambda t: {"OUT": t["X"]}, output_dtypes(CONFIG))
    assert "internal error" in out[0].error().message() and "FLAG" in out[0].error().message()


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
