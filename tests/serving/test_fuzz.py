"""Fuzzing the real tritonserver with generated requests (hypothesis) to ``recommend`` and
``item_tower``: wrong shapes, dtypes and sizes, missing and extra inputs, text bytes that are
not UTF-8, extreme and non-finite values.

Every request must get an answer (a result or an error response, within the client timeout);
no answer may be an internal error (bad input must be refused as a bad request, with its
message); no stage process may die (the server's process group keeps the same stubs and the
log shows no unhealthy stub); and a good request succeeds after every batch of
:data:`BATCH` requests and at the end.

The number of generated requests is ``TOWERSERVE_FUZZ_EXAMPLES`` (default 300, about 30 s
here, for CI); the long run is::

    TOWERSERVE_FUZZ_EXAMPLES=10000 .venv/bin/pytest tests/serving/test_fuzz.py

It serves the small bundle of the serving fixtures (tiny ONNX graphs, real tokenizer, real
FAISS index), so no training is needed.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from tritonclient.utils import InferenceServerException

pytestmark = pytest.mark.slow

N_EXAMPLES = int(os.environ.get("TOWERSERVE_FUZZ_EXAMPLES", "300"))
#: A good request is sent after every BATCH generated ones.
BATCH = 50
#: Seconds a single request may take before it counts as unanswered.
TIMEOUT_S = 30.0

#: Client dtypes a tensor may be sent as (Triton names) and their numpy types.
DTYPES = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "BYTES": np.object_,
}
#: The inputs of each model with their configured dtype and shape (-1: any length).
RECOMMEND_INPUTS = {
    "QUERY": ("BYTES", [1]),
    "USER_ID": ("INT64", [1]),
    "HISTORY_IDS": ("INT64", [-1]),
    "HISTORY_TS": ("INT64", [-1]),
    "K": ("INT32", [1]),
    "BUDGET_MS": ("FP32", [1]),
}
ITEM_INPUTS = {"ITEM_TEXT": ("BYTES", [-1, 1])}  # batch dimension first, up to 64

#: Signs that a stage process died or misbehaved, in Triton's log.
CRASH_PATTERNS = re.compile(
    r"Stub process .*(unhealthy|not healthy)|Segmentation fault|core dumped|Failed to restart",
    re.IGNORECASE,
)


def _group_pids(pgid: int) -> set[int]:
    """Live processes in process group ``pgid`` (the server and its python stubs)."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                pids.add(int(entry.name))
    return pids


