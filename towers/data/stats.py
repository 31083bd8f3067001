"""What structure a data set has, measured: does the next item follow from text or identity?

:func:`structure_stats` cuts the events at a time (``cut_frac`` of the way through), takes
for every user with events on both sides the *query item* (their last item before the cut)
and the *next item* (their first item after the cut that differs from the query item), and
scores three simple predictors of the next item, each with a top-``k`` list that leaves out
the query item:

* ``popularity``: the ``k`` items with most events before the cut.
* ``co-occurrence``: item-kNN over the events before the cut (cosine of the items' user
  sets, Sarwar et al. 2001); items that never co-occurred with the query item are not listed.
* ``text``: BM25 (``bm25s``) over the item texts (:func:`towers.data.dataset.item_texts`, what
  the towers embed), the query item's text as the query.

HitRate@k is the share of users whose next item is in the list, with a 95 % Wilson interval.
When co-occurrence beats text by a wide margin, the data rewards item identity (collaborative
models, item-id embeddings); when text wins, it rewards text towers. Also reported: users,
items, events and the Gini coefficient of the item event counts (0 = every item as popular,
1 = all events on one item), over all catalogue items.

Cost: one sparse users x items matrix product for the query items, one BM25 retrieval per
query item; ``max_users`` (default 5,000, drawn with a fixed seed) bounds both. About 5 s for
the default synthetic data set on two cores.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import bm25s
import numpy as np
import pandas as pd
import scipy.sparse as sp

from towers.data.dataset import Dataset, cut_ts_at, item_texts

__all__ = ["HitRate", "StructureStats", "gini", "structure_stats"]

log = logging.getLogger(__name__)
logging.getLogger("bm25s").setLevel(logging.WARNING)

#: Query items scored per sparse product: bounds the dense (chunk, n_items) float32 block
#: (64 x 1,000,000 items is 256 MB).
KNN_CHUNK = 64
#: z of a two-sided 95 % interval.
Z95 = 1.959964


@dataclass(frozen=True)
class HitRate:
    """Share of users whose next item one predictor listed, with a 95 % Wilson interval."""

    hits: int
    users: int

    @property
    def rate(self) -> float:
        return self.hits / self.users if self.users else float("nan")

    @property
    def interval(self) -> tuple[float, float]:
        """Wilson score interval (Wilson 1927): valid near 0 and 1, unlike the normal one."""
        n = self.users
        if n == 0:
            return (float("nan"), float("nan"))
        p = self.hits / n
        denom = 1.0 + Z95**2 / n
        centre = (p + Z95**2 / (2 * n)) / denom
        half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / denom
        return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass
class StructureStats:
    """Figures of :func:`structure_stats` (see the module doc)."""

    n_users: int
    n_items: int
    n_events: int
    gini_items: float
    top1pct_event_share: float  # share of events on the 1 % most popular items
    cut_ts: int
    k: int
    n_eval_users: int
    hit_rates: dict[str, HitRate] = field(default_factory=dict)

    def verdict(self) -> str:
        """One line: which signal predicts the next item best, and by how much."""
        if not self.hit_rates or self.n_eval_users == 0:
            return "no user has events on both sides of the cut: nothing measured"
        ranked = sorted(self.hit_rates.items(), key=lambda kv: -kv[1].rate)
        (best, hr), (second, hr2) = ranked[0], ranked[1]
        lo, _ = hr.interval
        _, hi2 = hr2.interval
        if lo <= hi2:
            return (
                f"{best} ({hr.rate:.3f}) and {second} ({hr2.rate:.3f}) overlap within their "
                f"95 % intervals: no clear winner on {self.n_eval_users} users"
            )
        what = {
            "text": "rewards text (text towers, BM25)",
            "co-occurrence": "rewards item identity (item-kNN, EASE, ALS, item-id embeddings)",
            "popularity": "is dominated by popularity",
        }[best]
        return (
            f"{best} predicts the next item best ({hr.rate:.3f}), clearly above {second} "
            f"({hr2.rate:.3f}): this data {what}"
        )


def gini(counts: np.ndarray) -> float:
    """Gini coefficient of non-negative counts (0 = equal, towards 1 = concentrated)."""
    x = np.sort(np.asarray(counts, dtype=np.float64))
    n = len(x)
    if n == 0 or x.sum() == 0:
        return 0.0
    cum = np.cumsum(x)
    return float((n + 1 - 2 * (cum / cum[-1]).sum()) / n)


def _query_and_next(events: pd.DataFrame, cut_ts: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(user_ids, query_items, next_items)`` of the users with a query and a next item."""
    ev = events[["user_id", "item_id", "ts"]].sort_values(["user_id", "ts"], kind="stable")
    before = ev[ev["ts"].to_numpy() < cut_ts]
    after = ev[ev["ts"].to_numpy() >= cut_ts]
    last = before.groupby("user_id", sort=True)["item_id"].last()
    after = after[after["user_id"].isin(last.index)]
    query_of = last.reindex(after["user_id"].to_numpy()).to_numpy()
    after = after[after["item_id"].to_numpy() != query_of]
    nxt = after.groupby("user_id", sort=True)["item_id"].first()
    users = nxt.index.to_numpy(np.int64)
    return users, last.reindex(users).to_numpy(np.int64), nxt.to_numpy(np.int64)


