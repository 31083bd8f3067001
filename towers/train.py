"""``towerserve train``: distil, fine-tune and rerank-train, then save the artifacts.

Artifacts folder layout (all generated, git-ignored):

- ``item_tower/``, ``user_tower/``, ``reranker/``: ``model.safetensors`` + ``config.json``
- ``blend.json``: the learned combination of reranker, retrieval and popularity scores
- ``teacher_item_embeddings.npy``: the teacher's item vectors (for evaluation)
- ``train_report.json``: settings, losses and the seconds each stage took
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import faiss
import numpy as np
import torch

from towers.config import TrainConfig
from towers.data import item_texts as make_item_texts
from towers.data import load_dataset
from towers.distil import distil_student, pca_projection
from towers.encoder import make_student
from towers.examples import (
    graded_labels,
    history_pairs,
    item_popularity,
    positions,
    query_positives,
)
from towers.finetune import embed_items, embed_queries, finetune_towers
from towers.models import CrossEncoder, ItemTower, UserTower, save_module
from towers.rerank_train import (
    BLEND_FEATURES,
    fit_blend,
    score_candidates,
    train_cross_encoder,
    training_pairs,
)
from towers.teacher import embed_texts, load_teacher, tokenizer_path
from towers.text import item_token_lists, load_tokenizer, query_token_list

log = logging.getLogger(__name__)


@dataclass
class StageTimer:
    """Seconds spent per named stage."""

    seconds: dict[str, float] = field(default_factory=dict)

    def run(self, name: str, fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        log.info("stage %s ...", name)
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        self.seconds[name] = round(time.perf_counter() - start, 2)
        log.info("stage %s done in %.1f s", name, self.seconds[name])
        return out


def exact_top_k(queries: np.ndarray, items: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k: scores and row positions, each ``[n_queries, k]``."""
    index = faiss.IndexFlatIP(items.shape[1])
    index.add(np.ascontiguousarray(items, dtype=np.float32))
    return index.search(np.ascontiguousarray(queries, dtype=np.float32), min(k, len(items)))


