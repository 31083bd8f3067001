"""The in-memory data set and small helpers over its tables.

:class:`Dataset` holds the five tables of :mod:`towers.data.schema` as pandas DataFrames
(optional tables are empty frames with the right columns). :func:`item_texts` is the text an
item is embedded and reranked by; :func:`time_split` and :func:`cut_ts_at` cut the behaviour
log at a time for next-event evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from towers.data.schema import SPLITS, empty_table
from towers.data.strings import join_strings, null_if_empty

__all__ = ["Dataset", "cut_ts_at", "item_texts", "time_split"]

#: Item columns listed after the type, in this order, by :func:`item_texts`.
TEXT_ATTRIBUTES: tuple[str, ...] = ("brand", "color", "material", "size", "price_band")


@dataclass
class Dataset:
    """The tables of one data set (see :mod:`towers.data.schema` for columns and dtypes).

    ``meta`` is the parsed ``meta.json`` (empty when there is none); ``root`` the directory it
    was loaded from, if any.
    """

    items: pd.DataFrame
    users: pd.DataFrame = field(default_factory=lambda: empty_table("users"))
    events: pd.DataFrame = field(default_factory=lambda: empty_table("events"))
    queries: pd.DataFrame = field(default_factory=lambda: empty_table("queries"))
    qrels: pd.DataFrame = field(default_factory=lambda: empty_table("qrels"))
    meta: dict = field(default_factory=dict)
    root: Path | None = None

    def queries_in(self, split: str) -> pd.DataFrame:
        """The queries of one split (train, valid or test).

        Raises:
            ValueError: ``split`` is not one of them.
        """
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; allowed: {', '.join(SPLITS)}")
        return self.queries[self.queries["split"] == split].reset_index(drop=True)


def item_texts(items: pd.DataFrame) -> list[str]:
    """The text each item is embedded and reranked by, one per row, in row order.

    Format ``"<title> | <product_type>, <department> | <brand>, <color>, <material>, <size>,
    <price_band> price"``; empty or missing fields are left out, and so is a segment with
    nothing in it, e.g. ``"Veltro red cotton t-shirt, size M | t-shirt, Clothing | Veltro,
    red, cotton, M, mid price"``. About 20-35 WordPiece tokens for the synthetic catalogue,
    well under the 48-token limit the encoders truncate at.

    Raises:
        ValueError: ``items`` has no ``title`` column.
    """
    if "title" not in items.columns:
        raise ValueError(
            "item_texts needs an items column 'title'; columns given: "
            + ", ".join(map(str, items.columns))
        )
    n = len(items)
    if n == 0:
        return []

    def col(name: str) -> pa.Array:
        if name not in items.columns:
            return pa.nulls(n, pa.string())
        return null_if_empty(items[name].astype("str").to_numpy(dtype=object, na_value=None))

    band = col("price_band")
    band = join_strings(band, "price", emit_null=True)
    kind = join_strings(col("product_type"), col("department"), sep=", ")
    attrs = join_strings(*(col(c) for c in TEXT_ATTRIBUTES[:-1]), band, sep=", ")
    text = join_strings(col("title"), kind, attrs, sep=" | ")
    return [t or "" for t in text.to_pylist()]


def time_split(events: pd.DataFrame, cut_ts: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split events at ``cut_ts`` (unix seconds): ``(ts < cut_ts, ts >= cut_ts)``, each with
    a fresh index and the original row order."""
    before = events["ts"].to_numpy() < cut_ts
    return (
        events[before].reset_index(drop=True),
        events[~before].reset_index(drop=True),
    )


def random_split(
    events: pd.DataFrame, test_frac: float, seed: int = 7
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Shuffle the events (seeded) and hold out ``test_frac`` of them: ``(train, test)``,
    each in the original row order with a fresh index. The protocol of the TensorFlow
    Recommenders retrieval tutorial (80/20 with ``test_frac`` 0.2): time is ignored, so a
    user's test events may be older than their training ones.

    Raises:
        ValueError: ``test_frac`` is not strictly between 0 and 1.
    """
    if not 0.0 < test_frac < 1.0:
        raise ValueError(f"test_frac must be strictly between 0 and 1, got {test_frac}")
    order = np.random.default_rng(seed).permutation(len(events))
    is_test = np.zeros(len(events), dtype=bool)
    is_test[order[: int(round(test_frac * len(events)))]] = True
    return (
        events[~is_test].reset_index(drop=True),
        events[is_test].reset_index(drop=True),
    )


def cut_ts_at(events: pd.DataFrame, fraction: float) -> int:
    """Unix second ``fraction`` of the way through the events' time range,
    ``min_ts + fraction * (max_ts + 1 - min_ts)`` rounded down.

    Raises:
        ValueError: ``fraction`` is not strictly between 0 and 1, or there are no events.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be strictly between 0 and 1, got {fraction}")
    if len(events) == 0:
        raise ValueError("cannot cut an empty events table")
    lo = int(events["ts"].min())
    hi = int(events["ts"].max()) + 1
    return lo + int(fraction * (hi - lo))
