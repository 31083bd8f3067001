"""The ``local`` re-embedding engine, before and after its hot loop was reworked, side by side.

    python benchmarks/embed_fast.py --out runs/embed_fast            # 20k generated items
    python benchmarks/embed_fast.py --out runs/embed_fast --repeats 5 --skip-model

The bundle and catalog are embed_bench.py's (generated items, an untrained bundle of the demo
students' architecture: 2 layers, hidden 384, dim 128; reused when ``--out`` has them).
Every job runs client/embed/job.py's ``run_embed`` with a fresh engine in one runtime
(``--runtime``/``--precision``, default OpenVINO bf16 with every core), so only the hot loop
differs between the variants:

* ``main``: the engine as it was (each shard sorted by characters, tokenized and run 64 rows
  at a time: ``embed_by_length`` over ``ItemEncoder.embed``);
* ``tokens``: each shard tokenized whole, batches of like token count (client/embed/pipeline.py;
  the engine's default);
* ``tokens+prefetch``: the same with the next shard tokenized on a background thread
  (``LocalEngine(prefetch=True)``);
* ``tokens+2streams``: token batches run by OpenVINO with the throughput hint, two streams
  of one thread each fed by an async queue (``LocalEngine(streams=2)``);
* ``tokens+prefetch+2streams``: both.

The variants take turns, ``--repeats`` rounds; items/s is counted from the job's start (after
the catalog is read and the runtime opened) to its end, and the table gives the median.
Besides the jobs it measures, in the same process: where a job's time goes (cProfile over one
job per variant without prefetch), the catalog read, the texts' token counts, the padded
tokens each sort gives, the model alone on pre-tokenized batches (OpenVINO latency hint vs a
throughput hint with two streams, batch sizes), where the model's own time goes (OpenVINO's
per-node counters) and the machine's bf16 matrix-multiply ceiling (torch, the same threads).
Writes ``results.json`` and ``results.md`` under ``--out``.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import logging
import os
import pstats
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from embed_bench import build_bundle  # noqa: E402
from model_bench import gemm_ceiling  # noqa: E402

log = logging.getLogger("embed_fast")

VARIANTS = ("main", "tokens", "tokens+prefetch", "tokens+2streams", "tokens+prefetch+2streams")


def make_engine(variant: str, bundle: Path, runtime: str, precision: str, threads: int) -> Any:
    """A fresh local engine for ``variant`` (module docstring)."""
    from client.embed import LocalEngine
    from client.embed.engines import Shards, embed_by_length

    class MainEngine(LocalEngine):
        """The hot loop as on main before this change (for the comparison only)."""

        def embed_shards(self, shards: Shards) -> Iterator[tuple[int, np.ndarray]]:
            if self.encoder is None:
                self.prepare([])
            assert self.encoder is not None
            for shard, item_ids, texts in shards:
                vectors = embed_by_length(self.encoder.embed, texts)
                yield shard, self.encoder.combine_ids(vectors, item_ids)

    kwargs: dict[str, Any] = dict(runtime=runtime, precision=precision, threads=threads, workers=1)
    if variant == "main":
        return MainEngine(bundle, **kwargs)
    streams = 2 if variant.endswith("+2streams") else 1
    return LocalEngine(bundle, prefetch="+prefetch" in variant, streams=streams, **kwargs)


def run_job(
    engine: Any, catalog: Any, path: Path, out: Path, shard_size: int
) -> tuple[float, float]:
    """One whole job: items per second from its start (after the catalog read and the
    runtime's opening) to its end, and items per CPU-second of this process meanwhile."""
    from client.embed import run_embed

    marks: dict[str, float] = {}

    def start(total: int, done: int) -> None:
        marks["start"], marks["cpu"] = time.perf_counter(), time.process_time()

    result = run_embed(
        path, out, engine, shard_size=shard_size, restart=True, catalog=catalog, on_start=start
    )
    rate = result.items_embedded / (time.perf_counter() - marks["start"])
    cpu_rate = result.items_embedded / (time.process_time() - marks["cpu"])
    engine.close()
    return rate, cpu_rate


def profile_job(engine: Any, catalog: Any, path: Path, out: Path, shard_size: int) -> dict:
    """Seconds per part of one job (cProfile, main thread only: run without prefetch)."""
    from client.embed import run_embed

    prof = cProfile.Profile()
    start = time.perf_counter()
    prof.enable()
    run_embed(path, out, engine, shard_size=shard_size, restart=True, catalog=catalog)
    prof.disable()
    wall = time.perf_counter() - start
    engine.close()
    stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    parts = {
        "open runtime (prepare)": ("engines.py", "prepare"),
        "tokenize + pad": ("text.py", "encode"),
        "model (OpenVINO infer)": ("_ov_api.py", "infer"),
        "write shards (Parquet + fsync)": ("shards.py", "write_shard"),
        "checksums + manifest": ("bundle_contract.py", "sha256"),
    }
    got = {}
    for label, (file, func) in parts.items():
        got[label] = round(
            sum(v[3] for k, v in stats.items() if k[0].endswith(file) and k[2] == func), 3
        )
    got["other (sort, order, copies, Python)"] = round(wall - sum(got.values()), 3)
    got["job wall"] = round(wall, 3)
    return got


def token_stats(tokenizer: Any, texts: list[str], shard_size: int, batch: int) -> dict:
    """Token counts of the texts and padded tokens per item under each sort."""
    from client.embed.pipeline import tokenize_shard
    from towers.text import encode_items

    _, mask = encode_items(tokenizer, texts)
    lengths = mask.sum(1)
    by_chars = 0
    by_tokens = 0
    unsorted = 0
    for lo in range(0, len(texts), shard_size):
        shard = texts[lo : lo + shard_size]
        shard_len = lengths[lo : lo + shard_size]
        order = np.argsort([len(t) for t in shard], kind="stable")
        for s in range(0, len(shard), batch):
            by_chars += len(order[s : s + batch]) * int(shard_len[order[s : s + batch]].max())
            unsorted += len(shard_len[s : s + batch]) * int(shard_len[s : s + batch].max())
        by_tokens += tokenize_shard(tokenizer, shard, batch).padded_tokens
    p50, p90, p99 = np.percentile(lengths, [50, 90, 99])
    n = len(texts)
    return {
        "tokens_per_item_with_cls_sep": {
            "mean": round(float(lengths.mean()), 1),
            "p50": float(p50),
            "p90": float(p90),
            "p99": float(p99),
            "max": int(lengths.max()),
        },
        "padded_tokens_per_item": {
            "unsorted": round(unsorted / n, 1),
            "sorted_by_chars (main)": round(by_chars / n, 1),
            "sorted_by_tokens (now)": round(by_tokens / n, 1),
        },
    }


def model_alone(bundle: Path, texts: list[str], threads: int, repeats: int) -> dict:
    """The item tower alone on pre-tokenized token-sorted batches, several OpenVINO
    settings taking turns: items/s (median) per setting."""
    import openvino as ov

    from client.embed.pipeline import tokenize_shard
    from towers.bundle_contract import TOKENIZER_FILE
    from towers.text import load_tokenizer

    tok = load_tokenizer(bundle / TOKENIZER_FILE)
    core = ov.Core()
    model = core.read_model(str(bundle / "item_tower.onnx"))

    def compiled(hint: str, streams: int) -> Any:
        return core.compile_model(
            model,
            "CPU",
            {
                "INFERENCE_PRECISION_HINT": "bf16",
                "PERFORMANCE_HINT": hint,
                "NUM_STREAMS": str(streams),
                "INFERENCE_NUM_THREADS": str(threads),
                "ENABLE_CPU_PINNING": "NO",
            },
        )

    latency = compiled("LATENCY", 1)
    request = latency.create_infer_request()
    throughput = compiled("THROUGHPUT", 2)

    def sync(batches: list) -> None:
        for ids, mask in batches:
            request.infer({"input_ids": ids, "attention_mask": mask})

    def two_streams(batches: list) -> None:
        queue = ov.AsyncInferQueue(throughput, 2)
        for k, (ids, mask) in enumerate(batches):
            queue.start_async({"input_ids": ids, "attention_mask": mask}, k)
        queue.wait_all()

    settings: dict[str, tuple[Callable[[list], None], list]] = {}
    for batch in (64, 128, 256):
        tb = tokenize_shard(tok, texts, batch)
        settings[f"latency hint, 1 stream x {threads} threads, batch {batch}"] = (sync, tb.batches)
        settings[f"throughput hint, 2 streams, batch {batch}"] = (two_streams, tb.batches)
    int8, int8_cosine = int8_tower(core, model, tok, texts, bundle, threads)
    int8_request = int8.create_infer_request()

    def int8_sync(batches: list) -> None:
        for ids, mask in batches:
            int8_request.infer({"input_ids": ids, "attention_mask": mask})

    settings["int8 (NNCF, matmuls int8, rest bf16), latency hint, batch 64"] = (
        int8_sync,
        settings[f"latency hint, 1 stream x {threads} threads, batch 64"][1],
    )
    for fn, batches in settings.values():  # warm-up: every shape compiled once
        fn(batches)
    rates: dict[str, list[float]] = defaultdict(list)
    for _ in range(repeats):
        for name, (fn, batches) in settings.items():
            start = time.perf_counter()
            fn(batches)
            rates[name].append(len(texts) / (time.perf_counter() - start))
    tb64 = tokenize_shard(tok, texts, 64)
    return {
        "items": len(texts),
        "padded_tokens_per_item_batch_64": round(tb64.padded_tokens / len(texts), 2),
        "items_per_s": {k: round(statistics.median(v), 1) for k, v in rates.items()},
        "all_items_per_s": {k: [round(x) for x in v] for k, v in rates.items()},
        "node_time_share": node_profile(core, model, tb64.batches, threads),
        "flops_per_item": batch_flops(bundle, tb64.batches) / len(texts),
        "int8_cosine_to_fp32": int8_cosine,
    }


def int8_tower(
    core: Any, model: Any, tok: Any, texts: list[str], bundle: Path, threads: int
) -> tuple[Any, dict[str, float]]:
    """The item tower quantized by NNCF (transformer preset, as client/int8_export.py does
    the reranker), calibrated on the last 1,024 texts, compiled like the bf16 one; and the
    cosine of its vectors to ONNX Runtime fp32's on the first 1,024 texts."""
    import nncf

    from client.embed.pipeline import tokenize_shard
    from serving.onnx_session import OnnxModel

    calib = tokenize_shard(tok, texts[-1024:], 64).batches
    quantized = nncf.quantize(
        model,
        nncf.Dataset([{"input_ids": i, "attention_mask": m} for i, m in calib]),
        model_type=nncf.ModelType.TRANSFORMER,
        subset_size=len(calib) * 64,
    )
    compiled = core.compile_model(
        quantized,
        "CPU",
        {
            "INFERENCE_PRECISION_HINT": "bf16",
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": "1",
            "INFERENCE_NUM_THREADS": str(threads),
            "ENABLE_CPU_PINNING": "NO",
        },
    )
    request = compiled.create_infer_request()
    fp32 = OnnxModel(bundle / "item_tower.onnx")
    cosines = []
    for ids, mask in tokenize_shard(tok, texts[:1024], 64).batches:
        request.infer({"input_ids": ids, "attention_mask": mask})
        got = request.get_output_tensor(0).data
        cosines.append((got * fp32(input_ids=ids, attention_mask=mask)).sum(1))
    cos = np.concatenate(cosines)
    return compiled, {"min": round(float(cos.min()), 5), "mean": round(float(cos.mean()), 6)}


def node_profile(core: Any, model: Any, batches: list, threads: int) -> dict[str, float]:
    """Share of the model's time per OpenVINO node type (``PERF_COUNT``), batch 64."""
    compiled = core.compile_model(
        model,
        "CPU",
        {
            "INFERENCE_PRECISION_HINT": "bf16",
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_NUM_THREADS": str(threads),
            "ENABLE_CPU_PINNING": "NO",
            "PERF_COUNT": "YES",
        },
    )
    request = compiled.create_infer_request()
    totals: dict[str, float] = defaultdict(float)
    for ids, mask in batches:
        request.infer({"input_ids": ids, "attention_mask": mask})
        for info in request.profiling_info:
            totals[info.node_type] += info.real_time.total_seconds()
    whole = sum(totals.values()) or 1.0
    top = sorted(totals.items(), key=lambda kv: -kv[1])
    return {k: round(v / whole, 3) for k, v in top if v / whole >= 0.005}


def batch_flops(bundle: Path, batches: list) -> float:
    """FLOPs of the item tower over ``batches`` (model_bench.matmul_flops per distinct batch
    shape: every MatMul and Gemm, attention's included)."""
    from model_bench import matmul_flops

    per_shape: dict[tuple[int, int], float] = {}
    total = 0.0
    for ids, mask in batches:
        if ids.shape not in per_shape:
            feeds = {"input_ids": ids, "attention_mask": mask}
            per_shape[ids.shape] = matmul_flops(bundle / "item_tower.onnx", feeds)
        total += per_shape[ids.shape]
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/embed_fast"))
    parser.add_argument("--bundle", type=Path, default=None)
    parser.add_argument("--catalog", type=Path, default=None)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--shard-size", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--runtime", default="openvino")
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--model-items", type=int, default=4096, help="texts the model-alone runs")
    parser.add_argument("--skip-model", action="store_true", help="only the jobs and profiles")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args.out.mkdir(parents=True, exist_ok=True)
    variants = args.variants.split(",")
    if unknown := set(variants) - set(VARIANTS):
        raise SystemExit(f"unknown variants {sorted(unknown)}: allowed {', '.join(VARIANTS)}")

    from client.embed import read_catalog
    from towers.bundle_contract import TOKENIZER_FILE, load_manifest
    from towers.text import load_tokenizer

    bundle = args.bundle or build_bundle(args.out, args.items)
    catalog_path = args.catalog or args.out / "data" / "items.parquet"
    load = [os.getloadavg()[0]]
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    start = time.perf_counter()
    catalog = read_catalog(catalog_path)
    read_s = time.perf_counter() - start
    texts = catalog.texts
    doc: dict[str, Any] = {
        "bundle": str(bundle),
        "model_version": load_manifest(bundle).model_version,
        "items": len(texts),
        "cores": os.cpu_count(),
        "threads": args.threads,
        "runtime": f"{args.runtime} {args.precision}",
        "started": started,
        "read_catalog_s": round(read_s, 3),
        "read_catalog_items_per_s": round(len(texts) / read_s),
    }
    tok = load_tokenizer(bundle / TOKENIZER_FILE)
    doc["tokens"] = token_stats(tok, texts, args.shard_size, 64)
    log.info("tokens: %s", doc["tokens"])

    rates: dict[str, list[float]] = defaultdict(list)
    cpu_rates: dict[str, list[float]] = defaultdict(list)
    for r in range(args.repeats):
        for v in variants:
            engine = make_engine(v, bundle, args.runtime, args.precision, args.threads)
            rate, cpu = run_job(engine, catalog, catalog_path, args.out / "job", args.shard_size)
            rates[v].append(rate)
            cpu_rates[v].append(cpu)
            log.info("round %d %s: %.0f items/s (load %.1f)", r + 1, v, rate, os.getloadavg()[0])
    load.append(os.getloadavg()[0])
    doc["jobs"] = {
        v: {
            "median_items_per_s": round(statistics.median(x), 1),
            "runs": [round(y) for y in x],
            "median_items_per_cpu_s": round(statistics.median(cpu_rates[v]), 1),
            # the rounds are pairs in time: the ratio within a round cancels slow load drift
            "median_ratio_to_main_in_round": (
                round(statistics.median(a / b for a, b in zip(x, rates["main"], strict=True)), 3)
                if "main" in rates
                else None
            ),
        }
        for v, x in rates.items()
    }
    doc["profile_s"] = {
        v: profile_job(
            make_engine(v, bundle, args.runtime, args.precision, args.threads),
            catalog,
            catalog_path,
            args.out / "job",
            args.shard_size,
        )
        for v in ("main", "tokens")
        if v in variants or v == "tokens"
    }
    if not args.skip_model:
        doc["model_alone"] = model_alone(
            bundle, texts[: args.model_items], args.threads, args.repeats
        )
        ceilings = [gemm_ceiling(2048, 5) for _ in range(3)]  # a ceiling: the best of three
        doc["matmul_gflops"] = {k: round(max(c[k] for c in ceilings), 1) for k in ceilings[0]}
    load.append(os.getloadavg()[0])
    doc["load_average_1min"] = load
    doc["command"] = "python " + " ".join(sys.argv)
    (args.out / "results.json").write_text(json.dumps(doc, indent=2))
    write_markdown(args.out / "results.md", doc)


