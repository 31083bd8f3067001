"""The replay evaluation through the served path (towers/evaluation/replay.py, issue 12 item 5).

:func:`served_replay` builds :class:`serving.pipeline.InProcessRecommend` from a written
repository (the stages, graphs, runtimes and settings Triton runs, serving.stage_params) and
plugs it into :func:`towers.evaluation.replay.run_replay` with a fresh, real SQLite event store
in ``work_dir``:

* recording appends the events to that store (what the ``events`` model does once it has
  checked them) and refreshes the retriever's :class:`~serving.prior_stream.MovingPrior` over
  it; so the moving prior is refreshed before every query (the limit of a short
  ``prior_refresh_s``), decayed on the events' own times;
* the four variants switch the user tower's live store on or off and the retriever's prior
  between the moving one and the bundle's frozen values;
* the user tower's stored histories are replaced by the histories as of the cut
  (:func:`towers.evaluation.replay.histories_at`, up to ``LONG_HISTORY`` events as export
  stores them): the replay's cut is the model's, which export's own already respect
  (export/bundle.py ``stored_histories``; bundles exported before that held the held-out
  period too);
* every request has budget 0 (retrieval: tokenizer, user tower, retriever; the reranker keeps
  the retrieval order), ``K`` up to the served ``max_k``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from serving import stage_params
from serving.events.settings import EventSettings, LiveHistory
from serving.events.sqlite_store import SqliteEventStore
from serving.events.store import EVENT_TYPES, EventBatch
from serving.pipeline import InProcessRecommend
from serving.prior_stream import MovingPrior
from serving.user_tower import StoredHistory
from towers.evaluation.replay import Variant, histories_at, replay_task, run_replay
from towers.features import LONG_HISTORY, PriorLookup

log = logging.getLogger(__name__)

__all__ = ["served_replay"]


def served_replay(
    repository: Path,
    events: pd.DataFrame,
    cut_ts: int,
    work_dir: Path,
    *,
    max_users: int | None = None,
    seed: int = 0,
    k: int = 50,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, object]:
    """Replay ``events`` from ``cut_ts`` through the served path of ``repository`` (module
    docstring); the event store is ``work_dir/replay_events.sqlite`` (replaced). Returns the
    report section of :func:`towers.evaluation.replay.run_replay`, plus ``moving_prior``
    (its counters, or why the prior could not move). ``progress(done, total)`` follows the
    query events."""
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    path = work_dir / "replay_events.sqlite"
    for stale in work_dir.glob("replay_events.sqlite*"):
        stale.unlink()
    task = replay_task(events, cut_ts, max_users=max_users, seed=seed)
    log.info("replay: %d events from %d, %d query events", len(task.events), cut_ts, len(task))
    served = InProcessRecommend.from_repository(repository)
    folder, params = stage_params.repository_params(repository, "retriever")
    ours = EventSettings("sqlite", path, prior="moving", prior_refresh_s=0.0).to_params()
    served.retriever = stage_params.retriever(folder, {**params, **ours})
    moving = served.retriever.prior
    store = SqliteEventStore(path, max_per_user=served_max_per_user(repository))
    frozen: PriorLookup | None = moving
    why = ""
    if isinstance(moving, MovingPrior):
        frozen = PriorLookup(moving.ids, moving.values.copy(), float(moving.default))
    elif moving is None:
        why = "the model has no prior (weight 0): the prior variants are the same"
    else:
        why = "the bundle predates the moving prior (no raw counts): export it again"
    if why:
        log.warning("replay: %s", why)
    live = LiveHistory(store)
    users, offsets, items, ts = histories_at(events, cut_ts, LONG_HISTORY)  # as export stores
    served.user_tower.stored = StoredHistory(users, offsets, items, ts)
    max_k = int(served.reranker.max_k)
    type_index = {name: i for i, name in enumerate(EVENT_TYPES)}

    def recommend(variant: Variant, user_id: int, n: int) -> Sequence[int]:
        served.user_tower.live = live if variant.history == "live" else None
        served.retriever.prior = moving if variant.prior == "moving" else frozen
        out = served("", user_id=user_id, k=n, budget_ms=0.0)
        return out.item_ids.tolist()

    def record(chunk: pd.DataFrame) -> None:
        kinds = chunk["event_type"].map(type_index).fillna(0).to_numpy(np.int64)
        store.append(EventBatch.of(chunk["user_id"], chunk["item_id"], chunk["ts"], kinds))
        if isinstance(moving, MovingPrior):
            moving.refresh()

    def step(done: int) -> None:
        if progress is not None:
            progress(done, len(task))

    try:
        section = run_replay(task, recommend, record, k=k, max_k=max_k, progress=step)
    finally:
        store.close()
    section["moving_prior"] = moving.stats() if isinstance(moving, MovingPrior) else why
    section["budget_ms"] = 0.0
    return section


def served_max_per_user(repository: Path) -> int:
    """Events kept per user by the repository's event settings (the user tower's)."""
    folder, params = stage_params.repository_params(repository, "user_tower")
    return EventSettings.from_params(params, Path(repository)).max_per_user
