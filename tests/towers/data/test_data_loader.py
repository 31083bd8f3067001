"""Loading data set directories: round trips, defaults, and every error path."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from towers.data import (
    DataError,
    Dataset,
    GenerateConfig,
    cut_ts_at,
    empty_table,
    generate,
    load_dataset,
    save_dataset,
    time_split,
)


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = GenerateConfig(n_items=400, n_users=40, n_queries=80, seed=5)
    return generate(cfg, tmp_path_factory.mktemp("gen")).root


def _write(root: Path, name: str, text: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / name
    path.write_text(text)
    return path


ITEMS_CSV = "item_id,title\n1,Red mug\n2,Blue mug\n"


def _assert_same(a: Dataset, b: Dataset) -> None:
    for name in ("items", "users", "events", "queries", "qrels"):
        pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name), obj=name)


def test_loads_generated_parquet(generated: Path) -> None:
    ds = load_dataset(generated)
    assert len(ds.items) == 400 and len(ds.users) == 40 and len(ds.queries) == 80
    assert ds.meta["counts"]["events"] == len(ds.events)
    assert ds.items["item_id"].dtype == np.int64
    assert ds.qrels["label"].dtype == np.int8
    assert ds.queries["brand"].isna().any()  # unmentioned attributes stay missing
    assert ds.root == generated
    assert set(ds.queries_in("test")["split"]) == {"test"}
    with pytest.raises(ValueError, match="train, valid, test"):
        ds.queries_in("dev")


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_round_trip(generated: Path, tmp_path: Path, fmt: str) -> None:
    ds = load_dataset(generated)
    written = save_dataset(ds, tmp_path, fmt=fmt)
    assert written["items"] == tmp_path / f"items.{fmt}"
    again = load_dataset(tmp_path)
    _assert_same(ds, again)
    assert again.meta == ds.meta


def test_csv_gz_is_read(tmp_path: Path) -> None:
    pd.DataFrame({"item_id": [3], "title": ["Lamp"]}).to_csv(tmp_path / "items.csv.gz", index=False)
    assert load_dataset(tmp_path).items["title"].tolist() == ["Lamp"]


def test_minimal_user_data_gets_defaults(tmp_path: Path) -> None:
    _write(tmp_path, "items.csv", ITEMS_CSV)
    ds = load_dataset(tmp_path)
    assert ds.items["brand"].tolist() == ["", ""]
    assert ds.items["price"].isna().all()
    for name in ("users", "events", "queries", "qrels"):
        df = getattr(ds, name)
        assert len(df) == 0
        assert list(df.columns) == list(empty_table(name).columns)
    assert ds.meta == {}


def test_optional_columns_and_derived_users(tmp_path: Path) -> None:
    _write(tmp_path, "items.csv", ITEMS_CSV)
    _write(tmp_path, "events.csv", "user_id,item_id,ts\n7,2,100\n7,1,50\n9,1,60\n")
    _write(tmp_path, "queries.csv", "query_id,query_text,brand\n1,red mug,\n2,acme mug,Acme\n")
    ds = load_dataset(tmp_path)
    assert ds.events["event_type"].tolist() == ["view"] * 3
    assert ds.events["session_id"].tolist() == [-1] * 3
    assert ds.events["ts"].tolist() == [50, 100, 60]  # sorted by user, then ts
    assert ds.users["user_id"].tolist() == [7, 9]
    assert ds.queries["split"].tolist() == ["test", "test"]
    assert ds.queries["user_id"].tolist() == [-1, -1]
    assert ds.queries["brand"].isna().tolist() == [True, False]


def test_unknown_items_are_dropped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _write(tmp_path, "items.csv", ITEMS_CSV)
    _write(tmp_path, "events.csv", "user_id,item_id,ts\n1,1,10\n1,99,11\n1,98,12\n")
    _write(tmp_path, "queries.csv", "query_id,query_text\n5,mug\n")
    _write(tmp_path, "qrels.csv", "query_id,item_id,label\n5,1,3\n5,42,0\n6,1,2\n")
    with caplog.at_level(logging.WARNING, logger="towers.data.loader"):
        ds = load_dataset(tmp_path)
    assert ds.events["item_id"].tolist() == [1]
    assert ds.qrels[["query_id", "item_id"]].values.tolist() == [[5, 1]]
    text = caplog.text
    assert "events.csv: dropped 2 of 3 rows whose item_id names an unknown item" in text
    assert "qrels.csv: dropped 1 of 3 rows whose query_id names an unknown query" in text
    assert "qrels.csv: dropped 1 of 2 rows whose item_id names an unknown item" in text


@pytest.mark.parametrize(
    ("files", "needles"),
    [
        ({}, ["no items file", "items.parquet, items.csv"]),
        ({"items.csv": "item_id,name\n1,x\n"}, ["items.csv", "title", "item_id, title"]),
        ({"items.csv": "item_id,title\nabc,x\n"}, ["items.csv", "'item_id'", "integers", "abc"]),
        ({"items.csv": "item_id,title\n1.5,x\n"}, ["items.csv", "'item_id'", "1.5"]),
        ({"items.csv": "item_id,title\n,x\n"}, ["items.csv", "'item_id'", "integers"]),
        ({"items.csv": "item_id,title\n1,x\n1,y\n"}, ["items.csv", "'item_id'", "unique"]),
        ({"items.csv": "item_id,title\n1,\n"}, ["items.csv", "'title'", "empty"]),
        ({"items.csv": "item_id,title,price\n1,x,cheap\n"}, ["items.csv", "'price'", "numbers"]),
        (
            {"events.csv": "user_id,item_id,ts,event_type\n1,1,5,like\n"},
            ["events.csv", "'event_type'", "view, click, add_to_cart, purchase", "'like'"],
        ),
        (
            {"events.csv": "user_id,item_id,ts\n1,1,yesterday\n"},
            ["events.csv", "'ts'", "integers"],
        ),
        (
            {"events.csv": "user_id,item_id\n1,1\n"},
            ["events.csv", "ts", "user_id, item_id, ts"],
        ),
        (
            {"queries.csv": "query_id,query_text,split\n1,mug,dev\n"},
            ["queries.csv", "'split'", "train, valid, test", "'dev'"],
        ),
        (
            {"queries.csv": "query_id,query_text\n1,mug\n1,cup\n"},
            ["queries.csv", "'query_id'", "unique"],
        ),
        ({"queries.csv": "query_id,query_text\n1, \n"}, ["queries.csv", "'query_text'", "empty"]),
        (
            {
                "queries.csv": "query_id,query_text\n1,mug\n",
                "qrels.csv": "query_id,item_id,label\n1,1,4\n",
            },
            ["qrels.csv", "'label'", "0, 1, 2 or 3", "4"],
        ),
        (
            {
                "queries.csv": "query_id,query_text\n1,mug\n",
                "qrels.csv": "query_id,item_id,label\n1,1,-1\n",
            },
            ["qrels.csv", "'label'", "0, 1, 2 or 3"],
        ),
        (
            {
                "queries.csv": "query_id,query_text\n1,mug\n",
                "qrels.csv": "query_id,item_id,label\n1,1,3\n1,1,2\n",
            },
            ["qrels.csv", "'query_id', 'item_id'", "unique together"],
        ),
        ({"users.csv": "user_id\n4\n4\n"}, ["users.csv", "'user_id'", "unique"]),
        ({"users.csv": "id\n4\n"}, ["users.csv", "user_id"]),
        ({"meta.json": "{not json"}, ["meta.json", "not valid JSON"]),
    ],
)
def test_errors_name_file_and_column(
    tmp_path: Path, files: dict[str, str], needles: list[str]
) -> None:
    if "items.csv" not in files and files:
        files = {"items.csv": ITEMS_CSV, **files}
    for name, text in files.items():
        _write(tmp_path, name, text)
    tmp_path.mkdir(exist_ok=True)
    with pytest.raises(DataError) as info:
        load_dataset(tmp_path)
    message = str(info.value)
    for needle in needles:
        assert needle in message, (needle, message)
    assert isinstance(info.value, ValueError)


def test_unreadable_parquet_and_not_a_directory(tmp_path: Path) -> None:
    _write(tmp_path, "items.parquet", "this is not parquet")
    with pytest.raises(DataError, match="items.parquet: cannot read items table"):
        load_dataset(tmp_path)
    with pytest.raises(DataError, match="not a directory"):
        load_dataset(tmp_path / "items.parquet")


def test_parquet_with_float_ids(tmp_path: Path) -> None:
    pd.DataFrame({"item_id": [1.0, 2.0], "title": ["a", "b"]}).to_parquet(
        tmp_path / "items.parquet"
    )
    assert load_dataset(tmp_path).items["item_id"].tolist() == [1, 2]
    pd.DataFrame({"item_id": [1.0, np.nan], "title": ["a", "b"]}).to_parquet(
        tmp_path / "items.parquet"
    )
    with pytest.raises(DataError, match="'item_id' must hold integers"):
        load_dataset(tmp_path)


def test_save_rejects_unknown_format(generated: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="parquet, csv"):
        save_dataset(load_dataset(generated), tmp_path, fmt="xlsx")


def test_time_split_and_cut() -> None:
    events = pd.DataFrame({"user_id": [1, 1, 2, 2], "item_id": [1, 2, 3, 4], "ts": [0, 10, 5, 20]})
    cut = cut_ts_at(events, 0.5)
    assert cut == 10
    before, after = time_split(events, cut)
    assert before["ts"].tolist() == [0, 5] and after["ts"].tolist() == [10, 20]
    assert before.index.tolist() == [0, 1]
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        cut_ts_at(events, 1.0)
    with pytest.raises(ValueError, match="empty"):
        cut_ts_at(events.iloc[:0], 0.5)


def test_generated_events_split_by_time(generated: Path) -> None:
    ds = load_dataset(generated)
    cut = cut_ts_at(ds.events, 0.75)
    before, after = time_split(ds.events, cut)
    assert len(before) + len(after) == len(ds.events)
    assert before["ts"].max() < cut <= after["ts"].min()
    assert 0.6 < len(before) / len(ds.events) < 0.9
