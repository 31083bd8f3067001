"""The soak: ``minutes`` of load at one concurrency with the mixed requests, as consecutive
perf_analyzer runs ("windows"), each followed by Triton's statistics delta (failed requests
per stage) and a memory sample of the server.

Each window is one perf_analyzer run of three measurement intervals of ``window_s / 3`` with
the stability check relaxed (a soak measures drift, it does not wait for stability). The
report: errors (perf_analyzer failures, failed requests counted by Triton, unanswered
requests), latency per window, drift (the p99 of every request of the last five minutes
against the first five, or of the last and first third when the soak is shorter than ten
minutes) and memory over time (growth from after the first window, when the server is warm,
to the end).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient

from client.bench import stats
from client.bench.memory import growth_pct, sample_memory
from client.bench.perf import (
    RELAXED_STABILITY_PCT,
    PerfAnalyzerFailed,
    latency_summary,
    read_profile_export,
    run_perf,
    scored_summary,
)

log = logging.getLogger(__name__)

#: The span compared for drift: five minutes, in seconds.
DRIFT_SPAN_S = 300.0
#: Consecutive failed perf_analyzer runs after which the soak stops (the server is likely gone).
MAX_CONSECUTIVE_FAILURES = 3
#: Shortest window, seconds: three perf_analyzer measurement intervals of one second.
MIN_WINDOW_S = 3.0


def run_soak(
    exe: Path,
    env: dict[str, str],
    *,
    url: str,
    input_data: Path,
    server_pid: int | None,
    minutes: float,
    window_s: float,
    concurrency: int,
    budget_ms: float,
    work_dir: Path,
    on_window: Callable[[int, float], None] | None = None,
) -> dict[str, Any]:
    """Run the soak and return its summary and windows (see the module docstring)."""
    total_s = minutes * 60.0
    windows: list[dict[str, Any]] = []
    lat_parts: list[np.ndarray] = []
    sent_parts: list[np.ndarray] = []
    memory = [sample_memory(server_pid).to_dict()]
    failures = unanswered = pa_errors = consecutive = 0
    stopped_early = ""
    start = time.time()
    with grpcclient.InferenceServerClient(url) as client:
        while time.time() - start < total_s:
            # the last window is shortened so the soak ends close to its length
            this_window_s = max(MIN_WINDOW_S, min(window_s, total_s - (time.time() - start)))
            interval_ms = max(100, int(this_window_s * 1000 / 3))
            before = stats.snapshot(client)
            w_start = time.time()
            row: dict[str, Any] = {"window": len(windows), "start_s": w_start - start}
            try:
                point = run_perf(
                    exe,
                    env,
                    url=url,
                    model="recommend",
                    input_data=input_data,
                    concurrency=concurrency,
                    budget_ms=budget_ms,
                    measurement_interval_ms=interval_ms,
                    stability_pct=RELAXED_STABILITY_PCT,
                    max_trials=3,
                    work_dir=work_dir,
                    timeout_s=max(120.0, 10 * window_s),
                    retry_unstable=False,
                )
            except PerfAnalyzerFailed as exc:
                pa_errors += 1
                consecutive += 1
                row["error"] = str(exc)[-500:]
                log.warning("soak window %d: %s", len(windows), exc)
            else:
                consecutive = 0
                profile = work_dir / f"c{concurrency}_b{budget_ms:g}.profile.json"
                if profile.is_file():
                    reqs = read_profile_export(profile)
                    lat_parts.append(reqs.latency_ms)
                    sent_parts.append(reqs.sent_s - start)
                    unanswered += reqs.errors
                    row["latency"] = latency_summary(reqs.latency_ms)
                    row["n_scored"] = scored_summary(reqs.n_scored, reqs.degraded)
                row["throughput_rps"] = point.throughput_rps
            delta = stats.delta(before, stats.snapshot(client))
            row["failures"] = int(sum(v["failures"] for v in delta.values()))
            failures += row["failures"]
            row["end_s"] = time.time() - start
            mem = sample_memory(server_pid)
            row["rss_mb"], row["pss_mb"] = mem.rss_mb, mem.pss_mb
            memory.append(mem.to_dict())
            windows.append(row)
            if on_window is not None:
                on_window(len(windows), min(time.time() - start, total_s))
            if consecutive >= MAX_CONSECUTIVE_FAILURES:
                stopped_early = f"{consecutive} perf_analyzer runs failed in a row: soak stopped"
                log.error(stopped_early)
                break
    lat = np.concatenate(lat_parts) if lat_parts else np.zeros(0)
    sent = np.concatenate(sent_parts) if sent_parts else np.zeros(0)
    duration_s = time.time() - start
    span = min(DRIFT_SPAN_S, duration_s / 3) if duration_s < 2 * DRIFT_SPAN_S else DRIFT_SPAN_S
    first = latency_summary(lat[sent < span])
    last = latency_summary(lat[sent >= duration_s - span])
    warm = windows[0]["rss_mb"] if windows else memory[0]["rss_mb"]
    return {
        "minutes": minutes,
        "duration_s": duration_s,
        "concurrency": concurrency,
        "budget_ms": budget_ms,
        "window_s": window_s,
        "requests": int(len(lat)),
        "stopped_early": stopped_early,
        "errors": {
            "perf_analyzer_failures": pa_errors,
            "failed_requests": failures,
            "unanswered_requests": unanswered,
        },
        "latency": latency_summary(lat),
        "drift": {
            "span_s": span,
            "first_p99_ms": first["p99_ms"],
            "last_p99_ms": last["p99_ms"],
            "p99_change_pct": growth_pct(first["p99_ms"], last["p99_ms"]),
        },
        "memory": {
            "before_rss_mb": memory[0]["rss_mb"],
            "warm_rss_mb": warm,
            "end_rss_mb": memory[-1]["rss_mb"],
            "growth_pct": growth_pct(warm, memory[-1]["rss_mb"]),
            "end_pss_mb": memory[-1]["pss_mb"],
            "samples": [
                {"t_s": m["t_s"] - start, "rss_mb": m["rss_mb"], "pss_mb": m["pss_mb"]}
                for m in memory
            ],
        },
        "windows": windows,
    }
