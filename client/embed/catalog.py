"""Reading the catalog a re-embedding job embeds: Parquet in, valid rows and bad rows out.

A catalog is one Parquet file or a folder of them with an integer ``item_id`` column and
either a ``text`` column (the text to embed, string or binary) or the project's items table
columns (``title``, ``product_type``, ...: the text is then towers.data.item_texts, exactly
what ``towerserve export`` embeds). A *delta* catalog also has an ``op`` column: ``upsert``
(new or changed item: embedded) or ``delete`` (its id goes to the deleted ids; no text needed).

Bad rows are counted by reason, listed and skipped, never a crash and never silent:
``missing_id`` (null id), ``missing_text`` (null text or title), ``empty_text`` (only
whitespace), ``not_utf8`` (bytes that are not UTF-8), ``duplicate_id`` (an id seen on an
earlier row: the first row wins), ``bad_op`` (an ``op`` other than upsert or delete).
A file that cannot be a catalog at all (unreadable, no id column, non-integer ids) raises
:class:`CatalogError` saying what is wrong and what is allowed.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

log = logging.getLogger(__name__)

__all__ = ["BAD_REASONS", "BadRow", "Catalog", "CatalogError", "read_catalog"]

#: Why a row was skipped (module docstring).
BAD_REASONS = ("missing_id", "missing_text", "empty_text", "not_utf8", "duplicate_id", "bad_op")
OPS = ("upsert", "delete")


class CatalogError(ValueError):
    """The input cannot be read as a catalog at all (as opposed to a bad row)."""


@dataclass(frozen=True)
class BadRow:
    """One skipped row: its 0-based position in the catalog, its id (None if missing), why."""

    row: int
    item_id: int | None
    reason: str


@dataclass
class Catalog:
    """The rows to embed (``item_ids`` int64 ``[N]`` and ``texts``, in catalog order), the
    ids a delta deletes, the skipped rows, and a sha256 ``fingerprint`` of the input files."""

    item_ids: np.ndarray
    texts: list[str]
    deleted_ids: np.ndarray
    bad_rows: list[BadRow]
    fingerprint: str
    mode: str  # "full" or "delta"
    n_rows: int = 0
    counts: dict[str, int] = field(default_factory=dict)

    def bad_counts(self) -> dict[str, int]:
        """Skipped rows per reason (every reason of :data:`BAD_REASONS`, 0 included)."""
        got = Counter(b.reason for b in self.bad_rows)
        return {r: int(got.get(r, 0)) for r in BAD_REASONS}


def _files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(path.rglob("*.parquet"))
        if files:
            return files
        raise CatalogError(f"{path} holds no *.parquet files")
    raise CatalogError(f"{path} does not exist: give a Parquet file or a folder of them")


def _fingerprint(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.name.encode())
        with f.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _decode(values: list[object]) -> list[tuple[str | None, str | None]]:
    """``(text, reason)`` per value: bytes decoded as UTF-8, str kept, None missing."""
    out: list[tuple[str | None, str | None]] = []
    for v in values:
        if v is None:
            out.append((None, "missing_text"))
            continue
        if isinstance(v, bytes):
            try:
                v = v.decode("utf-8")
            except UnicodeDecodeError:
                out.append((None, "not_utf8"))
                continue
        text = str(v)
        out.append((text, None) if text.strip() else (None, "empty_text"))
    return out


def _raw(table: pa.Table, name: str) -> list[object]:
    """A column's values; strings as their raw bytes (a file may carry invalid UTF-8 in a
    string column), nulls as None."""
    column = table.column(name)
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        column = column.cast(pa.large_binary())
    return column.to_pylist()


def read_catalog(path: Path, *, id_column: str = "item_id", text_column: str = "text") -> Catalog:
    """Read and validate the catalog at ``path`` (module docstring)."""
    path = Path(path)
    files = _files(path)
    try:
        table = pa.concat_tables([pq.read_table(f) for f in files], promote_options="default")
    except (pa.ArrowException, OSError) as exc:
        raise CatalogError(f"{path} is not a readable Parquet catalog: {exc}") from exc
    names = table.column_names
    if id_column not in names:
        raise CatalogError(
            f"{path} has no {id_column!r} column (columns: {', '.join(names)}): a catalog "
            "needs integer item ids (--id-column names another column)"
        )
    if not pa.types.is_integer(table.schema.field(id_column).type):
        raise CatalogError(
            f"{path}: column {id_column!r} must hold integers, got "
            f"{table.schema.field(id_column).type}"
        )
    ids = table.column(id_column).to_pylist()
    n = len(ids)
    ops: list[object] = table.column("op").to_pylist() if "op" in names else ["upsert"] * n
    if text_column in names:
        decoded = _decode(_raw(table, text_column))
    elif "title" in names:
        from towers.data import item_texts

        frame = table.to_pandas()
        titles = _decode(_raw(table, "title"))
        texts = item_texts(frame.assign(title=[t or "" for t, _ in titles]))
        decoded = [(texts[i], None) if r is None else (None, r) for i, (_, r) in enumerate(titles)]
    else:
        raise CatalogError(
            f"{path} has neither a {text_column!r} column nor the items table's 'title' column "
            f"(columns: {', '.join(names)}); --text-column names the text column"
        )
    keep_ids: list[int] = []
    keep_texts: list[str] = []
    deleted: list[int] = []
    bad: list[BadRow] = []
    seen: set[int] = set()
    for row, (item_id, op, (text, reason)) in enumerate(zip(ids, ops, decoded, strict=True)):
        if item_id is None:
            bad.append(BadRow(row, None, "missing_id"))
            continue
        item_id = int(item_id)
        if item_id in seen:
            bad.append(BadRow(row, item_id, "duplicate_id"))
            continue
        if op not in OPS:
            bad.append(BadRow(row, item_id, "bad_op"))
            continue
        seen.add(item_id)
        if op == "delete":
            deleted.append(item_id)
        elif reason is not None:
            bad.append(BadRow(row, item_id, reason))
        else:
            assert text is not None
            keep_ids.append(item_id)
            keep_texts.append(text)
    catalog = Catalog(
        item_ids=np.asarray(keep_ids, dtype=np.int64),
        texts=keep_texts,
        deleted_ids=np.asarray(deleted, dtype=np.int64),
        bad_rows=bad,
        fingerprint=_fingerprint(files),
        mode="delta" if "op" in names else "full",
        n_rows=n,
    )
    if bad:
        log.warning(
            "catalog %s: %d of %d rows skipped (%s)",
            path,
            len(bad),
            n,
            ", ".join(f"{k} {v}" for k, v in catalog.bad_counts().items() if v),
        )
    return catalog
