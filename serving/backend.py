"""Glue between Triton's Python backend and the stage logic, kept out of the ``model.py`` files.

``triton_python_backend_utils`` (``pb_utils``) only exists inside the server's stub process, so
every function here takes it as an argument: tests pass a stand-in with ``Tensor``,
``InferenceResponse`` and ``TritonError``. The rules, after the python_backend ``add_sub``
example:

* output dtypes come from the model configuration, never hard-coded;
* exactly one response per request, in request order;
* a bad request (:class:`RequestError`) is answered with an error carrying its message; any
  other exception is an internal error: the client gets a short message with an error id
  (``internal error in reranker (id 3f2a9c1e); see the server log``), never the exception's
  text, and the same id is logged with the full traceback. ``execute`` never raises, so one
  bad request never fails the others;
* the stages log with :mod:`logging`; :func:`log_to_triton` (first thing in every
  ``initialize``) installs one handler per stub process that sends the records to Triton's
  own log through ``pb_utils.Logger`` (ERROR, WARNING and INFO as such; DEBUG as verbose,
  shown with ``--log-verbose=1``);
* ``initialize`` ends with :func:`warm_up`, so the sessions' first-run work (ONNX Runtime
  allocations, FAISS) is not paid by the first real request; a failing warm-up is logged as a
  warning and never stops the model from loading.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from serving.errors import RequestError
from towers.bundle_contract import TRITON_DTYPES  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)

__all__ = [
    "FAULT_ENV",
    "Handler",
    "InjectedFault",
    "TritonLogHandler",
    "error_response",
    "float_parameter",
    "int_parameter",
    "log_to_triton",
    "model_config",
    "output_dtypes",
    "parameters",
    "request_tensors",
    "respond",
    "responses_for",
    "success_response",
    "version_dir",
    "warm_up",
]

#: Test hook, off unless set in the server's environment: the name of a model (``reranker``
#: ...) whose requests all fail with :class:`InjectedFault`, an internal error, so tests can
#: see the error path of the real server. The stages' own warm-up in ``initialize`` is not
#: affected; Triton's ``model_warmup`` samples are (write the repository with ``warmup=False``).
FAULT_ENV = "TOWERSERVE_FAULT_MODEL"

#: Format of the records sent to Triton's log (Triton adds its own time and level prefix).
LOG_FORMAT = "%(name)s: %(message)s"

#: A stage's request handler: input tensors by name -> output tensors by name.
Handler = Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]]


class InjectedFault(RuntimeError):
    """The internal error :data:`FAULT_ENV` injects (tests only)."""


class TritonLogHandler(logging.Handler):
    """Sends :mod:`logging` records to Triton's log through ``pb_utils.Logger``.

    ERROR and above go to ``log_error``, WARNING to ``log_warn``, INFO to ``log_info`` and
    anything lower to ``log_verbose`` (which Triton shows only with ``--log-verbose`` >= 1).
    A record's traceback, if any, is part of the message.
    """

    def __init__(self, pb_utils: Any, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.triton_logger = pb_utils.Logger

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record)
            if record.levelno >= logging.ERROR:
                self.triton_logger.log_error(message)
            elif record.levelno >= logging.WARNING:
                self.triton_logger.log_warn(message)
            elif record.levelno >= logging.INFO:
                self.triton_logger.log_info(message)
            else:
                self.triton_logger.log_verbose(message)
        except Exception:  # a failing log call must never fail a request
            self.handleError(record)


def log_to_triton(pb_utils: Any, level: int = logging.INFO) -> TritonLogHandler:
    """Route this process's :mod:`logging` records into Triton's log (see
    :class:`TritonLogHandler`). Installs one handler on the root logger per stub process
    (each model instance has its own; a later call in the same process returns the handler
    already installed) and lowers the root logger's level to ``level`` when it is higher
    (Python's default is WARNING, which would drop the stages' INFO lines).
    """
    root = logging.getLogger()
    for handler in root.handlers:
        if isinstance(handler, TritonLogHandler):
            return handler
    handler = TritonLogHandler(pb_utils)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root.addHandler(handler)
    if root.level == logging.NOTSET or root.level > level:
        root.setLevel(level)
    return handler


def _raise_injected_fault(model: str) -> None:
    """Raise :class:`InjectedFault` when :data:`FAULT_ENV` names ``model`` (tests only)."""
    if model and os.environ.get(FAULT_ENV) == model:
        raise InjectedFault(f"fault injected into {model} by {FAULT_ENV}")


class WarmsUp(Protocol):
    """A stage with a ``warm_up()`` that runs a few representative inferences."""

    def warm_up(self) -> None: ...


def single_threaded_blas() -> None:
    """Limit this process's BLAS (numpy's OpenBLAS) to one thread.

    For a stage whose numpy work is a few small matmuls per request (the user tower's history
    head and sequence block: ``[20, 128] x [128, 384]`` and smaller), a second BLAS thread
    only adds hand-offs: measured on the 2-core machine while another job ran, the sequence
    block took 3.1 ms with two threads and 0.15 ms with one. Process-wide: call it in a Triton
    stage's ``initialize``, not in a library or an evaluation process.
    """
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, user_api="blas")


def model_config(args: Mapping[str, str]) -> dict[str, Any]:
    """The model configuration ``initialize`` receives, as a dict."""
    return json.loads(args["model_config"])


def version_dir(args: Mapping[str, str]) -> Path:
    """The model's version folder: ``args["model_repository"]`` (the model's own folder inside
    the repository) joined with ``args["model_version"]``."""
    return Path(args["model_repository"]) / str(args["model_version"])


def parameters(config: Mapping[str, Any]) -> dict[str, str]:
    """The ``parameters { key: ... value { string_value: ... } }`` entries of a model config."""
    raw = config.get("parameters") or {}
    return {str(k): str(v.get("string_value", "")) for k, v in raw.items()}


def int_parameter(params: Mapping[str, str], name: str, default: int, *, low: int = 1) -> int:
    """An integer config parameter ``>= low``; ``default`` when absent or empty."""
    text = params.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"config parameter {name} must be an integer, got {text!r}") from None
    if value < low:
        raise ValueError(f"config parameter {name} must be >= {low}, got {value}")
    return value


def float_parameter(params: Mapping[str, str], name: str, default: float) -> float:
    """A finite, non-negative float config parameter; ``default`` when absent or empty."""
    text = params.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"config parameter {name} must be a number, got {text!r}") from None
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"config parameter {name} must be finite and >= 0, got {value}")
    return value


def output_dtypes(config: Mapping[str, Any]) -> dict[str, np.dtype]:
    """Numpy dtype of every output declared in the model configuration, by output name."""
    dtypes: dict[str, np.dtype] = {}
    for out in config.get("output", []):
        dtypes[out["name"]] = np.dtype(TRITON_DTYPES[out["data_type"]])
    return dtypes


def request_tensors(request: Any) -> dict[str, np.ndarray]:
    """All input tensors of one ``pb_utils.InferenceRequest`` as numpy arrays, by name."""
    return {t.name(): t.as_numpy() for t in request.inputs()}


def success_response(
    pb_utils: Any, outputs: Mapping[str, np.ndarray], dtypes: Mapping[str, np.dtype]
) -> Any:
    """An ``InferenceResponse`` with every configured output, cast to its configured dtype."""
    missing = [name for name in dtypes if name not in outputs]
    if missing:
        raise RuntimeError(f"stage produced no {', '.join(missing)}")
    tensors = [
        pb_utils.Tensor(name, np.ascontiguousarray(np.asarray(outputs[name]).astype(dtype)))
        for name, dtype in dtypes.items()
    ]
    return pb_utils.InferenceResponse(output_tensors=tensors)


def error_response(pb_utils: Any, exc: BaseException, model: str = "") -> Any:
    """The error response for ``exc``.

    A :class:`RequestError` (the caller's fault) is answered with its own message. Anything
    else is an internal error: it gets a fresh error id (8 hex digits), is logged as ERROR with
    that id and its traceback, and the client gets only
    ``internal error in <model> (id <id>); see the server log``, never the exception's text
    (which may hold paths or internal state).
    """
    if isinstance(exc, RequestError):
        message = str(exc)
    else:
        name = model or "model"
        error_id = uuid.uuid4().hex[:8]
        log.error(
            "internal error in %s (id %s): %s: %s",
            name,
            error_id,
            type(exc).__name__,
            exc,
            exc_info=exc,
        )
        message = f"internal error in {name} (id {error_id}); see the server log"
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message))


def respond(
    pb_utils: Any,
    requests: Sequence[Any],
    handler: Handler,
    dtypes: Mapping[str, np.dtype],
    *,
    model: str = "",
) -> list[Any]:
    """One response per request: ``handler`` on its tensors, or an error response."""
    responses = []
    for request in requests:
        try:
            _raise_injected_fault(model)
            outputs = handler(request_tensors(request))
            responses.append(success_response(pb_utils, outputs, dtypes))
        except Exception as exc:  # every failure is answered on its request, none escapes
            responses.append(error_response(pb_utils, exc, model))
    return responses


def responses_for(
    pb_utils: Any,
    results: Sequence[Mapping[str, np.ndarray] | Exception],
    dtypes: Mapping[str, np.dtype],
    *,
    model: str = "",
) -> list[Any]:
    """One response per precomputed result (outputs by name, or the exception to report),
    for models that handle a whole batch of requests together."""
    responses = []
    for result in results:
        if isinstance(result, Exception):
            responses.append(error_response(pb_utils, result, model))
            continue
        try:
            _raise_injected_fault(model)
            responses.append(success_response(pb_utils, result, dtypes))
        except Exception as exc:  # every failure is answered on its request, none escapes
            responses.append(error_response(pb_utils, exc, model))
    return responses


def warm_up(stage: WarmsUp, *, model: str = "") -> float | None:
    """Run ``stage.warm_up()`` once (the end of ``initialize``) and log how long it took.

    Returns the seconds it took, or ``None`` when it raised: the exception is logged as a
    warning with its traceback and swallowed, because a warm-up must never stop a model from
    loading (the first real requests are then merely slower).
    """
    name = model or type(stage).__name__
    start = time.perf_counter()
    try:
        stage.warm_up()
    except Exception:  # never fail the load over a warm-up
        log.warning("%s: warm-up failed, first requests will be slower", name, exc_info=True)
        return None
    seconds = time.perf_counter() - start
    log.info("%s: warm-up took %.1f ms", name, seconds * 1e3)
    return seconds
