"""Hot swap under load: latency of ``recommend`` before, during and after ``towerserve publish``
and ``towerserve rollback``, with failed and mixed-version answers counted.

    python benchmarks/swap_bench.py --out runs/swap_bench        # 5k generated items

It generates ``--items`` items (towers.data) and exports two untrained bundles of the demo
students' architecture (export/untrained.py, seeds 0 and 1: two model versions with the cost of
the trained demo model), writes the Triton repository of the first (with warm-up samples, as
``towerserve export`` does), starts the real tritonserver as ``towerserve serve`` does
(explicit model control, every model loaded) and keeps ``--concurrency`` clients sending
``recommend`` (anonymous searches, ``--budget-ms``) back to back. After
``--steady-s`` seconds it publishes the second bundle, waits ``--steady-s`` more, rolls back and
waits again. Each answer's ``SERVED_BY`` labels are checked: a mixed answer has labels of two
versions. Latency is the client's round trip per request, grouped by when the request was sent:
``before``, ``publish`` (while publish ran), ``after``, ``rollback``, ``after rollback``.
Writes ``results.json`` and ``results.md`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

log = logging.getLogger("swap_bench")

#: Search queries (anonymous, no history: an empty query would be refused).
QUERIES = ["red shirt", "running shoes", "wooden table", "phone case", "black jacket"]


def recommend(client, query: str, budget_ms: float) -> list[str]:
    """SERVED_BY of one ``recommend`` answer (raises on an error answer)."""
    import tritonclient.grpc as grpcclient

    arrays = [
        ("QUERY", np.array([query.encode()], dtype=np.object_), "BYTES"),
        ("USER_ID", np.array([-1], np.int64), "INT64"),
        ("HISTORY_IDS", np.zeros(0, np.int64), "INT64"),
        ("HISTORY_TS", np.zeros(0, np.int64), "INT64"),
        ("K", np.array([10], np.int32), "INT32"),
        ("BUDGET_MS", np.array([budget_ms], np.float32), "FP32"),
    ]
    inputs = []
    for name, data, dtype in arrays:
        tensor = grpcclient.InferInput(name, list(data.shape), dtype)
        tensor.set_data_from_numpy(data)
        inputs.append(tensor)
    outputs = [grpcclient.InferRequestedOutput(n) for n in ("ITEM_IDS", "SERVED_BY")]
    result = client.infer("recommend", inputs, outputs=outputs, client_timeout=60)
    return [x.decode() for x in result.as_numpy("SERVED_BY")]


class Load:
    """``concurrency`` clients sending ``recommend`` until :meth:`stop`; every request is
    recorded as ``(sent_s, latency_s, labels or None, error or None)``."""

    def __init__(self, url: str, concurrency: int, budget_ms: float) -> None:
        self.url, self.budget_ms = url, budget_ms
        self.records: list[tuple[float, float, list[str] | None, str | None]] = []
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(concurrency)
        self._futures = [self._pool.submit(self._client, i) for i in range(concurrency)]

    def _client(self, seed: int) -> None:
        import tritonclient.grpc as grpcclient

        n = seed
        with grpcclient.InferenceServerClient(self.url) as client:
            while not self._stop.is_set():
                n += 1
                sent = time.monotonic()
                try:
                    labels = recommend(client, QUERIES[n % len(QUERIES)], self.budget_ms)
                    self.records.append((sent, time.monotonic() - sent, labels, None))
                except Exception as exc:  # counted, never hidden
                    self.records.append((sent, time.monotonic() - sent, None, repr(exc)))

    def stop(self) -> None:
        self._stop.set()
        for f in self._futures:
            f.result()
        self._pool.shutdown()


def summarise(records, start: float, end: float) -> dict:
    rows = [r for r in records if start <= r[0] < end]
    ok = [r[1] for r in rows if r[3] is None]
    served = sorted({r[2][0] for r in rows if r[2]})
    return {
        "requests": len(rows),
        "failed": sum(r[3] is not None for r in rows),
        "mixed": sum(1 for r in rows if r[2] and len(set(r[2])) != 1),
        "p50_ms": float(np.percentile(ok, 50) * 1e3) if ok else None,
        "p99_ms": float(np.percentile(ok, 99) * 1e3) if ok else None,
        "max_ms": float(max(ok) * 1e3) if ok else None,
        "served_by": served,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=5000, help="items to generate")
    parser.add_argument("--concurrency", type=int, default=4, help="clients sending at once")
    parser.add_argument("--budget-ms", type=float, default=25.0, help="reranking budget")
    parser.add_argument("--steady-s", type=float, default=10.0, help="seconds between steps")
    parser.add_argument("--out", type=Path, default=Path("runs/swap_bench"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    os.environ.setdefault("no_proxy", "127.0.0.1,localhost")
    args.out.mkdir(parents=True, exist_ok=True)

    from client.publish import publish, rollback
    from export.bundle import build_bundle
    from export.repository import write_repository
    from export.untrained import write_untrained_artifacts
    from serving.triton import TritonServer, free_ports
    from towers.data import GenerateConfig, generate

    data = args.out / "data"
    if not data.is_dir():
        generate(GenerateConfig(n_items=args.items, n_users=200, n_queries=100, seed=5), data)
    bundles = []
    for seed in (0, 1):
        bundle = args.out / f"bundle_s{seed}"
        if not (bundle / "manifest.json").is_file():
            arts = write_untrained_artifacts(data, args.out / f"artifacts_s{seed}", seed=seed)
            build_bundle(arts, None, bundle, index_kind="flat")
        bundles.append(bundle)
    repo = write_repository(bundles[0], args.out / "repository")
    g, h, m = free_ports(3)
    url = f"127.0.0.1:{g}"
    log_file = args.out / "tritonserver.log"
    log_file.unlink(missing_ok=True)
    server = TritonServer(
        repo,
        grpc_port=g,
        http_port=h,
        metrics_port=m,
        model_control_mode="explicit",
        load_models=["*"],
        log_file=log_file,
    )
    marks: dict[str, float] = {}
    steps: list[tuple[float, str]] = []

    def step(line: str) -> None:
        steps.append((time.monotonic(), line))
        log.info("%s", line)

    with server:
        load = Load(url, args.concurrency, args.budget_ms)
        try:
            marks["start"] = time.monotonic()
            time.sleep(args.steady_s)
            marks["publish"] = time.monotonic()
            published = publish(repo, bundles[1], url=url, progress=step)
            marks["published"] = time.monotonic()
            time.sleep(args.steady_s)
            marks["rollback"] = time.monotonic()
            rolled = rollback(repo, url=url)
            load_avg = os.getloadavg()
            marks["rolled_back"] = time.monotonic()
            time.sleep(args.steady_s)
            marks["end"] = time.monotonic()
        finally:
            load.stop()
    records = load.records
    phases = {
        "before": summarise(records, marks["start"], marks["publish"]),
        "publish": summarise(records, marks["publish"], marks["published"]),
        "after publish": summarise(records, marks["published"], marks["rollback"]),
        "rollback": summarise(records, marks["rollback"], marks["rolled_back"]),
        "after rollback": summarise(records, marks["rolled_back"], marks["end"]),
    }
    whole = summarise(records, marks["start"], marks["end"])
    reloads = log_file.read_text().count("successfully loaded 'user_tower'")
    results = {
        "items": args.items,
        "concurrency": args.concurrency,
        "budget_ms": args.budget_ms,
        "publish_s": published.seconds,
        "rollback_s": rolled.seconds,
        "versions": [published.model_version, rolled.model_version],
        "user_tower_loads_in_log": reloads,
        "publish_steps_s": [(round(t - marks["publish"], 2), line) for t, line in steps],
        "load_average_1_5_15": load_avg,
        "phases": phases,
        "whole": whole,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
    }
    (args.out / "results.json").write_text(json.dumps(results, indent=2))

    def fmt(x: float | None) -> str:
        return "-" if x is None else f"{x:.1f}"

    lines = [
        f"# Hot swap under load ({args.items} items, concurrency {args.concurrency}, "
        f"budget {args.budget_ms:g} ms)",
        "",
        f"Machine: {results['machine']} (shared). Publish took {published.seconds:.1f} s, "
        f"rollback {rolled.seconds:.2f} s. Requests sent: {whole['requests']}, failed "
        f"{whole['failed']}, mixed-version answers {whole['mixed']}. Load average at the "
        f"end {load_avg[0]:.1f} / {load_avg[1]:.1f} / {load_avg[2]:.1f} (1 / 5 / 15 min).",
        "",
        "Publish steps (seconds from its start): "
        + "; ".join(f"{t - marks['publish']:.1f} {line}" for t, line in steps)
        + ".",
        "",
        "| requests sent | n | failed | mixed | p50 ms | p99 ms | max ms | served by |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, s in phases.items():
        lines.append(
            f"| {name} | {s['requests']} | {s['failed']} | {s['mixed']} | {fmt(s['p50_ms'])} "
            f"| {fmt(s['p99_ms'])} | {fmt(s['max_ms'])} | {', '.join(s['served_by'])} |"
        )
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
