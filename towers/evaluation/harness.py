"""``towerserve eval``: every section measured in one run, checked, and written as a report.

Sections (each optional): ``search`` (labelled test queries), ``recommendation`` (the new items
users engage with in the held-out time range after the training cut), ``distillation`` (students of
1..4 layers against the teacher), ``drift`` (quality by time window, incremental update).
The checks at the end are the targets the project holds itself to; each says its threshold.
"""

from __future__ import annotations

import logging
import os
import platform
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

from towers.data.split import heldout_events, split_info
from towers.evaluation.confidence import paired_ci, verdict
from towers.evaluation.distillation import distillation_section
from towers.evaluation.drift import drift_section
from towers.evaluation.recommend import RecSystem, next_item_task, run_systems
from towers.evaluation.report import write_report
from towers.evaluation.search import SearchSystem, SearchTask, per_query_metrics, run_search
from towers.evaluation.systems import (
    RECOMMENDATION_SYSTEMS,
    SEARCH_SYSTEMS,
    Loaded,
    events_range,
    load,
    recommendation_systems,
    search_systems,
)
from towers.examples import graded_labels
from towers.next_item import random_split_task

log = logging.getLogger(__name__)

Section = Literal["search", "recommendation", "distillation", "drift"]
SECTIONS: tuple[Section, ...] = ("search", "recommendation", "distillation", "drift")


class EvalConfig(BaseModel):
    """Settings of one ``towerserve eval`` run."""

    artifacts: Path
    data_dir: Path | None = Field(None, description="data set (default: the one trained on)")
    out_dir: Path = Path("runs/report")
    sections: tuple[Section, ...] = SECTIONS
    systems: tuple[str, ...] | None = Field(None, description="systems to compare (None: all)")
    max_users: int | None = Field(2000, ge=1, description="users sampled per recommendation task")
    layers: tuple[int, ...] = Field((1, 2, 3, 4), description="student depths to compare")
    windows: int = Field(3, ge=2, le=20, description="time windows after the cut")
    update_epochs: float = Field(2.0, gt=0, description="passes over the update window")
    retrain: bool = Field(True, description="full retrain at the update point as reference")
    seed: int = 7
    protocol: Literal["time", "random"] = Field(
        "time",
        description="recommendation protocol: time (held-out time range after the training "
        "cut) or random (held-out random 20% of events, from `towerserve data split`)",
    )


@dataclass
class ExtraSystems:
    """Systems built outside ``towers`` (the served path, client/served_eval.py), evaluated
    beside the built-in ones in the search and recommendation sections."""

    search: Mapping[str, SearchSystem] = field(default_factory=dict)
    recommendation: Mapping[str, RecSystem] = field(default_factory=dict)
    #: The replay evaluation (towers/evaluation/replay.py) through the served path:
    #: ``replay(events, cut_ts)`` -> its report section (client/served_replay.py).
    replay: Callable[[pd.DataFrame, int], dict[str, object]] | None = None
    #: Where the served systems came from (``ServedPath.where``), for the report's meta.
    served_path: str | None = None


