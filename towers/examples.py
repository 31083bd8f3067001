"""Training examples built from the data set: query positives, next-item histories, graded pairs.

Items are referred to by *row position* in the items table (0..N-1), not by item id.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from towers.features import MAX_HISTORY

#: Event types that count as a positive next item (views are history only).
POSITIVE_EVENTS = ("click", "add_to_cart", "purchase")


@dataclass
class QueryPositives:
    """Train queries with their exact (grade 3) items."""

    texts: list[str]
    positives: list[np.ndarray]  # item positions per query


@dataclass
class HistoryPairs:
    """(recent items -> next item) examples; ``hist_pos`` is ``-1``-padded on the left."""

    hist_pos: np.ndarray  # int64 [P, MAX_HISTORY]
    hist_ts: np.ndarray  # int64 [P, MAX_HISTORY]
    target_pos: np.ndarray  # int64 [P]
    target_ts: np.ndarray  # int64 [P], unix s of the target event

    def since(self, ts: int) -> HistoryPairs:
        """The pairs whose target event is at or after ``ts`` (their history may be older)."""
        return self._subset(self.target_ts >= ts)

    def before(self, ts: int) -> HistoryPairs:
        """The pairs whose target event is before ``ts`` (unix s)."""
        return self._subset(self.target_ts < ts)

    def _subset(self, keep: np.ndarray) -> HistoryPairs:
        return HistoryPairs(
            self.hist_pos[keep], self.hist_ts[keep], self.target_pos[keep], self.target_ts[keep]
        )


def positions(items: pd.DataFrame) -> pd.Series:
    """Map item id -> row position."""
    return pd.Series(np.arange(len(items), dtype=np.int64), index=items["item_id"].to_numpy())


def query_positives(
    queries: pd.DataFrame, qrels: pd.DataFrame, pos_of: pd.Series, split: str, min_grade: int = 3
) -> QueryPositives:
    """Queries of ``split`` that have items graded ``>= min_grade``, with those items."""
    q = queries[queries["split"] == split]
    rel = qrels[(qrels["label"] >= min_grade) & qrels["query_id"].isin(q["query_id"])]
    rel = rel[rel["item_id"].isin(pos_of.index)]
    groups = rel.groupby("query_id")["item_id"].apply(lambda s: pos_of[s.to_numpy()].to_numpy())
    text_of = dict(zip(q["query_id"], q["query_text"]))
    qids = [qid for qid in groups.index if qid in text_of]
    return QueryPositives([text_of[qid] for qid in qids], [groups[qid] for qid in qids])


def graded_labels(
    queries: pd.DataFrame, qrels: pd.DataFrame, split: str
) -> tuple[list[int], list[str], list[dict[int, int]]]:
    """Query ids, texts and ``{item_id: grade}`` judgments of one split (unjudged = 0)."""
    q = queries[queries["split"] == split]
    rel = qrels[qrels["query_id"].isin(q["query_id"])]
    lab = {
        int(qid): dict(zip(g["item_id"].astype(int), g["label"].astype(int)))
        for qid, g in rel.groupby("query_id")
    }
    keep = [int(qid) for qid in q["query_id"] if any(v > 0 for v in lab.get(int(qid), {}).values())]
    text_of = dict(zip(q["query_id"].astype(int), q["query_text"]))
    return keep, [text_of[qid] for qid in keep], [lab[qid] for qid in keep]


def history_pairs(
    events: pd.DataFrame,
    pos_of: pd.Series,
    max_pairs: int,
    rng: np.random.Generator,
) -> HistoryPairs:
    """Sample up to ``max_pairs`` (previous ``MAX_HISTORY`` events -> item engaged with) pairs.

    A target is an item the user engaged with positively (click, add_to_cart, purchase); its
    history ends just before the user *first touched that item in that session* (usually the
    view that started the funnel), so the pair asks what serving asks: which new item will
    this user want, given what they did before. One pair per (user, session, item); a target
    already in its own history (a re-engagement) is dropped, as is one with no history.
    """
    ev = events[events["item_id"].isin(pos_of.index)].sort_values(["user_id", "ts"], kind="stable")
    ev = ev.reset_index(drop=True)
    pos = pos_of[ev["item_id"].to_numpy()].to_numpy()
    ts = ev["ts"].to_numpy(np.int64)
    users = ev["user_id"].to_numpy()
    rank = ev.groupby("user_id").cumcount().to_numpy()  # index within the user's sequence
    group = ev.groupby(["user_id", "session_id", "item_id"], sort=False).ngroup().to_numpy()
    row = np.arange(len(ev))
    start = pd.Series(row).groupby(group).transform("min").to_numpy()  # first touch
    positive_rows = np.flatnonzero(ev["event_type"].isin(POSITIVE_EVENTS).to_numpy())
    _, first = np.unique(group[positive_rows], return_index=True)
    cand = np.sort(positive_rows[first])  # the first positive event of each group
    cand = cand[rank[start[cand]] > 0]  # the user did something before touching the item
    if len(cand) > max_pairs:
        cand = np.sort(rng.choice(cand, size=max_pairs, replace=False))
    end = start[cand]  # history is everything of the user's before ``end``
    hist_pos = np.full((len(cand), MAX_HISTORY), -1, dtype=np.int64)
    hist_ts = np.zeros((len(cand), MAX_HISTORY), dtype=np.int64)
    for k in range(1, MAX_HISTORY + 1):  # column MAX_HISTORY-k holds the k-th previous event
        src = end - k
        ok = (rank[end] >= k) & (users[np.maximum(src, 0)] == users[end])
        hist_pos[ok, MAX_HISTORY - k] = pos[src[ok]]
        hist_ts[ok, MAX_HISTORY - k] = ts[src[ok]]
    target = pos[cand]
    novel = ~(hist_pos == target[:, None]).any(axis=1)
    return HistoryPairs(hist_pos[novel], hist_ts[novel], target[novel], ts[cand][novel])


def latest_histories(
    events: pd.DataFrame, n: int = MAX_HISTORY
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Each user's ``n`` most recent events: ``user_ids``, ``offsets``, ``item_ids``, ``ts``."""
    ev = events.sort_values(["user_id", "ts"], kind="stable")
    ev = ev.groupby("user_id", sort=True).tail(n)
    user_ids, counts = np.unique(ev["user_id"].to_numpy(np.int64), return_counts=True)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return user_ids, offsets, ev["item_id"].to_numpy(np.int64), ev["ts"].to_numpy(np.int64)


def item_popularity(events: pd.DataFrame, item_ids: np.ndarray) -> np.ndarray:
    """Standardised ``log1p`` interaction counts aligned with ``item_ids``, float32."""
    counts = events["item_id"].value_counts()
    raw = np.log1p(counts.reindex(item_ids, fill_value=0).to_numpy(np.float64))
    std = raw.std()
    return ((raw - raw.mean()) / (std if std > 0 else 1.0)).astype(np.float32)
