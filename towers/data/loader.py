"""Read and write data set directories (the generator's output or a user's own data).

A directory holds ``<table>.parquet``, ``<table>.csv`` or ``<table>.csv.gz`` for each table
(only ``items`` is required) and optionally ``meta.json``; the schemas are in
:mod:`towers.data.schema`. :func:`load_dataset` coerces dtypes, fills absent optional columns,
checks keys and references, and raises :class:`~towers.data.schema.DataError` naming the file
and column of the first problem.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from towers.data.dataset import Dataset
from towers.data.schema import EVENT_TYPES, SPLITS, TABLES, DataError, coerce_table, empty_table

__all__ = ["FORMATS", "load_dataset", "save_dataset"]

logger = logging.getLogger(__name__)

#: File name endings tried for each table, in order of preference.
SUFFIXES: tuple[str, ...] = (".parquet", ".csv", ".csv.gz")
#: Formats :func:`save_dataset` writes.
FORMATS: tuple[str, ...] = ("parquet", "csv")


def _find(root: Path, table: str) -> Path | None:
    found = [root / f"{table}{s}" for s in SUFFIXES if (root / f"{table}{s}").is_file()]
    if len(found) > 1:
        logger.warning(
            "%s: several files for table %s (%s); using %s",
            root,
            table,
            ", ".join(p.name for p in found),
            found[0].name,
        )
    return found[0] if found else None


def _read(path: Path, table: str) -> pd.DataFrame:
    try:
        if path.name.endswith(".parquet"):
            df = pd.read_parquet(path)
        else:
            # Everything as text: empty cells stay "" and dtypes are coerced per column.
            df = pd.read_csv(path, dtype=str, keep_default_na=False)
            df = _infer_extra_numbers(df, table)
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file to the user
        raise DataError(f"{path}: cannot read {table} table: {exc}") from exc
    return coerce_table(df, table, str(path))


def _infer_extra_numbers(df: pd.DataFrame, table: str) -> pd.DataFrame:
    """Columns outside the schema, read from CSV as text, become int64 or float64 when every
    non-empty cell is a number (so extra numeric columns survive a CSV round trip)."""
    known = {s.name for s in TABLES[table]}
    for col in df.columns:
        if col in known or len(df) == 0:
            continue
        text = df[col]
        blank = text.str.strip() == ""
        num = pd.to_numeric(text.mask(blank), errors="coerce")
        if (num.notna() | blank).all() and not blank.all():
            integral = not blank.any() and bool(text.str.fullmatch(r"\s*[-+]?\d+\s*").all())
            df[col] = num.astype(np.int64) if integral else num.astype(np.float64)
    return df


def _check_unique(df: pd.DataFrame, col: str, source: Path) -> None:
    dup = df[col].duplicated(keep=False).to_numpy()
    if dup.any():
        examples = ", ".join(map(str, pd.unique(df.loc[dup, col])[:5]))
        raise DataError(
            f"{source}: column {col!r} must be unique; {int(dup.sum())} rows share an id "
            f"(e.g. {examples})"
        )


def _check_allowed(df: pd.DataFrame, col: str, allowed: tuple[str, ...], source: Path) -> None:
    bad = ~df[col].isin(allowed).to_numpy()
    if bad.any():
        examples = ", ".join(repr(v) for v in pd.unique(df.loc[bad, col])[:5])
        raise DataError(
            f"{source}: column {col!r} has {int(bad.sum())} value(s) outside "
            f"{', '.join(allowed)} (e.g. {examples})"
        )


def _drop_unknown(
    df: pd.DataFrame, col: str, known: np.ndarray, source: Path, what: str
) -> pd.DataFrame:
    ok = np.isin(df[col].to_numpy(), known)
    if not ok.all():
        logger.warning(
            "%s: dropped %d of %d rows whose %s names an unknown %s",
            source,
            int((~ok).sum()),
            len(df),
            col,
            what,
        )
        df = df[ok].reset_index(drop=True)
    return df


def load_dataset(path: Path) -> Dataset:
    """Load the data set in directory ``path``.

    Tables: ``items`` is required; ``users``, ``events``, ``queries`` and ``qrels`` are
    optional (empty frames with the schema's columns when absent). ``users`` is derived from
    the user ids in events and queries when its file is absent. Events are sorted by user_id
    then ts (stable). Rows of events and qrels that name unknown items (or, for qrels,
    unknown queries) are dropped with a logged warning.

    Raises:
        DataError: ``path`` is not a directory; no items file; a file cannot be read; a
            required column is missing; an id, timestamp or label is not an integer; a price
            is not a number; item_id, user_id or query_id repeats; a title or query text is
            empty; an event type, split or label is outside its allowed values; a
            (query_id, item_id) pair repeats in qrels; meta.json is not valid JSON.
    """
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"{root}: not a directory; a data set is a directory of table files")
    files = {t: _find(root, t) for t in TABLES}
    if files["items"] is None:
        raise DataError(
            f"{root}: no items file; expected one of " + ", ".join(f"items{s}" for s in SUFFIXES)
        )

    items_path = files["items"]
    items = _read(items_path, "items")
    _check_unique(items, "item_id", items_path)
    empty = (items["title"].str.strip() == "").to_numpy()
    if empty.any():
        rows = ", ".join(map(str, np.flatnonzero(empty)[:5]))
        raise DataError(
            f"{items_path}: column 'title' is empty in {int(empty.sum())} row(s) (e.g. rows "
            f"{rows}); every item needs a title"
        )
    item_ids = items["item_id"].to_numpy()

    tables: dict[str, pd.DataFrame] = {"items": items}
    if (p := files["events"]) is not None:
        events = _read(p, "events")
        _check_allowed(events, "event_type", EVENT_TYPES, p)
        events = _drop_unknown(events, "item_id", item_ids, p, "item")
        events = events.sort_values(["user_id", "ts"], kind="stable").reset_index(drop=True)
        tables["events"] = events
    if (p := files["queries"]) is not None:
        queries = _read(p, "queries")
        _check_unique(queries, "query_id", p)
        _check_allowed(queries, "split", SPLITS, p)
        blank = (queries["query_text"].str.strip() == "").to_numpy()
        if blank.any():
            raise DataError(
                f"{p}: column 'query_text' is empty in {int(blank.sum())} row(s); "
                "every query needs a text"
            )
        tables["queries"] = queries
    if (p := files["qrels"]) is not None:
        qrels = _read(p, "qrels")
        query_ids = tables.get("queries", empty_table("queries"))["query_id"].to_numpy()
        qrels = _drop_unknown(qrels, "query_id", query_ids, p, "query")
        qrels = _drop_unknown(qrels, "item_id", item_ids, p, "item")
        dup = qrels.duplicated(["query_id", "item_id"], keep=False).to_numpy()
        if dup.any():
            raise DataError(
                f"{p}: columns 'query_id', 'item_id' must be unique together; "
                f"{int(dup.sum())} rows repeat a pair"
            )
        tables["qrels"] = qrels
    if (p := files["users"]) is not None:
        users = _read(p, "users")
        _check_unique(users, "user_id", p)
        tables["users"] = users
    else:
        ids = [tables[t]["user_id"].to_numpy() for t in ("events", "queries") if t in tables]
        all_ids = np.unique(np.concatenate(ids)) if ids else np.empty(0, np.int64)
        tables["users"] = pd.DataFrame({"user_id": all_ids[all_ids >= 0].astype(np.int64)})

    meta: dict = {}
    meta_path = root / "meta.json"
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(f"{meta_path}: not valid JSON: {exc}") from exc

    counts = ", ".join(f"{len(df)} {name}" for name, df in tables.items())
    logger.info("loaded %s from %s", counts, root)
    return Dataset(
        items=items,
        users=tables["users"],
        events=tables.get("events", empty_table("events")),
        queries=tables.get("queries", empty_table("queries")),
        qrels=tables.get("qrels", empty_table("qrels")),
        meta=meta,
        root=root,
    )


def save_dataset(dataset: Dataset, out_dir: Path, fmt: str = "parquet") -> dict[str, Path]:
    """Write the five tables (and ``meta.json`` when ``dataset.meta`` is set) into
    ``out_dir`` as ``<table>.parquet`` or ``<table>.csv``; returns table -> path.

    Each file is written to a temporary name and renamed into place.

    Raises:
        ValueError: ``fmt`` is not ``"parquet"`` or ``"csv"``.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; allowed: {', '.join(FORMATS)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for name in TABLES:
        df: pd.DataFrame = getattr(dataset, name)
        path = out / f"{name}.{fmt}"
        tmp = out / f".{name}.{fmt}.tmp"
        if fmt == "parquet":
            df.to_parquet(tmp, index=False)
        else:
            df.to_csv(tmp, index=False)
        os.replace(tmp, path)
        written[name] = path
    if dataset.meta:
        tmp = out / ".meta.json.tmp"
        tmp.write_text(json.dumps(dataset.meta, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, out / "meta.json")
    return written
