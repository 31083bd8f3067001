"""Vectorised string assembly on Arrow arrays (used to build titles and item texts)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["join_strings", "null_if_empty", "take_strings"]


def join_strings(*parts: object, sep: str = " ", emit_null: bool = False) -> pa.Array:
    """Element-wise join of string arrays and scalars with ``sep``.

    Null parts are skipped (a row whose parts are all null stays null), or make the row null
    when ``emit_null``. Folded pairwise because ``binary_join_element_wise`` with
    ``null_handling="skip"`` drops rows whose parts are all null (seen in pyarrow 21-25).
    """
    if emit_null:
        return pc.binary_join_element_wise(*parts, sep, null_handling="emit_null")
    acc = parts[0]
    for part in parts[1:]:
        both = pc.binary_join_element_wise(acc, part, sep, null_handling="emit_null")
        acc = pc.coalesce(both, acc, part)
    return acc


def null_if_empty(values: object) -> pa.Array:
    """String array with "" (after stripping whitespace) and missing values as nulls."""
    arr = pa.array(values, type=pa.string(), from_pandas=True)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    arr = pc.utf8_trim_whitespace(arr)
    return pc.if_else(pc.equal(arr, ""), pa.scalar(None, pa.string()), arr)


def take_strings(vocab: np.ndarray, idx: np.ndarray, present: np.ndarray | None = None) -> pa.Array:
    """String array ``vocab[idx]``, with nulls where ``present`` is False."""
    arr = pa.array(vocab.tolist(), type=pa.string()).take(pa.array(idx))
    if present is not None:
        arr = pc.if_else(pa.array(present), arr, pa.scalar(None, pa.string()))
    return arr