def _knn_lists(
    before: pd.DataFrame, item_row: pd.Series, queries: np.ndarray, k: int, n_items: int
) -> list[np.ndarray]:
    """Item rows of the ``k`` items most cosine-similar (user sets) to each query item row."""
    rows = item_row.reindex(before["item_id"].to_numpy()).to_numpy()
    known = ~np.isnan(rows)
    _, users = np.unique(before["user_id"].to_numpy()[known], return_inverse=True)
    x = sp.csr_matrix(
        (np.ones(int(known.sum()), np.float32), (users, rows[known].astype(np.int64))),
        shape=(int(users.max(initial=-1)) + 1, n_items),
    )
    x.data[:] = 1.0  # duplicates were summed by the constructor: back to binary
    norms = np.sqrt(np.asarray(x.sum(axis=0)).ravel())
    xc = x.tocsc()
    out: list[np.ndarray] = []
    for lo in range(0, len(queries), KNN_CHUNK):
        q = queries[lo : lo + KNN_CHUNK]
        sims = (xc[:, q].T @ xc).toarray()  # (chunk, n_items) co-occurrence counts
        sims /= np.maximum(norms[q][:, None] * norms[None, :], 1e-9)
        sims[np.arange(len(q)), q] = 0.0
        kk = min(k, n_items - 1)
        top = np.argpartition(-sims, kk, axis=1)[:, : kk + 1]
        for row, cand in zip(sims, top):
            cand = cand[row[cand] > 0]
            out.append(cand[np.lexsort((cand, -row[cand]))][:k])
    return out


def _text_lists(texts: list[str], queries: np.ndarray, k: int) -> list[np.ndarray]:
    """Item rows of the ``k`` best BM25 matches of each query item's text (itself left out)."""
    tokens = bm25s.tokenize(texts, stopwords="en", show_progress=False)
    index = bm25s.BM25()
    index.index(tokens, show_progress=False)
    uniq, back = np.unique(queries, return_inverse=True)
    kk = min(k + 1, len(texts))
    inverse = {v: w for w, v in tokens.vocab.items()}
    lists = []
    for q in uniq:
        ids = list(tokens.ids[int(q)])
        if not ids:  # a text of stop words only: nothing to match
            lists.append(np.empty(0, dtype=np.int64))
            continue
        scores = index.get_scores([inverse[t] for t in ids])
        scores[q] = 0.0
        top = np.argpartition(-scores, kk - 1)[:kk]
        top = top[scores[top] > 0]
        lists.append(top[np.lexsort((top, -scores[top]))][:k].astype(np.int64))
    return [lists[i] for i in back]


def structure_stats(
    ds: Dataset, *, cut_frac: float = 0.8, k: int = 10, max_users: int = 5000, seed: int = 7
) -> StructureStats:
    """Measure the data set's structure (see the module doc).

    Args:
        cut_frac: where the time split falls, strictly between 0 and 1 of the events' range.
        k: list length of HitRate@k, 1 or more.
        max_users: at most this many users are scored (a seeded sample), 1 or more.

    Raises:
        ValueError: an argument out of range, or no events.
    """
    if k < 1:
        raise ValueError(f"k must be 1 or more, got {k}")
    if max_users < 1:
        raise ValueError(f"max_users must be 1 or more, got {max_users}")
    events, items = ds.events, ds.items
    if len(events) == 0:
        raise ValueError("the data set has no events: nothing to measure")
    cut_ts = cut_ts_at(events, cut_frac)
    item_ids = items["item_id"].to_numpy(np.int64)
    n_items = len(item_ids)
    item_row = pd.Series(np.arange(n_items), index=item_ids)
    counts = np.bincount(
        item_row.reindex(events["item_id"].to_numpy()).dropna().to_numpy(np.int64),
        minlength=n_items,
    )
    top = np.sort(counts)[::-1][: max(1, n_items // 100)]
    stats = StructureStats(
        n_users=int(events["user_id"].nunique()),
        n_items=n_items,
        n_events=len(events),
        gini_items=gini(counts),
        top1pct_event_share=float(top.sum() / max(counts.sum(), 1)),
        cut_ts=cut_ts,
        k=k,
        n_eval_users=0,
    )
    users, query, nxt = _query_and_next(events, cut_ts)
    known = np.isin(query, item_ids) & np.isin(nxt, item_ids)
    users, query, nxt = users[known], query[known], nxt[known]
    if len(users) > max_users:
        pick = np.sort(np.random.default_rng(seed).choice(len(users), max_users, replace=False))
        users, query, nxt = users[pick], query[pick], nxt[pick]
    stats.n_eval_users = len(users)
    if len(users) == 0:
        return stats
    q_rows = item_row.reindex(query).to_numpy(np.int64)
    n_rows = item_row.reindex(nxt).to_numpy(np.int64)
    before = events[events["ts"].to_numpy() < cut_ts]
    before_counts = np.bincount(
        item_row.reindex(before["item_id"].to_numpy()).dropna().to_numpy(np.int64),
        minlength=n_items,
    )
    popular = np.argsort(-before_counts, kind="stable")[: k + 1]
    pop_lists = [popular[popular != q][:k] for q in q_rows]
    log.info("stats: %d users, item-kNN and BM25 lists of %d", len(users), k)
    predictors = {
        "popularity": pop_lists,
        "co-occurrence": _knn_lists(before, item_row, q_rows, k, n_items),
        "text": _text_lists(item_texts(items), q_rows, k),
    }
    for name, lists in predictors.items():
        hits = sum(int(t in lst) for t, lst in zip(n_rows, lists))
        stats.hit_rates[name] = HitRate(hits, len(users))
    return stats
