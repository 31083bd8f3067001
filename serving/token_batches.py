"""Item rows as item-tower input in batches of like token count: the served item tower
(serving/item_tower.py) and the re-embedding job (client/embed/pipeline.py) both run them.

The tower's cost grows with the padded tokens it is given (a batch pads to its longest row),
and character length is a poor proxy for token count: sorting rows by their token count pads
about 20% less than sorting them by characters (benchmarks/results/embed_fast_2026-11-29.md).
Every row keeps exactly the tokens towers.text.encode_items gives it (its first
``MAX_ITEM_CHARS`` characters, ``[CLS]``, at most ``MAX_ITEM_TOKENS`` tokens, ``[SEP]``); a
batch is those rows right-padded to the batch's longest one, as ``encode_items`` pads a batch.
Padding is masked, so a row's vector does not depend on its batch beyond rounding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from tokenizers import Tokenizer

from towers.text import encode_items

__all__ = ["MAX_ITEM_CHARS", "TokenBatches", "restore_order", "tokenize_shard"]

#: Characters of an item text that are tokenized; the rest is ignored.
MAX_ITEM_CHARS = 4096


@dataclass(frozen=True)
class TokenBatches:
    """A shard's rows as tower input.

    ``order`` int64 ``[n]``: the row positions in batch order (ascending token count, ties in
    row order); ``batches``: ``(input_ids, attention_mask)`` int64 ``[b, L]`` each,
    ``b <= batch_size``, together ``order``'s rows in that order; ``padded_tokens``: the
    ``b * L`` of all batches (what the tower computes on); ``tokens``: the rows' real tokens.
    """

    order: np.ndarray
    batches: list[tuple[np.ndarray, np.ndarray]]
    padded_tokens: int
    tokens: int


def tokenize_shard(tokenizer: Tokenizer, texts: Sequence[str], batch_size: int) -> TokenBatches:
    """Tokenize ``texts`` in one call and cut them into batches of ``batch_size`` rows of
    like token count (module docstring). ``batch_size`` >= 1; an empty ``texts`` gives no
    batches."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not texts:
        return TokenBatches(np.zeros(0, np.int64), [], 0, 0)
    ids, mask = encode_items(tokenizer, [t[:MAX_ITEM_CHARS] for t in texts])
    lengths = mask.sum(axis=1)
    order = np.argsort(lengths, kind="stable")
    batches = []
    padded = 0
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        width = int(lengths[rows[-1]])  # sorted ascending: the last row is the longest
        batches.append((ids[rows, :width], mask[rows, :width]))  # fancy indexing: contiguous
        padded += len(rows) * width
    return TokenBatches(order, batches, padded, int(lengths.sum()))


def restore_order(vectors: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Vectors computed in ``order`` (``vectors[k]`` is row ``order[k]``'s) put back in row
    order."""
    if len(vectors) != len(order):
        raise ValueError(f"{len(vectors)} vectors for {len(order)} rows")
    out = np.empty_like(vectors)
    out[order] = vectors
    return out
