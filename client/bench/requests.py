"""The benchmark's request mix, from real held-out data: half search, half homepage.

- search: a distinct query text of the data set's ``test`` split (never trained on; the
  ``valid`` split, then any, when it has none), anonymous (``USER_ID`` -1, no history);
- homepage: an empty query and a real user's history, the user's newest events (at most
  ``MAX_HISTORY``, oldest first, with their timestamps) before the evaluation cut, for users
  active after it (the next-item task of ``towerserve eval``).

The two kinds alternate, so any prefix of the list (and perf_analyzer cycling through it) is
an even mix.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: Fraction of the events' time range before the cut (as the tiny and demo presets train).
CUT_FRACTION = 0.75


@dataclass(frozen=True)
class BenchRequest:
    """One ``recommend`` request; ``history_ts`` in unix seconds, oldest first."""

    kind: str  # "search" or "homepage"
    query: str
    user_id: int
    history_ids: tuple[int, ...] = ()
    history_ts: tuple[int, ...] = ()


def build_requests(
    data_dir: Path, n_requests: int, *, seed: int = 0, search_share: float = 0.5
) -> list[BenchRequest]:
    """``n_requests`` requests from the data set in ``data_dir``, a share ``search_share``
    (0 to 1) of them search requests, spread evenly (0.5: kinds alternating, search first);
    fewer distinct texts or users than needed are reused in turn.

    Raises:
        ValueError: the data set has neither queries nor users with a history, or
            ``search_share`` is outside 0..1.
    """
    if not 0.0 <= search_share <= 1.0:
        raise ValueError(f"search_share must be in 0..1, got {search_share}")
    from towers.data import cut_ts_at, load_dataset
    from towers.next_item import next_item_task

    ds = load_dataset(data_dir)
    rng = np.random.default_rng(seed)
    texts: list[str] = []
    for split in ("test", "valid", "train"):
        texts = ds.queries_in(split)["query_text"].astype(str).drop_duplicates().tolist()
        texts = [t for t in texts if t.strip()]
        if texts:
            if split != "test":
                log.warning("no test-split queries in %s: using the %s split", data_dir, split)
            break
    rng.shuffle(texts)
    homes: list[BenchRequest] = []
    if len(ds.events):
        cut = cut_ts_at(ds.events, CUT_FRACTION)
        end = int(ds.events["ts"].max()) + 1
        task = next_item_task(ds.events, cut, end, max_users=n_requests, seed=seed)
        for user, ids, ts in zip(task.user_ids, task.hist_ids, task.hist_ts):
            homes.append(
                BenchRequest("homepage", "", int(user), tuple(map(int, ids)), tuple(map(int, ts)))
            )
    if not texts and not homes:
        raise ValueError(f"{data_dir} has neither queries nor users with a history")
    if not texts or not homes:
        log.warning(
            "%s has no %s: every request is of the other kind",
            data_dir,
            "queries" if not texts else "users with a history",
        )
    searches = [BenchRequest("search", t, -1) for t in texts]
    out: list[BenchRequest] = []
    used = {"search": 0, "homepage": 0}
    for i in range(n_requests):
        # request i is a search when the running count of searches steps up at i
        wants_search = math.ceil((i + 1) * search_share) > math.ceil(i * search_share)
        pool = searches if (wants_search and searches) or not homes else homes
        kind = "search" if pool is searches else "homepage"
        out.append(pool[used[kind] % len(pool)])
        used[kind] += 1
    return out


def perf_input_data(requests: list[BenchRequest], *, budget_ms: float, k: int) -> dict[str, Any]:
    """perf_analyzer's ``--input-data`` document: one step per request, ``BUDGET_MS`` set to
    ``budget_ms`` in every one (floats written as floats, empty histories as shape ``[0]``)."""
    steps = []
    for r in requests:
        steps.append(
            {
                "QUERY": {"content": [r.query], "shape": [1]},
                "USER_ID": {"content": [int(r.user_id)], "shape": [1]},
                "HISTORY_IDS": {"content": list(r.history_ids), "shape": [len(r.history_ids)]},
                "HISTORY_TS": {"content": list(r.history_ts), "shape": [len(r.history_ts)]},
                "K": {"content": [int(k)], "shape": [1]},
                "BUDGET_MS": {"content": [float(budget_ms)], "shape": [1]},
            }
        )
    return {"data": steps}


def write_input_data(
    requests: list[BenchRequest], folder: Path, *, budget_ms: float, k: int
) -> Path:
    """Write :func:`perf_input_data` to ``folder/input_b{budget}.json`` and return the path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"input_b{budget_ms:g}.json"
    path.write_text(json.dumps(perf_input_data(requests, budget_ms=budget_ms, k=k)))
    return path


def mix_summary(requests: list[BenchRequest]) -> dict[str, Any]:
    """Counts per kind, distinct queries and users, and the mean history length."""
    homes = [r for r in requests if r.kind == "homepage"]
    return {
        "requests": len(requests),
        "search": sum(r.kind == "search" for r in requests),
        "homepage": len(homes),
        "distinct_queries": len({r.query for r in requests if r.kind == "search"}),
        "distinct_users": len({r.user_id for r in homes}),
        "mean_history_len": float(np.mean([len(r.history_ids) for r in homes])) if homes else 0.0,
    }
