"""The served graphs on this CPU, runtime by runtime, side by side in one run.

    python benchmarks/model_bench.py --bundle runs/artifacts/bundle --out runs/model_bench
    python benchmarks/model_bench.py --quick --out DIR      # tiny untrained bundle (tests)

For the cross-encoder (``reranker``), the item tower (``item_tower``) and the user tower
(``user_tower``: a query of the row's length and a history of ``USER_HISTORY_ROWS`` item
vectors per row, the graph a search request runs) of an exported bundle (``--bundle``: a
version folder with ``manifest.json`` and the ``.onnx`` graphs; without it, a small untrained
bundle is built under ``--out``), measures:

* the machine's matmul ceiling in the same run: torch GEMM (``--gemm-size``, cube) in fp32 and
  bf16 on 1 and 2 threads, GFLOP/s (median of several calls), and OpenVINO's own (a product
  with a constant weight matrix, the dense layer the graphs are made of), against which the
  OpenVINO rows are measured;
* each runtime that is available here (ONNX Runtime fp32, OpenVINO fp32, OpenVINO bf16, and
  torch bf16 when the bundle has the ``.pt2`` program) at 1 and 2 threads, batch ``--batch``
  (64) at each pair/text length of ``--lengths`` (tokens, padding included): rows per second
  and the share of the ceiling at that precision and thread count. FLOPs per call are counted
  from the ONNX graph itself (every MatMul/Gemm, by ONNX shape inference at that shape);
* quality against ONNX Runtime fp32 on real inputs (the bundle's item texts; for the reranker,
  pairs of its titles; for the user tower, titles as queries with histories of the bundle's
  item vectors): reranker max abs logit difference and Spearman correlation, towers' mean/min
  cosine of the embeddings.

Writes ``results.json`` and ``results.md`` under ``--out`` and prints the markdown. Timings
are medians of ``--repeats`` calls after warm-up; this machine is shared and noisy, so read
the ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

log = logging.getLogger("model_bench")

GRAPHS = ("reranker", "item_tower", "user_tower")

#: History items per row of the user tower's feeds (the served tower reads at most
#: ``towers.features.MAX_HISTORY``, 20; the bench requests' mean history is about 19).
USER_HISTORY_ROWS = 16


def median_s(fn: Callable[[], object], repeats: int, warmup: int = 2) -> float:
    """Median wall time of ``fn`` in seconds over ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def gemm_ceiling(size: int, repeats: int) -> dict[str, float]:
    """GFLOP/s of a ``size``-cube torch GEMM, by precision and thread count
    (keys ``fp32@1``, ``bf16@2``, ...)."""
    import torch

    out: dict[str, float] = {}
    saved = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
                a = torch.randn(size, size).to(dtype)
                b = torch.randn(size, size).to(dtype)
                sec = median_s(lambda a=a, b=b: torch.mm(a, b), repeats)
                out[f"{name}@{threads}"] = 2 * size**3 / sec / 1e9
    finally:
        torch.set_num_threads(saved)
    return out


def openvino_ceiling(size: int, repeats: int) -> dict[str, float]:
    """GFLOP/s of OpenVINO on this CPU for a ``size``-cube product of an input and a constant
    weight matrix (what the served graphs' dense layers are: OpenVINO runs them as
    FullyConnected, on AMX in bf16), compiled as serving/openvino_engine.py compiles the
    graphs (one stream, latency hint, ``INFERENCE_NUM_THREADS``), by precision and thread
    count (keys ``openvino_fp32@1``, ``openvino_bf16@2``, ...). Empty without OpenVINO.

    torch's GEMM is a poor ceiling for the OpenVINO runtimes: it did not reliably reach AMX
    here (1,021 GFLOP/s bf16 on one thread one day, 291-339 another), which put a graph at
    134-159% of it (benchmarks/results/reranker_context_once_2026-11-30.md, section 6)."""
    import importlib.util

    if importlib.util.find_spec("openvino") is None:
        return {}
    import openvino as ov
    import openvino.opset13 as ops

    rng = np.random.default_rng(0)
    x = rng.standard_normal((size, size)).astype(np.float32)
    w = rng.standard_normal((size, size)).astype(np.float32)
    core = ov.Core()
    out: dict[str, float] = {}
    for threads in (1, 2):
        for name, hint in (("fp32", "f32"), ("bf16", "bf16")):
            param = ops.parameter([size, size], ov.Type.f32, name="x")
            model = ov.Model([ops.matmul(param, ops.constant(w), False, False)], [param])
            compiled = core.compile_model(
                model,
                "CPU",
                {
                    "INFERENCE_PRECISION_HINT": hint,
                    "PERFORMANCE_HINT": "LATENCY",
                    "NUM_STREAMS": "1",
                    "INFERENCE_NUM_THREADS": str(threads),
                    "ENABLE_CPU_PINNING": "NO",
                },
            )
            request = compiled.create_infer_request()
            sec = median_s(lambda r=request: r.infer({"x": x}), repeats)
            out[f"openvino_{name}@{threads}"] = 2 * size**3 / sec / 1e9
    return out


