"""Reading a catalog: bad rows are counted, listed and skipped; unreadable input is refused."""

from __future__ import annotations

import pandas as pd
import pytest

from client.embed.catalog import BAD_REASONS, CatalogError, read_catalog


def test_bad_rows_are_counted_listed_and_skipped(tmp_path, make_catalog) -> None:
    ids = [1, 2, None, 4, 5, 6, 2, 8]
    texts = [
        b"red shirt",
        None,
        b"no id",
        b"   ",
        b"\xff\xfe not utf-8",
        b"blue hat",
        b"dup",
        b"ok",
    ]
    cat = read_catalog(make_catalog(tmp_path / "c.parquet", ids, texts))
    assert cat.item_ids.tolist() == [1, 6, 8]
    assert cat.texts == ["red shirt", "blue hat", "ok"]
    assert cat.bad_counts() == {
        "missing_id": 1,
        "missing_text": 1,
        "empty_text": 1,
        "not_utf8": 1,
        "duplicate_id": 1,
        "bad_op": 0,
    }
    assert [(b.row, b.item_id, b.reason) for b in cat.bad_rows] == [
        (1, 2, "missing_text"),
        (2, None, "missing_id"),
        (3, 4, "empty_text"),
        (4, 5, "not_utf8"),
        (6, 2, "duplicate_id"),
    ]
    assert cat.mode == "full" and cat.n_rows == 8
    assert len(cat.item_ids) + len(cat.bad_rows) == cat.n_rows  # nothing silently dropped


def test_delta_catalog_upserts_and_deletes(tmp_path, make_catalog) -> None:
    path = make_catalog(
        tmp_path / "d.parquet",
        [10, 11, 12, 13],
        ["new item", None, "changed item", "x"],
        op=["upsert", "delete", "upsert", "rename"],
    )
    cat = read_catalog(path)
    assert cat.mode == "delta"
    assert cat.item_ids.tolist() == [10, 12]
    assert cat.deleted_ids.tolist() == [11]
    assert cat.bad_counts()["bad_op"] == 1


def test_items_table_columns_give_the_export_text(tmp_path) -> None:
    from towers.data import item_texts

    items = pd.DataFrame(
        {"item_id": [1, 2], "title": ["Veltro red shirt", None], "brand": ["Veltro", "Acme"]}
    )
    items.to_parquet(tmp_path / "items.parquet")
    cat = read_catalog(tmp_path / "items.parquet")
    assert cat.texts == item_texts(items.head(1))
    assert [b.reason for b in cat.bad_rows] == ["missing_text"]


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (pd.DataFrame({"id": [1], "text": ["a"]}), "no 'item_id' column"),
        (pd.DataFrame({"item_id": [1.5], "text": ["a"]}), "must hold integers"),
        (pd.DataFrame({"item_id": [1], "body": ["a"]}), "neither a 'text' column"),
    ],
)
def test_unusable_catalogs_are_refused(tmp_path, frame, message) -> None:
    frame.to_parquet(tmp_path / "c.parquet")
    with pytest.raises(CatalogError, match=message):
        read_catalog(tmp_path / "c.parquet")


def test_missing_or_unreadable_path(tmp_path) -> None:
    with pytest.raises(CatalogError, match="does not exist"):
        read_catalog(tmp_path / "nope.parquet")
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(CatalogError, match="not a readable Parquet"):
        read_catalog(tmp_path / "bad.parquet")
    assert set(BAD_REASONS) >= {"not_utf8", "duplicate_id"}
