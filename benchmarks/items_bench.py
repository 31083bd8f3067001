"""Item changes while serving: how long a change takes to be acknowledged and to be served.

    python benchmarks/items_bench.py --out runs/items_bench              # 5k generated items
    python benchmarks/items_bench.py --bundle runs/artifacts/bundle --out runs/items_bench

Without ``--bundle`` it generates ``--items`` items (towers.data) and exports an untrained
bundle of the demo students' architecture (export/untrained.py: the same cost per item as the
trained demo model). It writes the Triton repository (no warm-up samples), starts the real
tritonserver and, ``--changes`` times: adds one new item through the ``catalog`` model
(``ack``: the call's wall time, embedding and fsync included), then polls the ``retriever``
with the item's own vector every 10 ms until it comes first (``served``: from the
acknowledgement); then deletes it and polls until it is gone. Also one batch of 100 adds.
Writes ``results.json`` and ``results.md`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("items_bench")


def retrieve(client, vector: np.ndarray, k: int = 10) -> list[int]:
    import tritonclient.grpc as grpcclient

    vec = np.asarray(vector, np.float32).reshape(1, -1)
    inputs = [
        grpcclient.InferInput("USER_VECTOR", list(vec.shape), "FP32"),
        grpcclient.InferInput("K", [1], "INT32"),
    ]
    inputs[0].set_data_from_numpy(vec)
    inputs[1].set_data_from_numpy(np.array([k], np.int32))
    return client.infer("retriever", inputs, client_timeout=30).as_numpy("CANDIDATE_IDS").tolist()


def until(check, limit_s: float = 30.0) -> float:
    start = time.perf_counter()
    while not check():
        if time.perf_counter() - start > limit_s:
            return float("inf")
        time.sleep(0.01)
    return time.perf_counter() - start


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, help="an exported bundle [default: generate]")
    parser.add_argument("--items", type=int, default=5000, help="items to generate")
    parser.add_argument("--changes", type=int, default=20, help="single adds (and deletes)")
    parser.add_argument("--out", type=Path, default=Path("runs/items_bench"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    os.environ.setdefault("no_proxy", "127.0.0.1,localhost")
    args.out.mkdir(parents=True, exist_ok=True)
    bundle = args.bundle
    if bundle is None:
        from export.bundle import build_bundle
        from export.untrained import write_untrained_artifacts
        from towers.data import GenerateConfig, generate

        data = args.out / "data"
        generate(GenerateConfig(n_items=args.items, n_users=200, n_queries=100, seed=5), data)
        write_untrained_artifacts(data, args.out / "artifacts")
        bundle = args.out / "bundle"
        build_bundle(args.out / "artifacts", None, bundle, index_kind="flat")
    from client.grpc_client import TowerServeClient
    from client.items import ItemsClient
    from export.repository import write_repository
    from serving.item_changes import default_path
    from serving.triton import TritonServer, free_ports

    repo = write_repository(bundle, args.out / "repository", warmup=False)
    default_path(repo).unlink(missing_ok=True)  # a fresh change log
    n_items = len(np.load(bundle / "item_ids.npy"))
    g, h, m = free_ports(3)
    url = f"127.0.0.1:{g}"
    acks, served, del_acks, gone = [], [], [], []
    import tritonclient.grpc as grpcclient

    with (
        TritonServer(repo, grpc_port=g, http_port=h, metrics_port=m),
        ItemsClient(url) as items,
        TowerServeClient(url, timeout_s=30) as tower,
        grpcclient.InferenceServerClient(url) as client,
    ):
        for i in range(args.changes):
            item_id, text = 900_000_000 + i, f"benchmark item {i} copper kettle number {i}"
            vec = tower.embed_items([text])[0]
            start = time.perf_counter()
            items.add({item_id: text})
            acks.append(time.perf_counter() - start)
            served.append(until(lambda v=vec, i=item_id: retrieve(client, v)[0] == i))
            start = time.perf_counter()
            items.delete([item_id])
            del_acks.append(time.perf_counter() - start)
            gone.append(until(lambda v=vec, i=item_id: i not in retrieve(client, v)))
        batch = {800_000_000 + i: f"batch item {i} walnut shelf" for i in range(100)}
        start = time.perf_counter()
        items.add(batch)
        batch_s = time.perf_counter() - start
    results = {
        "items": n_items,
        "changes": args.changes,
        "add_ack_ms": {"p50": pct(acks, 50), "p95": pct(acks, 95)},
        "add_served_after_ack_ms": {"p50": pct(served, 50), "max": max(served) * 1e3},
        "delete_ack_ms": {"p50": pct(del_acks, 50), "p95": pct(del_acks, 95)},
        "delete_gone_after_ack_ms": {"p50": pct(gone, 50), "max": max(gone) * 1e3},
        "batch_100_adds_ack_ms": batch_s * 1e3,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
    }
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    lines = [
        f"# Item changes while serving ({n_items} items, {args.changes} adds and deletes)",
        "",
        f"Machine: {results['machine']} (shared). Retriever poll interval 0.5 s (default).",
        "",
        "| what | p50 ms | p95 / max ms |",
        "|---|---:|---:|",
        f"| add acknowledged (embed + fsync) | {pct(acks, 50):.1f} | {pct(acks, 95):.1f} |",
        f"| add served after ack | {pct(served, 50):.0f} | {max(served) * 1e3:.0f} (max) |",
        f"| delete acknowledged | {pct(del_acks, 50):.1f} | {pct(del_acks, 95):.1f} |",
        f"| delete gone after ack | {pct(gone, 50):.0f} | {max(gone) * 1e3:.0f} (max) |",
        f"| 100 adds in one request, acknowledged | {batch_s * 1e3:.0f} | |",
    ]
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
