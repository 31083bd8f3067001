"""How steady this host runs fixed CPU work: the noise floor under every latency figure.

A latency percentile measures the server and the machine together. On a shared virtual
machine the same fixed piece of single-threaded work takes several times longer now and
then (another tenant on the host's cores, caches and memory bandwidth; the guest sees no
steal time): on this project's 2-core VM, a fixed 7-9 ms computation had a p99 2.7-3.6x its
p50 with nothing else running (2026-11-30). A server cannot have a p99 below its own p50
times that ratio, so a p99 target is only reachable when ``p50 * ratio`` fits under it.

:func:`measure_jitter` times one fixed single-threaded workload (numpy ufuncs over a
float64 array, no BLAS, no threads), sized to about ``sample_ms`` when it starts, back to
back for ``duration_s`` seconds, and reports the spread of its durations.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

__all__ = ["measure_jitter"]

#: Elements of the array the workload runs over (512 KiB of float64: fits this host's L2).
WORK_ELEMENTS = 65_536


def _work(x: np.ndarray, out: np.ndarray, rounds: int) -> None:
    for _ in range(rounds):
        np.exp(x, out=out)
        np.sqrt(out, out=out)


def measure_jitter(duration_s: float, sample_ms: float = 2.0) -> dict[str, Any]:
    """Durations of one fixed workload run back to back for ``duration_s`` seconds (> 0).

    The workload is sized once, at the start, to take about ``sample_ms`` milliseconds
    (> 0), then never changes, so every variation is the host's. Returns ``samples`` (how
    many ran), ``sample_ms`` (the sized target), ``p50_ms``, ``p90_ms``, ``p99_ms``,
    ``p999_ms``, ``max_ms`` (each sample's duration, ms) and ``p99_over_p50``.
    """
    if not duration_s > 0 or not sample_ms > 0:
        raise ValueError(f"duration_s and sample_ms must be > 0, got {duration_s}, {sample_ms}")
    x = np.linspace(0.0, 1.0, WORK_ELEMENTS)
    out = np.empty_like(x)
    # size: the fastest of a few one-round timings, so a slow moment does not shrink the work
    one = min(_timed(x, out, 1) for _ in range(5))
    rounds = max(1, round(sample_ms / max(one, 1e-6)))
    durations: list[float] = []
    end = time.perf_counter() + duration_s
    while time.perf_counter() < end or len(durations) < 3:
        durations.append(_timed(x, out, rounds))
    ms = np.asarray(durations)
    p50, p90, p99, p999 = (float(v) for v in np.percentile(ms, [50, 90, 99, 99.9]))
    return {
        "samples": len(durations),
        "sample_ms": float(sample_ms),
        "p50_ms": p50,
        "p90_ms": p90,
        "p99_ms": p99,
        "p999_ms": p999,
        "max_ms": float(ms.max()),
        "p99_over_p50": p99 / p50 if p50 > 0 else float("nan"),
    }


def _timed(x: np.ndarray, out: np.ndarray, rounds: int) -> float:
    start = time.perf_counter()
    _work(x, out, rounds)
    return (time.perf_counter() - start) * 1e3