@pytest.fixture(scope="module")
def served(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from export.repository import write_repository
    from serving.triton import TritonServer, free_ports

    work = tmp_path_factory.mktemp("fuzz")
    repo = write_repository(bundle, work / "repo")
    g, h, m = free_ports(3)
    log_file = work / "server.log"
    old = {k: os.environ.get(k) for k in ("no_proxy", "NO_PROXY")}
    os.environ["no_proxy"] = os.environ["NO_PROXY"] = "127.0.0.1,localhost,::1"
    server = TritonServer(repo, grpc_port=g, http_port=h, metrics_port=m, log_file=log_file)
    try:
        with server:
            client = grpcclient.InferenceServerClient(f"127.0.0.1:{g}")
            yield {
                "server": server,
                "client": client,
                "log": log_file,
                "pids": _group_pids(server.pid),
                "counts": Counter(),
            }
            client.close()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# ---------------------------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------------------------

UTF8 = st.one_of(
    st.text(alphabet=st.characters(codec="utf-8"), max_size=200).map(str.encode),
    st.sampled_from([b"red shirt", b"blue jeans", b"", b" ", b"\x00", "é😀".encode()]),
)
TEXT = st.one_of(
    UTF8,
    UTF8,
    st.binary(max_size=300),  # anything, most of it not UTF-8
    st.sampled_from([b"\xff\xfe", b"\xc3", b"red \xe9 shirt"]),  # not UTF-8
    st.just(b"shoes " * 2000),  # far longer than any query limit
)


#: Values a real request would carry (the fixture bundle: item ids 1000 + 7 i for 60 items,
#: users 1..4, max_k 20), mixed with extreme ones so that some requests pass every check.
PLAUSIBLE = {
    "USER_ID": st.integers(-2, 6),
    "HISTORY_IDS": st.integers(995, 1425),
    "HISTORY_TS": st.integers(1_699_990_000, 1_700_100_000),
    "K": st.integers(1, 21),
    "BUDGET_MS": st.floats(0.0, 300.0, width=32),
}


@st.composite
def tensor(
    draw: st.DrawFn,
    name: str,
    dtype: str,
    dims: list[int],
    length: int,
    valid: bool = True,
) -> np.ndarray:
    """A value for one input: the configured dtype and shape (with odd values, ``length``
    for a -1 dimension) when ``valid``, else 3 times in 10 any dtype and shape."""
    if valid or draw(st.integers(0, 9)) < 7:
        shape = tuple(length if d == -1 else d for d in dims)
    else:  # any dtype, any shape of rank 0..3 (Triton refuses most of them itself)
        dtype = draw(st.sampled_from(sorted(DTYPES)))
        shape = tuple(draw(st.lists(st.integers(0, 4), max_size=3)))
    if dtype == "BYTES":
        n = int(np.prod(shape))
        texts = draw(st.lists(UTF8 if draw(st.booleans()) else TEXT, min_size=n, max_size=n))
        return np.array(texts, dtype=np.object_).reshape(shape)
    np_dtype = np.dtype(DTYPES[dtype])
    if np_dtype.kind == "f":
        elements = st.floats(width=np_dtype.itemsize * 8, allow_nan=True, allow_infinity=True)
    elif np_dtype.kind == "b":
        elements = st.booleans()
    else:
        info = np.iinfo(np_dtype)
        elements = st.integers(info.min, info.max)
    if name in PLAUSIBLE and np.dtype(DTYPES[RECOMMEND_INPUTS[name][0]]) == np_dtype:
        elements = st.one_of(PLAUSIBLE[name], PLAUSIBLE[name], elements)
    return draw(hnp.arrays(np_dtype, shape, elements=elements))


@st.composite
def request(draw: st.DrawFn, inputs: dict[str, tuple[str, list[int]]]) -> dict[str, np.ndarray]:
    """Tensors by name. Half the requests are well-formed (every input, configured dtypes and
    shapes; only the values and lengths are odd: they reach the stages' own checks); the other
    half may lack inputs, carry other dtypes or shapes, or an extra input."""
    valid = draw(st.booleans())
    history_len = draw(st.integers(0, 40))  # HISTORY_IDS and HISTORY_TS: mostly equal lengths
    out = {}
    for name, (dtype, dims) in inputs.items():
        if valid or draw(st.integers(0, 9)) > 0:  # 1 in 10 missing
            if name == "ITEM_TEXT":
                length = draw(st.integers(0, 70))  # the batch: up to 64 allowed
            elif name == "HISTORY_TS" and draw(st.integers(0, 9)) == 0:
                length = draw(st.integers(0, 40))
            else:
                length = history_len
            out[name] = draw(tensor(name, dtype, dims, length, valid=valid))
    if not valid and draw(st.integers(0, 9)) == 0:
        out["EXTRA"] = np.zeros(1, np.int32)
    return out


MODEL_REQUESTS = st.one_of(
    st.tuples(st.just("recommend"), request(RECOMMEND_INPUTS)),
    st.tuples(st.just("item_tower"), request(ITEM_INPUTS)),
)


# ---------------------------------------------------------------------------------------------
# Test
# ---------------------------------------------------------------------------------------------


def _send(client: grpcclient.InferenceServerClient, model: str, tensors: dict) -> str:
    """``ok`` or the error message; raises on no answer within TIMEOUT_S."""
    inputs = []
    for name, value in tensors.items():
        dtype = next(k for k, v in DTYPES.items() if np.dtype(v) == value.dtype)
        t = grpcclient.InferInput(name, list(value.shape), dtype)
        t.set_data_from_numpy(value)
        inputs.append(t)
    try:
        client.infer(model, inputs, client_timeout=TIMEOUT_S)
    except InferenceServerException as exc:
        status = exc.status() or ""
        if "DEADLINE_EXCEEDED" in status or "Deadline" in str(exc):
            raise AssertionError(f"no answer within {TIMEOUT_S} s from {model}") from exc
        return str(exc)
    return "ok"


def _good(client: grpcclient.InferenceServerClient) -> None:
    good = {
        "QUERY": np.array([b"red shirt"], dtype=np.object_),
        "USER_ID": np.array([1], np.int64),
        "HISTORY_IDS": np.zeros(0, np.int64),
        "HISTORY_TS": np.zeros(0, np.int64),
        "K": np.array([5], np.int32),
        "BUDGET_MS": np.array([200], np.float32),
    }
    assert _send(client, "recommend", good) == "ok"
    texts = np.array([[b"blue jeans"], [b"red shirt"]], dtype=np.object_)
    assert _send(client, "item_tower", {"ITEM_TEXT": texts}) == "ok"


def test_fuzz_recommend_and_item_tower(served: dict[str, Any]) -> None:
    client, counts = served["client"], served["counts"]
    internal: list[str] = []
    messages: Counter[str] = Counter()

    @settings(
        max_examples=N_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(MODEL_REQUESTS)
    def one(model_request: tuple[str, dict[str, np.ndarray]]) -> None:
        model, tensors = model_request
        answer = _send(client, model, tensors)
        counts["requests"] += 1
        counts["ok" if answer == "ok" else "error"] += 1
        messages[f"{model}: {re.sub(r'[0-9]+', 'N', answer)[:90]}"] += 1
        if "internal error" in answer:
            internal.append(f"{model} {sorted(tensors)}: {answer}")
        if counts["requests"] % BATCH == 0:
            _good(client)
            counts["good"] += 1
        assert "internal error" not in answer, answer

    one()
    _good(client)
    server = served["server"]
    assert server.is_running
    assert _group_pids(server.pid) == served["pids"], "a stage process died or was restarted"
    log = served["log"].read_text(errors="replace")
    assert not CRASH_PATTERNS.search(log), CRASH_PATTERNS.search(log)
    assert not internal, internal[:5]
    # shown with -s: how many requests, answers and checks, and the commonest answers
    print(f"fuzz: {dict(counts)}")
    for message, n in messages.most_common(12):
        print(f"{n:6d}  {message}")
    assert counts["requests"] >= N_EXAMPLES * 0.9  # hypothesis ran (nearly) every example