def run_eval(cfg: EvalConfig, extra: ExtraSystems | None = None) -> dict[str, object]:
    """Run the configured sections, write ``cfg.out_dir/report.md`` and return the results.
    ``extra`` systems join the search and recommendation sections (all of them, whatever
    ``cfg.systems`` says)."""
    extra = extra or ExtraSystems()
    started = time.perf_counter()
    m = load(cfg.artifacts, cfg.data_dir)
    data_dir = cfg.data_dir or Path(m.report["data_dir"])
    meta = _meta(cfg, m, data_dir)
    if extra.served_path:
        meta["served_path"] = extra.served_path
    results: dict[str, object] = {"meta": meta}
    skipped: dict[str, str] = {}
    per_query: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    task = _search_task(m)
    if "search" in cfg.sections:
        if task is None:
            skipped["search"] = "no judged test-split queries in the data set"
        else:
            names = _pick(cfg.systems, SEARCH_SYSTEMS)
            if m.reranker is None:
                names = tuple(n for n in names if n != "student_faiss_rerank")
            res, ranked_by = run_search(task, {**search_systems(m, names), **extra.search})
            results["search"] = {"n_queries": len(task.texts), "systems": res}
            per_query["search"] = {n: per_query_metrics(r, task) for n, r in ranked_by.items()}
    if cfg.protocol == "random":
        why = _random_protocol_problem(m, data_dir)
        if why:
            raise ValueError(why)
    if "recommendation" in cfg.sections:
        why = _no_holdout(m) if cfg.protocol == "time" else ""
        if why:
            skipped["recommendation"] = why
        else:
            per_user: dict[str, dict[str, np.ndarray]] = {}
            rec = _recommendation(m, cfg, extra.recommendation, per_user)
            rec["vs_baselines"] = baseline_ratios(rec["systems"], per_user)  # type: ignore[arg-type]
            results["recommendation"] = rec
            per_query["recommendation"] = per_user
    if extra.replay is not None:
        why = _no_holdout(m) if cfg.protocol == "time" else "the replay needs the time protocol"
        if why or m.cut_ts is None:
            skipped["replay"] = why or "no training cut"
        else:
            results["replay"] = extra.replay(m.ds.events, m.cut_ts)
    if "distillation" in cfg.sections:
        if task is None:
            skipped["distillation"] = "no judged test-split queries to measure quality on"
        else:
            teacher = results.get("search", {}).get("systems", {}).get("teacher_exact")  # type: ignore[union-attr]
            results["distillation"] = distillation_section(
                m, cfg.artifacts, task, cfg.layers, teacher_quality=teacher
            )
    if "drift" in cfg.sections:
        why = _no_holdout(m) if cfg.protocol == "time" else "drift needs the time protocol"
        if why:
            skipped["drift"] = why
        else:
            results["drift"] = drift_section(
                m,
                cfg.artifacts,
                data_dir,
                cfg.out_dir / "models",
                n_windows=cfg.windows,
                max_users=cfg.max_users,
                update_epochs=cfg.update_epochs,
                retrain=cfg.retrain,
                seed=cfg.seed,
            )
    for section, why in skipped.items():
        log.warning("section %s skipped: %s", section, why)
    results["checks"] = checks(results, per_query)
    meta["skipped"] = "; ".join(f"{k}: {v}" for k, v in skipped.items()) or "none"
    meta["seconds"] = round(time.perf_counter() - started, 1)
    write_report(results, cfg.out_dir)
    return results


def _pick(chosen: tuple[str, ...] | None, available: tuple[str, ...]) -> tuple[str, ...]:
    return available if chosen is None else tuple(n for n in available if n in chosen)


def _search_task(m: Loaded) -> SearchTask | None:
    _, texts, labels = graded_labels(m.ds.queries, m.ds.qrels, "test")
    return SearchTask(texts, labels) if texts else None


def _no_holdout(m: Loaded) -> str:
    """Why next-item evaluation is impossible on ``m`` ("" when it is possible)."""
    if len(m.ds.events) == 0:
        return "the data set has no events"
    _, end = events_range(m.ds.events)
    if m.cut_ts is None or m.cut_ts >= end:
        return (
            "the model was trained on every event: train with --until-frac or --until to hold "
            "the newest events out"
        )
    return ""


