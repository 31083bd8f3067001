"""What each lever of the fast path gives the served cross-encoder, one lever at a time.

    python benchmarks/rerank_levers.py --artifacts runs/artifacts --out runs/rerank_levers

On an exported bundle (``ARTIFACTS/bundle``, with ``reranker.int8.xml`` for the int8 step:
``towerserve export --rerank-precision int8``) and the held-out test queries of the data set
it was trained on, runs the served reranker stage (``serving.reranker.Reranker``: pair
building, the cross-encoder, the BM25 feature and the blend) on each query's top 100 retrieved
candidates, with the levers added one after the other:

1. today's setting before this work: ONNX Runtime fp32, 1 thread, chunks of 16 per call;
2. + OpenVINO bf16 (AMX);
3. + 2 threads;
4. + calls sized by the budget (whole chunks of 8, up to 64 candidates a call);
5. + int8 matrix multiplications (NNCF-quantized OpenVINO graph), where the bundle has it;
6. then, on whichever of bf16 and int8 was faster in this run: item text cut to 32, 24 and
   16 tokens (``max_item_tokens``; the context keeps its length).

Every step warms all call shapes first (``Reranker.warm_up``), so no step pays for OpenVINO's
per-shape kernel compiles.

For each: pairs per second scoring all 100 candidates (median over queries), the median
milliseconds per request, and NDCG@10 / Recall@10 of the reranked answers against the judged
labels (the quality gate: within 0.005 NDCG@10 of fp32). Also the token lengths of the pairs
(p50/p90/max), which set what a call costs. Writes ``results.json`` and ``results.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("rerank_levers")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--artifacts", type=Path, default=Path("runs/artifacts"))
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--queries", type=int, default=200, help="test queries used (200)")
    p.add_argument("--candidates", type=int, default=100, help="candidates per query (100)")
    p.add_argument(
        "--item-tokens",
        default="32,24,16",
        help="item-text cuts to try after the precision steps (comma-separated; '' for none)",
    )
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from serving.graphs import Runtime
    from serving.pipeline import InProcessRecommend
    from serving.reranker import Reranker
    from towers.bundle_contract import TRAIN_REPORT_FILE, int8_files
    from towers.data import load_dataset
    from towers.examples import graded_labels
    from towers.features import MAX_ITEM_TOKENS, build_pairs

    def _ov(precision: str) -> Runtime:
        return Runtime(engine="openvino", precision=precision, intra_op_threads=2)

    from towers.metrics import ndcg_at_k, recall_at_k

    bundle = a.artifacts / "bundle"
    report = json.loads((a.artifacts / TRAIN_REPORT_FILE).read_text())
    ds = load_dataset(Path(report["data_dir"]))
    _, texts, labels = graded_labels(ds.queries, ds.qrels, "test")
    texts, labels = texts[: a.queries], labels[: a.queries]
    retrieval = InProcessRecommend(bundle)
    cands = []
    for q in texts:
        out = retrieval(q, k=a.candidates, budget_ms=0)
        cands.append((out.item_ids, out.scores))
    contexts = [retrieval.reranker.context_tokens(q, np.zeros(0, np.int64)) for q in texts]
    lengths = []
    for ctx, (ids, _) in zip(contexts, cands, strict=True):
        rows, _ = retrieval.reranker.items.rows.lookup(ids)
        pair_ids, mask, _ = build_pairs(
            ctx, [retrieval.reranker.items.item_tokens(r) for r in rows]
        )
        lengths += mask.sum(1).tolist()
    steps = [
        ("ONNX Runtime fp32, 1 thread, chunks of 16", Runtime(), 16, 16, MAX_ITEM_TOKENS),
        ("+ OpenVINO bf16", Runtime(engine="openvino", precision="bf16"), 16, 16, MAX_ITEM_TOKENS),
        ("+ 2 threads", _ov("bf16"), 16, 16, MAX_ITEM_TOKENS),
        ("+ calls sized by the budget (up to 64)", _ov("bf16"), 8, 64, MAX_ITEM_TOKENS),
    ]
    if (bundle / int8_files("reranker")[0]).is_file():
        steps.append(("+ int8 (NNCF, OpenVINO)", _ov("int8"), 8, 64, MAX_ITEM_TOKENS))
    cuts = [int(x) for x in a.item_tokens.split(",") if x.strip()]
    rows_out: list[dict] = []
    queue = list(steps)
    while queue:
        label, runtime, chunk, max_call, item_tokens = queue.pop(0)
        rr = Reranker.from_dir(
            bundle,
            runtime=runtime,
            chunk_size=chunk,
            max_call=max_call,
            max_item_tokens=item_tokens,
        )
        rr.warm_up()
        per_s, ms, ranked = [], [], []
        for q, ctx, (ids, scores) in zip(texts, contexts, cands, strict=True):
            start = time.perf_counter()
            res = rr.rerank(ctx, ids, scores, k=10, budget_ms=10_000, query=q)
            dt = time.perf_counter() - start
            per_s.append(res.n_scored / dt)
            ms.append(dt * 1e3)
            ranked.append([int(i) for i in res.item_ids])
        relevant = [{i for i, g in lab.items() if g >= 3} for lab in labels]
        row = {
            "lever": label,
            "backend": rr.backend,
            "pairs_per_s": float(np.median(per_s)),
            "ms_per_request_p50": float(np.median(ms)),
            "ndcg@10": ndcg_at_k(ranked, labels, 10),
            "recall@10": recall_at_k(ranked, relevant, 10),
        }
        row["max_item_tokens"] = item_tokens
        rows_out.append(row)
        log.info("%s", row)
        if not queue and cuts and len(rows_out) == len(steps):
            fast = max(rows_out[-2:], key=lambda r: r["pairs_per_s"])  # bf16 or int8
            precision = "int8" if fast["lever"].startswith("+ int8") else "bf16"
            queue = [
                (f"+ item text cut to {t} tokens ({precision})", _ov(precision), 8, 64, t)
                for t in cuts
            ]
    base = rows_out[0]
    for prev, row in zip([None, *rows_out[:-1]], rows_out, strict=True):
        row["x_vs_first"] = row["pairs_per_s"] / base["pairs_per_s"]
        row["x_vs_previous"] = row["pairs_per_s"] / prev["pairs_per_s"] if prev else 1.0
        row["ndcg_vs_first"] = row["ndcg@10"] - base["ndcg@10"]
    res = {
        "bundle": str(bundle),
        "n_queries": len(texts),
        "n_candidates": a.candidates,
        "pair_tokens": {
            "p50": float(np.percentile(lengths, 50)),
            "p90": float(np.percentile(lengths, 90)),
            "max": int(np.max(lengths)),
        },
        "levers": rows_out,
    }
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "results.json").write_text(json.dumps(res, indent=2))
    t = res["pair_tokens"]
    md = [
        "# The served reranker, lever by lever (one run)",
        "",
        f"{len(texts)} test queries x top {a.candidates} retrieved candidates, all scored "
        f"(no budget); pair length p50 {t['p50']:.0f}, p90 {t['p90']:.0f}, max {t['max']} "
        "tokens.",
        "",
        "| lever | backend | pairs/s | x first | x previous | ms/request p50 | NDCG@10 "
        "| vs first |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows_out:
        md.append(
            f"| {r['lever']} | {r['backend']} | {r['pairs_per_s']:,.0f} | "
            f"{r['x_vs_first']:.2f} | {r['x_vs_previous']:.2f} | {r['ms_per_request_p50']:.1f} "
            f"| {r['ndcg@10']:.4f} | {r['ndcg_vs_first']:+.4f} |"
        )
    text = "\n".join(md) + "\n"
    (a.out / "results.md").write_text(text)
    print(text)
    return res


if __name__ == "__main__":
    main()
