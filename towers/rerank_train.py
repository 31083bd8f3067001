"""Stage 3: the cross-encoder reranker and the learned blend ("ensemble") of its signals.

The cross-encoder is trained pointwise (binary cross-entropy towards ``grade / 3``) on graded
query-item pairs plus hard negatives: items the trained retriever ranks high that are not
judged relevant. The blend (``towers.bundle_contract.Blend``) is a least-squares fit of the
grade on its features (reranker logit, retrieval score, popularity, lexical; built by
``blend_features``, as evaluation and serving build them) over retrieved candidates of
validation queries.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from tokenizers import Tokenizer

from towers.bundle_contract import BLEND_FEATURES, Blend
from towers.config import TrainConfig
from towers.examples import HistoryPairs
from towers.features import CONTEXT_ITEMS, build_pairs
from towers.models import CrossEncoder
from towers.progress import progress
from towers.text import query_token_list

log = logging.getLogger(__name__)

__all__ = [
    "BLEND_FEATURES",  # re-exported from towers.bundle_contract
    "fit_blend",
    "history_contexts",
    "score_candidates",
    "train_cross_encoder",
    "training_pairs",
]


def training_pairs(
    labels: Sequence[Mapping[int, int]],
    retrieved: Sequence[Sequence[int]],
    pos_of: Mapping[int, int],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(query index, item position, grade)`` for judged items and mined hard negatives."""
    qs, items, grades = [], [], []
    for qi, (lab, ret) in enumerate(zip(labels, retrieved)):
        seen = set()
        for item_id, g in lab.items():
            if item_id in pos_of:
                qs.append(qi), items.append(pos_of[item_id]), grades.append(g)
                seen.add(item_id)
        for item_id in ret:
            if item_id not in seen and item_id in pos_of:
                qs.append(qi), items.append(pos_of[item_id]), grades.append(0)
    return np.array(qs), np.array(items), np.array(grades, dtype=np.float32)


def history_contexts(
    histories: HistoryPairs, titles: Sequence[str], item_ids: np.ndarray, n: int, seed: int
) -> tuple[list[str], list[dict[int, int]], np.ndarray]:
    """Reranker examples for data with behaviour but no labelled queries.

    The context is what the served reranker reads for an empty query: the titles of the
    ``CONTEXT_ITEMS`` newest history items, newest first, joined by spaces; the next item is
    the exact (grade 3) match. Returns up to ``n`` contexts, their ``{item_id: 3}`` labels and
    the row indices of ``histories`` they came from.
    """
    have = np.flatnonzero((histories.hist_pos >= 0).any(axis=1))
    if len(have) > n:
        have = np.sort(np.random.default_rng(seed).choice(have, n, replace=False))
    texts, labels = [], []
    for row in have:
        recent = [p for p in histories.hist_pos[row][::-1] if p >= 0][:CONTEXT_ITEMS]
        texts.append(" ".join(titles[p] for p in recent))
        labels.append({int(item_ids[histories.target_pos[row]]): 3})
    return texts, labels, have


