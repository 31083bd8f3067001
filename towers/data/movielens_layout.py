"""Write a data set in the MovieLens 100k layout (``u.data`` + ``u.item``).

So that tools written for MovieLens, and the project's own MovieLens converter
(:mod:`towers.data.converters.movielens`), read generated data exactly like real rating data:

``u.data``
    One tab-separated line per event, ``user id, item id, rating, timestamp``, sorted by user
    then time. Ratings encode the funnel step: 3 = view, 4 = click, 5 = add_to_cart or
    purchase, so the converter's default threshold (4.0) turns every click or stronger into
    a positive ("click") and keeps views as history ("view"), as training uses them.
``u.item``
    ``item id | title | release date | video release date | IMDb URL | 19 genre flags``,
    latin-1. The title is the item title with ``|`` replaced by ``/``; the release date is the
    day of the item's first event (``01-Jan-2026`` style, empty when it has none); the URL is
    empty and the genre flags are all ``unknown`` (the converter reads that as no genre), so
    the description, product type and other attributes do not survive: only ids, titles,
    events and timestamps do.

Ids are the data set's own (0-based for the synthetic data, unlike GroupLens's 1-based
ones), so both copies of a data set name the same users and items.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from towers.data.converters.movielens import GENRES_100K

__all__ = ["RATING_OF_EVENT", "write_movielens_100k"]

log = logging.getLogger(__name__)

#: Rating written for each event type; unknown types are written as views (3).
RATING_OF_EVENT: dict[str, int] = {"view": 3, "click": 4, "add_to_cart": 5, "purchase": 5}


def write_movielens_100k(items: pd.DataFrame, events: pd.DataFrame, out_dir: Path) -> Path:
    """Write ``u.data`` and ``u.item`` for ``items`` (``item_id``, ``title``) and ``events``
    (``user_id``, ``item_id``, ``event_type``, ``ts`` in unix seconds) into ``out_dir``
    (created if needed; files of the same names are replaced).

    Returns:
        ``out_dir``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ev = events.sort_values(["user_id", "ts"], kind="stable")
    rating = ev["event_type"].map(RATING_OF_EVENT).fillna(3).astype(np.int64)
    ratings = pd.DataFrame(
        {
            "user_id": ev["user_id"].to_numpy(np.int64),
            "item_id": ev["item_id"].to_numpy(np.int64),
            "rating": rating.to_numpy(),
            "ts": ev["ts"].to_numpy(np.int64),
        }
    )
    ratings.to_csv(out / "u.data", sep="\t", header=False, index=False)

    first_ts = ev.groupby("item_id")["ts"].min()
    day = first_ts.reindex(items["item_id"].to_numpy())
    released = [
        "" if pd.isna(t) else dt.datetime.fromtimestamp(int(t), dt.UTC).strftime("%d-%b-%Y")
        for t in day.tolist()
    ]
    titles = items["title"].astype("str").str.replace("|", "/", regex=False)
    flags = "|".join(["1"] + ["0"] * (len(GENRES_100K) - 1))
    lines = [
        f"{i}|{t}|{r}|||{flags}"
        for i, t, r in zip(items["item_id"].astype(np.int64).tolist(), titles.tolist(), released)
    ]
    (out / "u.item").write_bytes(("\n".join(lines) + "\n").encode("latin-1", errors="replace"))
    log.info("wrote %d ratings and %d items in MovieLens 100k layout to %s", len(ratings),
             len(items), out)  # fmt: skip
    return out
