"""The served reranker stage of several exported repositories side by side, interleaved:
search and homepage contexts, the graph alone and the whole stage. One run.

    python benchmarks/reranker_forms.py \
        --repository runs/demo1l_cls/repository:24 \
        --repository runs/demo1l_co/repository:23 --out runs/reranker_forms

Each ``--repository PATH[:ITEM_TOKENS]`` is opened as the server opens it
(``serving.reranker.Reranker.from_dir`` on ``PATH/reranker/1``: the context-once graph where
the bundle has one, else the pair graph; OpenVINO ``--precision`` on ``--threads`` threads,
calls of up to ``--max-call`` candidates, the item text cut to ``ITEM_TOKENS``, default the
export's 23), warmed at every call shape, then ``--rounds`` rounds: each round draws 100
catalog items as candidates and two as a homepage history, and every repository reranks
them with every candidate scored, once with a search context (``--query``) and once with
the homepage context (the two history titles), in turn. This machine's speed swings about
2x within minutes, so read the median of the per-round ratios to the first repository.

``graph`` rows time the cross-encoder call alone on one full call (``--max-call`` items of
the catalog, that context) and check that every form scores the same pairs alike (the
largest logit difference from the first repository; bf16). Writes ``results.json`` and
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

log = logging.getLogger("reranker_forms")


def _spec(text: str) -> tuple[Path, int | None]:
    path, _, tokens = text.partition(":")
    return Path(path), int(tokens) if tokens else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--repository", action="append", required=True, help="PATH[:ITEM_TOKENS]; repeat"
    )
    parser.add_argument("--out", type=Path, default=Path("runs/reranker_forms"))
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--precision", choices=("bf16", "fp32"), default="bf16")
    parser.add_argument("--max-call", type=int, default=64)
    parser.add_argument("--query", default="red cotton shirt with long sleeves")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.rounds < 1 or args.max_call < 8:
        parser.error("--rounds must be >= 1 and --max-call >= 8")
    specs = [_spec(r) for r in args.repository]
    missing = [str(p) for p, _ in specs if not (p / "reranker" / "1").is_dir()]
    if missing:
        parser.error(f"not a repository with a reranker: {', '.join(missing)}")

    from export.repository_settings import RERANK_ITEM_TOKENS
    from serving.graphs import Runtime
    from serving.reranker import Reranker

    runtime = Runtime(engine="openvino", precision=args.precision, intra_op_threads=args.threads)
    stages = []
    for path, tokens in specs:
        stage = Reranker.from_dir(
            path / "reranker" / "1",
            runtime=runtime,
            max_call=args.max_call,
            chunk_size=8,
            max_item_tokens=tokens or RERANK_ITEM_TOKENS,
        )
        stage.warm_shapes()
        stages.append(stage)
    first = stages[0]
    if any(len(s.items.rows) != len(first.items.rows) for s in stages):
        parser.error("the repositories must hold the same catalog")
    ids = first.items.rows.item_ids
    rng = np.random.default_rng(args.seed)
    search = first.tokenizer.query_tokens(args.query) if first.tokenizer else np.zeros(0)
    kinds = ("search", "homepage")
    stage_s: dict[str, list[list[float]]] = {k: [[] for _ in stages] for k in kinds}
    graph_s: dict[str, list[list[float]]] = {k: [[] for _ in stages] for k in kinds}
    logits: dict[str, list[np.ndarray]] = {k: [] for k in kinds}
    call_rows = np.arange(min(args.max_call, len(ids)))
    for r in range(args.rounds):
        cand = ids[rng.choice(len(ids), min(100, len(ids)), replace=False)]
        history = ids[rng.choice(len(ids), 2, replace=False)]
        scores = np.linspace(1.0, 0.0, len(cand)).astype(np.float32)
        for kind in kinds:
            for i, stage in enumerate(stages):
                context = search if kind == "search" else stage.context_tokens("", history)
                start = time.perf_counter()
                stage.rerank(context, cand, scores, k=10, budget_ms=10_000)
                stage_s[kind][i].append(time.perf_counter() - start)
                start = time.perf_counter()
                out = stage._score_rows(context, call_rows)
                graph_s[kind][i].append(time.perf_counter() - start)
                if r == 0:
                    logits[kind].append(out)
        log.info("round %d of %d", r + 1, args.rounds)

    rows: list[dict[str, Any]] = []
    for kind in kinds:
        base_stage, base_graph = np.asarray(stage_s[kind][0]), np.asarray(graph_s[kind][0])
        for i, (path, _tokens) in enumerate(specs):
            st, gr = np.asarray(stage_s[kind][i]), np.asarray(graph_s[kind][i])
            rows.append(
                {
                    "kind": kind,
                    "repository": str(path),
                    "item_tokens": stages[i].max_item_tokens,
                    "form": "context-once" if stages[i].context_once else "pairs",
                    "stage_pairs_per_s": round(len(scores) / float(np.median(st)), 1),
                    "stage_ratio_to_first": round(float(np.median(base_stage / st)), 3),
                    "graph_ms": round(float(np.median(gr)) * 1e3, 3),
                    "graph_ratio_to_first": round(float(np.median(base_graph / gr)), 3),
                    "max_logit_diff_to_first": round(
                        float(np.abs(logits[kind][i] - logits[kind][0]).max()), 4
                    ),
                }
            )
    contexts = {"search": len(search), "homepage": len(first.context_tokens("", history))}
    result = {
        "command": "python benchmarks/reranker_forms.py "
        + " ".join(f"--repository {r}" for r in args.repository)
        + f" --rounds {args.rounds} --threads {args.threads} --precision {args.precision}"
        f" --max-call {args.max_call}",
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "load_average_1m_end": round(os.getloadavg()[0], 2),
        "context_tokens": contexts,
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(result, indent=2))
    lines = [
        f"# Served reranker stage side by side, {args.rounds} interleaved rounds",
        "",
        f"`{result['command']}`; context tokens: search {contexts['search']}, homepage "
        f"{contexts['homepage']} (the last round's); load average {result['load_average_1m_end']}"
        " at the end.",
        "",
        "| context | repository | form | item tokens | stage pairs/s (100 scored) | stage x first "
        "| graph ms (one call) | graph x first | max logit diff to first |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        lines.append(
            f"| {row['kind']} | {row['repository']} | {row['form']} | {row['item_tokens']} | "
            f"{row['stage_pairs_per_s']:,.0f} | {row['stage_ratio_to_first']:.2f}x | "
            f"{row['graph_ms']:.2f} | {row['graph_ratio_to_first']:.2f}x | "
            f"{row['max_logit_diff_to_first']:.4f} |"
        )
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
