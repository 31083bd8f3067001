"""Table schemas of a towerserve data set, and the checks that coerce tables to them.

A data set is a directory holding up to five tables, each as ``<table>.parquet``, ``<table>.csv``
or ``<table>.csv.gz`` (the generator writes Parquet plus ``meta.json``). Only ``items`` is
required, and in it only ``item_id`` and ``title``; every other file and column is optional.

items (one row per catalogue item)
    ==============  ========  ========  ===================================================
    column          dtype     required  meaning
    ==============  ========  ========  ===================================================
    item_id         int64     yes       unique item id (any int64; the generator uses 0..n-1)
    title           string    yes       short product title; must not be empty
    description     string    no        one or two sentences ("" if absent)
    department      string    no        e.g. "Clothing" ("" if absent)
    product_type    string    no        e.g. "t-shirt" ("" if absent)
    brand           string    no        e.g. "Veltro" ("" if absent)
    color           string    no        e.g. "red" ("" if absent or not applicable)
    material        string    no        material, or main ingredient / variety ("" if absent)
    size            string    no        "M", "42", "250 ml", "ages 3+" ("" if absent)
    price           float64   no        price in currency units (NaN if absent)
    price_band      string    no        budget | mid | premium | luxury ("" if absent)
    ==============  ========  ========  ===================================================

users (optional; derived from events and queries when the file is absent)
    ``user_id`` int64, unique, required when the file exists. The generator adds latent
    preference columns, all optional and informational: ``home_department`` string,
    ``early_types`` / ``late_types`` string (``|``-joined product types favoured at the start
    and the end of the time range), ``preferred_brands`` string (``|``-joined),
    ``price_band`` string, ``activity`` float64 (relative activity, mean about 1).

events (optional; behaviour log, sorted by user_id then ts)
    ``user_id`` int64 (required), ``item_id`` int64 (required; rows naming unknown items are
    dropped with a warning), ``ts`` int64 unix seconds UTC (required), ``event_type`` string
    in view | click | add_to_cart | purchase (default "view"), ``session_id`` int64
    (default -1 = unknown).

queries (optional; search queries)
    ``query_id`` int64 unique (required), ``query_text`` string (required), ``user_id`` int64
    (-1 = anonymous; default -1), ``ts`` int64 unix seconds (default 0), ``split`` string in
    train | valid | test (default "test"); the generator splits by distinct query text so a
    text never appears in two splits. Optional structured attributes, nullable strings (NaN =
    the query does not mention it): ``product_type``, ``brand``, ``color``, ``material``,
    ``price_band``. They let :func:`towers.data.grading.grade` recompute labels.

qrels (optional; graded relevance, ESCI-style)
    ``query_id`` int64, ``item_id`` int64, ``label`` int8 in 0..3, all required: 3 exact (same
    product type, every attribute the query mentions matches), 2 substitute (same type, some
    mentioned attribute differs), 1 complement (the item's type complements the query's
    type), 0 irrelevant. Rows naming unknown queries or items are dropped with a warning;
    a (query_id, item_id) pair may appear once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = [
    "EVENT_TYPES",
    "LABELS",
    "SCHEMA_VERSION",
    "SPLITS",
    "TABLES",
    "ColumnSpec",
    "DataError",
    "coerce_table",
    "empty_table",
]

#: Bumped when a column is added, removed or changes meaning.
SCHEMA_VERSION = 1

#: Allowed ``events.event_type`` values, in funnel order.
EVENT_TYPES: tuple[str, ...] = ("view", "click", "add_to_cart", "purchase")

#: Allowed ``queries.split`` values.
SPLITS: tuple[str, ...] = ("train", "valid", "test")

#: Allowed labels (``qrels.label``): 0 irrelevant, 1 complement, 2 substitute, 3 exact.
LABELS: tuple[int, ...] = (0, 1, 2, 3)


class DataError(ValueError):
    """A data set file is missing, malformed or inconsistent; the message names file and
    column."""


@dataclass(frozen=True)
class ColumnSpec:
    """One column: ``kind`` is ``"int"`` (int64), ``"float"`` (float64), ``"str"`` (string,
    missing -> ``default``), ``"nullable_str"`` (string, missing stays NaN) or ``"label"``
    (int8 in 0..3). ``default`` fills an absent optional column."""

    name: str
    kind: str
    required: bool = False
    default: object = None


def _str(name: str, required: bool = False, default: str = "") -> ColumnSpec:
    return ColumnSpec(name, "str", required, default)


#: Column specs per table, in on-disk order.
TABLES: dict[str, tuple[ColumnSpec, ...]] = {
    "items": (
        ColumnSpec("item_id", "int", required=True),
        _str("title", required=True),
        _str("description"),
        _str("department"),
        _str("product_type"),
        _str("brand"),
        _str("color"),
        _str("material"),
        _str("size"),
        ColumnSpec("price", "float", default=np.nan),
        _str("price_band"),
    ),
    "users": (ColumnSpec("user_id", "int", required=True),),
    "events": (
        ColumnSpec("user_id", "int", required=True),
        ColumnSpec("item_id", "int", required=True),
        _str("event_type", default="view"),
        ColumnSpec("ts", "int", required=True),
        ColumnSpec("session_id", "int", default=-1),
    ),
    "queries": (
        ColumnSpec("query_id", "int", required=True),
        _str("query_text", required=True),
        ColumnSpec("user_id", "int", default=-1),
        ColumnSpec("ts", "int", default=0),
        _str("split", default="test"),
        ColumnSpec("product_type", "nullable_str"),
        ColumnSpec("brand", "nullable_str"),
        ColumnSpec("color", "nullable_str"),
        ColumnSpec("material", "nullable_str"),
        ColumnSpec("price_band", "nullable_str"),
    ),
    "qrels": (
        ColumnSpec("query_id", "int", required=True),
        ColumnSpec("item_id", "int", required=True),
        ColumnSpec("label", "label", required=True),
    ),
}


def empty_table(table: str) -> pd.DataFrame:
    """An empty DataFrame with ``table``'s columns and dtypes."""
    specs = _specs(table)
    return pd.DataFrame({s.name: pd.Series([], dtype=_dtype(s.kind)) for s in specs})


