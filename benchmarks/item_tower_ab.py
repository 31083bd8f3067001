"""Item-tower graphs side by side: items/s of the model alone, interleaved rounds, one run.

    python benchmarks/item_tower_ab.py \
        --graph runs/demo1l/artifacts/bundle/item_tower.onnx \
        --graph runs/tw1/artifacts/bundle/item_tower.onnx \
        --catalog runs/cat1m/data/items.parquet --out runs/item_tower_ab

Each graph is compiled by OpenVINO (``--precision`` bf16 by default, ``--threads`` threads,
latency hint: what the ``local`` re-embedding engine runs) and fed the same ``--items`` texts
drawn from the catalog, tokenized once and cut into batches of ``--batch`` rows of like token
count (serving/token_batches.py, as the job does). Then ``--rounds`` rounds, each timing every
graph once in turn over all the batches: this machine's speed swings about 2x within minutes,
so the figure to read is the median of the per-round ratios to the first graph, not the rates.
The cosine of each graph's vectors to the first graph's says whether they compute the same
thing (an exported variant of one model) or not (another model). Writes ``results.json`` and
``results.md`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("item_tower_ab")


def load_rate() -> float:
    """The 1-minute load average (0 where the OS does not say)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--graph", type=Path, action="append", required=True, help="repeat")
    parser.add_argument("--catalog", type=Path, required=True, help="catalog Parquet")
    parser.add_argument("--out", type=Path, default=Path("runs/item_tower_ab"))
    parser.add_argument("--items", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--precision", choices=("bf16", "fp32"), default="bf16")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.items < 1 or args.rounds < 1 or args.batch < 1:
        parser.error("--items, --rounds and --batch must be >= 1")
    missing = [str(g) for g in args.graph if not g.is_file()]
    if missing:
        parser.error(f"no such graph: {', '.join(missing)}")

    import openvino as ov

    from client.embed.catalog import read_catalog
    from serving.token_batches import tokenize_shard
    from towers.teacher import tokenizer_path
    from towers.text import load_tokenizer

    catalog = read_catalog(args.catalog)
    rng = np.random.default_rng(args.seed)
    n = min(args.items, len(catalog.texts))
    texts = [catalog.texts[i] for i in rng.choice(len(catalog.texts), n, replace=False)]
    tokens = tokenize_shard(load_tokenizer(tokenizer_path()), texts, args.batch)
    core = ov.Core()
    hint = ov.Type.bf16 if args.precision == "bf16" else ov.Type.f32
    requests, vectors = [], []
    for graph in args.graph:
        compiled = core.compile_model(
            str(graph),
            "CPU",
            {
                "INFERENCE_PRECISION_HINT": hint,
                "INFERENCE_NUM_THREADS": str(args.threads),
                "PERFORMANCE_HINT": "LATENCY",
            },
        )
        request = compiled.create_infer_request()
        out = [
            np.array(request.infer({"input_ids": ids, "attention_mask": mask})[0])
            for ids, mask in tokens.batches
        ]  # also the warm-up: every batch shape once
        requests.append(request)
        vectors.append(np.concatenate(out))
    load_start = load_rate()
    rates: list[list[float]] = [[] for _ in args.graph]
    for r in range(args.rounds):
        for g, request in enumerate(requests):
            start = time.perf_counter()
            for ids, mask in tokens.batches:
                request.infer({"input_ids": ids, "attention_mask": mask})
            rates[g].append(n / (time.perf_counter() - start))
        log.info("round %d: %s items/s", r + 1, [round(x[-1]) for x in rates])
    load_end = load_rate()

    def unit(v: np.ndarray) -> np.ndarray:
        return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)

    rows: list[dict[str, Any]] = []
    base = np.asarray(rates[0])
    for g, graph in enumerate(args.graph):
        mine = np.asarray(rates[g])
        same_dim = vectors[g].shape == vectors[0].shape
        cosine = (unit(vectors[g]) * unit(vectors[0])).sum(1) if same_dim else None
        rows.append(
            {
                "graph": str(graph),
                "items_per_s_median": round(float(np.median(mine)), 1),
                "items_per_s_runs": [round(float(x), 1) for x in mine],
                "ratio_to_first_median": round(float(np.median(mine / base)), 3),
                "min_cosine_to_first": None if cosine is None else round(float(cosine.min()), 6),
            }
        )
    result = {
        "command": "python benchmarks/item_tower_ab.py "
        + " ".join(f"--graph {g}" for g in args.graph)
        + f" --catalog {args.catalog} --items {n} --batch {args.batch} --rounds {args.rounds}"
        f" --threads {args.threads} --precision {args.precision}",
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "load_average_1m": [round(load_start, 2), round(load_end, 2)],
        "tokens_per_item": round(tokens.tokens / n, 1),
        "padded_tokens_per_item": round(tokens.padded_tokens / n, 1),
        "graphs": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(result, indent=2))
    lines = [
        f"# Item-tower graphs side by side, {n:,} catalog texts, {args.rounds} rounds",
        "",
        f"`{result['command']}`; load average {load_start:.2f} at the start, {load_end:.2f} at "
        f"the end; {result['tokens_per_item']} tokens per item, "
        f"{result['padded_tokens_per_item']} padded.",
        "",
        "| graph | items/s (median) | median ratio to the first | min cosine to the first |",
        "| --- | ---: | ---: | ---: |",
    ]
    for row in rows:
        cos = "–" if row["min_cosine_to_first"] is None else f"{row['min_cosine_to_first']:.6f}"
        lines.append(
            f"| {row['graph']} | {row['items_per_s_median']:,.0f} | "
            f"{row['ratio_to_first_median']:.3f}x | {cos} |"
        )
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
