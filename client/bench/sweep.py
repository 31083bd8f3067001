"""The client sweep: the request mix sent one at a time through :class:`TowerServeClient` at
each budget, for the distribution of ``N_SCORED`` (candidates the cross-encoder scored) and
``DEGRADED`` (the budget ran out before every candidate was scored) without queueing."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from client.bench.perf import latency_summary, scored_summary
from client.bench.requests import BenchRequest
from client.grpc_client import TowerServeClient, TowerServeError

log = logging.getLogger(__name__)


def client_sweep(
    url: str,
    requests: Sequence[BenchRequest],
    *,
    budget_ms: float,
    n_requests: int,
    k: int = 10,
    timeout_s: float = 30.0,
    on_request: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Send the first ``n_requests`` of ``requests`` (cycled) at ``budget_ms``.

    Returns ``n_scored`` (median, p10, p90, mean, share_degraded), ``latency`` (p50/p90/p99 ms,
    client round trip), the same per request kind under ``by_kind``, and ``errors`` with up to
    three ``error_messages``.
    """
    scored, degraded, latency, kinds = [], [], [], []
    errors: list[str] = []
    with TowerServeClient(url, timeout_s=timeout_s) as client:
        for i in range(n_requests):
            r = requests[i % len(requests)]
            try:
                rec = client.recommend(
                    r.query,
                    user_id=r.user_id,
                    history=r.history_ids,
                    history_ts=r.history_ts,
                    k=k,
                    budget_ms=budget_ms,
                )
            except TowerServeError as exc:
                errors.append(str(exc))
            else:
                scored.append(rec.n_scored)
                degraded.append(rec.degraded)
                latency.append(rec.latency_ms)
                kinds.append(r.kind)
            if on_request is not None:
                on_request()
    if errors:
        log.warning(
            "client sweep at budget %g ms: %d errors, first: %s", budget_ms, len(errors), errors[0]
        )
    n = np.asarray(scored, dtype=np.int64)
    d = np.asarray(degraded, dtype=bool)
    lat = np.asarray(latency, dtype=np.float64)
    kind_arr = np.asarray(kinds)
    return {
        "budget_ms": budget_ms,
        "requests": n_requests,
        "errors": len(errors),
        "error_messages": errors[:3],
        "n_scored": scored_summary(n, d),
        "latency": latency_summary(lat),
        "by_kind": {
            kind: {
                "n_scored": scored_summary(n[kind_arr == kind], d[kind_arr == kind]),
                "latency": latency_summary(lat[kind_arr == kind]),
            }
            for kind in ("search", "homepage")
            if (kind_arr == kind).any()
        },
    }
