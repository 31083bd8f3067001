"""Feature construction shared by training and serving.

Both the offline trainers and the Triton-side runtime import these functions, so the
user tower sees the same recency weights and the reranker the same token pairs in both
places. Everything here is numpy-only (no torch) so the server processes stay light.
"""

from __future__ import annotations

import numpy as np

#: Most recent items of a user's history the user tower looks at.
MAX_HISTORY = 20
#: Most recent items of a user's history handed on past the user tower, to the retriever's
#: co-visitation candidates (towers/covisit.py reads the newest ``CovisitTable.history`` of
#: them); the tower itself reads the newest ``MAX_HISTORY``.
LONG_HISTORY = 1000
#: Query tokens kept (including [CLS] and [SEP]); longer queries are truncated.
MAX_QUERY_TOKENS = 32
#: Characters of a served query that are tokenized at all; the rest is ignored (bounds the
#: tokenization time of a huge query; the kept tokens come from the start anyway).
MAX_QUERY_CHARS = 4096
#: Item-text tokens kept per item (without special tokens); longer texts are truncated.
MAX_ITEM_TOKENS = 48
#: History items whose titles, newest first, stand in for an empty query in the reranker.
CONTEXT_ITEMS = 2
#: How many times the retriever's depth it fetches by cosine before re-ranking with the
#: popularity prior (see towers/prior.py).
PRIOR_OVERFETCH = 4
#: Reranker pair length: [CLS] query [SEP] item [SEP].
MAX_PAIR_TOKENS = MAX_QUERY_TOKENS + MAX_ITEM_TOKENS + 1
CLS_ID = 101
SEP_ID = 102
PAD_ID = 0


#: The smallest recency weight of a real history event (a float32 normal number, exact in
#: bfloat16 too): weights ``> 0`` mark real items, 0 padding.
MIN_RECENCY_WEIGHT = 1e-30


def recency_weights(ts_s: np.ndarray, tau_s: float) -> np.ndarray:
    """Weights of history events by recency, summing to 1 (all zeros for an empty history).

    ``ts_s`` are event times in seconds (any epoch). Age is measured from the newest event in
    the history, not from the wall clock, so replayed or offline histories weigh the same as
    live ones. ``tau_s`` is the decay constant in seconds: an event ``tau_s`` older than the
    newest weighs ``1/e`` of it. Every event weighs at least :data:`MIN_RECENCY_WEIGHT`
    (an old one's weight would underflow to 0 in float32), so a weight ``> 0`` marks a real
    history item and 0 padding: the user tower's sequence block reads its items that way.
    """
    ts = np.asarray(ts_s, dtype=np.float64)
    if ts.size == 0:
        return np.zeros(0, dtype=np.float32)
    if tau_s <= 0:
        raise ValueError(f"tau_s must be > 0, got {tau_s}")
    w = np.exp(-(ts.max() - ts) / tau_s)
    return np.maximum(w / w.sum(), MIN_RECENCY_WEIGHT).astype(np.float32)


def padded_recency_weights(hist_pos: np.ndarray, hist_ts: np.ndarray, tau_s: float) -> np.ndarray:
    """Recency weights ``[P, H]`` of ``-1``-padded history rows, vectorised: each row's real
    items sum to 1 (at least ``MIN_RECENCY_WEIGHT`` each,
    :func:`recency_weights` of its real items), padding 0: the training loops' form of
    what serving computes per request."""
    real = hist_pos >= 0
    ts = hist_ts.astype(np.float64)
    newest = np.where(real, ts, -np.inf).max(axis=1, keepdims=True)
    w = np.where(real, np.exp(-(np.where(real, newest - ts, 0.0)) / tau_s), 0.0)
    total = w.sum(axis=1, keepdims=True)
    w = w / np.where(total > 0, total, 1.0)
    return np.where(real, np.maximum(w, MIN_RECENCY_WEIGHT), 0.0).astype(np.float32)


def last_n(
    item_ids: np.ndarray, ts_s: np.ndarray, n: int = MAX_HISTORY
) -> tuple[np.ndarray, np.ndarray]:
    """The ``n`` most recent (item id, timestamp) pairs, oldest first."""
    order = np.argsort(ts_s, kind="stable")[-n:]
    return np.asarray(item_ids)[order], np.asarray(ts_s)[order]