def _recommendation(
    m: Loaded,
    cfg: EvalConfig,
    extra: Mapping[str, RecSystem] | None = None,
    per_user: dict[str, dict[str, np.ndarray]] | None = None,
) -> dict[str, object]:
    """Next items in the whole held-out range ``[cut, end)`` for each system."""
    names = _pick(cfg.systems, RECOMMENDATION_SYSTEMS)
    systems = {**recommendation_systems(m, names), **(extra or {})}
    if cfg.protocol == "random":
        assert m.ds.root is not None
        task = random_split_task(
            m.ds.events, heldout_events(m.ds.root), max_users=cfg.max_users, seed=cfg.seed
        )
        res = run_systems(task, systems, len(m.item_ids), per_user=per_user)
        return {
            "protocol": "random",
            "split": split_info(m.ds),
            "n_users": len(task),
            "systems": res,
            "baseline_settings": _baseline_settings(systems),
        }
    assert m.cut_ts is not None
    _, end = events_range(m.ds.events)
    task = next_item_task(m.ds.events, m.cut_ts, end, max_users=cfg.max_users, seed=cfg.seed)
    seen = set(map(int, m.ds.events.loc[m.ds.events["ts"].to_numpy() < m.cut_ts, "item_id"]))
    cold = set(map(int, m.item_ids)) - seen
    res = run_systems(task, systems, len(m.item_ids), per_user=per_user, cold_items=cold)
    return {
        "protocol": "time",
        "n_users": len(task),
        "cut_ts": m.cut_ts,
        "window_s": end - m.cut_ts,
        "systems": res,
        "baseline_settings": _baseline_settings(systems),
    }


def _baseline_settings(systems: Mapping[str, RecSystem]) -> dict[str, object]:
    """What each baseline chose on validation before the task (EASE's ridge), by system."""
    return {
        name: dict(settings)
        for name, system in systems.items()
        if (settings := getattr(system, "settings", None))
    }


def _random_protocol_problem(m: Loaded, data_dir: Path) -> str:
    """Why the random protocol cannot run on ``m`` ("" when it can)."""
    if split_info(m.ds) is None:
        return (
            f"--protocol random needs a data set written by `towerserve data split` ({data_dir} "
            "has no random split in its meta.json), and a model trained on it with --all-events"
        )
    if m.cut_ts is not None:
        return (
            "--protocol random needs a model trained on every event of the split's training "
            f"share (`towerserve train --data {data_dir} --all-events`); this one held events "
            "out after a time cut"
        )
    return ""


def _meta(cfg: EvalConfig, m: Loaded, data_dir: Path) -> dict[str, object]:
    return {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "artifacts": str(cfg.artifacts),
        "data_dir": str(data_dir),
        "model_version": m.report.get("model_version", ""),
        "n_items": len(m.item_ids),
        "n_events": len(m.ds.events),
        "cut_ts": m.cut_ts if m.cut_ts is not None else "none (all events trained on)",
        "protocol": cfg.protocol
        + (
            ": held-out time range after the training cut"
            if cfg.protocol == "time"
            else ": random 80/20 split of events (towerserve data split)"
        ),
        "index": str(m.index_params.get("type", "")),
        "machine": f"{platform.machine()}, {_cores()} cores, {platform.python_version()}",
    }


def _cores() -> int:
    return len(os.sched_getaffinity(0))


#: Recommendation baselines the served path must beat (issue 9), the strongest one counts.
REC_BASELINES = ("popularity", "popularity_all", "item_knn", "rp3beta", "ease", "als")

#: Per-query (search) and per-user (recommendation) metric arrays by section and system,
#: aligned across systems: what the paired intervals of the checks resample.
PerQuery = Mapping[str, Mapping[str, Mapping[str, np.ndarray]]]


def _ours(rec: Mapping[str, Any]) -> str | None:
    """What a request without a query gets: the served path, else its training-side twin."""
    return next((s for s in ("served", "student_faiss_covisit", "student_faiss") if s in rec), None)


