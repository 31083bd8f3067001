"""Per-stage queue and compute times from Triton's statistics API, as deltas over a run.

``get_inference_statistics`` returns cumulative counters per model (requests, failures, and
nanoseconds spent queued and in compute input / infer / output); the difference of two
snapshots taken around a run divided by the requests in between gives each stage's mean
times per request during that run.
"""

from __future__ import annotations

from typing import Any

import tritonclient.grpc as grpcclient

#: The stages of the ``recommend`` ensemble, in request order, then the ensemble itself.
STAGES = ("tokenizer", "user_tower", "retriever", "reranker", "recommend")
_PHASES = ("queue", "compute_input", "compute_infer", "compute_output")

Snapshot = dict[str, dict[str, int]]


def snapshot(client: grpcclient.InferenceServerClient) -> Snapshot:
    """Cumulative counters per model: ``success``, ``fail``, ``executions``, ``inferences``
    and ``<phase>_ns`` for queue and the three compute phases."""
    doc = client.get_inference_statistics(model_name="", as_json=True)
    out: Snapshot = {}
    for model in doc.get("model_stats", []):
        stats = model.get("inference_stats", {})
        row = {
            "success": int(stats.get("success", {}).get("count", 0)),
            "fail": int(stats.get("fail", {}).get("count", 0)),
            "executions": int(model.get("execution_count", 0)),
            "inferences": int(model.get("inference_count", 0)),
        }
        for phase in _PHASES:
            row[f"{phase}_ns"] = int(stats.get(phase, {}).get("ns", 0))
        out[str(model["name"])] = row
    return out


def delta(before: Snapshot, after: Snapshot) -> dict[str, dict[str, Any]]:
    """Per model with requests in between: ``requests``, ``failures``, ``executions`` and
    the mean ``queue_ms`` / ``compute_input_ms`` / ``compute_infer_ms`` /
    ``compute_output_ms`` / ``compute_ms`` per request (ms)."""
    out: dict[str, dict[str, Any]] = {}
    for name, now in after.items():
        was = before.get(name, {})
        d = {k: v - was.get(k, 0) for k, v in now.items()}
        n = d["success"] + d["fail"]
        if n <= 0:
            continue
        row: dict[str, Any] = {
            "requests": d["success"],
            "failures": d["fail"],
            "executions": d["executions"],
        }
        for phase in _PHASES:
            row[f"{phase}_ms"] = d[f"{phase}_ns"] / n / 1e6
        row["compute_ms"] = sum(row[f"{p}_ms"] for p in _PHASES[1:])
        out[name] = row
    return dict(sorted(out.items(), key=lambda kv: _order(kv[0])))


def _order(name: str) -> tuple[int, str]:
    return (STAGES.index(name) if name in STAGES else len(STAGES), name)