def train(data_dir: Path, out_dir: Path, cfg: TrainConfig) -> dict[str, object]:
    """Train all models on the data set in ``data_dir`` and write them to ``out_dir``."""
    torch.manual_seed(cfg.seed)
    timer = StageTimer()
    ds = load_dataset(data_dir)
    items = ds.items.reset_index(drop=True)
    texts = make_item_texts(items)
    item_ids = items["item_id"].to_numpy(np.int64)
    pos_of = positions(items)
    tok = load_tokenizer(tokenizer_path())
    teacher = load_teacher()

    train_queries = sorted(set(ds.queries.loc[ds.queries["split"] == "train", "query_text"]))
    teacher_items = timer.run("teacher_items", embed_texts, teacher, texts, bf16=cfg.bf16)
    teacher_queries = timer.run(
        "teacher_queries", embed_texts, teacher, train_queries, bf16=cfg.bf16, max_tokens=32
    )
    student, distil_losses = timer.run(
        "distil",
        distil_student,
        teacher,
        tok,
        texts + train_queries,
        np.concatenate([teacher_items, teacher_queries]),
        n_layers=cfg.student_layers,
        dim=cfg.dim,
        epochs=cfg.distil_epochs,
        batch_size=cfg.distil_batch,
        lr=cfg.distil_lr,
        bf16=cfg.bf16,
        seed=cfg.seed,
    )
    proj = pca_projection(teacher_items, cfg.dim)
    item_tower = ItemTower(copy.deepcopy(student.bert), cfg.dim)
    user_tower = UserTower(copy.deepcopy(student.bert), cfg.dim)
    with torch.no_grad():
        item_tower.text.proj.weight.copy_(proj)
        user_tower.text.proj.weight.copy_(proj)

    rng = np.random.default_rng(cfg.seed)
    qpos = query_positives(ds.queries, ds.qrels, pos_of, "train")
    hist = history_pairs(ds.events, pos_of, cfg.max_history_pairs, rng)
    log.info(
        "fine-tuning on %d queries and %d history pairs", len(qpos.texts), len(hist.target_pos)
    )
    tower_losses = timer.run(
        "finetune", finetune_towers, item_tower, user_tower, tok, texts, qpos, hist, cfg
    )
    item_vecs = timer.run("embed_items", embed_items, item_tower, tok, texts, bf16=cfg.bf16)

    # reranker: graded pairs plus hard negatives mined with the trained retriever
    _, q_texts, q_labels = graded_labels(ds.queries, ds.qrels, "train")
    q_vecs = embed_queries(user_tower, tok, q_texts, bf16=cfg.bf16)
    _, top = exact_top_k(q_vecs, item_vecs, cfg.hard_negatives)
    retrieved = [[int(item_ids[p]) for p in row if p >= 0] for row in top]
    pos_map = {int(i): int(p) for i, p in zip(item_ids, range(len(item_ids)))}
    pairs = training_pairs(q_labels, retrieved, pos_map)
    item_tokens = item_token_lists(tok, texts)
    reranker = CrossEncoder(make_student(teacher, cfg.reranker_layers))
    rerank_losses = timer.run(
        "rerank", train_cross_encoder, reranker, tok, q_texts, item_tokens, pairs, cfg
    )

    popularity = item_popularity(ds.events, item_ids)
    blend = timer.run(
        "blend",
        _fit_blend,
        ds,
        user_tower,
        reranker,
        tok,
        item_vecs,
        item_ids,
        item_tokens,
        popularity,
        cfg,
    )

    out_dir.mkdir(parents=True, exist_ok=True)
    meta = {"dim": cfg.dim, "recency_tau_s": cfg.recency_tau_s}
    save_module(item_tower, item_tower.text.bert.config, out_dir / "item_tower", **meta)
    save_module(user_tower, user_tower.text.bert.config, out_dir / "user_tower", **meta)
    save_module(reranker, reranker.bert.config, out_dir / "reranker", **meta)
    (out_dir / "blend.json").write_text(json.dumps(blend, indent=2))
    np.save(out_dir / "teacher_item_embeddings.npy", teacher_items)
    digest = hashlib.sha256((out_dir / "item_tower" / "model.safetensors").read_bytes())
    version = datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + digest.hexdigest()[:8]
    report = {
        "model_version": version,
        "data_dir": str(data_dir.resolve()),
        "config": cfg.model_dump(),
        "n_items": len(items),
        "n_train_queries": len(qpos.texts),
        "n_history_pairs": int(len(hist.target_pos)),
        "n_rerank_pairs": int(len(pairs[0])),
        "seconds": timer.seconds,
        "losses": {
            "distil_per_epoch": distil_losses,
            "towers_first_last": _ends(tower_losses),
            "reranker_first_last": _ends(rerank_losses),
        },
        "blend": blend,
    }
    (out_dir / "train_report.json").write_text(json.dumps(report, indent=2))
    log.info("trained model version %s in %.0f s", version, sum(timer.seconds.values()))
    return report


def _ends(losses: list[float], n: int = 20) -> list[float]:
    """Mean loss over the first and the last ``n`` steps."""
    if not losses:
        return []
    return [round(float(np.mean(losses[:n])), 4), round(float(np.mean(losses[-n:])), 4)]


def _fit_blend(
    ds, user_tower, reranker, tok, item_vecs, item_ids, item_tokens, popularity, cfg
) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """Fit the blend on validation queries' retrieved candidates (never on test queries)."""
    _, v_texts, v_labels = graded_labels(ds.queries, ds.qrels, "valid")
    if not v_texts:
        log.warning("no validation queries: blend falls back to the reranker score only")
        return {"features": BLEND_FEATURES, "weights": [1.0, 0.0, 0.0], "bias": 0.0}
    v_vecs = embed_queries(user_tower, tok, v_texts, bf16=cfg.bf16)
    scores, top = exact_top_k(v_vecs, item_vecs, cfg.blend_candidates)
    feats, grades = [], []
    for text, lab, s_row, p_row in zip(v_texts, v_labels, scores, top):
        ce = score_candidates(
            reranker, query_token_list(tok, text), [item_tokens[p] for p in p_row], bf16=cfg.bf16
        )
        feats.append(np.stack([ce, s_row, popularity[p_row]], axis=1))
        grades.append([lab.get(int(item_ids[p]), 0) for p in p_row])
    weights, bias = fit_blend(np.concatenate(feats), np.concatenate(grades).astype(np.float32))
    log.info("blend weights %s bias %.3f", weights, bias)
    return {"features": BLEND_FEATURES, "weights": weights, "bias": bias}