def baseline_ratios(
    rec: Mapping[str, Any], per_user: Mapping[str, Mapping[str, np.ndarray]]
) -> dict[str, object]:
    """The served path (:func:`_ours`) against *every* baseline of :data:`REC_BASELINES`, not
    only the strongest: ``{"system": ours, "rows": {baseline: {"recall@50": [value, lo, hi],
    "accuracy@100": [...]}}}``, paired ratios (ours / baseline) with 95% bootstrap intervals
    over the same users (accuracy: over their pooled hits, as the check's). Empty rows when a
    system lacks its per-user figures."""
    ours = _ours(rec)
    rows: dict[str, dict[str, list[float]]] = {}
    if ours is None or ours not in per_user:
        return {"system": ours, "rows": rows}
    mine = per_user[ours]
    for base in (b for b in REC_BASELINES if b in per_user):
        row: dict[str, list[float]] = {}
        for label, metric in (("recall@50", "recall@50"), ("accuracy@100", "hits@100")):
            if metric in mine and metric in per_user[base]:
                row[label] = list(paired_ci(mine[metric], per_user[base][metric], "ratio"))
        rows[base] = row
    return {"system": ours, "rows": rows}


def _cold_check(
    rec: Mapping[str, Any],
    ours: str,
    compare: Callable[..., tuple[float, tuple[float, float] | None, int | None]],
    add: Callable[..., None],
) -> None:
    """Issue 9's cold-start target: the served path's Recall@50 among held-out new items (no
    interaction before the cut) at least that of its own towers alone (``student_faiss``:
    FAISS by text and prior, no co-visitation), as a paired difference over the users with a
    cold target. Skipped when either row lacks the figure or no user has a cold target."""
    a, b = rec[ours], rec["student_faiss"]
    if "cold_recall@50" not in a or "cold_recall@50" not in b or not a.get("n_cold_users"):
        return
    v, ci, n = compare("recommendation", rec, ours, "student_faiss", "cold_recall@50", "diff")
    if ci is None:  # no per-user arrays: the count is the cold users', not all users'
        n = int(a["n_cold_users"])
    add(
        "cold items keep the towers' Recall@50",
        v,
        0.0,
        f"{ours} - student_faiss, Recall@50 among held-out new items (users with one)",
        n=n,
        ci=ci,
    )


