from __future__ import annotations

import numpy as np
import pytest

from towers.features import (
    CLS_ID,
    MAX_ITEM_TOKENS,
    MAX_PAIR_TOKENS,
    MAX_QUERY_TOKENS,
    SEP_ID,
    build_pairs,
    last_n,
    recency_weights,
)
from towers.text import encode_items, encode_queries, item_token_lists, query_token_list


def test_recency_weights_sum_to_one_and_favour_recent() -> None:
    w = recency_weights(np.array([0, 86400, 2 * 86400]), tau_s=86400)
    assert w.sum() == pytest.approx(1.0)
    assert w[2] > w[1] > w[0]
    assert w[1] / w[2] == pytest.approx(np.exp(-1), rel=1e-5)


def test_recency_weights_empty_and_invalid_tau() -> None:
    assert recency_weights(np.array([]), 10.0).shape == (0,)
    with pytest.raises(ValueError, match="tau_s"):
        recency_weights(np.array([1]), 0)


def test_last_n_keeps_newest_oldest_first() -> None:
    ids, ts = last_n(np.array([5, 6, 7, 8]), np.array([40, 10, 30, 20]), n=2)
    assert ids.tolist() == [7, 5] and ts.tolist() == [30, 40]


def test_query_truncation_and_special_tokens(tokenizer) -> None:
    ids, mask = encode_queries(tokenizer, ["red cotton shirt", "word " * 100, ""])
    assert ids.shape[1] == MAX_QUERY_TOKENS
    assert ids[0, 0] == CLS_ID and SEP_ID in ids[0]
    assert mask[1].sum() == MAX_QUERY_TOKENS
    assert ids[2, :2].tolist() == [CLS_ID, SEP_ID] and mask[2].sum() == 2


def test_item_tokens_match_item_tower_input(tokenizer) -> None:
    text = "veltro red cotton t-shirt " * 20
    toks = item_token_lists(tokenizer, [text])[0]
    ids, _ = encode_items(tokenizer, [text])
    assert len(toks) == MAX_ITEM_TOKENS
    assert ids[0, 1 : 1 + MAX_ITEM_TOKENS].tolist() == toks.tolist()


def test_build_pairs_layout(tokenizer) -> None:
    q = query_token_list(tokenizer, "blue jeans")
    items = [np.array([2000, 2001, 2002]), np.array([3000])]
    ids, mask, types = build_pairs(q, items)
    assert ids.shape == mask.shape == types.shape and ids.shape[1] <= MAX_PAIR_TOKENS
    row = ids[1, : mask[1].sum()].tolist()
    assert row == [CLS_ID, *q.tolist(), SEP_ID, 3000, SEP_ID]
    assert types[1, : len(q) + 2].sum() == 0 and types[1, len(q) + 2 : len(q) + 4].tolist() == [
        1,
        1,
    ]
