"""MovieLens ratings (GroupLens) -> a towerserve data set with items, users and events.

Three layouts, detected from the folder (or one folder below it) or chosen with ``layout``:

``100k`` (ml-100k)
    ``u.data``: tab-separated ``user id, item id, rating, timestamp``, no header.
    ``u.item``: ``|``-separated, latin-1: ``movie id | title | release date | video release
    date | IMDb URL`` then 19 genre flags (:data:`GENRES_100K`). ``u.user`` (optional):
    ``user id | age | gender | occupation | zip``.
``1m`` (ml-1m)
    ``ratings.dat``: ``UserID::MovieID::Rating::Timestamp``. ``movies.dat`` (latin-1):
    ``MovieID::Title::Genres`` with ``|``-separated genres. ``users.dat`` (optional):
    ``UserID::Gender::Age::Occupation::Zip-code`` (age is the bucket's lower bound, 1 = under
    18; occupation codes become the README's names).
``latest`` (ml-latest, ml-latest-small, ml-20m, ml-25m, ml-32m)
    ``ratings.csv`` (``userId,movieId,rating,timestamp``) and ``movies.csv``
    (``movieId,title,genres``), both with a header; titles may hold quoted commas.

Mapping:
    items: ``item_id`` = movie id, ``title`` = the title as given (with its year),
    ``product_type`` = first genre, lower-cased, ``department`` = "Movies", ``description`` =
    genres joined by ", " plus "(1995)" when a year ends the title. Placeholder genres
    ("unknown", "(no genres listed)") count as none.
    events: one per rating, sorted by user then time: ``ts`` = timestamp, ``event_type`` =
    "click" when ``rating >= rating_threshold`` (the positives training predicts) else
    "view" (history only), ``session_id`` numbered 0.. over the whole table in (user, ts)
    order, a new session starting at a user's first rating and after every gap longer than
    ``session_gap_s``; the rating is kept as an extra float column ``rating``.
    users: every user id in the ratings or the users file, plus ``age`` (int, -1 if unknown),
    ``gender``, ``occupation``, ``zip`` (strings, "" if unknown) when a users file is there.
    No queries or qrels. Ratings naming a movie absent from the movies file are dropped with
    a warning; a repeated movie id keeps its first row.

Limits: the whole ratings file is read into memory (measured: 5 M ratings peak at 1.4 GB
and take 8 s on 2 cores, so ml-25m needs about 6 GB and a minute).
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from towers.data.converters.common import (
    ConvertReport,
    drop_rows,
    fill_titles,
    find_file,
    read_csv_checked,
    require_columns,
    to_int_column,
    write_dataset,
)
from towers.data.schema import DataError

__all__ = ["GENRES_100K", "LAYOUTS", "convert_movielens"]

logger = logging.getLogger(__name__)

#: Layout -> (ratings file, movies file, optional users file).
LAYOUTS: dict[str, tuple[str, str, str | None]] = {
    "100k": ("u.data", "u.item", "u.user"),
    "1m": ("ratings.dat", "movies.dat", "users.dat"),
    "latest": ("ratings.csv", "movies.csv", None),
}

#: Genre flag columns of ml-100k ``u.item``, in file order.
GENRES_100K: tuple[str, ...] = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip

#: ml-1m ``users.dat`` occupation codes (its README).
OCCUPATIONS_1M: tuple[str, ...] = (
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student",
    "customer service", "doctor/health care", "executive/managerial", "farmer", "homemaker",
    "K-12 student", "lawyer", "programmer", "retired", "sales/marketing", "scientist",
    "self-employed", "technician/engineer", "tradesman/craftsman", "unemployed", "writer",
)  # fmt: skip

_PLACEHOLDER_GENRES = ("unknown", "(no genres listed)")
_RATING_COLUMNS = ["user_id", "item_id", "rating", "ts"]


def convert_movielens(
    src: Path,
    out: Path,
    *,
    layout: str = "auto",
    rating_threshold: float = 4.0,
    session_gap_s: int = 1800,
) -> ConvertReport:
    """Convert the MovieLens folder ``src`` into a data set in ``out`` (see the module doc).

    Args:
        layout: "auto" (detect), "100k", "1m" or "latest".
        rating_threshold: ratings at or above it become "click" events (positives).
        session_gap_s: a gap longer than this between a user's ratings starts a new session.

    Raises:
        DataError: no ratings or movies file, or one that cannot be parsed.
        ValueError: an unknown layout or a negative session gap.
    """
    if layout != "auto" and layout not in LAYOUTS:
        raise ValueError(
            f"unknown MovieLens layout {layout!r}; allowed: auto, {', '.join(LAYOUTS)}"
        )
    if session_gap_s < 0:
        raise ValueError(f"session_gap_s must be >= 0, got {session_gap_s}")
    root, layout = _locate(Path(src), layout)
    ratings_name, movies_name, users_name = LAYOUTS[layout]
    movies_path = find_file(root, [movies_name])
    if movies_path is None:
        raise DataError(
            f"no MovieLens movies file in {root}: the {layout} layout needs {movies_name} "
            f"next to {ratings_name}"
        )
    users_path = find_file(root, [users_name]) if users_name else None
    logger.info("reading MovieLens %s layout from %s", layout, root)
    read = {"100k": _read_100k, "1m": _read_1m, "latest": _read_latest}[layout]
    ratings_path = root / ratings_name
    ratings, movies, users = read(ratings_path, movies_path, users_path)

    report = ConvertReport("movielens", Path(src), Path(out), details={"layout": layout})
    dup = movies["item_id"].duplicated().to_numpy()
    movies = drop_rows(movies, dup, report, "repeated movie ids", movies_path)
    unknown = ~ratings["item_id"].isin(movies["item_id"]).to_numpy()
    ratings = drop_rows(
        ratings, unknown, report, "ratings of movies absent from the movies file", ratings_path
    )

    events = ratings_to_events(ratings, rating_threshold, session_gap_s)
    tables = {"items": movies_to_items(movies), "events": events, "users": _users(events, users)}
    options = {
        "layout": layout,
        "rating_threshold": rating_threshold,
        "session_gap_s": session_gap_s,
    }
    return write_dataset(Path(out), tables, report, options)


def _locate(src: Path, layout: str) -> tuple[Path, str]:
    """The folder holding the ratings file (``src`` or one folder below it) and its layout."""
    if not src.is_dir():
        raise DataError(f"{src}: not a directory; point it at the unpacked MovieLens folder")
    wanted = list(LAYOUTS) if layout == "auto" else [layout]
    expected = ", ".join(LAYOUTS[w][0] for w in wanted[:-1])
    expected = f"{expected} or {LAYOUTS[wanted[-1]][0]}" if expected else LAYOUTS[wanted[0]][0]
    for w in wanted:
        if (src / LAYOUTS[w][0]).is_file():
            return src, w
    below = []
    for d in sorted(p for p in src.iterdir() if p.is_dir()):
        found = [w for w in wanted if (d / LAYOUTS[w][0]).is_file()]
        if found:
            below.append((d, found[0]))
    if len(below) == 1:
        logger.info("using MovieLens folder %s", below[0][0])
        return below[0]
    if len(below) > 1:
        names = ", ".join(str(d) for d, _ in below)
        raise DataError(f"several MovieLens folders in {src} ({names}); pass one of them")
    raise DataError(f"no MovieLens ratings file in {src}: expected {expected}")


def _read_100k(
    ratings_path: Path, movies_path: Path, users_path: Path | None
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame | None]:
    raw = _read_fields(ratings_path, "\t", _RATING_COLUMNS, "tab-separated")
    fields = 5 + len(GENRES_100K)
    items = read_csv_checked(
        movies_path,
        f"{fields} '|'-separated fields (movie id | title | dates | URL | genre flags)",
        encodings=("latin-1",),
        sep="|",
        header=None,
        dtype=str,
        keep_default_na=False,
        quoting=csv.QUOTE_NONE,
    )
    if items.shape[1] < fields:
        raise DataError(
            f"{movies_path}: expected {fields} '|'-separated fields (movie id | title | release "
            f"date | video release date | IMDb URL | 19 genre flags), found {items.shape[1]}"
        )
    flags = items.iloc[:, 5:fields].apply(lambda c: pd.to_numeric(c, errors="coerce")).fillna(0)
    genres = pd.Series("", index=items.index, dtype="str")
    for j, name in enumerate(GENRES_100K):
        on = flags.iloc[:, j].to_numpy() > 0
        genres[on] = (genres[on] + "|" + name).str.lstrip("|")
    movies = pd.DataFrame(
        {
            "item_id": to_int_column(items.iloc[:, 0], movies_path, "movie id"),
            "title": items.iloc[:, 1],
            "genres": genres,
        }
    )
    users = None
    if users_path is not None:
        names = ["user_id", "age", "gender", "occupation", "zip"]
        users = _read_fields(users_path, "|", names, "'|'-separated", numeric=("user_id", "age"))
    return _check_ratings(raw, ratings_path), movies, users


def _read_1m(
    ratings_path: Path, movies_path: Path, users_path: Path | None
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame | None]:
    raw = _read_fields(ratings_path, "::", _RATING_COLUMNS, "'::'-separated")
    movies = _read_fields(
        movies_path, "::", ["item_id", "title", "genres"], "'::'-separated", numeric=("item_id",)
    )
    users = None
    if users_path is not None:
        names = ["user_id", "gender", "age", "occupation", "zip"]
        users = _read_fields(
            users_path, "::", names, "'::'-separated", numeric=("user_id", "age", "occupation")
        )
        code = users["occupation"].to_numpy()
        ok = (code >= 0) & (code < len(OCCUPATIONS_1M))
        names_arr = np.asarray(OCCUPATIONS_1M, dtype=object)
        users["occupation"] = np.where(ok, names_arr[np.clip(code, 0, len(OCCUPATIONS_1M) - 1)], "")
    return _check_ratings(raw, ratings_path), movies, users


def _read_latest(
    ratings_path: Path, movies_path: Path, users_path: Path | None
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame | None]:
    cols = ["userId", "movieId", "rating", "timestamp"]
    what = "comma-separated userId,movieId,rating,timestamp with a header"
    header = read_csv_checked(ratings_path, what, nrows=0)
    require_columns(header, cols, ratings_path)
    raw = read_csv_checked(ratings_path, what, usecols=cols)
    raw = raw[cols].set_axis(_RATING_COLUMNS, axis=1)
    items = read_csv_checked(
        movies_path, "comma-separated movieId,title,genres with a header", dtype=str,
        keep_default_na=False,
    )  # fmt: skip
    require_columns(items, ["movieId", "title", "genres"], movies_path)
    movies = pd.DataFrame(
        {
            "item_id": to_int_column(items["movieId"], movies_path, "movieId"),
            "title": items["title"],
            "genres": items["genres"],
        }
    )
    return _check_ratings(raw, ratings_path), movies, None


def _read_fields(
    path: Path,
    sep: str,
    names: list[str],
    how: str,
    numeric: tuple[str, ...] | None = None,
) -> pd.DataFrame:
    """A header-less file of ``len(names)`` ``sep``-separated fields per line, as strings
    (latin-1); the ``numeric`` columns (default: all) as int64, or float64 for ``rating``.

    Split in pandas rather than with ``read_csv(sep="::")``, which needs the slow Python
    engine; the last field takes any extra separators (a title may hold ``:``)."""
    try:
        lines = pd.Series(path.read_text(encoding="latin-1").splitlines(), dtype="str")
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc}") from exc
    lines = lines[lines.str.strip() != ""].reset_index(drop=True)
    expected = f"{len(names)} {how} fields per line ({', '.join(names)})"
    if len(lines) == 0:
        raise DataError(f"{path}: the file is empty; expected {expected}")
    parts = lines.str.split(sep, n=len(names) - 1, expand=True)
    parts = parts.reindex(columns=range(len(names)))
    short = parts.isna().any(axis=1).to_numpy()
    if short.any():
        i = int(np.flatnonzero(short)[0])
        raise DataError(f"{path}: expected {expected}; line {i + 1}: {lines.iloc[i]!r}")
    df = parts.set_axis(names, axis=1)
    for col in numeric if numeric is not None else names:
        if col == "rating":
            df[col] = _to_float(df[col], path, col)
        else:
            df[col] = to_int_column(df[col].str.strip(), path, col)
    return df


def _to_float(values: pd.Series, path: Path, column: str) -> pd.Series:
    num = pd.to_numeric(values, errors="coerce")
    bad = num.isna().to_numpy()
    if bad.any():
        shown = ", ".join(repr(v) for v in values[bad].head(3).tolist())
        raise DataError(f"{path}: column {column!r} must hold numbers; e.g. {shown}")
    return num.astype(np.float64)


def _check_ratings(raw: pd.DataFrame, path: Path) -> pd.DataFrame:
    """user_id, item_id, ts as int64 and rating as float64."""
    out = pd.DataFrame(index=raw.index)
    for col in _RATING_COLUMNS:
        if col == "rating":
            out[col] = _to_float(raw[col], path, col)
        elif pd.api.types.is_integer_dtype(raw[col].dtype):
            out[col] = raw[col].astype(np.int64)
        else:
            out[col] = to_int_column(raw[col], path, col)
    return out.reset_index(drop=True)


def ratings_to_events(
    ratings: pd.DataFrame, rating_threshold: float, session_gap_s: int
) -> pd.DataFrame:
    """Events sorted by (user_id, ts): click/view by threshold, sessions split at gaps."""
    ev = ratings.sort_values(["user_id", "ts"], kind="stable").reset_index(drop=True)
    users = ev["user_id"].to_numpy()
    ts = ev["ts"].to_numpy()
    new = np.ones(len(ev), dtype=bool)
    new[1:] = (users[1:] != users[:-1]) | (np.diff(ts) > session_gap_s)
    return pd.DataFrame(
        {
            "user_id": users,
            "item_id": ev["item_id"].to_numpy(),
            "event_type": np.where(ev["rating"].to_numpy() >= rating_threshold, "click", "view"),
            "ts": ts,
            "session_id": np.cumsum(new) - 1,
            "rating": ev["rating"].to_numpy(np.float64),
        }
    )


def movies_to_items(movies: pd.DataFrame) -> pd.DataFrame:
    """Items from ``item_id, title, genres`` (``|``-joined genres)."""
    movies = movies.reset_index(drop=True)
    index = movies.index
    genre = movies["genres"].astype("str").fillna("").str.split("|").explode().str.strip()
    genre = genre[(genre != "") & ~genre.isin(_PLACEHOLDER_GENRES)]
    by_movie = genre.groupby(level=0, sort=False)
    listed = by_movie.agg(", ".join).reindex(index, fill_value="").astype("str")
    first = by_movie.first().reindex(index, fill_value="").astype("str")
    title = movies["title"].astype("str").fillna("").str.strip()
    year = title.str.extract(r"\((\d{4})\)\s*$", expand=False)
    year_text = ("(" + year + ")").fillna("")
    description = (listed + " " + year_text).str.strip()
    return pd.DataFrame(
        {
            "item_id": movies["item_id"].to_numpy(np.int64),
            "title": fill_titles(title, "movie " + movies["item_id"].astype("str")),
            "description": description,
            "department": "Movies",
            "product_type": first.str.lower(),
        }
    )


def _users(events: pd.DataFrame, users: pd.DataFrame | None) -> pd.DataFrame:
    """Every user id of the events or the users file, with the file's columns."""
    ids = events["user_id"].to_numpy(np.int64)
    if users is None:
        return pd.DataFrame({"user_id": np.unique(ids)})
    users = users.drop_duplicates("user_id")
    all_ids = np.union1d(ids, users["user_id"].to_numpy(np.int64))
    table = pd.DataFrame({"user_id": all_ids}).merge(users, on="user_id", how="left")
    table["age"] = table["age"].fillna(-1).astype(np.int64)
    for col in ("gender", "occupation", "zip"):
        table[col] = table[col].astype("str").fillna("").str.strip()
    return table
