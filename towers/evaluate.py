"""Offline search metrics on held-out (test-split) queries, as the demo prints them.

Systems, measured side by side on the same queries:

- ``teacher_exact``: the BERT teacher's embeddings, exact inner-product search;
- ``student_exact``: the user tower against the served item-embedding table, exact search;
- ``student_faiss``: the same query vectors through the served FAISS index;
- ``student_faiss_rerank``: the FAISS candidates re-ordered by the cross-encoder blend.

Relevant items for recall and MRR are the exact (grade 3) ones; NDCG uses all grades.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import faiss
import numpy as np

from towers.data import load_dataset
from towers.examples import graded_labels
from towers.finetune import embed_queries
from towers.metrics import mrr_at_k, ndcg_at_k, recall_at_k
from towers.models import load_module
from towers.rerank_train import score_candidates
from towers.teacher import embed_texts, load_teacher, tokenizer_path
from towers.text import load_tokenizer, query_token_list
from towers.train import exact_top_k

log = logging.getLogger(__name__)


def evaluate_search(
    artifacts: Path, bundle: Path, data_dir: Path | None = None, *, k_recall: int = 100
) -> dict[str, dict[str, float]]:
    """Recall@``k_recall``, NDCG@10 and MRR@10 of each system on the test queries."""
    report = json.loads((artifacts / "train_report.json").read_text())
    data_dir = data_dir or Path(report["data_dir"])
    ds = load_dataset(data_dir)
    _, texts, labels = graded_labels(ds.queries, ds.qrels, "test")
    if not texts:
        raise ValueError(f"no judged test-split queries in {data_dir}: nothing to evaluate")
    relevant = [{i for i, g in lab.items() if g >= 3} for lab in labels]
    manifest = json.loads((bundle / "manifest.json").read_text())
    item_ids = np.load(bundle / "item_ids.npy")
    item_vecs = np.load(bundle / "item_embeddings.npy")
    tok = load_tokenizer(tokenizer_path())
    bf16 = bool(report["config"].get("bf16", True))
    results: dict[str, dict[str, float]] = {}
    ranked: dict[str, list[list[int]]] = {}

    def record(name: str, rows: list[list[int]], seconds: float) -> None:
        ranked[name] = rows
        results[name] = {
            f"recall@{k_recall}": recall_at_k(rows, relevant, k_recall),
            "ndcg@10": ndcg_at_k(rows, labels, 10),
            "mrr@10": mrr_at_k(rows, relevant, 10),
            "queries_per_s": len(rows) / max(seconds, 1e-9),
        }

    teacher_items = np.load(artifacts / "teacher_item_embeddings.npy")
    start = time.perf_counter()
    tq = embed_texts(load_teacher(), texts, bf16=bf16, max_tokens=32)
    _, top = exact_top_k(tq, teacher_items, k_recall)
    record(
        "teacher_exact", [[int(item_ids[p]) for p in r] for r in top], time.perf_counter() - start
    )

    user_tower = load_module("user_tower", artifacts / "user_tower")
    start = time.perf_counter()
    sq = embed_queries(user_tower, tok, texts, bf16=bf16)
    encode_s = time.perf_counter() - start
    start = time.perf_counter()
    _, top = exact_top_k(sq, item_vecs, k_recall)
    record(
        "student_exact",
        [[int(item_ids[p]) for p in r] for r in top],
        encode_s + time.perf_counter() - start,
    )

    index = faiss.read_index(str(bundle / "index.faiss"))
    if manifest["index"].get("nprobe"):
        faiss.extract_index_ivf(index).nprobe = int(manifest["index"]["nprobe"])
    n_cand = max(int(manifest.get("n_candidates", 100)), k_recall)
    start = time.perf_counter()
    scores, ids = index.search(np.ascontiguousarray(sq), n_cand)
    record(
        "student_faiss",
        [[int(i) for i in r if i >= 0] for r in ids],
        encode_s + time.perf_counter() - start,
    )

    reranker = load_module("reranker", artifacts / "reranker")
    blend = json.loads((bundle / "blend.json").read_text())
    weights, bias = np.asarray(blend["weights"], dtype=np.float32), float(blend["bias"])
    popularity = np.load(bundle / "popularity.npy")
    tokens = np.load(bundle / "item_tokens.npz")
    offsets, flat = tokens["offsets"], tokens["tokens"]
    row_of = {int(i): r for r, i in enumerate(item_ids)}
    start = time.perf_counter()
    reranked = []
    for text, s_row, id_row in zip(texts, scores, ids):
        keep = id_row >= 0
        cand, s_row = id_row[keep], s_row[keep]
        rows = np.array([row_of[int(i)] for i in cand])
        item_toks = [flat[offsets[r] : offsets[r + 1]] for r in rows]
        ce = score_candidates(reranker, query_token_list(tok, text), item_toks, bf16=bf16)
        final = bias + np.stack([ce, s_row, popularity[rows]], axis=1) @ weights
        reranked.append([int(i) for i in cand[np.argsort(-final, kind="stable")]])
    record("student_faiss_rerank", reranked, encode_s + time.perf_counter() - start)
    results["_meta"] = {"n_queries": float(len(texts)), "k_candidates": float(n_cand)}
    return results
