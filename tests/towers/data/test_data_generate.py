"""The synthetic data generator: determinism, schema, taxonomy, labels, splits and drift."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from towers.data import (
    COMPLEMENTS,
    DEPARTMENTS,
    EVENT_TYPES,
    PRODUCT_TYPES,
    START_TS,
    GenerateConfig,
    Grader,
    QueryAttributes,
    generate,
    grade,
    item_texts,
)
from towers.data.gen_queries import MAX_PER_LABEL, N_NEGATIVES
from towers.data.generate import STRUCTURE_SETTINGS

SMALL = GenerateConfig(n_items=3000, n_users=300, n_queries=600, seed=11)

DTYPES = {
    "items": {
        "item_id": "int64",
        "title": "str",
        "description": "str",
        "department": "str",
        "product_type": "str",
        "brand": "str",
        "color": "str",
        "material": "str",
        "size": "str",
        "price": "float64",
        "price_band": "str",
    },
    "events": {
        "user_id": "int64",
        "item_id": "int64",
        "event_type": "str",
        "ts": "int64",
        "session_id": "int64",
    },
    "queries": {
        "query_id": "int64",
        "query_text": "str",
        "user_id": "int64",
        "ts": "int64",
        "split": "str",
        "product_type": "str",
        "brand": "str",
        "color": "str",
        "material": "str",
        "price_band": "str",
    },
    "qrels": {"query_id": "int64", "item_id": "int64", "label": "int8"},
}


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(SMALL, tmp_path_factory.mktemp("small")).root


def _tables(root: Path) -> dict[str, pd.DataFrame]:
    return {t: pd.read_parquet(root / f"{t}.parquet") for t in (*DTYPES, "users")}


def _digests(root: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.iterdir())}


def test_taxonomy_size_and_relations() -> None:
    assert len(DEPARTMENTS) >= 12
    assert len(PRODUCT_TYPES) >= 150
    names = {t.name for t in PRODUCT_TYPES}
    for t in PRODUCT_TYPES:
        assert 1 <= len(t.complements) <= 3
        assert set(t.complements) <= names - {t.name}
    for d in DEPARTMENTS:
        assert 8 <= len(d.brands) <= 15
    assert COMPLEMENTS["smartphone"] == ("phone case", "screen protector", "charger")


def test_same_seed_gives_identical_files(small: Path, tmp_path: Path) -> None:
    again = generate(SMALL, tmp_path / "again").root
    assert _digests(again) == _digests(small)
    other = generate(SMALL.model_copy(update={"seed": 12}), tmp_path / "other").root
    assert _digests(other)["items.parquet"] != _digests(small)["items.parquet"]


def test_counts_schema_and_meta(small: Path) -> None:
    tables = _tables(small)
    for name, dtypes in DTYPES.items():
        df = tables[name]
        assert list(df.columns) == list(dtypes), name
        assert {c: str(t) for c, t in df.dtypes.items()} == dtypes, name
    items, events, queries, qrels = (tables[t] for t in ("items", "events", "queries", "qrels"))
    assert len(items) == SMALL.n_items and items["item_id"].is_unique
    assert len(tables["users"]) == SMALL.n_users
    assert len(queries) == SMALL.n_queries and queries["query_id"].is_unique
    # Every product type is present when there are more items than types.
    assert items["product_type"].nunique() == len(PRODUCT_TYPES)
    assert (items["title"].str.len() > 0).all() and (items["description"].str.len() > 0).all()
    assert set(items["price_band"]) == {"budget", "mid", "premium", "luxury"}
    assert (items["price"] > 0).all()
    assert not items["title"].str.contains("  ").any()

    assert 0.7 * SMALL.events_per_user < len(events) / SMALL.n_users < 1.3 * SMALL.events_per_user
    end_ts = START_TS + SMALL.days * 86_400
    assert events["ts"].between(START_TS, end_ts - 1).all()
    assert queries["ts"].between(START_TS, end_ts - 1).all()
    assert events["item_id"].isin(items["item_id"]).all()
    counts = events["event_type"].value_counts()
    assert [counts[t] for t in EVENT_TYPES] == sorted(counts, reverse=True)  # funnel
    assert events.groupby("session_id")["user_id"].nunique().max() == 1
    assert ((queries["user_id"] == -1).mean()) < 0.25
    assert queries["user_id"].max() < SMALL.n_users

    meta = json.loads((small / "meta.json").read_text())
    assert meta["counts"]["events"] == len(events)
    # Structure settings (all off here) are left out, so meta.json is as before they existed.
    off = set(STRUCTURE_SETTINGS)
    assert meta["config"] == {k: v for k, v in SMALL.model_dump().items() if k not in off}
    assert meta["time_range"]["start_ts"] == START_TS == 1_767_225_600


def test_splits_by_distinct_text(small: Path) -> None:
    queries = _tables(small)["queries"]
    splits_per_text = queries.groupby("query_text")["split"].nunique()
    assert (splits_per_text == 1).all()
    share = queries.drop_duplicates("query_text")["split"].value_counts(normalize=True)
    assert share["train"] == pytest.approx(0.7, abs=0.03)
    assert share["valid"] == pytest.approx(0.1, abs=0.03)
    assert share["test"] == pytest.approx(0.2, abs=0.03)


def test_query_text_mentions_its_attributes(small: Path) -> None:
    queries = _tables(small)["queries"]
    for row in queries.itertuples():
        assert row.product_type in row.query_text
        for value in (row.brand, row.color, row.material):
            if isinstance(value, str):
                assert value.lower() in row.query_text
    assert queries["brand"].notna().any() and queries["price_band"].notna().any()


def test_label_semantics(small: Path) -> None:
    tables = _tables(small)
    items, queries, qrels = tables["items"], tables["queries"], tables["qrels"]
    assert set(qrels["label"].unique()) <= {0, 1, 2, 3}
    assert not qrels.duplicated(["query_id", "item_id"]).any()
    merged = qrels.merge(queries, on="query_id", suffixes=("", "_q")).merge(
        items, on="item_id", suffixes=("_q", "")
    )
    mentioned = ["brand_q", "color_q", "material_q", "price_band_q"]
    same_type = merged["product_type"] == merged["product_type_q"]
    all_match = np.ones(len(merged), dtype=bool)
    for col in mentioned:
        q = merged[col]
        all_match &= (q.isna() | (q.str.lower() == merged[col[:-2]].str.lower())).to_numpy()
    is_comp = np.array(
        [i in COMPLEMENTS[q] for q, i in zip(merged["product_type_q"], merged["product_type"])]
    )
    label = merged["label"].to_numpy()
    assert (same_type[label == 3]).all() and all_match[label == 3].all()
    assert (same_type[label == 2]).all() and not all_match[label == 2].any()
    assert is_comp[label == 1].all() and not same_type[label == 1].any()
    assert not (same_type | is_comp)[label == 0].any()

    per_query = qrels.groupby(["query_id", "label"]).size().unstack(fill_value=0)
    assert (per_query[[1, 2, 3]] <= MAX_PER_LABEL).all().all()
    assert (per_query[0] == N_NEGATIVES).all()
    assert (per_query[3] >= 1).all()  # the target item matches its own query


def test_qrels_agree_with_grade(small: Path) -> None:
    tables = _tables(small)
    items, queries, qrels = tables["items"], tables["queries"], tables["qrels"]
    grader = Grader(items)
    for row in queries.head(40).itertuples():
        query = QueryAttributes.from_row(row._asdict())
        labels = grader.labels(query)
        assert labels.dtype == np.int8 and len(labels) == len(items)
        mine = qrels[qrels["query_id"] == row.query_id]
        rows = items.index[items["item_id"].isin(mine["item_id"])]
        expected = mine.set_index("item_id").loc[items.loc[rows, "item_id"], "label"].to_numpy()
        np.testing.assert_array_equal(labels[rows], expected)
        for label in (1, 2, 3):
            n_all = int((labels == label).sum())
            assert (mine["label"] == label).sum() == min(n_all, MAX_PER_LABEL)


def test_grade_small_table() -> None:
    items = pd.DataFrame(
        {
            "item_id": [10, 11, 12, 13, 14],
            "product_type": ["t-shirt", "t-shirt", "jeans", "shorts", "laptop"],
            "brand": ["Veltro", "Marlowe", "Veltro", "Veltro", "Kyro"],
            "color": ["red", "red", "blue", "red", "grey"],
        }
    )
    q = QueryAttributes(product_type="T-Shirt", brand="veltro", color="red")
    np.testing.assert_array_equal(grade(items, q), [3, 2, 1, 1, 0])
    only_type = QueryAttributes(product_type="t-shirt")
    np.testing.assert_array_equal(grade(items, only_type), [3, 3, 1, 1, 0])
    # material is not a column: a query that mentions it never matches exactly.
    np.testing.assert_array_equal(
        grade(items, QueryAttributes("t-shirt", material="cotton")), [2, 2, 1, 1, 0]
    )
    with pytest.raises(ValueError, match="product_type"):
        QueryAttributes.from_row({"product_type": float("nan"), "brand": "Veltro"})


def _tv_first_last_week(root: Path) -> float:
    tables = _tables(root)
    ev = tables["events"].merge(tables["items"][["item_id", "product_type"]], on="item_id")
    week = (ev["ts"] - START_TS) // (7 * 86_400)
    last = week.max()
    ev = ev.assign(period=np.where(week == 0, "first", np.where(week == last, "last", "")))
    ev = ev[ev["period"] != ""]
    dist = ev.groupby(["user_id", "period"])["product_type"].value_counts(normalize=True)
    wide = dist.unstack("period", fill_value=0.0)
    users = ev.groupby(["user_id", "period"]).size().unstack(fill_value=0)
    keep = users[(users["first"] >= 10) & (users["last"] >= 10)].index
    wide = wide[wide.index.get_level_values("user_id").isin(keep)]
    tv = 0.5 * (wide["first"] - wide["last"]).abs().groupby("user_id").sum()
    return float(tv.mean())


def test_preferences_drift_over_time(small: Path, tmp_path: Path) -> None:
    drifting = _tv_first_last_week(small)
    still_cfg = SMALL.model_copy(update={"pref_drift": 0.0, "seasonal_strength": 0.0})
    still = _tv_first_last_week(generate(still_cfg, tmp_path).root)
    assert drifting > 0.6
    assert drifting > still + 0.12, (drifting, still)


def test_item_texts_fit_the_encoder(small: Path, tokenizer) -> None:  # noqa: ANN001
    items = _tables(small)["items"]
    texts = item_texts(items)
    assert len(texts) == len(items)
    row = items.iloc[0]
    assert texts[0].startswith(row["title"] + " | " + row["product_type"])
    lengths = [len(e.ids) for e in tokenizer.encode_batch(texts)]
    assert max(lengths) <= 48


def test_item_texts_skip_empty_fields() -> None:
    items = pd.DataFrame(
        {
            "title": ["Red mug", "Plain thing"],
            "product_type": ["coffee mug", ""],
            "brand": ["Casamia", None],
            "color": ["red", ""],
            "price_band": ["mid", ""],
        }
    )
    assert item_texts(items) == [
        "Red mug | coffee mug | Casamia, red, mid price",
        "Plain thing",
    ]
    assert item_texts(items.iloc[:0]) == []
    with pytest.raises(ValueError, match="title"):
        item_texts(items.drop(columns="title"))


@pytest.mark.parametrize(
    ("field", "value"),
    [("n_items", 10), ("n_users", 0), ("days", 3), ("pref_drift", 1.5), ("seed", -1)],
)
def test_config_rejects_out_of_range(field: str, value: object) -> None:
    with pytest.raises(ValidationError, match=field):
        GenerateConfig(**{field: value})
    assert issubclass(ValidationError, ValueError)


def test_config_rejects_unknown_field() -> None:
    with pytest.raises(ValidationError, match="n_itemz"):
        GenerateConfig(n_itemz=5)


def _peak_share(events: pd.DataFrame, min_events: int = 15) -> float:
    """Mean, over items with at least ``min_events`` events, of the share of an item's events
    that fall in its busiest 3 days."""
    day = (events["ts"] - START_TS) // 86_400
    per_day = pd.crosstab(events["item_id"], day)
    busy = per_day[per_day.sum(axis=1) >= min_events]
    peak = busy.T.rolling(3, min_periods=1).sum().max()
    return float((peak / busy.sum(axis=1)).mean())


def test_trending_items_concentrate_their_events_in_time(tmp_path: Path) -> None:
    # The same users and catalog with and without trends: with them, an item's events bunch
    # around its launch, so what is popular changes over the weeks.
    flat = generate(SMALL.model_copy(update={"trend_share": 0.0}), tmp_path / "flat")
    trend = generate(SMALL.model_copy(update={"trend_share": 0.5}), tmp_path / "trend")
    share_flat = _peak_share(pd.read_parquet(flat.events))
    share_trend = _peak_share(pd.read_parquet(trend.events))
    assert share_trend > share_flat + 0.05
    with pytest.raises(ValidationError):
        GenerateConfig(trend_share=1.5)
    with pytest.raises(ValidationError):
        GenerateConfig(trend_days=0)
