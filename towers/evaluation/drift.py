"""Time sensitivity: how quality decays after the training cut, and what an update recovers.

The held-out time range ``[cut, end)`` is split into ``n`` equal windows. The *stale* model
(the artifacts as trained, on events before ``cut``) is scored on every window. At the update
point ``U`` (the start of window ``n // 2``) two fresher models are made:

- *updated*: ``towerserve train --from ARTIFACTS --since cut --until U``, the user tower
  fine-tuned on the newest events only and the popularity prior recounted as of ``U`` (see
  :mod:`towers.update`);
- *retrained* (optional, the reference): a full ``towerserve train`` on every event before
  ``U``, the price an update avoids.

Both are scored on the windows from ``U`` on, through the served retrieval (FAISS and the
prior, system ``student_faiss``). ``lost`` is the mean of ``retrained - stale``
over those windows (without a retrain: the stale model's first window minus its mean from
``U`` on), ``recovered`` the mean of ``updated - stale``, and ``recovered_fraction`` their
ratio. Every request carries the user's history up to the window start, as live traffic
does, so what decays is the model, not its inputs.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from towers.config import TrainConfig
from towers.evaluation.recommend import next_item_task, run_systems
from towers.evaluation.systems import Loaded, events_range, load, recommendation_systems
from towers.models import UserTower, load_module
from towers.prior import ItemPrior, load_prior
from towers.update import UpdateConfig, update

log = logging.getLogger(__name__)

#: The drift curve's metric and the system it is measured on.
DRIFT_METRIC = "recall@50"
DRIFT_SYSTEM = "student_faiss"


def window_edges(cut_ts: int, end_ts: int, n: int) -> list[int]:
    """``n + 1`` unix-second edges of ``n`` equal windows over ``[cut_ts, end_ts)``."""
    if n < 2:
        raise ValueError(f"need at least 2 windows to update between them, got {n}")
    if end_ts - cut_ts < n:
        raise ValueError(f"[{cut_ts}, {end_ts}) is too short for {n} windows")
    return [cut_ts + (end_ts - cut_ts) * i // n for i in range(n + 1)]


def drift_section(
    m: Loaded,
    artifacts: Path,
    data_dir: Path,
    work_dir: Path,
    *,
    n_windows: int = 3,
    max_users: int | None = 2000,
    update_epochs: float = 2.0,
    retrain: bool = True,
    seed: int = 7,
) -> dict[str, object]:
    """Quality of the stale, updated and retrained models per window (see the module doc).

    Raises:
        ValueError: the artifacts were trained on every event (no held-out time range).
    """
    cut = m.cut_ts
    _, end = events_range(m.ds.events)
    if cut is None or cut >= end:
        raise ValueError(
            "the artifacts were trained on every event, so there is no later time to measure "
            "drift on: train with --until-frac (e.g. 0.75) or --until"
        )
    edges = window_edges(cut, end, n_windows)
    upd_at = n_windows // 2
    tasks = [
        next_item_task(m.ds.events, a, b, max_users=max_users, seed=seed)
        for a, b in zip(edges[:-1], edges[1:])
    ]

    def metric(
        model: Loaded, tower: UserTower | None, prior: ItemPrior | None, task_ids: range
    ) -> list[float | None]:
        systems = recommendation_systems(model, (DRIFT_SYSTEM,), user_tower=tower, prior=prior)
        out: list[float | None] = [None] * n_windows
        for w in task_ids:
            if len(tasks[w]):
                res = run_systems(tasks[w], systems, len(model.item_ids))
                out[w] = res[DRIFT_SYSTEM][DRIFT_METRIC]
        return out

    stale = metric(m, None, None, range(n_windows))
    update_cfg = UpdateConfig(since_ts=cut, until_ts=edges[upd_at], epochs=update_epochs, seed=seed)
    report = update(artifacts, data_dir, work_dir / "updated", update_cfg)
    upd_info = report["update"]
    assert isinstance(upd_info, dict)
    updated_tower = load_module("user_tower", work_dir / "updated" / "user_tower")
    later = range(upd_at, n_windows)
    updated_prior = load_prior(work_dir / "updated")
    updated = metric(m, updated_tower, updated_prior, later)  # type: ignore[arg-type]
    retrained: list[float | None] = [None] * n_windows
    if retrain:
        from towers.train import train

        cfg = TrainConfig(**{**m.report["config"], "until_ts": edges[upd_at]})
        start = time.perf_counter()
        train(data_dir, work_dir / "retrained", cfg)
        full_s = time.perf_counter() - start
        retrained = metric(load(work_dir / "retrained", data_dir), None, None, later)
    else:
        # the full run's stages (an updated model keeps its ancestor's under their own key)
        stages = m.report.get("full_train_seconds", m.report.get("seconds", {}))
        full_s = float(sum(stages.values()))

    def mean_gap(a: list[float | None], b: list[float | None]) -> float:
        gaps = [x - y for x, y in zip(a, b) if x is not None and y is not None]
        return float(np.mean(gaps)) if gaps else float("nan")

    if retrain:
        lost = mean_gap(retrained, stale)
    else:
        first = stale[0] if stale[0] is not None else float("nan")
        lost = first - float(np.mean([s for s in stale[upd_at:] if s is not None]))
    recovered = mean_gap(updated, stale)
    windows = [
        {
            "label": _label(edges[0], a, b),
            "start_ts": a,
            "end_ts": b,
            "n_users": len(tasks[w]),
            "stale": stale[w],
            "updated": updated[w],
            "retrained": retrained[w],
        }
        for w, (a, b) in enumerate(zip(edges[:-1], edges[1:]))
    ]
    seconds = float(upd_info["seconds"])
    return {
        "metric": DRIFT_METRIC,
        "system": DRIFT_SYSTEM,
        "cut_ts": cut,
        "windows": windows,
        "update": {
            "since_ts": cut,
            "until_ts": edges[upd_at],
            "mode": "user_tower.history + prior",
            "seconds": seconds,
            "full_train_seconds": full_s,
            "full_train_measured": retrain,
            "time_fraction": seconds / full_s if full_s > 0 else float("nan"),
            "lost": lost,
            "recovered": recovered,
            "recovered_fraction": recovered / lost if lost > 0 else float("nan"),
            "trainable_params_m": float(upd_info["trainable_params"]) / 1e6,
            "n_pairs": upd_info["n_pairs"],
        },
    }


def _label(origin: int, start: int, end: int) -> str:
    """``"days 0.0-2.3"`` after the cut."""
    return f"days {(start - origin) / 86400:.1f}-{(end - origin) / 86400:.1f}"
