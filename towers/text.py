"""Tokenization of query and item text with the teacher's fast WordPiece tokenizer.

Training and serving use the same ``tokenizer.json``. Queries keep at most
``MAX_QUERY_TOKENS`` tokens and item texts ``MAX_ITEM_TOKENS`` (plus [CLS]/[SEP]); longer
texts are truncated, never rejected.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from towers.features import MAX_ITEM_TOKENS, MAX_QUERY_CHARS, MAX_QUERY_TOKENS


def load_tokenizer(path: Path) -> Tokenizer:
    """A fast tokenizer from ``tokenizer.json`` with its saved padding/truncation turned off."""
    tok = Tokenizer.from_file(str(path))
    tok.no_padding()
    tok.no_truncation()
    return tok


def _encode_batch(tok: Tokenizer, texts: list[str]) -> list:
    """``encode_batch`` without character offsets where this tokenizers has it (same ids,
    about 10% faster); the batch is encoded on all cores, outside the GIL."""
    fast = getattr(tok, "encode_batch_fast", None)
    return fast(texts) if fast is not None else tok.encode_batch(texts)


def encode(tok: Tokenizer, texts: Sequence[str], max_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    """Token ids and attention mask, int64 ``[len(texts), L]``, ``L <= max_tokens``.

    Each row is ``[CLS] tokens[: max_tokens - 2] [SEP]`` right-padded with 0 to the longest row.
    """
    encs = _encode_batch(tok, list(texts))
    rows = [e.ids[1:-1][: max_tokens - 2] for e in encs]
    width = max((len(r) for r in rows), default=0) + 2
    ids = np.zeros((len(rows), width), dtype=np.int64)
    mask = np.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, 0] = 101
        ids[i, 1 : 1 + len(r)] = r
        ids[i, 1 + len(r)] = 102
        mask[i, : len(r) + 2] = 1
    return ids, mask


def encode_queries(tok: Tokenizer, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Queries as user-tower input (at most ``MAX_QUERY_TOKENS`` tokens each)."""
    return encode(tok, texts, MAX_QUERY_TOKENS)


def query_inputs(tok: Tokenizer, query: str) -> tuple[np.ndarray, np.ndarray, float]:
    """One served query as the tokenizer stage hands it to the user tower: input ids and
    attention mask int64 ``[1, L]`` of its first ``MAX_QUERY_CHARS`` characters, and
    ``has_query`` (1.0, or 0.0 when no token is left besides [CLS]/[SEP])."""
    ids, mask = encode_queries(tok, [query[:MAX_QUERY_CHARS]])
    return ids, mask, 1.0 if ids.shape[1] > 2 else 0.0


def encode_items(tok: Tokenizer, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Item texts as item-tower input (at most ``MAX_ITEM_TOKENS`` + 2 tokens each)."""
    return encode(tok, texts, MAX_ITEM_TOKENS + 2)


def item_token_counts(tok: Tokenizer, texts: Sequence[str]) -> np.ndarray:
    """Each item text's token count as item-tower input (``[CLS]``/``[SEP]`` included, at
    most ``MAX_ITEM_TOKENS`` + 2), int64 ``[len(texts)]``: the width :func:`encode_items` gives
    its row. Texts must already be cut to the served character limit."""
    counts = [len(e.ids) for e in _encode_batch(tok, list(texts))]
    return np.minimum(np.asarray(counts, np.int64), MAX_ITEM_TOKENS + 2)


def item_token_lists(tok: Tokenizer, texts: Sequence[str]) -> list[np.ndarray]:
    """Each item's WordPiece ids without special tokens, truncated to ``MAX_ITEM_TOKENS``."""
    return [
        np.asarray(e.ids[1:-1][:MAX_ITEM_TOKENS], dtype=np.int32)
        for e in tok.encode_batch(list(texts))
    ]


def query_token_list(tok: Tokenizer, text: str) -> np.ndarray:
    """A query's WordPiece ids without special tokens (truncated to ``MAX_QUERY_TOKENS - 2``)."""
    return np.asarray(tok.encode(text).ids[1:-1][: MAX_QUERY_TOKENS - 2], dtype=np.int64)
