"""Wayfair ANnotation DataSet (WANDS) -> a towerserve data set with items, queries and qrels.

Files (the ``dataset/`` folder of github.com/wayfair/WANDS), each with a header line. The
released files are TAB-separated despite the ``.csv`` names; the separator is read from the
header (tab, else comma), so a comma-separated copy works too.

``product.csv``
    ``product_id``, ``product_name`` (required), ``product_class`` (``|``-separated when
    several), ``category hierarchy`` (levels separated by " / "), ``product_description``,
    ``product_features``, ``rating_count``, ``average_rating``, ``review_count``.
``query.csv``
    ``query_id``, ``query`` (required), ``query_class``.
``label.csv``
    ``id``, ``query_id``, ``product_id``, ``label`` in Exact | Partial | Irrelevant.

Mapping:
    items: ``item_id`` = product_id, ``title`` = product_name, ``product_type`` = the first
    product_class, ``department`` = the first level of the category hierarchy,
    ``description`` = product_description cut to about 300 characters. Features, ratings and
    reviews are not carried over.
    queries: ``query_id``, ``query_text`` = query, ``query_class`` kept as an extra column;
    ``split`` by a stable hash of the (case-folded) text: below ``test_frac`` -> test, below
    ``test_frac + valid_frac`` -> valid, else train, so a text is never in two splits.
    qrels: Exact = 3, Partial = 2, Irrelevant = 0. No events or users.
    Repeated ids, labels naming an unknown query or product, and repeated (query, product)
    pairs are dropped with a warning (the first row is kept).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from towers.data.converters.common import (
    ConvertReport,
    check_fraction,
    clip_text,
    drop_rows,
    fill_titles,
    map_labels,
    read_csv_checked,
    require_columns,
    sniff_separator,
    split_by_text,
    to_int_column,
    write_dataset,
)
from towers.data.schema import DataError

__all__ = ["FILES", "WANDS_LABELS", "convert_wands"]

logger = logging.getLogger(__name__)

#: File -> required columns.
FILES: dict[str, tuple[str, ...]] = {
    "product.csv": ("product_id", "product_name"),
    "query.csv": ("query_id", "query"),
    "label.csv": ("query_id", "product_id", "label"),
}
#: WANDS label -> graded label (there is no complement grade).
WANDS_LABELS: dict[str, int] = {"Exact": 3, "Partial": 2, "Irrelevant": 0}


def convert_wands(
    src: Path,
    out: Path,
    *,
    valid_frac: float = 0.1,
    test_frac: float = 0.1,
) -> ConvertReport:
    """Convert the WANDS files in folder ``src`` into a data set in ``out`` (see the module
    doc).

    Args:
        valid_frac: share of distinct query texts that become "valid".
        test_frac: share of distinct query texts that become "test".

    Raises:
        DataError: a file or required column is missing, a file cannot be parsed, an id is not
            an integer, or a label is not Exact, Partial or Irrelevant.
        ValueError: a fraction outside [0, 1), or the two summing to 1 or more.
    """
    check_fraction("valid_frac", valid_frac)
    check_fraction("test_frac", test_frac)
    check_fraction("valid_frac + test_frac", valid_frac + test_frac)
    src = Path(src)
    report = ConvertReport("wands", src, Path(out))
    frames = {name: _read(src, name) for name in FILES}

    products, p_path = frames["product.csv"], src / "product.csv"
    products = products.assign(item_id=to_int_column(products["product_id"], p_path, "product_id"))
    products = drop_rows(
        products, products["item_id"].duplicated().to_numpy(), report, "repeated products", p_path
    )
    queries, q_path = frames["query.csv"], src / "query.csv"
    queries = queries.assign(query_id=to_int_column(queries["query_id"], q_path, "query_id"))
    queries = drop_rows(
        queries, queries["query_id"].duplicated().to_numpy(), report, "repeated queries", q_path
    )
    blank = (queries["query"].str.strip() == "").to_numpy()
    queries = drop_rows(queries, blank, report, "queries with a blank text", q_path)

    labels, l_path = frames["label.csv"], src / "label.csv"
    qrels = pd.DataFrame(
        {
            "query_id": to_int_column(labels["query_id"], l_path, "query_id"),
            "item_id": to_int_column(labels["product_id"], l_path, "product_id"),
            "label": map_labels(labels["label"], WANDS_LABELS, l_path, "label"),
        }
    )
    unknown = ~qrels["query_id"].isin(queries["query_id"]).to_numpy()
    qrels = drop_rows(qrels, unknown, report, "labels of unknown queries", l_path)
    unknown = ~qrels["item_id"].isin(products["item_id"]).to_numpy()
    qrels = drop_rows(qrels, unknown, report, "labels of unknown products", l_path)
    dup = qrels.duplicated(["query_id", "item_id"]).to_numpy()
    qrels = drop_rows(qrels, dup, report, "repeated (query, product) labels", l_path)

    text = queries["query"].str.strip()
    tables = {
        "items": _items(products),
        "queries": pd.DataFrame(
            {
                "query_id": queries["query_id"].to_numpy(np.int64),
                "query_text": text,
                "split": split_by_text(text, valid_frac, test_frac),
                "query_class": queries.get("query_class", pd.Series("", index=queries.index)),
            }
        ),
        "qrels": qrels,
    }
    options = {"valid_frac": valid_frac, "test_frac": test_frac}
    return write_dataset(Path(out), tables, report, options)


def _read(src: Path, name: str) -> pd.DataFrame:
    """One WANDS file as text columns (blank cells ""), separator sniffed from the header."""
    path = src / name
    if not path.is_file():
        raise DataError(
            f"no WANDS {name} in {src}: expected product.csv, query.csv and label.csv "
            "(the dataset/ folder of github.com/wayfair/WANDS)"
        )
    sep = sniff_separator(path)
    how = "tab" if sep == "\t" else "comma"
    df = read_csv_checked(
        path,
        f"{how}-separated columns {', '.join(FILES[name])}, ... with a header",
        sep=sep,
        dtype=str,
        keep_default_na=False,
    )
    df = df.rename(columns=lambda c: str(c).strip())
    require_columns(df, FILES[name], path)
    logger.info("%s: %d rows (%s-separated)", path, len(df), how)
    return df


def _items(products: pd.DataFrame) -> pd.DataFrame:
    def col(name: str) -> pd.Series:
        if name not in products.columns:
            return pd.Series("", index=products.index, dtype="str")
        return products[name].astype("str").fillna("")

    return pd.DataFrame(
        {
            "item_id": products["item_id"].to_numpy(np.int64),
            "title": fill_titles(col("product_name"), "product " + products["product_id"]),
            "description": clip_text(col("product_description")),
            "department": col("category hierarchy").str.split(" / ").str[0].fillna("").str.strip(),
            "product_type": col("product_class").str.split("|").str[0].fillna("").str.strip(),
        }
    )