def train_cross_encoder(
    model: CrossEncoder,
    tok: Tokenizer,
    query_texts: Sequence[str],
    item_tokens: Sequence[np.ndarray],
    pairs: tuple[np.ndarray, np.ndarray, np.ndarray],
    cfg: TrainConfig,
    teacher: CrossEncoder | None = None,
) -> list[float]:
    """Train for ``cfg.rerank_steps`` steps on groups of ``cfg.rerank_group`` items per query.

    Each group holds one exact item and items drawn from the query's other judged items and
    hard negatives. The loss is listwise (ListNet: cross-entropy between the softmax of the
    logits and the gains ``2**grade - 1``, normalised) plus half a pointwise binary
    cross-entropy towards ``grade / 3``, which keeps logits comparable across queries.
    With a ``teacher`` (a trained cross-encoder, e.g. a deeper one) and
    ``cfg.rerank_distil_weight`` w > 0, the loss is ``(1 - w)`` times that plus ``w`` times the
    mean squared error to the teacher's logits on the same pairs (distillation).
    """
    rng = np.random.default_rng(cfg.seed + 1)
    torch.manual_seed(cfg.seed + 1)
    q_idx, item_pos, grades = pairs
    qtoks = [query_token_list(tok, t) for t in query_texts]
    order = np.argsort(q_idx, kind="stable")
    bounds = np.searchsorted(q_idx[order], np.arange(len(query_texts) + 1))
    rows_of = [order[bounds[q] : bounds[q + 1]] for q in range(len(query_texts))]
    exact_of = [r[grades[r] >= 3] for r in rows_of]
    usable = np.array(
        [q for q in range(len(query_texts)) if len(exact_of[q]) and len(rows_of[q]) > 1]
    )
    if not len(usable):
        raise ValueError("no training query has an exact (grade 3) item: cannot train the reranker")
    opt = torch.optim.AdamW(
        [
            {"params": model.bert.parameters(), "lr": cfg.rerank_lr},
            {"params": model.head.parameters(), "lr": cfg.head_lr},
        ],
        weight_decay=0.01,
    )
    model.train()
    if teacher is not None:
        teacher.eval()
    losses: list[float] = []
    group = cfg.rerank_group
    n_queries = max(cfg.rerank_batch // group, 1)
    for step in progress(range(cfg.rerank_steps), "train reranker"):
        chosen = rng.choice(usable, size=n_queries, replace=len(usable) < n_queries)
        rows = np.concatenate(
            [
                np.concatenate(
                    [rng.choice(exact_of[q], size=1), rng.choice(rows_of[q], size=group - 1)]
                )
                for q in chosen
            ]
        )
        ids, mask, types, rows = _pairs_for(rows, q_idx, item_pos, qtoks, item_tokens)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
            logits = model(torch.from_numpy(ids), torch.from_numpy(mask), torch.from_numpy(types))
        logits = logits.float()
        g = torch.from_numpy(grades[rows]).float()
        distil = None
        if teacher is not None and cfg.rerank_distil_weight > 0:
            with (
                torch.no_grad(),
                torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16),
            ):
                target_logits = teacher(
                    torch.from_numpy(ids), torch.from_numpy(mask), torch.from_numpy(types)
                ).float()
            distil = torch.nn.functional.mse_loss(logits, target_logits)
        pointwise = torch.nn.functional.binary_cross_entropy_with_logits(logits, g / 3.0)
        # rows come back grouped by query, ``group`` per query (in query-id order)
        grouped_logits = logits.view(-1, group)
        gains = (2.0 ** g.view(-1, group)) - 1.0
        target = gains / gains.sum(1, keepdim=True).clamp(min=1e-6)
        listwise = -(target * torch.log_softmax(grouped_logits, dim=1)).sum(1).mean()
        loss = listwise + 0.5 * pointwise
        if distil is not None:
            w = cfg.rerank_distil_weight
            loss = (1.0 - w) * loss + w * distil
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if step % 50 == 0:
            log.info("reranker step %d: loss %.4f", step, losses[-1])
    model.eval()
    return losses


def _pairs_for(
    rows: np.ndarray,
    q_idx: np.ndarray,
    item_pos: np.ndarray,
    qtoks: Sequence[np.ndarray],
    item_tokens: Sequence[np.ndarray],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Padded pairs for ``rows``, grouped by query; returns the rows in the order built."""
    blocks, order = [], []
    for qi in np.unique(q_idx[rows]):
        sel = rows[q_idx[rows] == qi]
        blocks.append(build_pairs(qtoks[qi], [item_tokens[p] for p in item_pos[sel]]))
        order.append(sel)
    width = max(b[0].shape[1] for b in blocks)
    stacked = [
        np.concatenate([np.pad(b[j], ((0, 0), (0, width - b[j].shape[1]))) for b in blocks])
        for j in range(3)
    ]
    return stacked[0], stacked[1], stacked[2], np.concatenate(order)


@torch.inference_mode()
def score_candidates(
    model: CrossEncoder,
    query_tokens: np.ndarray,
    item_tokens: Sequence[np.ndarray],
    *,
    bf16: bool,
    batch_size: int = 64,
) -> np.ndarray:
    """Cross-encoder logits of one query against several items, float32 ``[len(item_tokens)]``."""
    out = np.zeros(len(item_tokens), dtype=np.float32)
    for start in range(0, len(item_tokens), batch_size):
        ids, mask, types = build_pairs(query_tokens, list(item_tokens[start : start + batch_size]))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(torch.from_numpy(ids), torch.from_numpy(mask), torch.from_numpy(types))
        out[start : start + len(ids)] = logits.float().numpy()
    return out


def fit_blend(features: np.ndarray, grades: np.ndarray) -> Blend:
    """The least-squares blend predicting ``grades`` ``[n]`` from ``features``
    ``[n, len(BLEND_FEATURES)]`` (from ``towers.bundle_contract.blend_features``)."""
    x = np.concatenate([features, np.ones((len(features), 1))], axis=1).astype(np.float64)
    coef, *_ = np.linalg.lstsq(x, grades.astype(np.float64), rcond=None)
    return Blend(np.asarray(coef[:-1], dtype=np.float32), float(coef[-1]))