def checks(
    results: dict[str, object], per_query: PerQuery | None = None
) -> list[dict[str, object]]:
    """The project's quality targets, each with its measured value, threshold, the number of
    users or queries it was decided on (``n``), a paired 95% bootstrap interval (``ci95``,
    when ``per_query`` holds the systems' per-query metrics) and a ``status``: ``passed``,
    ``failed`` or ``inconclusive`` (fewer than ``MIN_COUNT`` users or queries, or an
    interval containing the threshold; see :mod:`towers.evaluation.confidence`).
    ``passed`` is ``True``/``False``, or ``None`` when inconclusive."""
    out: list[dict[str, object]] = []
    per_query = per_query or {}

    def add(
        name: str,
        value: float,
        threshold: float,
        detail: str,
        *,
        higher: bool = True,
        n: int | None = None,
        ci: tuple[float, float] | None = None,
    ) -> None:
        status = verdict(value, threshold, higher_is_better=higher, n=n, ci=ci)
        out.append(
            {
                "name": name,
                "value": value,
                "threshold": threshold,
                "passed": None if status == "inconclusive" else status == "passed",
                "status": status,
                "n": n,
                "ci95": list(ci) if ci is not None else None,
                "detail": detail,
            }
        )

    def compare(
        section: str, systems: Mapping[str, Any], a: str, b: str, metric: str, stat: str
    ) -> tuple[float, tuple[float, float] | None, int | None]:
        """``a`` against ``b`` on ``metric``: value, paired interval and count."""
        arrays = per_query.get(section, {})
        if metric in arrays.get(a, {}) and metric in arrays.get(b, {}):
            value, lo, hi = paired_ci(arrays[a][metric], arrays[b][metric], stat)  # type: ignore[arg-type]
            return value, (lo, hi), len(arrays[a][metric])
        va, vb = float(systems[a][metric]), float(systems[b][metric])
        value = va - vb if stat == "diff" else va / max(vb, 1e-9)
        n = systems[a].get("n_queries", systems[a].get("n_users"))
        return value, None, int(n) if isinstance(n, int | np.integer) else None

    search = results.get("search", {}).get("systems", {})  # type: ignore[union-attr]
    if "teacher_exact" in search and "student_exact" in search:
        v, ci, n = compare(
            "search", search, "student_exact", "teacher_exact", "recall@100", "ratio"
        )
        add("student keeps teacher Recall@100", v, 0.95, "student / teacher", n=n, ci=ci)
    if "student_faiss" in search and "student_faiss_rerank" in search:
        v, ci, n = compare(
            "search", search, "student_faiss_rerank", "student_faiss", "ndcg@10", "diff"
        )
        add("rerank NDCG@10 gain", v, 0.05, "retrieve+rerank - retrieval only", n=n, ci=ci)
        for base in ("bm25", "popularity"):
            if base in search:
                v, ci, n = compare(
                    "search", search, "student_faiss_rerank", base, "ndcg@10", "diff"
                )
                add(f"rerank beats {base} NDCG@10", v, 0.0, f"rerank - {base}", n=n, ci=ci)
    if "served" in search and "served_rerank" in search:
        v, ci, n = compare("search", search, "served_rerank", "served", "ndcg@10", "diff")
        add(
            "served rerank NDCG@10 gain",
            v,
            0.04,
            "served path in its budget - served retrieval only (same repository)",
            n=n,
            ci=ci,
        )
    distil = results.get("distillation", {})
    for row in distil.get("rows", []) if isinstance(distil, dict) else []:
        if row["name"] == distil.get("chosen"):
            s = row["speedup_vs_teacher"]
            add("chosen student encodes faster", s, 1.0, "texts/s over the teacher's")
    rec = results.get("recommendation", {}).get("systems", {})  # type: ignore[union-attr]
    if "popularity" in rec and "student_faiss" in rec:
        v, ci, n = compare(
            "recommendation", rec, "student_faiss", "popularity", "recall@50", "ratio"
        )
        add(
            "two-tower Recall@50 vs popularity",
            v,
            2.0,
            "served retrieval (FAISS + prior) / popularity",
            n=n,
            ci=ci,
        )
    ours = _ours(rec)
    bases = [b for b in REC_BASELINES if b in rec]
    if ours and bases:
        best = max(bases, key=lambda b: float(rec[b]["recall@50"]))
        v, ci, n = compare("recommendation", rec, ours, best, "recall@50", "ratio")
        add(
            "recommendation beats the best baseline Recall@50",
            v,
            1.0,
            f"{ours} / {best} (the strongest of {', '.join(bases)})",
            n=n,
            ci=ci,
        )
    if ours and bases and all("accuracy@100" in rec[s] for s in [ours, *bases]):
        best = max(bases, key=lambda b: float(rec[b]["accuracy@100"]))
        arrays = per_query.get("recommendation", {})
        metric = "accuracy@100"
        if "hits@100" in arrays.get(ours, {}) and "hits@100" in arrays.get(best, {}):
            # pooled over the same targets: accuracy a / accuracy b = hits a / hits b
            metric = "hits@100"
        v, ci, n = compare("recommendation", rec, ours, best, metric, "ratio")
        add(
            "recommendation beats the best baseline top-100 accuracy",
            v,
            1.0,
            f"{ours} / {best} (the strongest of {', '.join(bases)})",
            n=n,
            ci=ci,
        )
    if ours and ours != "student_faiss" and "student_faiss" in rec:
        _cold_check(rec, ours, compare, add)
    drift = results.get("drift", {})
    upd = drift.get("update") if isinstance(drift, dict) else None
    if upd:
        frac = upd["recovered_fraction"]
        add("update recovers lost quality", frac, 0.5, "recovered / lost")
        tf = upd["time_fraction"]
        add("update time vs full training", tf, 0.1, "update s / full train s", higher=False)
    replay = results.get("replay", {})
    out += list(replay.get("checks", [])) if isinstance(replay, dict) else []  # replay.py's
    return out
