"""``towerserve bench``: the serving benchmark suite (library side; the command is thin).

One run builds or reuses a catalog of the asked size, exports the trained model over it,
starts the real ``tritonserver`` and measures ``recommend`` with ``perf_analyzer`` (latency
percentiles and throughput per concurrency and budget), a gRPC client sweep (how many
candidates the cross-encoder scored and how often it ran out of budget), Triton's per-stage
statistics and the server's memory; optionally a soak. Results go to ``results.json``,
``report.md`` and PNG plots under the output folder.

Modules: :mod:`~client.bench.config` (settings), :mod:`~client.bench.catalog` (catalog, bundle
and repository cache), :mod:`~client.bench.requests` (request mix from held-out data),
:mod:`~client.bench.perf` (perf_analyzer), :mod:`~client.bench.stats` (Triton statistics),
:mod:`~client.bench.memory` (/proc), :mod:`~client.bench.sweep` (client sweep),
:mod:`~client.bench.soak`, :mod:`~client.bench.sections` (the ``--sections`` registry),
:mod:`~client.bench.report` and :mod:`~client.bench.runner`.
"""

from __future__ import annotations

from client.bench.config import BenchConfig
from client.bench.perf import PerfAnalyzerUnavailable
from client.bench.runner import BenchError, run_bench

__all__ = ["BenchConfig", "BenchError", "PerfAnalyzerUnavailable", "run_bench"]
