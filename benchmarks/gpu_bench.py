"""GPU path against the CPU path, side by side on one machine in one run.

    python benchmarks/gpu_bench.py --out runs/gpu_bench            # on a machine with a GPU
    python benchmarks/gpu_bench.py --device cpu --quick --out DIR  # tiny, anywhere (tests)

Measures, for the demo architecture (2-layer BERT students, hidden 384; untrained weights:
speed and runtime parity do not depend on what the weights learned, and the GPU machine has
no teacher wheel to distil from; see export/untrained.py):

* reranker: one request's cross-scoring of 100 candidates through the served stage
  (``Reranker.rerank``: pair building, BM25 feature, the cross-encoder, the blend), GPU torch
  fp16 (eager and with CUDA graphs) against ONNX Runtime fp32 on all CPU cores; p50/p99 ms;
* item tower: texts embedded per second through the served stage (``ItemEncoder.embed``:
  tokenizing included) and tower-only on pre-tokenized batches, GPU against CPU;
* recall over ``--recall-items`` synthetic clustered unit vectors (2,000 Gaussian clusters,
  dimension 128, noise of standard deviation 1 per dimension around centres of the same
  scale): Recall@100 against exact fp32 search and single-query p50/p99 ms, for the
  GPU backends (exact torch top-k fp32/fp16; FAISS-GPU where installed) and FAISS on the CPU
  (flat exact and IVF at the served default of one thread, and on all cores);
* user tower and the whole in-process recommend (tokenizer, user tower, retriever,
  reranker scoring all 100 candidates): p50/p99 ms per request, GPU against CPU.

Writes ``results.json`` and ``results.md`` under ``--out``; prints the markdown.
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

log = logging.getLogger("gpu_bench")


def timed(fn: Callable[[], object], n: int, sync: Callable[[], None] | None = None) -> dict:
    """p50/p99/mean milliseconds of ``n`` calls of ``fn`` (after 3 warm-up calls)."""
    for _ in range(3):
        fn()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        if sync:
            sync()
        out.append((time.perf_counter() - t) * 1e3)
    arr = np.asarray(out)
    return {
        "p50_ms": float(np.median(arr)),
        "p99_ms": float(np.percentile(arr, 99)),
        "mean_ms": float(arr.mean()),
        "n": n,
    }


def build_bundle(work: Path, n_items: int, layers: int, hidden: int, heads: int) -> Path:
    """The untrained demo-architecture bundle under ``work`` (reused when already there)."""
    from export.bundle import build_bundle as build
    from export.untrained import write_untrained_artifacts
    from towers.data import GenerateConfig, generate

    bundle = work / "bundle"
    if (bundle / "manifest.json").is_file() and (bundle / "reranker.pt2").is_file():
        return bundle
    generate(GenerateConfig(n_items=n_items, n_users=80, n_queries=60, seed=5), work / "data")
    write_untrained_artifacts(
        work / "data", work / "artifacts", layers=layers, hidden=hidden, heads=heads
    )
    build(work / "artifacts", None, bundle, index_kind="flat", torch_programs=True)
    return bundle


def bench_reranker(bundle: Path, device: str, n_gpu: int, n_cpu: int) -> dict:
    from serving.bundle import load_manifest
    from serving.graphs import Runtime
    from serving.reranker import Reranker
    from towers.features import build_pairs

    version = load_manifest(bundle).model_version
    cand = np.load(bundle / "item_ids.npy")[:100]
    scores = np.linspace(1, 0, len(cand)).astype(np.float32)
    query = "red cotton shirt with long sleeves"
    runs = {
        "cpu_onnxruntime_fp32": Runtime(intra_op_threads=os.cpu_count() or 1),
    }
    if device == "cuda":
        runs["gpu_torch_fp16_eager"] = Runtime("cuda", "fp16", cuda_graphs=False)
        runs["gpu_torch_fp16_cuda_graphs"] = Runtime("cuda", "fp16", cuda_graphs=True)
        runs["gpu_torch_bf16_cuda_graphs"] = Runtime("cuda", "bf16", cuda_graphs=True)
    else:
        runs["cpu_torch_bf16"] = Runtime("cpu", "bf16", engine="torch")
    out: dict = {"candidates": int(len(cand))}
    for name, runtime in runs.items():
        stage = Reranker.from_dir(
            bundle, model_version=version, chunk_size=len(cand), runtime=runtime
        )
        context = stage.context_tokens(query, np.zeros(0, np.int64))

        def call(stage: Reranker = stage, context: np.ndarray = context) -> None:
            res = stage.rerank(context, cand, scores, k=10, budget_ms=10_000, query=query)
            assert res.n_scored == len(cand)

        n = n_gpu if name.startswith("gpu") else n_cpu
        out[name] = timed(call, n)
        rows = np.arange(len(cand))
        out[f"{name}_graph_only"] = timed(lambda s=stage, c=context, r=rows: s._score_rows(c, r), n)
        out[f"{name}_graph_only"]["pair_tokens"] = int(
            build_pairs(context, [stage.items.item_tokens(r) for r in rows])[0].shape[1]
        )
        log.info("reranker %s: %s", name, out[name])
    return out


def bench_item_tower(bundle: Path, device: str, n_texts: int, n_cpu_texts: int) -> dict:
    from serving.graphs import Runtime
    from serving.item_tower import ItemEncoder
    from towers.data import item_texts, load_dataset
    from towers.text import encode_items

    catalog = item_texts(load_dataset(bundle.parent / "data").items)
    texts = [catalog[i % len(catalog)] for i in range(n_texts)]
    out: dict = {"texts": n_texts, "cpu_texts": n_cpu_texts}
    cpu = ItemEncoder.from_dir(
        bundle, runtime=Runtime(intra_op_threads=os.cpu_count() or 1), batch_size=256
    )
    cpu.embed(texts[:256])
    t = time.perf_counter()
    cpu.embed(texts[:n_cpu_texts])
    out["cpu_onnxruntime_fp32_items_per_s"] = n_cpu_texts / (time.perf_counter() - t)
    if device != "cuda":
        return out
    import torch

    for name, runtime, batch in (
        ("gpu_torch_fp16_b1024", Runtime("cuda", "fp16", cuda_graphs=False), 1024),
        ("gpu_torch_fp16_b4096", Runtime("cuda", "fp16", cuda_graphs=False), 4096),
    ):
        gpu = ItemEncoder.from_dir(bundle, runtime=runtime, batch_size=batch)
        gpu.embed(texts[: 2 * batch])
        t = time.perf_counter()
        gpu.embed(texts)
        out[f"{name}_items_per_s"] = n_texts / (time.perf_counter() - t)
        batches = [
            encode_items(gpu.tokenizer, texts[s : s + batch]) for s in range(0, n_texts, batch)
        ]
        torch.cuda.synchronize()
        t = time.perf_counter()
        for ids, mask in batches:
            gpu.encode_fn(input_ids=ids, attention_mask=mask)
        out[f"{name}_tower_only_items_per_s"] = n_texts / (time.perf_counter() - t)
        t = time.perf_counter()
        for s in range(0, n_texts, batch):
            encode_items(gpu.tokenizer, texts[s : s + batch])
        out[f"{name}_tokenize_only_items_per_s"] = n_texts / (time.perf_counter() - t)
        log.info("item tower %s: %s", name, out)
    return out


def synthetic_vectors(n: int, dim: int, n_queries: int, noise: float = 1.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(2000, dim)).astype(np.float32)
    assign = rng.integers(0, len(centers), size=n + n_queries)
    x = centers[assign] + noise * rng.normal(size=(n + n_queries, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x[:n], x[n:], np.arange(n, dtype=np.int64) * 7 + 3


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


def bench_recall(device: str, n_items: int, n_queries: int, k: int = 100) -> dict:
    import faiss

    from serving.gpu_index import TorchExactIndex, faiss_has_gpu, to_device

    dim = 128
    x, q, ids = synthetic_vectors(n_items, dim, n_queries)
    threads = os.cpu_count() or 1
    faiss.omp_set_num_threads(threads)
    flat = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    flat.add_with_ids(x, ids)
    truth = flat.search(q, k)[1]
    out: dict = {"items": n_items, "queries": n_queries, "dim": dim, "k": k}

    def single(index, n: int) -> tuple[dict, float]:
        found = np.stack([index.search(q[i : i + 1], k)[1][0] for i in range(n)])
        lat = []
        for i in range(n):
            t = time.perf_counter()
            index.search(q[i : i + 1], k)
            lat.append((time.perf_counter() - t) * 1e3)
        stats = {"p50_ms": float(np.median(lat)), "p99_ms": float(np.percentile(lat, 99))}
        return stats, recall_at(found, truth[:n])

    n_cpu = min(n_queries, 200)
    for omp in sorted({1, threads}):
        faiss.omp_set_num_threads(omp)
        stats, rec = single(flat, min(n_cpu, 50) if omp == 1 else n_cpu)
        out[f"cpu_faiss_flat_{omp}t"] = {**stats, "recall": rec}
    faiss.omp_set_num_threads(threads)
    nlist = int(4 * np.sqrt(n_items))
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
    sample = x[np.random.default_rng(1).choice(n_items, min(n_items, 40 * nlist), False)]
    ivf.train(sample)
    ivf.add_with_ids(x, ids)
    for nprobe in (16, 64):
        ivf.nprobe = nprobe
        for omp in sorted({1, threads}):
            faiss.omp_set_num_threads(omp)
            stats, rec = single(ivf, n_cpu)
            out[f"cpu_faiss_ivf{nlist}_nprobe{nprobe}_{omp}t"] = {**stats, "recall": rec}
    faiss.omp_set_num_threads(threads)
    if device != "cuda":
        return out
    for dtype in ("fp32", "fp16"):
        index = TorchExactIndex(x, ids, device="cuda", dtype=dtype)
        stats, rec = single(index, n_queries)
        out[f"gpu_torch_exact_{dtype}"] = {**stats, "recall": rec}
        del index
    if faiss_has_gpu():
        stats, rec = single(to_device(flat, device="cuda"), n_queries)
        out["gpu_faiss_flat"] = {**stats, "recall": rec}
    return out


def bench_pipeline(bundle: Path, device: str, n: int) -> dict:
    from serving.graphs import Runtime
    from serving.pipeline import InProcessRecommend

    runs = {"cpu_onnxruntime_fp32": Runtime(intra_op_threads=os.cpu_count() or 1)}
    if device == "cuda":
        runs["gpu_torch_fp16_eager"] = Runtime("cuda", "fp16", cuda_graphs=False)
        runs["gpu_torch_fp16_cuda_graphs"] = Runtime("cuda", "fp16", cuda_graphs=True)
    out: dict = {}
    queries = ["red cotton shirt", "", "waterproof hiking jacket", ""]
    for name, runtime in runs.items():
        pipe = InProcessRecommend(bundle, runtime, chunk_size=100)
        state = {"i": 0}

        def call(pipe: InProcessRecommend = pipe, state: dict = state) -> None:
            state["i"] += 1
            query = queries[state["i"] % len(queries)]
            res = pipe(query, user_id=3, k=10, budget_ms=1000)
            assert res.n_scored == 100, res

        out[f"recommend_{name}"] = timed(call, n if name.startswith("gpu") else max(10, n // 10))
        tok = pipe.tokenizer.infer({"QUERY": np.array([b"red shirt"], object)})
        tensors = {
            "INPUT_IDS": tok["INPUT_IDS"],
            "ATTENTION_MASK": tok["ATTENTION_MASK"],
            "HAS_QUERY": tok["HAS_QUERY"],
            "USER_ID": np.array([3], np.int64),
            "HISTORY_IDS": np.zeros(0, np.int64),
            "HISTORY_TS": np.zeros(0, np.int64),
        }
        out[f"user_tower_{name}"] = timed(lambda p=pipe, t=tensors: p.user_tower.infer(t), n)
        log.info("pipeline %s: %s", name, out[f"recommend_{name}"])
    return out


def markdown(res: dict) -> str:
    lines = [f"# GPU vs CPU ({res['env']['gpu']}, {res['env']['cpu_count']} CPU cores)", ""]
    lines += [
        "| measure | runtime | p50 ms | p99 ms | other |",
        "| --- | --- | ---: | ---: | --- |",
    ]
    for section in ("reranker", "pipeline"):
        for name, v in res.get(section, {}).items():
            if isinstance(v, dict) and "p50_ms" in v:
                lines.append(f"| {section} | {name} | {v['p50_ms']:.3f} | {v['p99_ms']:.3f} | |")
    for name, v in res.get("recall", {}).items():
        if isinstance(v, dict):
            lines.append(
                f"| recall over {res['recall']['items']:,} | {name} | {v['p50_ms']:.3f} | "
                f"{v['p99_ms']:.3f} | Recall@100 {v['recall']:.4f} |"
            )
    for name, v in res.get("item_tower", {}).items():
        if name.endswith("per_s"):
            lines.append(f"| item tower | {name} | | | {v:,.0f} items/s |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="results folder")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (tests, CPU)")
    parser.add_argument("--recall-items", type=int, default=1_000_000)
    parser.add_argument("--texts", type=int, default=50_000, help="texts for the item tower")
    parser.add_argument("--bundle-work", type=Path, help="reuse/build the bundle here")
    parser.add_argument(
        "--sections", default="reranker,item_tower,recall,pipeline", help="comma-separated"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    quick = args.quick
    env: dict = {"cpu_count": os.cpu_count(), "gpu": "none"}
    import torch

    env["torch"] = torch.__version__
    if args.device == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: torch sees no CUDA device (use --device cpu)")
        env["gpu"] = torch.cuda.get_device_name(0)
    layers, hidden, heads = (1, 64, 2) if quick else (2, 384, 12)
    work = args.bundle_work or args.out / "work"
    bundle = build_bundle(work, 400 if quick else 1900, layers, hidden, heads)
    res: dict = {"env": env, "architecture": {"layers": layers, "hidden": hidden}}
    sections = set(args.sections.split(","))
    steps = {
        "reranker": lambda: bench_reranker(
            bundle, args.device, 5 if quick else 300, 3 if quick else 20
        ),
        "item_tower": lambda: bench_item_tower(
            bundle, args.device, 512 if quick else args.texts, 256 if quick else 5000
        ),
        "recall": lambda: bench_recall(
            args.device, 5000 if quick else args.recall_items, 20 if quick else 1000
        ),
        "pipeline": lambda: bench_pipeline(bundle, args.device, 5 if quick else 200),
    }
    for name, step in steps.items():
        if name not in sections:
            continue
        try:
            res[name] = step()
        except Exception as exc:  # one failing section must not lose the others' figures
            log.exception("section %s failed", name)
            res[name] = {"error": f"{type(exc).__name__}: {exc}"}
        (args.out / "results.json").write_text(json.dumps(res, indent=2))
    text = markdown(res)
    (args.out / "results.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
