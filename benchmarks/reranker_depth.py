"""Cross-encoders of different depth, side by side, as served: speed and quality.

    towerserve train --from runs/demo/artifacts --reranker-only --reranker-layers 1 \\
        --out runs/rr1/artifacts
    towerserve export --artifacts runs/rr1/artifacts --repository runs/rr1/repository
    python benchmarks/reranker_depth.py --repository runs/demo/repository \\
        --repository runs/rr1/repository --out runs/reranker_depth

Each ``--repository`` is a written Triton repository; its stages are built in-process from its
``config.pbtxt`` parameters by the same code the server runs
(``InProcessRecommend.from_repository``: same graphs, runtime, threads, item-text cut). On the
held-out test queries of the data set the first repository's model was trained on, and with
the first repository's retrieval for every model (models retrained with
``--reranker-only`` share the towers), the script measures per model, queries interleaved
so that every model meets the same machine load:

- all ``--candidates`` retrieved candidates scored (no budget): pairs per second (median over
  queries) and NDCG@10 / Recall@10 of the reranked answers;
- the whole in-process pipeline at each ``--budgets`` value: median candidates scored
  (N_SCORED), latency p50/p99 in ms and NDCG@10;
- retrieval alone (budget 0) NDCG@10, the reference the reranker must beat.

Writes ``results.json`` and ``results.md`` under ``--out``. Timings are medians on a shared
machine: compare the models within one run, not across runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("reranker_depth")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--repository",
        type=Path,
        action="append",
        required=True,
        help="a repository written by `towerserve export` (repeat: one per model)",
    )
    p.add_argument("--out", type=Path, required=True)
    p.add_argument(
        "--data",
        type=Path,
        default=Path("runs/demo/data"),
        help="the data set the models were trained on (its test queries are used)",
    )
    p.add_argument("--queries", type=int, default=200, help="test queries used (200)")
    p.add_argument("--candidates", type=int, default=100, help="candidates per query (100)")
    p.add_argument("--budgets", default="25,50", help="budgets in ms for the pipeline runs")
    p.add_argument(
        "--depths",
        default="16,32,48,64",
        help="also rerank only the first N candidates: NDCG@10 by depth (no timing)",
    )
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from serving.pipeline import InProcessRecommend
    from towers.data import load_dataset
    from towers.examples import graded_labels
    from towers.metrics import ndcg_at_k, recall_at_k

    budgets = [float(b) for b in a.budgets.split(",") if b.strip()]
    depths = [int(d) for d in a.depths.split(",") if d.strip()]
    pipes = [InProcessRecommend.from_repository(r) for r in a.repository]
    names = [str(r) for r in a.repository]
    for pipe in pipes:
        pipe.reranker.warm_up()
    ds = load_dataset(a.data)
    _, texts, labels = graded_labels(ds.queries, ds.qrels, "test")
    texts, labels = texts[: a.queries], labels[: a.queries]
    relevant = [{i for i, g in lab.items() if g >= 3} for lab in labels]

    base = pipes[0]
    retrieved = [base(q, k=a.candidates, budget_ms=0) for q in texts]
    res_rows = []
    per_model: list[dict] = []
    for _ in pipes:
        cells = {f"b{b:g}": {"n": [], "ms": [], "ranked": []} for b in budgets}
        per_model.append({"per_s": [], "ranked": [], **cells, **{f"d{d}": [] for d in depths}})
    for qi, (q, cand) in enumerate(zip(texts, retrieved, strict=True)):
        for m, pipe in enumerate(pipes):
            rr = pipe.reranker
            ctx = rr.context_tokens(q, np.zeros(0, np.int64))
            start = time.perf_counter()
            out = rr.rerank(ctx, cand.item_ids, cand.scores, k=10, budget_ms=10_000, query=q)
            dt = time.perf_counter() - start
            per_model[m]["per_s"].append(out.n_scored / dt)
            per_model[m]["ranked"].append([int(i) for i in out.item_ids])
            for d in depths:
                top = rr.rerank(
                    ctx, cand.item_ids[:d], cand.scores[:d], k=10, budget_ms=10_000, query=q
                )
                per_model[m][f"d{d}"].append([int(i) for i in top.item_ids])
            for b in budgets:
                start = time.perf_counter()
                rec = pipe(q, k=10, budget_ms=b)
                cell = per_model[m][f"b{b:g}"]
                cell["ms"].append((time.perf_counter() - start) * 1e3)
                cell["n"].append(int(rec.n_scored))
                cell["ranked"].append([int(i) for i in rec.item_ids])
        if qi % 50 == 0:
            log.info("query %d of %d", qi, len(texts))
    retrieval_ranked = [[int(i) for i in c.item_ids[:10]] for c in retrieved]
    retrieval_ndcg = ndcg_at_k(retrieval_ranked, labels, 10)
    for name, pipe, pm in zip(names, pipes, per_model, strict=True):
        row: dict = {
            "model": name,
            "backend": pipe.reranker.backend,
            "pairs_per_s": float(np.median(pm["per_s"])),
            "ndcg@10_all": ndcg_at_k(pm["ranked"], labels, 10),
            "recall@10_all": recall_at_k(pm["ranked"], relevant, 10),
            "budgets": {},
            "ndcg@10_by_depth": {str(d): ndcg_at_k(pm[f"d{d}"], labels, 10) for d in depths},
        }
        for b in budgets:
            cell = pm[f"b{b:g}"]
            row["budgets"][f"{b:g}"] = {
                "n_scored_p50": float(np.median(cell["n"])),
                "latency_ms_p50": float(np.percentile(cell["ms"], 50)),
                "latency_ms_p99": float(np.percentile(cell["ms"], 99)),
                "ndcg@10": ndcg_at_k(cell["ranked"], labels, 10),
            }
        res_rows.append(row)
    res = {
        "n_queries": len(texts),
        "n_candidates": a.candidates,
        "retrieval_ndcg@10": retrieval_ndcg,
        "models": res_rows,
    }
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "results.json").write_text(json.dumps(res, indent=2))
    text = _markdown(res, budgets)
    (a.out / "results.md").write_text(text)
    print(text)
    return res


def _markdown(res: dict, budgets: list[float]) -> str:
    head = "| model | backend | pairs/s (all 100) | NDCG@10 (all) |"
    rule = "| --- | --- | ---: | ---: |"
    for b in budgets:
        head += f" budget {b:g}: N_SCORED p50 | p50 / p99 ms | NDCG@10 |"
        rule += " ---: | ---: | ---: |"
    lines = [
        "# Cross-encoder depth, side by side (one run, queries interleaved)",
        "",
        f"{res['n_queries']} test queries x top {res['n_candidates']} retrieved candidates; "
        f"retrieval alone NDCG@10 {res['retrieval_ndcg@10']:.4f}.",
        "",
        head,
        rule,
    ]
    for r in res["models"]:
        line = (
            f"| {r['model']} | {r['backend']} | {r['pairs_per_s']:,.0f} | {r['ndcg@10_all']:.4f} |"
        )
        for b in budgets:
            c = r["budgets"][f"{b:g}"]
            line += (
                f" {c['n_scored_p50']:.0f} | {c['latency_ms_p50']:.1f} / "
                f"{c['latency_ms_p99']:.1f} | {c['ndcg@10']:.4f} |"
            )
        lines.append(line)
    lines += [
        "",
        "NDCG@10 when only the first N retrieved candidates are reranked (no budget):",
        "",
        "| model | " + " | ".join(f"N={d}" for d in res["models"][0]["ndcg@10_by_depth"]) + " |",
        "| --- |" + " ---: |" * len(res["models"][0]["ndcg@10_by_depth"]),
    ]
    for r in res["models"]:
        cells = " | ".join(f"{v:.4f}" for v in r["ndcg@10_by_depth"].values())
        lines.append(f"| {r['model']} | {cells} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
