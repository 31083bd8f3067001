"""Data sets: the synthetic e-commerce generator, the schema and the loader.

Typical use::

    from towers.data import GenerateConfig, generate, load_dataset, item_texts

    paths = generate(GenerateConfig(n_items=5000), Path("data/synthetic"))
    ds = load_dataset(paths.root)          # or a directory of your own CSV/Parquet files
    texts = item_texts(ds.items)           # what the item tower and reranker read
    train_events, test_events = time_split(ds.events, cut_ts_at(ds.events, 0.75))
"""

from __future__ import annotations

from towers.data.dataset import Dataset, cut_ts_at, item_texts, time_split
from towers.data.generate import START_TS, DatasetPaths, GenerateConfig, generate
from towers.data.grading import ATTRIBUTES, Grader, QueryAttributes, grade
from towers.data.loader import load_dataset, save_dataset
from towers.data.schema import (
    EVENT_TYPES,
    LABELS,
    SCHEMA_VERSION,
    SPLITS,
    TABLES,
    DataError,
    empty_table,
)
from towers.data.taxonomy import COMPLEMENTS, DEPARTMENTS, PRODUCT_TYPES

__all__ = [
    "ATTRIBUTES",
    "COMPLEMENTS",
    "DEPARTMENTS",
    "EVENT_TYPES",
    "LABELS",
    "PRODUCT_TYPES",
    "SCHEMA_VERSION",
    "SPLITS",
    "START_TS",
    "TABLES",
    "DataError",
    "Dataset",
    "DatasetPaths",
    "GenerateConfig",
    "Grader",
    "QueryAttributes",
    "cut_ts_at",
    "empty_table",
    "generate",
    "grade",
    "item_texts",
    "load_dataset",
    "save_dataset",
    "time_split",
]