def ceiling_for(ceiling: dict[str, float], engine: str, precision: str, threads: int) -> float:
    """The ceiling a runtime is measured against: OpenVINO's own for the OpenVINO runtimes
    (when measured), torch's GEMM for the others, at the runtime's precision and threads;
    nan when neither was measured."""
    key = f"{'bf16' if precision == 'bf16' else 'fp32'}@{threads}"
    if engine == "openvino" and f"openvino_{key}" in ceiling:
        return ceiling[f"openvino_{key}"]
    return ceiling.get(key, float("nan"))


def matmul_flops(onnx_path: Path, feeds: dict[str, np.ndarray]) -> float:
    """FLOPs of one call of the graph at the shapes of ``feeds``: 2 * M * N * K summed over
    every MatMul and Gemm node, shapes from ONNX shape inference with the inputs fixed."""
    import onnx
    from onnx import shape_inference

    model = onnx.load(str(onnx_path), load_external_data=False)
    for inp in model.graph.input:
        if inp.name in feeds:
            dims = inp.type.tensor_type.shape.dim
            for d, size in zip(dims, feeds[inp.name].shape, strict=True):
                d.ClearField("dim_param")
                d.dim_value = int(size)
    inferred = shape_inference.infer_shapes(model, data_prop=True)
    shapes: dict[str, list[int]] = {}
    for vi in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        dims = vi.type.tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            shapes[vi.name] = [d.dim_value for d in dims]
    for init in inferred.graph.initializer:
        shapes[init.name] = list(init.dims)
    total = 0.0
    for node in inferred.graph.node:
        if node.op_type not in ("MatMul", "Gemm"):
            continue
        a, out = shapes.get(node.input[0]), shapes.get(node.output[0])
        if a is None or out is None:
            log.warning("no shape for %s: its FLOPs are not counted", node.name)
            continue
        k = a[-1] if node.op_type == "MatMul" else a[-1]
        total += 2.0 * float(np.prod(out)) * k
    return total


def context_once(bundle: Path, graph: str) -> bool:
    """Whether the CPU runtimes run ``graph`` in the context-once form (the reranker's
    ``reranker.context_once.onnx``, written for a 1-layer cross-encoder: serving/graphs.py)."""
    from towers.bundle_contract import context_once_file

    return graph == "reranker" and (bundle / context_once_file(graph)).is_file()


def served_onnx(bundle: Path, graph: str) -> Path:
    """The ONNX file the CPU runtimes serve for ``graph``."""
    from serving.graphs import cpu_onnx_path

    return cpu_onnx_path(bundle, graph)


