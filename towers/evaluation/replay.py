"""Replay evaluation (issue 12 item 5): do live events make the next answer better?

The held-out events (at or after the training cut) are replayed in time order. Before each
*query event* the served path is asked for the user's top ``k`` (no query, ``USER_ID`` only:
what a frontend asks when a shopper opens a page), then the event is recorded, so every later
answer can use it. A query event is a user's first interaction (any event type) with an item
they never interacted with before, from a user who has history before the cut (a user without
one cannot be answered from history frozen at the cut). Items the user interacted with before
the event (in the whole log) are excluded from the list, as the next-item protocol
(:mod:`towers.evaluation.recommend`) excludes the history: re-showing them earns nothing.

Four variants answer every query event, side by side:

* history **frozen** at the cut (the user's newest events before it) or **live** (the same,
  merged with the events recorded since, read from the event store by ``USER_ID``);
* popularity prior **frozen** (the bundle's, as trained) or **moving** (recounted from the
  event stream, decayed on event time: serving/prior_stream.py), refreshed before every query.

The metric is Recall@``k`` of the event's item: a hit when it is in the top ``k``. Per user it
is the mean over their query events; the figure is the mean over users with a 95% bootstrap
interval over users, and each comparison a paired bootstrap interval of the difference over
the same users (:mod:`towers.evaluation.confidence`); one decided on fewer than ``MIN_COUNT``
users is inconclusive. This module holds the protocol and the arithmetic; the served path
(stages in process over a real SQLite store) is plugged in by ``client/served_replay.py``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from towers.evaluation.confidence import bootstrap_ci, paired_ci, verdict

log = logging.getLogger(__name__)

__all__ = [
    "COMPARISONS",
    "VARIANTS",
    "ReplayTask",
    "Variant",
    "histories_at",
    "replay_markdown",
    "replay_task",
    "run_replay",
]

#: List length whose recall is measured.
K = 50


@dataclass(frozen=True)
class Variant:
    """``history``: ``frozen`` (as of the cut) or ``live``; ``prior``: ``frozen`` or
    ``moving``."""

    history: str
    prior: str

    @property
    def name(self) -> str:
        return f"{self.history} history, {self.prior} prior"


VARIANTS = (
    Variant("frozen", "frozen"),
    Variant("frozen", "moving"),
    Variant("live", "frozen"),
    Variant("live", "moving"),
)
#: (name, better, reference, is a check): the paired differences the section reports.
COMPARISONS = (
    ("live history beats frozen history", VARIANTS[2], VARIANTS[0], True),
    ("moving prior beats frozen prior", VARIANTS[3], VARIANTS[2], True),
    ("live history beats frozen history (moving prior)", VARIANTS[3], VARIANTS[1], False),
    ("moving prior beats frozen prior (frozen history)", VARIANTS[1], VARIANTS[0], False),
    ("live history and moving prior beat both frozen", VARIANTS[3], VARIANTS[0], False),
)


@dataclass(frozen=True)
class ReplayTask:
    """The held-out events in time order (``events``: ``user_id``, ``item_id``, ``ts``,
    ``event_type``, index 0..n-1), the positions of the query events in it (``queries``,
    ascending) and, per query event, the item ids excluded from its list (``excluded``)."""

    events: pd.DataFrame
    queries: np.ndarray
    excluded: list[np.ndarray]
    cut_ts: int

    def __len__(self) -> int:
        return len(self.queries)

    @property
    def query_users(self) -> np.ndarray:
        return self.events["user_id"].to_numpy(np.int64)[self.queries]


def replay_task(
    events: pd.DataFrame,
    cut_ts: int,
    *,
    end_ts: int | None = None,
    max_users: int | None = None,
    seed: int = 0,
) -> ReplayTask:
    """The replay of ``events`` at or after ``cut_ts`` (and before ``end_ts``) in time order
    (ties keep the log's order). ``max_users`` keeps the query events of a seeded sample of
    the eligible users (every event is still replayed).

    Raises:
        ValueError: no events at or after ``cut_ts``.
    """
    ordered = events.reset_index(drop=True)
    ordered = ordered.iloc[np.argsort(ordered["ts"].to_numpy(np.int64), kind="stable")]
    ts = ordered["ts"].to_numpy(np.int64)
    late = ts >= cut_ts if end_ts is None else (ts >= cut_ts) & (ts < end_ts)
    if not late.any():
        raise ValueError(f"no events at or after the cut {cut_ts} to replay")
    before = ordered[ts < cut_ts]
    seen: dict[int, set[int]] = {}
    for user, item in zip(before["user_id"].tolist(), before["item_id"].tolist(), strict=True):
        seen.setdefault(int(user), set()).add(int(item))
    held = ordered[late].reset_index(drop=True)[["user_id", "item_id", "ts", "event_type"]]
    eligible = set(seen)
    if max_users is not None:
        users = sorted(set(map(int, held["user_id"].unique())) & eligible)
        if len(users) > max_users:
            pick = np.random.default_rng(seed).choice(len(users), max_users, replace=False)
            eligible = {users[i] for i in pick}
    queries: list[int] = []
    excluded: list[np.ndarray] = []
    for row, (user, item) in enumerate(
        zip(held["user_id"].tolist(), held["item_id"].tolist(), strict=True)
    ):
        mine = seen.get(user)
        if user in eligible and mine is not None and item not in mine:
            queries.append(row)
            excluded.append(np.fromiter(mine, np.int64, len(mine)))
        seen.setdefault(user, set()).add(item)
    return ReplayTask(held, np.asarray(queries, np.int64), excluded, int(cut_ts))


def histories_at(
    events: pd.DataFrame, cut_ts: int, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Each user's newest ``n`` events before ``cut_ts``: ``(user_ids, offsets, item_ids,
    ts)``, oldest first per user (the layout of the bundle's stored histories): what a bundle
    exported at the cut would hold."""
    ev = events[events["ts"].to_numpy(np.int64) < cut_ts]
    ev = ev.sort_values(["user_id", "ts"], kind="stable").groupby("user_id", sort=True).tail(n)
    user_ids, counts = np.unique(ev["user_id"].to_numpy(np.int64), return_counts=True)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return user_ids, offsets, ev["item_id"].to_numpy(np.int64), ev["ts"].to_numpy(np.int64)


#: ``recommend(variant, user_id, k)``: the served top ``k`` item ids for a user (no query).
Recommend = Callable[[Variant, int, int], Sequence[int]]
#: ``record(events)``: store these events (``user_id``, ``item_id``, ``ts``, ``event_type``)
#: and bring the moving prior up to date.
Record = Callable[[pd.DataFrame], None]


def run_replay(
    task: ReplayTask,
    recommend: Recommend,
    record: Record,
    *,
    k: int = K,
    max_k: int = 100,
    variants: Sequence[Variant] = VARIANTS,
    progress: Callable[[int], None] | None = None,
) -> dict[str, object]:
    """Replay ``task``: before each query event ask every variant for the user's top
    ``min(max_k, k + excluded)`` (``max_k``: the most a served request may ask for), drop the
    excluded items, score a hit when the event's item is in the first ``k``; record the events
    in between. ``progress(n)`` is called with the query events done. Returns the section
    (see :func:`summarise`)."""
    started = time.perf_counter()
    users = task.query_users
    items = task.events["item_id"].to_numpy(np.int64)
    hits = {v: np.zeros(len(task), np.float64) for v in variants}
    short = 0
    recorded = 0
    for q, (row, skip) in enumerate(zip(task.queries.tolist(), task.excluded, strict=True)):
        if row > recorded:
            record(task.events.iloc[recorded:row])
            recorded = row
        drop = set(map(int, skip))
        ask = min(max_k, k + len(drop))
        for v in variants:
            ranked = [int(i) for i in recommend(v, int(users[q]), ask) if int(i) not in drop][:k]
            short += len(ranked) < k
            hits[v][q] = float(int(items[row]) in ranked)
        if progress is not None:
            progress(q + 1)
    if recorded < len(task.events):
        record(task.events.iloc[recorded:])
    section = summarise(task, hits, k=k)
    section["short_lists"] = short / max(len(task) * len(variants), 1)
    section["seconds"] = round(time.perf_counter() - started, 1)
    return section


def summarise(
    task: ReplayTask, hits: Mapping[Variant, np.ndarray], *, k: int = K
) -> dict[str, object]:
    """The section of the report: per variant Recall@``k`` (mean over users of their mean hit
    rate; ``event_recall`` the mean over query events; ``per_user`` each user's, in the order
    of ``user_ids``, so two models' replays compare paired: benchmarks/replay_compare.py), 95%
    bootstrap interval over users;
    the :data:`COMPARISONS` as paired differences over users; and the checks (``checks``, the
    evaluation report's format) of the comparisons marked as checks."""
    users = task.query_users
    order, inverse = np.unique(users, return_inverse=True)
    n_per_user = np.bincount(inverse, minlength=len(order)).astype(np.float64)
    per_user = {
        v: np.bincount(inverse, weights=h, minlength=len(order)) / np.maximum(n_per_user, 1)
        for v, h in hits.items()
    }
    metric = f"recall@{k}"
    rows = {}
    for v, values in per_user.items():
        lo, hi = bootstrap_ci(values)
        rows[v.name] = {
            metric: float(values.mean()) if len(values) else 0.0,
            "event_recall": float(hits[v].mean()) if len(hits[v]) else 0.0,
            "ci95": [lo, hi],
            "n_users": len(order),
            "n_queries": len(task),
            "per_user": [round(float(x), 6) for x in values],  # in the order of user_ids
        }
    comparisons, checks = [], []
    for name, a, b, is_check in COMPARISONS:
        if a not in per_user or b not in per_user:
            continue
        diff, lo, hi = paired_ci(per_user[a], per_user[b], "diff")
        status = verdict(diff, 0.0, n=len(order), ci=(lo, hi))
        comparisons.append(
            {
                "name": name,
                "better": a.name,
                "reference": b.name,
                "diff": diff,
                "ci95": [lo, hi],
                "n_users": len(order),
                "status": status,
            }
        )
        if is_check:
            checks.append(
                {
                    "name": f"replay: {name} (Recall@{k})",
                    "value": diff,
                    "threshold": 0.0,
                    "passed": None if status == "inconclusive" else status == "passed",
                    "status": status,
                    "n": len(order),
                    "ci95": [lo, hi],
                    "detail": f"{a.name} - {b.name}, paired over users",
                }
            )
    return {
        "k": k,
        "cut_ts": task.cut_ts,
        "n_events": len(task.events),
        "n_queries": len(task),
        "n_users": len(order),
        "user_ids": [int(u) for u in order],
        "variants": rows,
        "comparisons": comparisons,
        "checks": checks,
    }


def replay_markdown(section: Mapping[str, object] | None) -> list[str]:
    """The report's "Replay" section (``[]`` without one)."""
    if not section or not isinstance(section.get("variants"), Mapping):
        return []
    k = section.get("k", K)
    variants = section["variants"]
    assert isinstance(variants, Mapping)
    lines = [
        "",
        "## Replay: live history and the moving prior",
        "",
        f"The {section.get('n_events')} held-out events replayed in time order through the "
        "served path (stages in process, a real SQLite event store); before each of "
        f"{section.get('n_queries')} query events (a user's first interaction with an item, "
        f"{section.get('n_users')} users with history before the cut) each variant is asked "
        f"for the user's top {k} with items they interacted with before excluded. Recall@{k} "
        "is the mean over users of their hit rate, with a 95% bootstrap interval over users.",
        "",
        f"| variant | Recall@{k} | 95% interval | per event |",
        "| --- | ---: | --- | ---: |",
    ]
    for name, row in variants.items():
        lo, hi = row["ci95"]
        lines.append(
            f"| {name} | {row[f'recall@{k}']:.4f} | [{lo:.4f}, {hi:.4f}] | "
            f"{row['event_recall']:.4f} |"
        )
    lines += ["", "| comparison | difference | 95% interval (paired) | users | verdict |"]
    lines += ["| --- | ---: | --- | ---: | --- |"]
    for c in section.get("comparisons", []):  # type: ignore[union-attr]
        lo, hi = c["ci95"]
        lines.append(
            f"| {c['name']} | {c['diff']:+.4f} | [{lo:+.4f}, {hi:+.4f}] | {c['n_users']} | "
            f"{c['status']} |"
        )
    short = section.get("short_lists")
    if isinstance(short, float) and short > 0:
        lines += [
            "",
            f"{short:.1%} of the lists were shorter than {k} after the exclusions (a request "
            "asks for at most the served max_k).",
        ]
    return lines