def write_markdown(path: Path, doc: dict) -> None:
    jobs = doc["jobs"]
    base = jobs.get("main", {}).get("median_items_per_s")
    loads = ", ".join(f"{x:.1f}" for x in doc["load_average_1min"])
    lines = [
        f"# Local re-embedding engine, main vs now, {doc['items']:,} items, one run",
        "",
        f"`{doc['command']}`; bundle `{doc['bundle']}` (model `{doc['model_version']}`), "
        f"{doc['runtime']}, {doc['threads']} threads on {doc['cores']} cores; started "
        f"{doc['started']}; 1-minute load average {loads} "
        "(start, after the jobs, end).",
        "",
        "| variant | job items/s (median) | runs | median / main's | median of the rounds' "
        "ratios to main | items per CPU-second (median) |",
        "| --- | ---: | --- | ---: | ---: | ---: |",
    ]
    for v, j in jobs.items():
        ratio = f"{j['median_items_per_s'] / base:.2f}x" if base else "-"
        paired = j.get("median_ratio_to_main_in_round")
        lines.append(
            f"| {v} | {j['median_items_per_s']:,.0f} | {', '.join(map(str, j['runs']))} | "
            f"{ratio} | {f'{paired:.2f}x' if paired else '-'} | "
            f"{j['median_items_per_cpu_s']:,.0f} |"
        )
    t = doc["tokens"]
    lines += [
        "",
        f"Catalog read (Parquet + text building + validation): {doc['read_catalog_s']} s, "
        f"{doc['read_catalog_items_per_s']:,} items/s.",
        f"Tokens per item ([CLS]/[SEP] included): {t['tokens_per_item_with_cls_sep']}. Padded "
        f"tokens per item at batch 64: {t['padded_tokens_per_item']}.",
        "",
        "Where one job's time goes (seconds, cProfile, main thread, no prefetch):",
        "",
        "| part | " + " | ".join(doc["profile_s"]) + " |",
        "| --- | " + " | ".join("---:" for _ in doc["profile_s"]) + " |",
    ]
    parts = list(next(iter(doc["profile_s"].values())))
    for part in parts:
        lines.append(
            f"| {part} | " + " | ".join(str(p[part]) for p in doc["profile_s"].values()) + " |"
        )
    if "model_alone" in doc:
        m = doc["model_alone"]
        lines += [
            "",
            f"Model alone ({m['items']:,} pre-tokenized texts, token-sorted, median items/s):",
            "",
            "| setting | items/s | runs |",
            "| --- | ---: | --- |",
        ]
        for k, v in m["items_per_s"].items():
            lines.append(f"| {k} | {v:,.0f} | {', '.join(map(str, m['all_items_per_s'][k]))} |")
        best = max(m["items_per_s"].values())
        flops = m["flops_per_item"]
        key = f"bf16@{doc['threads']}"
        ceiling = doc["matmul_gflops"].get(key, float("nan"))
        lines += [
            "",
            f"Model time per OpenVINO node type (batch 64): {m['node_time_share']}.",
            f"int8 vectors' cosine to ONNX Runtime fp32 (1,024 texts): {m['int8_cosine_to_fp32']}.",
            f"FLOPs per item (every MatMul, at batch 64's padding): {flops / 1e6:.0f} M. "
            f"torch GEMM 2048^3 (GFLOP/s, precision@threads, best of three medians): "
            f"{doc['matmul_gflops']}. Best "
            f"model-alone rate {best:,.0f} items/s = {best * flops / 1e9:,.0f} GFLOP/s = "
            f"{best * flops / 1e9 / ceiling:.0%} of the bf16 GEMM ceiling at {doc['threads']} "
            "threads.",
        ]
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
