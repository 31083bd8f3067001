"""Fixtures for the re-embedding job: catalogs written as Parquet, the untrained bundle."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

COLORS = ["red", "blue", "green", "black", "white", "grey"]
KINDS = ["shirt", "running shoes", "jeans", "rain jacket", "wool hat", "socks", "backpack"]


def catalog_texts(n: int, start: int = 0) -> list[str]:
    """``n`` generated item texts (distinct, 8-20 tokens each)."""
    return [
        f"{COLORS[i % 6]} {KINDS[i % 7]} model {i} | {KINDS[i % 7]}, size {i % 5}"
        for i in range(start, start + n)
    ]


def write_catalog(path: Path, ids: list, texts: list, **extra: list) -> Path:
    """A catalog Parquet file with ``item_id``, ``text`` (bytes: stored as binary) and
    ``extra`` columns."""
    binary = any(isinstance(t, bytes) for t in texts)
    columns = {
        "item_id": pa.array(ids, pa.int64()),
        "text": pa.array(texts, pa.binary() if binary else pa.string()),
    }
    columns.update({k: pa.array(v) for k, v in extra.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)
    return path


@pytest.fixture
def make_catalog():
    return write_catalog


@pytest.fixture
def texts_for():
    return catalog_texts