def coerce_table(df: pd.DataFrame, table: str, source: str) -> pd.DataFrame:
    """Return ``df`` with ``table``'s columns coerced to their dtypes.

    Absent optional columns are filled with their default; extra columns are kept, after the
    known ones. ``source`` (a file name) goes into error messages.

    Raises:
        DataError: a required column is missing, an id/timestamp is not an integer, a price is
            not a number, or a label is outside 0..3.
    """
    specs = _specs(table)
    missing = [s.name for s in specs if s.required and s.name not in df.columns]
    if missing:
        required = ", ".join(s.name for s in specs if s.required)
        raise DataError(
            f"{source}: missing required column(s) {', '.join(missing)}; "
            f"{table} needs: {required} (found: {', '.join(map(str, df.columns)) or 'none'})"
        )
    out: dict[str, pd.Series] = {}
    n = len(df)
    for spec in specs:
        if spec.name in df.columns:
            out[spec.name] = _coerce(df[spec.name], spec, source)
        else:
            fill = spec.default
            if spec.kind == "nullable_str":
                fill = np.nan
            out[spec.name] = pd.Series([fill] * n, dtype=_dtype(spec.kind), index=df.index)
    known = {s.name for s in specs}
    for col in df.columns:
        if col not in known:
            out[col] = df[col]
    return pd.DataFrame(out).reset_index(drop=True)


def _specs(table: str) -> tuple[ColumnSpec, ...]:
    try:
        return TABLES[table]
    except KeyError:
        raise ValueError(f"unknown table {table!r}; known tables: {', '.join(TABLES)}") from None


def _dtype(kind: str) -> object:
    return {
        "int": np.int64,
        "float": np.float64,
        "label": np.int8,
        "str": "str",
        "nullable_str": "str",
    }[kind]


def _bad_examples(values: pd.Series, bad: np.ndarray) -> str:
    rows = np.flatnonzero(bad)[:3]
    shown = ", ".join(f"row {int(r)}: {values.iloc[r]!r}" for r in rows)
    return f"{int(bad.sum())} bad value(s), e.g. {shown}"


def _coerce(values: pd.Series, spec: ColumnSpec, source: str) -> pd.Series:
    where = f"{source}: column {spec.name!r}"
    if spec.kind in ("int", "label"):
        if pd.api.types.is_integer_dtype(values.dtype) and not values.isna().any():
            num = values.astype(np.int64)
        else:
            num = pd.to_numeric(values, errors="coerce")
            bad = (num.isna() | (num % 1 != 0)).to_numpy()
            if bad.any():
                raise DataError(f"{where} must hold integers; {_bad_examples(values, bad)}")
            num = num.astype(np.int64)
        if spec.kind == "label":
            bad = (~num.isin(LABELS)).to_numpy()
            if bad.any():
                raise DataError(
                    f"{where} must be 0, 1, 2 or 3 (irrelevant..exact); "
                    f"{_bad_examples(values, bad)}"
                )
            return num.astype(np.int8)
        return num
    if spec.kind == "float":
        num = pd.to_numeric(values.replace("", np.nan), errors="coerce")
        bad = (num.isna() & values.notna() & (values.astype("str") != "")).to_numpy()
        if bad.any():
            raise DataError(f"{where} must hold numbers; {_bad_examples(values, bad)}")
        return num.astype(np.float64)
    # Strings: keep text as is; empty and missing mean "absent".
    text = values.astype("str")
    missing = values.isna().to_numpy() | (text == "").to_numpy()
    if spec.kind == "nullable_str":
        return text.mask(missing, np.nan).astype("str")
    return text.mask(missing, "").astype("str")
