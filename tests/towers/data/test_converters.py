"""Converters from MovieLens, ESCI and WANDS files: tiny fixtures in each real layout,
written here, converted, loaded back and checked; plus the error paths and the CLI."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from client.cli import app
from towers.data import DataError, load_dataset
from towers.data.converters import (
    FORMATS,
    convert,
    convert_esci,
    convert_movielens,
    convert_wands,
    format_options,
)
from towers.data.converters.common import clip_text, hash_fraction, sniff_separator
from towers.data.converters.movielens import GENRES_100K

# --------------------------------------------------------------------------- MovieLens


def _write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


def _flags(*names: str) -> str:
    return "|".join("1" if g in names else "0" for g in GENRES_100K)


# user 1: 1000 -> 2000 (gap 1000 s, same session) -> 5000 (gap 3000 s, new session);
# user 2: one rating, and one of movie 99 that is not in the movies file (dropped).
U_DATA = "1\t2\t3\t2000\n2\t1\t2\t100\n1\t1\t5\t1000\n1\t3\t4\t5000\n2\t99\t5\t200\n"
TOY_GENRES = _flags("Animation", "Children's", "Comedy")
U_ITEM = (
    f"1|Toy Story (1995)|01-Jan-1995||http://x|{TOY_GENRES}\n"
    f"2|GoldenEye (1995)|01-Jan-1995||http://x|{_flags('Action', 'Adventure', 'Thriller')}\n"
    f"3|Café Noir|01-Jan-1994||http://x|{_flags('unknown')}\n"
)
U_USER = "1|24|M|technician|85711\n2|53|F|other|T8H1N\n3|23|M|writer|32067\n"


def _ml_100k(root: Path, users: bool = True) -> Path:
    _write(root / "u.data", U_DATA)
    _write(root / "u.item", U_ITEM, encoding="latin-1")
    if users:
        _write(root / "u.user", U_USER)
    return root


def test_movielens_100k(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    src = _ml_100k(tmp_path / "ml-100k")
    with caplog.at_level(logging.WARNING):
        report = convert_movielens(src, tmp_path / "out")
    assert "dropped 1 of 5 rows: ratings of movies absent" in caplog.text
    assert report.dropped["ratings of movies absent from the movies file"] == 1
    assert report.details["layout"] == "100k"
    ds = load_dataset(tmp_path / "out")
    assert report.rows["events"] == len(ds.events) == 4

    items = ds.items.set_index("item_id")
    assert items.loc[1, "title"] == "Toy Story (1995)"
    assert items.loc[1, "product_type"] == "animation"
    assert items.loc[1, "description"] == "Animation, Children's, Comedy (1995)"
    assert items.loc[2, "product_type"] == "action"
    assert items.loc[3, "title"] == "Café Noir"  # latin-1 decoded
    assert items.loc[3, "product_type"] == "" and items.loc[3, "description"] == ""
    assert set(ds.items["department"]) == {"Movies"}

    ev = ds.events
    assert ev[["user_id", "item_id", "ts"]].values.tolist() == [
        [1, 1, 1000],
        [1, 2, 2000],
        [1, 3, 5000],
        [2, 1, 100],
    ]
    assert ev["event_type"].tolist() == ["click", "view", "click", "view"]
    assert ev["session_id"].tolist() == [0, 0, 1, 2]
    assert ev["rating"].tolist() == [5.0, 3.0, 4.0, 2.0]

    users = ds.users.set_index("user_id")
    assert users.index.tolist() == [1, 2, 3]  # user 3 only in u.user
    assert users.loc[2, "zip"] == "T8H1N" and users.loc[2, "age"] == 53
    assert users.loc[1, "occupation"] == "technician" and users.loc[1, "gender"] == "M"
    assert ds.meta["options"]["rating_threshold"] == 4.0
    assert len(ds.queries) == 0 and len(ds.qrels) == 0


def test_movielens_1m_found_one_folder_down(tmp_path: Path) -> None:
    root = tmp_path / "download" / "ml-1m"
    _write(root / "ratings.dat", "1::1::5::978300760\n1::2::3::978302109\n2::2::4::978300000\n")
    _write(
        root / "movies.dat",
        "1::Toy Story (1995)::Animation|Children's|Comedy\n"
        "2::Star Wars: Episode IV - A New Hope (1977)::Action|Sci-Fi\n",
        encoding="latin-1",
    )
    _write(root / "users.dat", "1::F::1::10::48067\n2::M::56::16::70072\n")
    report = convert_movielens(tmp_path / "download", tmp_path / "out", session_gap_s=600)
    assert report.details["layout"] == "1m"
    ds = load_dataset(tmp_path / "out")
    items = ds.items.set_index("item_id")
    assert items.loc[2, "title"] == "Star Wars: Episode IV - A New Hope (1977)"
    assert items.loc[2, "description"] == "Action, Sci-Fi (1977)"
    assert ds.events["session_id"].tolist() == [0, 1, 2]  # gap 1349 s > 600 s
    assert ds.events["event_type"].tolist() == ["click", "view", "click"]
    users = ds.users.set_index("user_id")
    assert users.loc[1, "occupation"] == "K-12 student" and users.loc[1, "age"] == 1
    assert users.loc[2, "occupation"] == "self-employed" and users.loc[2, "gender"] == "M"


def test_movielens_latest_csv_and_threshold(tmp_path: Path) -> None:
    src = tmp_path / "ml-latest-small"
    _write(
        src / "movies.csv",
        "movieId,title,genres\n"
        '3,"American President, The (1995)",Comedy|Drama|Romance\n'
        "4,Some Film,(no genres listed)\n",
    )
    _write(
        src / "ratings.csv",
        "userId,movieId,rating,timestamp\n7,3,4.0,10\n7,4,4.5,20\n8,3,3.5,30\n",
    )
    report = convert("movielens", src, tmp_path / "out", rating_threshold=4.5)
    assert report.details["layout"] == "latest"
    ds = load_dataset(tmp_path / "out")
    items = ds.items.set_index("item_id")
    assert items.loc[3, "title"] == "American President, The (1995)"
    assert items.loc[3, "product_type"] == "comedy"
    assert items.loc[4, "product_type"] == "" and items.loc[4, "description"] == ""
    assert ds.events["event_type"].tolist() == ["view", "click", "view"]
    assert ds.events["session_id"].tolist() == [0, 0, 1]
    assert ds.users["user_id"].tolist() == [7, 8]
    assert list(ds.users.columns) == ["user_id"]


def test_movielens_explicit_layout_and_sessions_are_vectorised(tmp_path: Path) -> None:
    # a user with many ratings, every other gap longer than 30 minutes
    n = 200
    ts = np.cumsum(np.where(np.arange(n) % 2 == 0, 60, 4000))
    lines = "".join(f"5\t1\t{1 + i % 5}\t{t}\n" for i, t in enumerate(ts))
    _write(tmp_path / "u.data", lines)
    _write(tmp_path / "u.item", U_ITEM, encoding="latin-1")
    convert_movielens(tmp_path, tmp_path / "out", layout="100k")
    ev = load_dataset(tmp_path / "out").events
    expected = np.cumsum(np.r_[1, np.diff(ts) > 1800]) - 1
    assert ev["session_id"].tolist() == expected.tolist()
    assert (ev["event_type"] == "click").sum() == sum(1 + i % 5 >= 4 for i in range(n))


@pytest.mark.parametrize(
    ("files", "kwargs", "needles"),
    [
        ({}, {}, ["no MovieLens ratings file in", "u.data, ratings.dat or ratings.csv"]),
        ({"u.data": U_DATA}, {}, ["no MovieLens movies file", "u.item"]),
        ({"u.data": U_DATA}, {"layout": "1m"}, ["no MovieLens ratings file", "ratings.dat"]),
        ({"u.data": "1\t1\t5\n", "u.item": U_ITEM}, {}, ["u.data", "expected 4", "line 1"]),
        ({"u.data": "1\t1\tfive\t9\n", "u.item": U_ITEM}, {}, ["u.data", "'rating'", "five"]),
        ({"u.data": U_DATA, "u.item": "1|Toy Story|x\n"}, {}, ["u.item", "24", "genre flags"]),
        (
            {"ratings.csv": "userId,movieId,rating\n1,1,4\n", "movies.csv": "movieId,title\n"},
            {},
            ["ratings.csv", "missing column(s) timestamp", "userId, movieId, rating, timestamp"],
        ),
        (
            {"ratings.csv": "userId,movieId,rating,timestamp\n", "movies.csv": "id,title\n"},
            {},
            ["movies.csv", "movieId", "genres"],
        ),
        ({"ratings.dat": "1::1::5::9\n", "movies.dat": "1::Toy\n"}, {}, ["movies.dat", "3"]),
    ],
)
def test_movielens_errors(
    tmp_path: Path, files: dict[str, str], kwargs: dict[str, str], needles: list[str]
) -> None:
    tmp_path.mkdir(exist_ok=True)
    for name, text in files.items():
        _write(tmp_path / name, text, encoding="latin-1")
    with pytest.raises(DataError) as info:
        convert_movielens(tmp_path, tmp_path / "out", **kwargs)
    for needle in needles:
        assert needle in str(info.value), (needle, str(info.value))


def test_movielens_bad_options(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="auto, 100k, 1m, latest"):
        convert_movielens(tmp_path, tmp_path / "out", layout="20m")
    with pytest.raises(DataError, match="not a directory"):
        convert_movielens(tmp_path / "nope", tmp_path / "out")


# --------------------------------------------------------------------------- ESCI

LONG = "word " * 120


def _esci(root: Path, n_train: int = 40) -> Path:
    rows = [
        # query, query_id, product_id, locale, label, small, split
        ("red mug", 1, "B003", "us", "E", 1, "train"),
        ("red mug", 1, "B001", "us", "I", 1, "train"),
        ("red mug", 1, "B999", "us", "S", 1, "train"),  # product not in the products file
        ("blue cup", 2, "B002", "us", "S", 1, "test"),
        ("Blue  Cup", 4, "B002", "us", "C", 1, "train"),  # same text as a test query
        ("jp query", 5, "B010", "jp", "E", 1, "train"),
        ("large only", 6, "B001", "us", "E", 0, "train"),
    ]
    rows += [(f"query {i}", 100 + i, "B001", "us", "E", 1, "train") for i in range(n_train)]
    cols = ["query", "query_id", "product_id", "product_locale", "esci_label"]
    ex = pd.DataFrame(rows, columns=[*cols, "small_version", "split"])
    ex.insert(0, "example_id", np.arange(len(ex)))
    ex["large_version"] = 1
    root.mkdir(parents=True, exist_ok=True)
    ex.to_parquet(root / "shopping_queries_dataset_examples.parquet", index=False)
    products = pd.DataFrame(
        {
            "product_id": ["B002", "B001", "B003", "B010", "B004"],
            "product_title": ["Blue cup", "Red mug", "", "JP thing", "Unjudged"],
            "product_description": ["", "<p>Big &amp; red</p>", LONG, "x", "y"],
            "product_bullet_point": ["Blue <b>cup</b>\nHolds tea", "bp", None, None, None],
            "product_brand": ["Acme", "Mugco", None, "J", "K"],
            "product_color": ["blue", "red", None, "", ""],
            "product_locale": ["us", "us", "us", "jp", "us"],
        }
    )
    products.to_parquet(root / "shopping_queries_dataset_products.parquet", index=False)
    return root


def _no_text_in_two_splits(queries: pd.DataFrame) -> None:
    key = queries["query_text"].str.casefold().str.split().str.join(" ")
    assert (pd.Series(queries["split"].to_numpy()).groupby(key.to_numpy()).nunique() == 1).all()


def test_esci(tmp_path: Path) -> None:
    src = _esci(tmp_path / "esci")
    report = convert_esci(src, tmp_path / "out", valid_frac=0.25)
    assert report.dropped["judgments of products absent from products"] == 1
    ds = load_dataset(tmp_path / "out")

    # judged us products only, numbered by sorted ASIN
    assert ds.items["source_id"].tolist() == ["B001", "B002", "B003"]
    assert ds.items["item_id"].tolist() == [0, 1, 2]
    items = ds.items.set_index("source_id")
    assert items.loc["B001", "description"] == "Big & red"
    assert items.loc["B002", "description"] == "Blue cup Holds tea"  # from the bullets
    assert items.loc["B001", "brand"] == "Mugco" and items.loc["B001", "color"] == "red"
    long = items.loc["B003", "description"]
    assert long.endswith("...") and len(long) <= 303 and "word word" in long
    assert items.loc["B003", "title"].startswith("word word")  # blank title: description

    queries = ds.queries.set_index("query_id")
    assert 5 not in queries.index and 6 not in queries.index  # jp, large-only
    assert queries.loc[1, "query_text"] == "red mug"
    assert queries.loc[2, "split"] == "test"
    assert queries.loc[4, "split"] == "test"  # shares its text with a test query
    assert report.details["train queries moved to test"] == 1
    splits = ds.queries["split"].value_counts()
    assert 0 < splits.get("valid", 0) < splits["train"]
    _no_text_in_two_splits(ds.queries)

    labels = {(q, s): int(lab) for q, s, lab in ds.qrels[["query_id", "item_id", "label"]].values}
    assert labels[(1, 2)] == 3 and labels[(1, 0)] == 0
    assert labels[(2, 1)] == 2 and labels[(4, 1)] == 1
    assert len(ds.events) == 0

    # deterministic: same input, same output
    convert_esci(src, tmp_path / "again", valid_frac=0.25)
    again = load_dataset(tmp_path / "again")
    pd.testing.assert_frame_equal(ds.queries, again.queries)
    pd.testing.assert_frame_equal(ds.items, again.items)


def test_esci_all_versions_and_locale(tmp_path: Path) -> None:
    src = _esci(tmp_path / "esci", n_train=0)
    convert_esci(src, tmp_path / "all", small_version=False, valid_frac=0.0)
    assert 6 in load_dataset(tmp_path / "all").queries["query_id"].tolist()
    convert_esci(src, tmp_path / "jp", locale="jp")
    jp = load_dataset(tmp_path / "jp")
    assert jp.items["source_id"].tolist() == ["B010"]
    assert jp.queries["query_text"].tolist() == ["jp query"]
    with pytest.raises(DataError, match="no examples for locale 'fr'.*locales in the file: jp, us"):
        convert_esci(src, tmp_path / "fr", locale="fr")


def test_esci_errors(tmp_path: Path) -> None:
    src = _esci(tmp_path / "esci", n_train=0)
    path = src / "shopping_queries_dataset_examples.parquet"
    ex = pd.read_parquet(path)
    ex.drop(columns=["esci_label"]).to_parquet(path)
    with pytest.raises(DataError, match="examples.parquet: missing column.*esci_label"):
        convert_esci(src, tmp_path / "out")
    ex.assign(esci_label="X").to_parquet(path)
    with pytest.raises(DataError, match="'esci_label'.*outside E, S, C, I.*'X'"):
        convert_esci(src, tmp_path / "out")
    path.write_text("not parquet")
    with pytest.raises(DataError, match="examples.parquet: cannot read as Parquet"):
        convert_esci(src, tmp_path / "out")
    (src / "shopping_queries_dataset_products.parquet").unlink()
    with pytest.raises(DataError, match="no ESCI products file.*products.parquet"):
        convert_esci(src, tmp_path / "out")
    with pytest.raises(ValueError, match="valid_frac"):
        convert_esci(src, tmp_path / "out", valid_frac=1.5)


# --------------------------------------------------------------------------- WANDS

PRODUCT_COLUMNS = [
    "product_id",
    "product_name",
    "product_class",
    "category hierarchy",
    "product_description",
    "product_features",
    "rating_count",
    "average_rating",
    "review_count",
]
PRODUCTS = [
    ["0", "solid wood platform bed", "Beds", "Furniture / Bedroom Furniture / Beds", "good, deep"]
    + ["color:brown|size:queen", "15", "4.5", "15"],
    ["1", "armchair", "Accent Chairs|Recliners", "Furniture / Living Room", 'a "soft" chair']
    + ["", "", "", ""],
    ["2", "lamp", "", "", LONG, "", "", "", ""],
]


def _wands(root: Path, sep: str = "\t", n_extra: int = 30) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(PRODUCTS, columns=PRODUCT_COLUMNS).to_csv(
        root / "product.csv", sep=sep, index=False
    )
    queries = [[0, "salon chair", "Massage Chairs"], [1, "smart coffee table", "Coffee Tables"]]
    queries += [[10 + i, f"wands query {i}", ""] for i in range(n_extra)]
    queries.append([99, "Salon  Chair", ""])  # same text as query 0 once case-folded
    pd.DataFrame(queries, columns=["query_id", "query", "query_class"]).to_csv(
        root / "query.csv", sep=sep, index=False
    )
    labels = [[0, 0, 0, "Irrelevant"], [1, 0, 1, "Exact"], [2, 1, 2, "Partial"]]
    labels += [[3, 1, 42, "Exact"], [4, 0, 1, "Partial"]]  # unknown product; repeated pair
    pd.DataFrame(labels, columns=["id", "query_id", "product_id", "label"]).to_csv(
        root / "label.csv", sep=sep, index=False
    )
    return root


def test_wands_tab_separated(tmp_path: Path) -> None:
    src = _wands(tmp_path / "WANDS" / "dataset")
    assert sniff_separator(src / "product.csv") == "\t"
    report = convert_wands(src, tmp_path / "out")
    assert report.dropped["labels of unknown products"] == 1
    assert report.dropped["repeated (query, product) labels"] == 1
    ds = load_dataset(tmp_path / "out")

    items = ds.items.set_index("item_id")
    assert items.loc[0, "title"] == "solid wood platform bed"
    assert items.loc[0, "product_type"] == "Beds" and items.loc[0, "department"] == "Furniture"
    assert items.loc[0, "description"] == "good, deep"
    assert items.loc[1, "product_type"] == "Accent Chairs"
    assert items.loc[1, "description"] == 'a "soft" chair'
    assert items.loc[2, "product_type"] == "" and items.loc[2, "department"] == ""
    assert len(items.loc[2, "description"]) <= 303

    queries = ds.queries.set_index("query_id")
    assert queries.loc[1, "query_text"] == "smart coffee table"
    assert queries.loc[0, "query_class"] == "Massage Chairs"
    assert queries.loc[0, "split"] == queries.loc[99, "split"]
    assert set(ds.queries["split"]) == {"train", "valid", "test"}
    _no_text_in_two_splits(ds.queries)

    labels = ds.qrels.sort_values(["query_id", "item_id"])[["query_id", "item_id", "label"]]
    assert labels.values.tolist() == [[0, 0, 0], [0, 1, 3], [1, 2, 2]]


def test_wands_comma_separated_gives_the_same_data_set(tmp_path: Path) -> None:
    convert_wands(_wands(tmp_path / "tab"), tmp_path / "out_tab")
    src = _wands(tmp_path / "comma", sep=",")
    assert sniff_separator(src / "product.csv") == ","
    convert("wands", src, tmp_path / "out_comma")
    a, b = load_dataset(tmp_path / "out_tab"), load_dataset(tmp_path / "out_comma")
    for name in ("items", "queries", "qrels"):
        pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name), obj=name)


@pytest.mark.parametrize(
    ("edit", "needles"),
    [
        (lambda r: (r / "label.csv").unlink(), ["no WANDS label.csv", "query.csv"]),
        (
            lambda r: (r / "product.csv").write_text("product_id\tname\n1\tx\n"),
            ["product.csv", "missing column(s) product_name", "(found: product_id, name)"],
        ),
        (
            lambda r: (r / "label.csv").write_text(
                "id\tquery_id\tproduct_id\tlabel\n0\t0\t0\tMaybe\n"
            ),
            ["label.csv", "'label'", "Exact, Partial, Irrelevant", "'Maybe'"],
        ),
        (
            lambda r: (r / "query.csv").write_text("query_id\tquery\nq1\tchair\n"),
            ["query.csv", "'query_id'", "integers", "'q1'"],
        ),
    ],
)
def test_wands_errors(tmp_path: Path, edit, needles: list[str]) -> None:  # type: ignore[no-untyped-def]
    src = _wands(tmp_path, n_extra=0)
    edit(src)
    with pytest.raises(DataError) as info:
        convert_wands(src, tmp_path / "out")
    for needle in needles:
        assert needle in str(info.value), (needle, str(info.value))


def test_wands_fractions_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="valid_frac \\+ test_frac"):
        convert_wands(tmp_path, tmp_path / "out", valid_frac=0.5, test_frac=0.5)


# --------------------------------------------------------------------------- registry, helpers


def test_registry() -> None:
    assert set(FORMATS) == {"movielens", "esci", "wands"}
    assert format_options("esci") == {"locale": "us", "small_version": True, "valid_frac": 0.1}
    with pytest.raises(
        ValueError, match="unknown data format 'csv'; allowed: movielens, esci, wands"
    ):
        convert("csv", Path("."), Path("out"))
    with pytest.raises(ValueError, match="rating_threshold do not apply.*valid_frac, test_frac"):
        convert("wands", Path("."), Path("out"), rating_threshold=3.0)


def test_helpers() -> None:
    # stable across runs and processes (unlike hash()): a fixed value for a fixed text
    assert hash_fraction(["red mug"])[0] == hash_fraction(["red mug"])[0]
    assert 0.0 <= hash_fraction(["red mug"])[0] < 1.0
    assert round(float(hash_fraction([""])[0]), 6) == 0.852442  # sha1("") = da39a3ee...
    texts = pd.Series(["<b>a</b>&nbsp;b", None, "x" * 400, "one two three"])
    out = clip_text(texts, n_chars=9)
    assert out.tolist() == ["a b", "", "x" * 9 + "...", "one two..."]


# --------------------------------------------------------------------------- CLI


def test_cli_convert(tmp_path: Path) -> None:
    src = _wands(tmp_path / "wands", n_extra=0)
    runner = CliRunner()
    args = ["data", "convert", "--format", "wands", "--input", str(src), "--out"]
    result = runner.invoke(app, [*args, str(tmp_path / "out"), "--valid-frac", "0.2"])
    assert result.exit_code == 0, result.output
    assert "items" in result.output and "qrels" in result.output
    assert load_dataset(tmp_path / "out").meta["options"]["valid_frac"] == 0.2

    result = runner.invoke(app, [*args, str(tmp_path / "out2"), "--rating-threshold", "3"])
    assert result.exit_code == 1
    assert "do not apply to format 'wands'" in " ".join(result.output.split())

    (src / "label.csv").unlink()
    result = runner.invoke(app, [*args, str(tmp_path / "out3")])
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert "no WANDS label.csv" in text and "Traceback" not in text

    result = runner.invoke(
        app, ["data", "convert", "--format", "csv", "--input", "x", "--out", "y"]
    )
    assert result.exit_code == 1 and "allowed: movielens, esci, wands" in result.output


def test_cli_convert_movielens_and_esci(tmp_path: Path) -> None:
    runner = CliRunner()
    ml = _ml_100k(tmp_path / "ml")
    base = ["data", "convert", "--input"]
    result = runner.invoke(
        app, [*base, str(ml), "--out", str(tmp_path / "o1"), "--format", "movielens"]
        + ["--rating-threshold", "5", "--layout", "100k"]
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert load_dataset(tmp_path / "o1").events["event_type"].tolist().count("click") == 1
    esci = _esci(tmp_path / "esci", n_train=0)
    result = runner.invoke(
        app, [*base, str(esci), "--out", str(tmp_path / "o2"), "--format", "esci"]
        + ["--all-examples", "--locale", "us"]
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert 6 in load_dataset(tmp_path / "o2").queries["query_id"].tolist()
