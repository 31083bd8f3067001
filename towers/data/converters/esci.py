"""Amazon Shopping Queries (ESCI) -> a towerserve data set with items, queries and qrels.

Files (from the amazon-science/esci-data repository, in one folder):

``shopping_queries_dataset_examples.parquet``
    One row per judged (query, product): ``query``, ``query_id`` (int), ``product_id``
    (ASIN string), ``product_locale`` (us | es | jp), ``esci_label`` (E | S | C | I),
    ``small_version`` (1 = in the reduced "Task 1" set), ``split`` (train | test); also
    ``example_id`` and ``large_version``, not used.
``shopping_queries_dataset_products.parquet``
    ``product_id``, ``product_locale``, ``product_title``, ``product_description``,
    ``product_bullet_point``, ``product_brand``, ``product_color`` (the last four optional).

Mapping, for one ``locale`` (and only ``small_version`` rows unless told otherwise):
    items: the judged products found in the products file; ``item_id`` numbers their ASINs
    0.. in sorted order (so the same input always gives the same ids) and the ASIN stays in
    the extra string column ``source_id``; ``title`` = product_title (the description's start,
    or the ASIN, when blank), ``brand``, ``color``, ``description`` = product_description, or
    the bullet points when that is empty, without HTML tags and cut to about 300 characters.
    queries: ``query_id`` as in the file, ``query_text`` = query, ``split``: the file's test
    -> "test"; its train -> "train", except the queries whose (case-folded) text hashes below
    ``valid_frac`` -> "valid". A text the file puts in test anywhere is test everywhere, so no
    text is in two splits.
    qrels: E = 3, S = 2, C = 1, I = 0. No events or users.
    Judgments of products missing from the products file, a repeated (query, product) pair
    and queries with a blank text are dropped with a warning.

Limits: both files are read into memory after the locale filter (the us products are about
1.2 M rows, a few GB with their descriptions); only judged products become items.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from towers.data.converters.common import (
    ConvertReport,
    check_fraction,
    clip_text,
    drop_rows,
    fill_titles,
    map_labels,
    text_fractions,
    text_key,
    to_int_column,
    write_dataset,
)
from towers.data.schema import DataError

__all__ = ["ESCI_LABELS", "EXAMPLES_FILE", "PRODUCTS_FILE", "convert_esci"]

logger = logging.getLogger(__name__)

EXAMPLES_FILE = "shopping_queries_dataset_examples.parquet"
PRODUCTS_FILE = "shopping_queries_dataset_products.parquet"
#: ``esci_label`` -> graded label (exact, substitute, complement, irrelevant).
ESCI_LABELS: dict[str, int] = {"E": 3, "S": 2, "C": 1, "I": 0}

_EXAMPLE_COLUMNS = ["query", "query_id", "product_id", "product_locale", "esci_label", "split"]
_PRODUCT_COLUMNS = ["product_id", "product_locale", "product_title"]
_PRODUCT_OPTIONAL = [
    "product_description",
    "product_bullet_point",
    "product_brand",
    "product_color",
]


def convert_esci(
    src: Path,
    out: Path,
    *,
    locale: str = "us",
    small_version: bool = True,
    valid_frac: float = 0.1,
) -> ConvertReport:
    """Convert the ESCI Parquet files in folder ``src`` into a data set in ``out`` (see the
    module doc).

    Args:
        locale: product_locale to keep: "us", "es" or "jp".
        small_version: keep only the reduced set (``small_version == 1``), as in Task 1.
        valid_frac: share of the file's train query texts that become "valid" (0 <= f < 1).

    Raises:
        DataError: a file or required column is missing, a file cannot be read, the locale
            has no examples, or an esci_label is not E, S, C or I.
        ValueError: ``valid_frac`` outside [0, 1).
    """
    check_fraction("valid_frac", valid_frac)
    src = Path(src)
    examples_path, products_path = src / EXAMPLES_FILE, src / PRODUCTS_FILE
    for path, what in ((examples_path, "examples"), (products_path, "products")):
        if not path.is_file():
            raise DataError(
                f"no ESCI {what} file in {src}: expected {path.name} "
                "(from github.com/amazon-science/esci-data, shopping_queries_dataset/)"
            )
    example_cols = _EXAMPLE_COLUMNS + (["small_version"] if small_version else [])
    ex = _read_parquet(examples_path, example_cols, [], locale)
    if small_version:
        ex = ex[ex["small_version"].fillna(0).astype(np.int64).to_numpy() == 1]
    if len(ex) == 0:
        raise DataError(
            f"{examples_path}: no examples for locale {locale!r}"
            + (" in the small version" if small_version else "")
            + f"; locales in the file: {_locales(examples_path)}"
        )
    products = _read_parquet(products_path, _PRODUCT_COLUMNS, _PRODUCT_OPTIONAL, locale)

    report = ConvertReport(
        "esci", src, Path(out), details={"locale": locale, "small_version": small_version}
    )
    ex = ex.reset_index(drop=True)
    labels = map_labels(ex["esci_label"], ESCI_LABELS, examples_path, "esci_label")
    split = ex["split"].astype("str").fillna("").str.strip().str.lower()
    bad = ~split.isin(["train", "test"]).to_numpy()
    if bad.any():
        shown = ", ".join(repr(v) for v in pd.unique(ex.loc[bad, "split"])[:5])
        raise DataError(f"{examples_path}: column 'split' must be train or test; found {shown}")
    ex = ex.assign(
        label=labels,
        split=split,
        query_id=to_int_column(ex["query_id"], examples_path, "query_id"),
        product_id=ex["product_id"].astype("str").str.strip(),
    )
    blank = (ex["query"].astype("str").fillna("").str.strip() == "").to_numpy()
    ex = drop_rows(ex, blank, report, "judgments of queries with a blank text", examples_path)
    products = products.assign(product_id=products["product_id"].astype("str").str.strip())
    dup = products["product_id"].duplicated().to_numpy()
    products = drop_rows(products, dup, report, "repeated products", products_path)
    unknown = ~ex["product_id"].isin(products["product_id"]).to_numpy()
    ex = drop_rows(ex, unknown, report, "judgments of products absent from products", src)
    dup = ex.duplicated(["query_id", "product_id"]).to_numpy()
    ex = drop_rows(ex, dup, report, "repeated (query, product) judgments", examples_path)

    items = _items(products[products["product_id"].isin(ex["product_id"])])
    item_of = pd.Series(items["item_id"].to_numpy(), index=items["source_id"].to_numpy())
    queries = _queries(ex, valid_frac, report)
    qrels = pd.DataFrame(
        {
            "query_id": ex["query_id"].to_numpy(np.int64),
            "item_id": item_of.reindex(ex["product_id"].to_numpy()).to_numpy(np.int64),
            "label": ex["label"].to_numpy(np.int8),
        }
    )
    tables = {"items": items, "queries": queries, "qrels": qrels}
    options = {"locale": locale, "small_version": small_version, "valid_frac": valid_frac}
    return write_dataset(Path(out), tables, report, options)


def _read_parquet(
    path: Path, required: list[str], optional: list[str], locale: str
) -> pd.DataFrame:
    """The ``required`` and present ``optional`` columns of the rows of ``locale``."""
    try:
        names = set(pq.read_schema(path).names)
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file to the user
        raise DataError(f"{path}: cannot read as Parquet: {exc}") from exc
    missing = [c for c in required if c not in names]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(missing)}; expected {', '.join(required)} "
            f"(found: {', '.join(sorted(names)) or 'none'})"
        )
    cols = required + [c for c in optional if c in names]
    try:
        df = pd.read_parquet(path, columns=cols, filters=[("product_locale", "==", locale)])
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"{path}: cannot read columns {', '.join(cols)}: {exc}") from exc
    for col in optional:
        if col not in df.columns:
            df[col] = ""
    return df.reset_index(drop=True)


def _locales(path: Path) -> str:
    locales = pd.read_parquet(path, columns=["product_locale"])["product_locale"]
    return ", ".join(sorted(map(str, locales.dropna().unique()))) or "none"


def _items(products: pd.DataFrame) -> pd.DataFrame:
    """Items numbered 0.. by sorted ASIN."""
    products = products.sort_values("product_id", kind="stable").reset_index(drop=True)
    description = clip_text(products["product_description"])
    bullets = clip_text(products["product_bullet_point"])
    description = description.where(description != "", bullets)
    asin = products["product_id"].astype("str")
    fallback = clip_text(description, 80).where(description != "", asin)
    return pd.DataFrame(
        {
            "item_id": np.arange(len(products), dtype=np.int64),
            "title": fill_titles(products["product_title"], fallback),
            "description": description,
            "brand": products["product_brand"].astype("str").fillna("").str.strip(),
            "color": products["product_color"].astype("str").fillna("").str.strip(),
            "source_id": asin,
        }
    )


def _queries(ex: pd.DataFrame, valid_frac: float, report: ConvertReport) -> pd.DataFrame:
    """One row per query_id; test texts stay test, a hashed share of train texts -> valid."""
    first = (
        ex.assign(is_test=ex["split"].to_numpy() == "test")
        .groupby("query_id", sort=True)
        .agg(query_text=("query", "first"), any_test=("is_test", "any"))
    )
    text = first["query_text"].astype("str").str.strip()
    key = text_key(text)
    test_keys = set(key[first["any_test"]])
    is_test = key.isin(test_keys).to_numpy()
    moved = int((is_test & ~first["any_test"].to_numpy()).sum())
    if moved:
        logger.info("%d train queries share a text with a test query; they go to test", moved)
    report.details["train queries moved to test"] = moved
    valid = ~is_test & (text_fractions(text) < valid_frac)
    split = np.where(is_test, "test", np.where(valid, "valid", "train"))
    return pd.DataFrame(
        {
            "query_id": first.index.to_numpy(np.int64),
            "query_text": text.to_numpy(),
            "split": split,
        }
    )