def build_pairs(
    query_tokens: np.ndarray, item_tokens: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cross-encoder inputs for one query and several items.

    ``query_tokens`` are WordPiece ids of the query *without* special tokens (truncated here to
    ``MAX_QUERY_TOKENS - 2``); each entry of ``item_tokens`` the ids of one item's text without
    special tokens (truncated to ``MAX_ITEM_TOKENS``). Returns ``input_ids``,
    ``attention_mask`` and ``token_type_ids``, each int64 of shape ``[len(item_tokens), L]``
    with ``L <= MAX_PAIR_TOKENS``: ``[CLS] query [SEP] item [SEP]``, right-padded with 0.
    """
    q = np.asarray(query_tokens, dtype=np.int64)[: MAX_QUERY_TOKENS - 2]
    n = len(item_tokens)
    items = [np.asarray(t, dtype=np.int64)[:MAX_ITEM_TOKENS] for t in item_tokens]
    head = len(q) + 2
    width = head + max((len(t) for t in items), default=0) + 1
    ids = np.zeros((n, width), dtype=np.int64)
    types = np.zeros((n, width), dtype=np.int64)
    mask = np.zeros((n, width), dtype=np.int64)
    ids[:, 0] = CLS_ID
    ids[:, 1 : 1 + len(q)] = q
    ids[:, 1 + len(q)] = SEP_ID
    for row, t in enumerate(items):
        end = head + len(t)
        ids[row, head:end] = t
        ids[row, end] = SEP_ID
        types[row, head : end + 1] = 1
        mask[row, : end + 1] = 1
    return ids, mask, types


#: Inputs of a cross-encoder graph of pairs ``[CLS] context [SEP] item [SEP]`` (build_pairs).
PAIR_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
#: Inputs of a context-once cross-encoder graph: one context, many items (build_context_once).
CONTEXT_ONCE_INPUTS = ("context_ids", "context_mask", "item_ids", "item_mask")


def build_context_once(
    query_tokens: np.ndarray, item_tokens: list[np.ndarray], pad_to: int = 1
) -> dict[str, np.ndarray]:
    """The inputs of the context-once cross-encoder graph (towers.models.ContextOnceCrossEncoder)
    for the same pairs as :func:`build_pairs`: ``context_ids``/``context_mask`` int64
    ``[1, C]`` (``[CLS] query [SEP]``) and ``item_ids``/``item_mask`` int64 ``[n, I]`` (each
    item's tokens then ``[SEP]``), both widths right-padded with 0 (mask 0) to a multiple of
    ``pad_to`` (>= 1). The truncations are :func:`build_pairs`'s."""
    q = np.asarray(query_tokens, dtype=np.int64)[: MAX_QUERY_TOKENS - 2]
    items = [np.asarray(t, dtype=np.int64)[:MAX_ITEM_TOKENS] for t in item_tokens]
    c = len(q) + 2
    context_ids = np.zeros((1, -(-c // pad_to) * pad_to), dtype=np.int64)
    context_ids[0, 0], context_ids[0, 1 : 1 + len(q)], context_ids[0, c - 1] = CLS_ID, q, SEP_ID
    context_mask = (np.arange(context_ids.shape[1]) < c).astype(np.int64)[None]
    longest = max((len(t) for t in items), default=0) + 1
    item_ids = np.zeros((len(items), -(-longest // pad_to) * pad_to), dtype=np.int64)
    item_mask = np.zeros_like(item_ids)
    for row, t in enumerate(items):
        item_ids[row, : len(t)] = t
        item_ids[row, len(t)] = SEP_ID
        item_mask[row, : len(t) + 1] = 1
    return {
        "context_ids": context_ids,
        "context_mask": context_mask,
        "item_ids": item_ids,
        "item_mask": item_mask,
    }


def rank_with_prior(
    scores: np.ndarray, ids: np.ndarray, prior: np.ndarray, weight: float
) -> tuple[np.ndarray, np.ndarray]:
    """Re-rank candidates by ``scores + weight * prior``.

    ``scores`` are cosine similarities, ``ids`` the candidates (rows or item ids, ``-1`` =
    none) and ``prior`` their prior values, all ``[U, C]``. Returns ``(scores, ids)`` in the
    new order, best first, missing candidates last (score ``-inf``).
    """
    ok = ids >= 0
    new = np.where(ok, scores + weight * np.where(ok, prior, 0.0), -np.inf).astype(np.float32)
    order = np.argsort(-new, axis=1, kind="stable")
    return np.take_along_axis(new, order, 1), np.take_along_axis(ids, order, 1)


class PriorLookup:
    """Prior values by item id: ``values[j]`` belongs to ``item_ids[j]``; ids not listed
    (items added after the prior was computed) get ``default``."""

    def __init__(self, item_ids: np.ndarray, values: np.ndarray, default: float) -> None:
        ids = np.asarray(item_ids, dtype=np.int64)
        vals = np.asarray(values, dtype=np.float32)
        if ids.shape != vals.shape or ids.ndim != 1:
            raise ValueError(f"item_ids {ids.shape} and values {vals.shape} must be equal 1-D")
        order = np.argsort(ids, kind="stable")
        self.ids, self.values, self.default = ids[order], vals[order], np.float32(default)

    def __call__(self, item_ids: np.ndarray) -> np.ndarray:
        """Prior values (float32, the shape of ``item_ids``)."""
        q = np.asarray(item_ids, dtype=np.int64)
        if len(self.ids) == 0:
            return np.full(q.shape, self.default, dtype=np.float32)
        pos = np.minimum(np.searchsorted(self.ids, q), len(self.ids) - 1)
        return np.where(self.ids[pos] == q, self.values[pos], self.default).astype(np.float32)