def sample_inputs(
    bundle: Path, graph: str, batch: int, length: int, seed: int = 0, pairs: bool = False
) -> dict:
    """Feeds of ``graph`` for ``batch`` rows of exactly ``length`` tokens (random ids of the
    vocabulary's word range: speed does not depend on which tokens); a context-once reranker
    (unless ``pairs``) gets pairs of the same length: a context of a third of them, the rest
    items."""
    rng = np.random.default_rng(seed)
    if context_once(bundle, graph) and not pairs:
        from towers.features import build_context_once

        c = max(1, length // 3 - 2)
        items = list(rng.integers(1000, 29000, size=(batch, max(1, length - c - 3))))
        return build_context_once(rng.integers(1000, 29000, size=c), items)
    ids = rng.integers(1000, 29000, size=(batch, length), dtype=np.int64)
    ids[:, 0] = 101
    ids[:, -1] = 102
    mask = np.ones((batch, length), dtype=np.int64)
    if graph == "item_tower":
        return {"input_ids": ids, "attention_mask": mask}
    if graph == "user_tower":
        return {"input_ids": ids, "attention_mask": mask} | user_history_feeds(bundle, batch, rng)
    types = np.zeros((batch, length), dtype=np.int64)
    types[:, length // 2 :] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def user_history_feeds(bundle: Path, batch: int, rng: np.random.Generator) -> dict:
    """The user tower's other feeds for ``batch`` search requests: ``has_query`` 1 and
    histories of :data:`USER_HISTORY_ROWS` random item vectors of the bundle (recency-like
    weights, newest last, summing to 1)."""
    from towers.bundle_contract import ITEM_EMBEDDINGS_FILE

    vectors = np.load(bundle / ITEM_EMBEDDINGS_FILE, mmap_mode="r")
    h = min(USER_HISTORY_ROWS, len(vectors))
    rows = rng.integers(0, len(vectors), size=(batch, h))
    weights = np.tile(np.linspace(0.5, 1.0, h, dtype=np.float32), (batch, 1))
    return {
        "has_query": np.ones((batch, 1), dtype=np.float32),
        "history_vectors": np.asarray(vectors[rows.reshape(-1)], dtype=np.float32).reshape(
            batch, h, -1
        ),
        "history_weights": weights / weights.sum(1, keepdims=True),
    }


def real_inputs(bundle: Path, graph: str, n: int, pairs: bool = False) -> dict:
    """Feeds built the way the served stages build them, from the bundle's item texts:
    item tower: ``n`` item texts; reranker: ``n`` pairs (a title as the query, another item);
    user tower: ``n`` titles as queries, each with a history of random item vectors."""
    from serving.catalog import ItemTexts
    from serving.tokenizer import QueryTokenizer
    from towers.features import build_pairs

    items = ItemTexts.from_dir(bundle)
    rows = np.arange(min(n, len(items.rows)))
    if graph == "item_tower":
        from towers.bundle_contract import TOKENIZER_FILE
        from towers.text import encode_items, load_tokenizer

        texts = [items.titles[r] for r in rows]
        ids, mask = encode_items(load_tokenizer(bundle / TOKENIZER_FILE), texts)
        return {"input_ids": ids, "attention_mask": mask}
    tok = QueryTokenizer.from_dir(bundle)
    if graph == "user_tower":
        from towers.features import CLS_ID, SEP_ID

        queries = [tok.query_tokens(items.titles[r]) for r in rows]
        width = max(len(q) for q in queries) + 2
        ids = np.zeros((len(rows), width), dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for i, q in enumerate(queries):  # [CLS] query [SEP], right-padded
            ids[i, : len(q) + 2] = [CLS_ID, *q, SEP_ID]
            mask[i, : len(q) + 2] = 1
        feeds = user_history_feeds(bundle, len(rows), np.random.default_rng(2))
        return {"input_ids": ids, "attention_mask": mask} | feeds
    rng = np.random.default_rng(1)
    if context_once(bundle, graph):  # one context a call; as pairs too, to compare with
        from towers.features import build_context_once

        query = tok.query_tokens(items.titles[int(rng.integers(len(items.rows)))])
        item_tokens = [items.item_tokens(r) for r in rows]
        if not pairs:
            return build_context_once(query, item_tokens)
        ids, mask, types = build_pairs(query, item_tokens)
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    pairs_ids, pairs_mask, pairs_types = [], [], []
    for start in range(0, len(rows), 16):
        chunk = rows[start : start + 16]
        query = tok.query_tokens(items.titles[int(rng.integers(len(items.rows)))])
        i, m, t = build_pairs(query, [items.item_tokens(r) for r in chunk])
        pairs_ids.append(i)
        pairs_mask.append(m)
        pairs_types.append(t)
    width = max(a.shape[1] for a in pairs_ids)

    def pad(parts: list[np.ndarray]) -> np.ndarray:
        return np.concatenate([np.pad(p, ((0, 0), (0, width - p.shape[1]))) for p in parts])

    return {
        "input_ids": pad(pairs_ids),
        "attention_mask": pad(pairs_mask),
        "token_type_ids": pad(pairs_types),
    }


def runtimes(bundle: Path, graph: str) -> list[tuple[str, str, str]]:
    """(label, engine, precision) of every runtime that can run ``graph`` here."""
    import importlib.util

    out = [("onnxruntime fp32", "onnxruntime", "fp32")]
    if importlib.util.find_spec("openvino") is not None:
        out += [("openvino fp32", "openvino", "fp32"), ("openvino bf16", "openvino", "bf16")]
    if (bundle / f"{graph}.pt2").is_file():
        out += [("torch bf16", "torch", "bf16")]
    return out


def open_runtime(bundle: Path, graph: str, engine: str, precision: str, threads: int):
    from serving.graphs import Runtime, open_graph
    from serving.item_tower import ITEM_TOWER_INPUTS
    from serving.reranker import RERANKER_INPUTS
    from serving.user_tower import USER_TOWER_INPUTS

    inputs = {"item_tower": ITEM_TOWER_INPUTS, "user_tower": USER_TOWER_INPUTS}.get(
        graph, RERANKER_INPUTS
    )
    if context_once(bundle, graph) and engine != "torch":  # torch programs take pairs
        from towers.features import CONTEXT_ONCE_INPUTS as inputs
    if engine == "torch":
        import torch

        torch.set_num_threads(threads)
    runtime = Runtime(device="cpu", engine=engine, precision=precision, intra_op_threads=threads)
    return open_graph(bundle, graph, runtime, expected_inputs=inputs)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra = np.argsort(np.argsort(a)).astype(np.float64)
    rb = np.argsort(np.argsort(b)).astype(np.float64)
    return float(np.corrcoef(ra, rb)[0, 1])


def bench_graph(
    bundle: Path,
    graph: str,
    *,
    batch: int,
    lengths: list[int],
    threads: list[int],
    repeats: int,
    ceiling: dict[str, float],
    n_quality: int,
) -> dict:
    """Speed and quality of every runtime of ``graph`` (module docstring)."""
    onnx_path = served_onnx(bundle, graph)
    flops = {n: matmul_flops(onnx_path, sample_inputs(bundle, graph, batch, n)) for n in lengths}
    reference = None
    rows: list[dict] = []
    for label, engine, precision in runtimes(bundle, graph):
        pairs = engine == "torch"  # torch programs take pairs (the served CPU form may not)
        real = real_inputs(bundle, graph, n_quality, pairs=pairs)
        for t in threads:
            model = open_runtime(bundle, graph, engine, precision, t)
            out = np.asarray(model(**real), dtype=np.float32)
            if reference is None:
                reference = out
            if graph in ("item_tower", "user_tower"):
                a = out / np.linalg.norm(out, axis=-1, keepdims=True)
                b = reference / np.linalg.norm(reference, axis=-1, keepdims=True)
                cos = (a * b).sum(-1)
                quality = {"mean_cosine": float(cos.mean()), "min_cosine": float(cos.min())}
            else:
                quality = {
                    "max_abs_diff": float(np.abs(out - reference).max()),
                    "spearman": spearman(out.reshape(-1), reference.reshape(-1)),
                    "logit_std": float(reference.std()),
                }
            for n in lengths:
                feeds = sample_inputs(bundle, graph, batch, n, pairs=pairs)
                sec = median_s(lambda m=model, f=feeds: m(**f), repeats)
                achieved = flops[n] / sec / 1e9
                top = ceiling_for(ceiling, engine, precision, t)
                rows.append(
                    {
                        "graph": graph,
                        "runtime": label,
                        "threads": t,
                        "length": n,
                        "batch": batch,
                        "rows_per_s": batch / sec,
                        "ms_per_call": sec * 1e3,
                        "gflops": achieved,
                        "ceiling_share": None if np.isnan(top) else achieved / top,
                        **quality,
                    }
                )
                log.info("%s %s %dt len %d: %.0f rows/s", graph, label, t, n, batch / sec)
            del model
    return {"flops_per_call": flops, "rows": rows}


def markdown(res: dict) -> str:
    lines = ["# Served graphs on this CPU, runtime by runtime (one run)", ""]
    c = res["ceiling_gflops"]
    lines += [
        f"Matmul ceiling ({res['gemm_size']}^3, GFLOP/s; torch GEMM, and OpenVINO's dense "
        "layer for the OpenVINO rows): " + ", ".join(f"{k} {v:,.0f}" for k, v in c.items()),
        "",
    ]
    for graph, g in res["graphs"].items():
        unit = {"reranker": "pairs/s", "user_tower": "queries/s"}.get(graph, "texts/s")
        lines += [f"## {graph} (batch {res['batch']})", ""]
        lines += [
            f"| runtime | threads | tokens | {unit} | ms/call | share of ceiling "
            "| quality vs ORT fp32 |",
            "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        for r in g["rows"]:
            if graph == "reranker":
                q = f"max abs {r['max_abs_diff']:.3f}, Spearman {r['spearman']:.5f}"
            else:
                q = f"cosine mean {r['mean_cosine']:.5f}, min {r['min_cosine']:.5f}"
            share = "" if r["ceiling_share"] is None else f"{r['ceiling_share']:.0%}"
            lines.append(
                f"| {r['runtime']} | {r['threads']} | {r['length']} | {r['rows_per_s']:,.0f} "
                f"| {r['ms_per_call']:.1f} | {share} | {q} |"
            )
        lines.append("")
    return "\n".join(lines)


def quick_bundle(work: Path) -> Path:
    """A tiny untrained bundle (1 layer, hidden 64) for a smoke run."""
    from export.bundle import build_bundle
    from export.untrained import write_untrained_artifacts
    from towers.data import GenerateConfig, generate

    bundle = work / "bundle"
    if (bundle / "manifest.json").is_file():
        return bundle
    generate(GenerateConfig(n_items=300, n_users=40, n_queries=30, seed=5), work / "data")
    write_untrained_artifacts(work / "data", work / "artifacts", layers=1, hidden=64, heads=2)
    build_bundle(work / "artifacts", None, bundle, index_kind="flat")
    return bundle


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--bundle", type=Path, help="exported version folder (manifest.json, *.onnx)")
    p.add_argument("--out", type=Path, required=True, help="folder for results.json/.md")
    p.add_argument("--graphs", default=",".join(GRAPHS), help="reranker,item_tower,user_tower")
    p.add_argument("--batch", type=int, default=64, help="rows per call (64)")
    p.add_argument("--lengths", default="24,48", help="tokens per row, comma-separated")
    p.add_argument("--threads", default="1,2", help="thread counts, comma-separated")
    p.add_argument("--repeats", type=int, default=15, help="timed calls per point (15)")
    p.add_argument("--gemm-size", type=int, default=1024, help="GEMM cube side (1024)")
    p.add_argument("--quality-rows", type=int, default=256, help="real rows for quality (256)")
    p.add_argument("--quick", action="store_true", help="tiny sizes, untrained bundle")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    a.out.mkdir(parents=True, exist_ok=True)
    if a.quick:
        a.repeats, a.gemm_size, a.quality_rows, a.batch = 2, 128, 32, 8
    bundle = a.bundle or quick_bundle(a.out / "work")
    if not (bundle / "manifest.json").is_file():
        p.error(f"{bundle} is not an exported bundle (no manifest.json)")
    lengths = [int(x) for x in a.lengths.split(",")]
    threads = [int(x) for x in a.threads.split(",")]
    res: dict = {
        "bundle": str(bundle),
        "batch": a.batch,
        "gemm_size": a.gemm_size,
        "ceiling_gflops": gemm_ceiling(a.gemm_size, max(3, a.repeats // 3))
        | openvino_ceiling(a.gemm_size, max(3, a.repeats // 3)),
        "graphs": {},
    }
    for graph in a.graphs.split(","):
        res["graphs"][graph] = bench_graph(
            bundle,
            graph,
            batch=a.batch,
            lengths=lengths,
            threads=threads,
            repeats=a.repeats,
            ceiling=res["ceiling_gflops"],
            n_quality=a.quality_rows,
        )
    (a.out / "results.json").write_text(json.dumps(res, indent=2))
    md = markdown(res)
    (a.out / "results.md").write_text(md)
    print(md)
    return res


if __name__ == "__main__":
    main()
