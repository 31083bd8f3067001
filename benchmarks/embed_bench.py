"""The re-embedding job's engines side by side in one run: items/s and parity.

    python benchmarks/embed_bench.py --out runs/embed_bench         # 20k generated items
    python benchmarks/embed_bench.py --bundle runs/artifacts/bundle \
        --catalog runs/data/items.parquet --out runs/embed_bench      # a trained bundle

Without ``--bundle`` it generates ``--items`` items (towers.data) and exports an untrained
bundle of the demo students' architecture (2 layers, hidden 384, 12 heads, dim 128: the same
cost per item as the trained demo model; export/untrained.py) under ``--out``.

Then it runs ``towerserve embed``'s job (client/embed/job.py) over the bundle's items table
with each engine in turn, ``local`` first and again last (the machine is shared: the two local
figures show the drift during the run):

* ``local``: in-process, runtime and precision chosen by measurement;
* ``ray``: Ray Data on a local Ray instance, ``--ray-actors`` actors splitting the cores
  (default: the engine's, one per core);
* ``triton``: the real tritonserver started on the bundle's repository (item tower in
  OpenVINO bf16, ``--server-instances`` model instances sharing ``--server-threads``
  threads), ``--max-in-flight`` gRPC requests at once.

For each: items/s over the embedding itself (from the first shard's start to the last one
written; the engine's start-up, e.g. Ray's or the runtime measurement, reported apart) and the
cosine of its vectors to the exported table (``item_embeddings.npy``, torch bf16) and to ONNX
Runtime fp32 on about ``--reference-items`` of them. Writes ``results.json`` and
``results.md`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("embed_bench")


def build_bundle(out: Path, n_items: int) -> Path:
    """Generated data and an untrained demo-architecture bundle under ``out``."""
    from export.bundle import build_bundle as export_bundle
    from export.untrained import write_untrained_artifacts
    from towers.data import GenerateConfig, generate

    bundle = out / "bundle"
    if (bundle / "manifest.json").is_file():
        return bundle
    generate(GenerateConfig(n_items=n_items, n_users=200, n_queries=100, seed=11), out / "data")
    write_untrained_artifacts(out / "data", out / "artifacts")
    export_bundle(out / "artifacts", None, bundle, index_kind="flat")
    return bundle


def run_engine(name: str, engine: Any, catalog: Path, out: Path, shard_size: int) -> dict:
    from client.embed import read_job_vectors, run_embed

    marks: dict[str, float] = {}
    shards: list[tuple[float, int]] = []  # (time written, items) of each shard
    start = time.perf_counter()
    result = run_embed(
        catalog,
        out,
        engine,
        shard_size=shard_size,
        restart=True,
        on_start=lambda total, done: marks.setdefault("start", time.perf_counter()),
        on_progress=lambda items: shards.append((time.perf_counter(), items)),
    )
    end = time.perf_counter()
    engine.close()
    _, ids, vecs, _ = read_job_vectors(out)
    n = result.items_embedded
    first_s = shards[0][0] if shards else end
    return {
        "engine": name,
        "items": n,
        "items_per_s": round(n / (end - marks["start"]), 1),
        "startup_s": round(marks["start"] - start, 2),
        "first_shard_s": round(first_s - marks["start"], 2),
        "wall_s": round(end - start, 2),
        "describe": result.manifest.engine,
        "ids": ids,
        "vectors": vecs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("runs/embed_bench"))
    parser.add_argument(
        "--catalog", type=Path, default=None, help="items Parquet (default: the generated one)"
    )
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--shard-size", type=int, default=4096)
    parser.add_argument("--engines", default="local,ray,triton,local")
    parser.add_argument("--ray-actors", type=int, default=None)
    parser.add_argument(
        "--reference-items", type=int, default=2000, help="items ONNX Runtime fp32 embeds"
    )
    parser.add_argument("--max-in-flight", type=int, default=8)
    parser.add_argument(
        "--triton-batch",
        type=int,
        default=256,
        help="triton: rows per request (and the server item_tower's max_batch_size)",
    )
    parser.add_argument("--server-threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--server-instances", type=int, default=1, help="item_tower instances")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args.out.mkdir(parents=True, exist_ok=True)
    from client.embed import LocalEngine, TritonEngine
    from serving.item_tower import ItemEncoder
    from towers.bundle_contract import ITEM_EMBEDDINGS_FILE, ITEM_IDS_FILE, load_manifest

    bundle = args.bundle or build_bundle(args.out, args.items)
    manifest = load_manifest(bundle)
    catalog = args.catalog or args.out / "data" / "items.parquet"
    table = np.load(bundle / ITEM_EMBEDDINGS_FILE)
    table_ids = np.load(bundle / ITEM_IDS_FILE)

    from client.embed import read_catalog

    texts = read_catalog(catalog).texts
    every = max(1, len(texts) // args.reference_items)
    start = time.perf_counter()
    encoder = ItemEncoder.from_dir(bundle, intra_op_threads=os.cpu_count() or 1)
    reference = encoder.embed(texts[::every])
    fp32_rate = len(reference) / (time.perf_counter() - start)

    load_start = os.getloadavg()[0]
    server = None
    rows = []
    try:
        for i, name in enumerate(args.engines.split(",")):
            out = args.out / f"shards_{i}_{name}"
            if name == "local":
                engine: Any = LocalEngine(bundle)
            elif name.startswith("local:"):  # local:W, W workers sharing the cores
                engine = LocalEngine(bundle, workers=int(name.split(":", 1)[1]))
            elif name == "ray":
                from client.embed.ray_engine import RayEngine

                engine = RayEngine(bundle, actors=args.ray_actors)
            elif name == "triton":
                if server is None:
                    server = start_server(
                        bundle,
                        args.out,
                        args.server_threads,
                        args.triton_batch,
                        args.server_instances,
                    )
                engine = TritonEngine(
                    server[1], max_in_flight=args.max_in_flight, batch_size=args.triton_batch
                )
            else:
                raise SystemExit(f"unknown engine {name}: local, ray or triton")
            row = run_engine(name, engine, catalog, out, args.shard_size)
            ids, vecs = row.pop("ids"), row.pop("vectors")
            assert np.array_equal(ids, table_ids), "the job's ids differ from the bundle's"
            to_table = (vecs * table).sum(1)
            to_fp32 = (vecs[::every] * reference).sum(1)
            row["cosine_to_exported"] = {
                "min": round(float(to_table.min()), 5),
                "mean": round(float(to_table.mean()), 6),
            }
            row["cosine_to_onnxruntime_fp32"] = {
                "min": round(float(to_fp32.min()), 5),
                "mean": round(float(to_fp32.mean()), 6),
            }
            log.info("%s: %s", name, row)
            rows.append(row)
    finally:
        if server is not None:
            server[0].stop()
    args.load = (load_start, os.getloadavg()[0])
    write_results(args, every, bundle, manifest.model_version, len(texts), fp32_rate, rows)


def start_server(
    bundle: Path, out: Path, threads: int, item_batch: int, instances: int = 1
) -> tuple[Any, str]:
    from export.repository import write_repository
    from serving.triton import TritonServer, free_ports

    os.environ.setdefault("no_proxy", "127.0.0.1,localhost")
    per_instance = max(1, threads // instances)
    repo = write_repository(
        bundle,
        out / "repository",
        intra_op_threads=per_instance,
        warmup=True,
        item_batch=item_batch,
        item_instances=instances,
    )
    grpc_port, http_port, metrics_port = free_ports(3)
    server = TritonServer(
        repo,
        grpc_port=grpc_port,
        http_port=http_port,
        metrics_port=metrics_port,
        log_file=out / "tritonserver.log",
    )
    server.start()
    server.wait_ready(timeout_s=300)
    return server, f"127.0.0.1:{grpc_port}"


def write_results(
    args: argparse.Namespace,
    every: int,
    bundle: Path,
    version: str,
    n: int,
    fp32_rate: float,
    rows: list[dict],
) -> None:
    locals_ = [r["items_per_s"] for r in rows if r["engine"] == "local"]
    local = float(np.mean(locals_)) if locals_ else float("nan")
    doc = {
        "bundle": str(bundle),
        "model_version": version,
        "items": n,
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "onnxruntime_fp32_reference_items_per_s": round(fp32_rate, 1),
        "local_mean_items_per_s": round(local, 1),
        "runs": rows,
    }
    (args.out / "results.json").write_text(json.dumps(doc, indent=2))
    lines = [
        f"# Re-embedding engines, {n:,} items, side by side in one run",
        "",
        f"Bundle `{bundle}` (model `{version}`), {os.cpu_count()} cores, load average "
        f"{args.load[0]:.1f} at the start and {args.load[1]:.1f} at the end. Command: "
        f"`python benchmarks/embed_bench.py --out {args.out} "
        + (f"--bundle {args.bundle} --catalog {args.catalog} " if args.bundle else "")
        + f"--items {args.items} --engines {args.engines} --triton-batch {args.triton_batch} "
        f"--max-in-flight {args.max_in_flight} --server-instances {args.server_instances}`.",
        "",
        "| # | engine | runtime | items/s | vs local mean | start-up s | first shard s | "
        "cosine to exported (min / mean) | cosine to ORT fp32 (min / mean) |",
        "| ---: | --- | --- | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for i, r in enumerate(rows):
        d = r["describe"]
        runtime = f"{d.get('runtime', 'server')} {d.get('precision', '')}".strip()
        if r["engine"] == "triton":
            runtime = (
                f"server, {d.get('max_in_flight')} x {d.get('batch_size')} rows in flight, "
                f"sorted by {d.get('sort_by', 'characters')}"
            )
        if r["engine"] == "ray":
            runtime += f", {d.get('actors')} actor(s) x {d.get('threads_per_actor')} threads"
        if r["engine"].startswith("local"):
            runtime += f", {d.get('workers', 1)} worker(s) x {d.get('threads')} threads"
        ct, cf = r["cosine_to_exported"], r["cosine_to_onnxruntime_fp32"]
        lines.append(
            f"| {i + 1} | {r['engine']} | {runtime} | {r['items_per_s']:,.0f} | "
            f"{r['items_per_s'] / local:.0%} | {r['startup_s']} | {r['first_shard_s']} | "
            f"{ct['min']} / {ct['mean']} | {cf['min']} / {cf['mean']} |"
        )
    lines += [
        "",
        "items/s: every item over the time from the job's start (after the engine's start-up) "
        "to the last shard written; first shard s: from that start to the first shard written "
        "(Ray's actors open their towers inside it; a small job pays it in items/s).",
        "",
        f"ONNX Runtime fp32 in-process (the parity reference, every {every}th item): "
        f"{fp32_rate:,.0f} items/s.",
    ]
    first = next((r for r in rows if r["engine"] == "local"), None)
    if first:
        lines.append(
            f"Local runtime measurement (items/s on the sample): "
            f"{first['describe'].get('measured_items_per_s')}."
        )
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
