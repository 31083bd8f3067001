"""The next-item task: each user's history before a time cut and the new items they then
wanted, and the helpers that turn it into model inputs.

Training (fitting the popularity prior's weight, ``towers/prior.py`` and ``towers/train.py``)
and evaluation (``towers/evaluation/recommend.py``, which documents the protocol) use the same
task, so it lives below both: evaluation imports training, never the reverse.

A task of the window ``[start_ts, end_ts)`` (unix seconds) holds the users with at least one
positive event (click, add_to_cart, purchase) in the window and at least one event before
``start_ts``; each user's newest ``MAX_HISTORY`` events before ``start_ts`` (and their newest
``LONG_HISTORY``, for co-visitation); and each user's
targets, the distinct items of their positive events in the window not already in that history.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from towers.examples import POSITIVE_EVENTS
from towers.features import LONG_HISTORY, MAX_HISTORY, recency_weights

log = logging.getLogger(__name__)

__all__ = [
    "NextItemTask",
    "random_split_task",
    "exclude_history",
    "history_matrix",
    "next_item_task",
    "pooled_history",
]


@dataclass
class NextItemTask:
    """Users, their histories before ``start_ts`` and their new positive items in the window.

    ``hist_ids``/``hist_ts`` are oldest first, at most ``MAX_HISTORY`` long, ts in unix s.
    ``exclude`` (random protocol) holds each user's items to leave out of their list when that
    is more than the history (all their training items); ``None``: the history.
    ``long_ids``/``long_ts``: the same histories up to ``LONG_HISTORY`` long (what a request
    hands on to the retriever's co-visitation, towers/covisit.py); ``None``: ``hist_ids``.
    """

    start_ts: int
    end_ts: int
    user_ids: np.ndarray
    hist_ids: list[np.ndarray]
    hist_ts: list[np.ndarray]
    targets: list[set[int]]
    exclude: list[np.ndarray] | None = None
    long_ids: list[np.ndarray] | None = None
    long_ts: list[np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.user_ids)

    @property
    def excluded(self) -> list[np.ndarray]:
        """Per user, the item ids no system may return (``exclude``, else the history)."""
        return self.exclude if self.exclude is not None else self.hist_ids

    @property
    def long_histories(self) -> list[np.ndarray]:
        """Per user, the history up to ``LONG_HISTORY`` ids (``long_ids``, else the history)."""
        return self.long_ids if self.long_ids is not None else self.hist_ids

    @property
    def long_times(self) -> list[np.ndarray]:
        """The unix times (s) of :attr:`long_histories`."""
        return self.long_ts if self.long_ts is not None else self.hist_ts


def next_item_task(
    events: pd.DataFrame,
    start_ts: int,
    end_ts: int,
    *,
    max_users: int | None = None,
    seed: int = 0,
) -> NextItemTask:
    """The next-item task of the window ``[start_ts, end_ts)`` (unix seconds).

    ``max_users`` keeps a seeded random sample of the eligible users (all when ``None``).

    Raises:
        ValueError: the window is empty or reversed.
    """
    if end_ts <= start_ts:
        raise ValueError(f"empty window: end_ts {end_ts} must be after start_ts {start_ts}")
    ts = events["ts"].to_numpy()
    before = events[ts < start_ts].sort_values(["user_id", "ts"], kind="stable")
    before = before.groupby("user_id", sort=True).tail(LONG_HISTORY)
    in_window = events[
        (ts >= start_ts) & (ts < end_ts) & events["event_type"].isin(POSITIVE_EVENTS).to_numpy()
    ]
    hist_groups = {int(u): g for u, g in before.groupby("user_id", sort=True)}
    target_groups = in_window.groupby("user_id", sort=True)["item_id"]
    users, hist_ids, hist_ts, targets, long_ids, long_ts = [], [], [], [], [], []
    for user, items in target_groups:
        hist = hist_groups.get(int(user))
        if hist is None:
            continue  # a cold-start user: no history to recommend from
        all_ids = hist["item_id"].to_numpy(np.int64)
        all_ts = hist["ts"].to_numpy(np.int64)
        h_ids = all_ids[-MAX_HISTORY:]
        new = set(map(int, items.to_numpy())) - set(map(int, h_ids))
        if not new:
            continue
        users.append(int(user))
        hist_ids.append(h_ids)
        hist_ts.append(all_ts[-MAX_HISTORY:])
        targets.append(new)
        long_ids.append(all_ids)
        long_ts.append(all_ts)
    if max_users is not None and len(users) > max_users:
        keep = np.sort(np.random.default_rng(seed).choice(len(users), max_users, replace=False))
        users = [users[i] for i in keep]
        hist_ids = [hist_ids[i] for i in keep]
        hist_ts = [hist_ts[i] for i in keep]
        targets = [targets[i] for i in keep]
        long_ids = [long_ids[i] for i in keep]
        long_ts = [long_ts[i] for i in keep]
    return NextItemTask(
        start_ts,
        end_ts,
        np.asarray(users, dtype=np.int64),
        hist_ids,
        hist_ts,
        targets,
        long_ids=long_ids,
        long_ts=long_ts,
    )


def random_split_task(
    train: pd.DataFrame,
    heldout: pd.DataFrame,
    *,
    max_users: int | None = None,
    seed: int = 0,
) -> NextItemTask:
    """The task of the random protocol (:mod:`towers.data.split`): the users with a positive
    held-out event and at least one training event; each user's history is their newest
    ``MAX_HISTORY`` training events, their targets the distinct items of their positive
    held-out events that they have no training event with, and every item of their training
    events is excluded from their list. ``start_ts`` is one second after the last training
    event (so popularity counts every training event).

    Raises:
        ValueError: no training events.
    """
    if len(train) == 0:
        raise ValueError("no training events: the random protocol needs the training share")
    start = int(train["ts"].max()) + 1
    ordered = train.sort_values(["user_id", "ts"], kind="stable")
    groups = {int(u): g for u, g in ordered.groupby("user_id", sort=True)}
    positive = heldout[heldout["event_type"].isin(POSITIVE_EVENTS).to_numpy()]
    users, hist_ids, hist_ts, targets, exclude, long_ids, long_ts = [], [], [], [], [], [], []
    for user, items in positive.groupby("user_id", sort=True)["item_id"]:
        hist = groups.get(int(user))
        if hist is None:
            continue  # every held-out event of a user unseen in training: cold start
        seen = hist["item_id"].to_numpy(np.int64)
        new = set(map(int, items.to_numpy())) - set(map(int, seen))
        if not new:
            continue
        recent = hist.tail(MAX_HISTORY)
        longer = hist.tail(LONG_HISTORY)
        users.append(int(user))
        hist_ids.append(recent["item_id"].to_numpy(np.int64))
        hist_ts.append(recent["ts"].to_numpy(np.int64))
        targets.append(new)
        exclude.append(np.unique(seen))
        long_ids.append(longer["item_id"].to_numpy(np.int64))
        long_ts.append(longer["ts"].to_numpy(np.int64))
    if max_users is not None and len(users) > max_users:
        keep = np.sort(np.random.default_rng(seed).choice(len(users), max_users, replace=False))
        users = [users[i] for i in keep]
        hist_ids = [hist_ids[i] for i in keep]
        hist_ts = [hist_ts[i] for i in keep]
        targets = [targets[i] for i in keep]
        exclude = [exclude[i] for i in keep]
        long_ids = [long_ids[i] for i in keep]
        long_ts = [long_ts[i] for i in keep]
    return NextItemTask(
        start,
        start + 1,
        np.asarray(users, np.int64),
        hist_ids,
        hist_ts,
        targets,
        exclude,
        long_ids,
        long_ts,
    )


def exclude_history(
    ranked_rows: np.ndarray, item_ids: np.ndarray, task: NextItemTask, k: int
) -> list[list[int]]:
    """Item ids of ``ranked_rows`` (row positions, ``-1`` = none) per user, dropping each
    user's history items, cut to ``k``."""
    out = []
    for row, hist in zip(ranked_rows, task.excluded):
        seen = set(map(int, hist))
        ids = [int(item_ids[p]) for p in row if p >= 0 and int(item_ids[p]) not in seen]
        out.append(ids[:k])
    return out


def history_matrix(
    task: NextItemTask, row_of: dict[int, int], tau_s: float
) -> tuple[np.ndarray, np.ndarray]:
    """Padded history rows ``[U, MAX_HISTORY]`` (``-1`` = none; unknown items dropped) and
    their recency weights ``[U, MAX_HISTORY]`` (each row sums to 1, or 0 if empty)."""
    rows = np.full((len(task), MAX_HISTORY), -1, dtype=np.int64)
    weights = np.zeros((len(task), MAX_HISTORY), dtype=np.float32)
    for u, (ids, ts) in enumerate(zip(task.hist_ids, task.hist_ts)):
        known = [(row_of[int(i)], t) for i, t in zip(ids, ts) if int(i) in row_of]
        if not known:
            continue
        r, t = map(np.asarray, zip(*known))
        rows[u, MAX_HISTORY - len(r) :] = r
        weights[u, MAX_HISTORY - len(r) :] = recency_weights(t, tau_s)
    return rows, weights


def pooled_history(table: np.ndarray, rows: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Recency-weighted, L2-normalised mean of item vectors: ``[U, dim]`` float32."""
    vecs = (table[np.maximum(rows, 0)] * (weights * (rows >= 0))[..., None]).sum(1)
    norm = np.linalg.norm(vecs, axis=1, keepdims=True)
    return (vecs / np.maximum(norm, 1e-9)).astype(np.float32)
