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
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from towers.evaluation.distillation import distillation_section
from towers.evaluation.drift import drift_section
from towers.evaluation.recommend import RecSystem, next_item_task, run_systems
from towers.evaluation.report import write_report
from towers.evaluation.search import SearchSystem, SearchTask, run_search
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


@dataclass
class ExtraSystems:
    """Systems built outside ``towers`` (the served path, client/served_eval.py), evaluated
    beside the built-in ones in the search and recommendation sections."""

    search: Mapping[str, SearchSystem] = field(default_factory=dict)
    recommendation: Mapping[str, RecSystem] = field(default_factory=dict)


def run_eval(cfg: EvalConfig, extra: ExtraSystems | None = None) -> dict[str, object]:
    """Run the configured sections, write ``cfg.out_dir/report.md`` and return the results.
    ``extra`` systems join the search and recommendation sections (all of them, whatever
    ``cfg.systems`` says)."""
    extra = extra or ExtraSystems()
    started = time.perf_counter()
    m = load(cfg.artifacts, cfg.data_dir)
    data_dir = cfg.data_dir or Path(m.report["data_dir"])
    results: dict[str, object] = {"meta": _meta(cfg, m, data_dir)}
    skipped: dict[str, str] = {}
    task = _search_task(m)
    if "search" in cfg.sections:
        if task is None:
            skipped["search"] = "no judged test-split queries in the data set"
        else:
            names = _pick(cfg.systems, SEARCH_SYSTEMS)
            if m.reranker is None:
                names = tuple(n for n in names if n != "student_faiss_rerank")
            res, _ = run_search(task, {**search_systems(m, names), **extra.search})
            results["search"] = {"n_queries": len(task.texts), "systems": res}
    if "recommendation" in cfg.sections:
        why = _no_holdout(m)
        if why:
            skipped["recommendation"] = why
        else:
            results["recommendation"] = _recommendation(m, cfg, extra.recommendation)
    if "distillation" in cfg.sections:
        if task is None:
            skipped["distillation"] = "no judged test-split queries to measure quality on"
        else:
            teacher = results.get("search", {}).get("systems", {}).get("teacher_exact")  # type: ignore[union-attr]
            results["distillation"] = distillation_section(
                m, cfg.artifacts, task, cfg.layers, teacher_quality=teacher
            )
    if "drift" in cfg.sections:
        why = _no_holdout(m)
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
    results["checks"] = checks(results)
    meta = results["meta"]
    assert isinstance(meta, dict)
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
    m: Loaded, cfg: EvalConfig, extra: Mapping[str, RecSystem] | None = None
) -> dict[str, object]:
    """Next items in the whole held-out range ``[cut, end)`` for each system."""
    assert m.cut_ts is not None
    _, end = events_range(m.ds.events)
    task = next_item_task(m.ds.events, m.cut_ts, end, max_users=cfg.max_users, seed=cfg.seed)
    names = _pick(cfg.systems, RECOMMENDATION_SYSTEMS)
    systems = {**recommendation_systems(m, names), **(extra or {})}
    res = run_systems(task, systems, len(m.item_ids))
    return {"n_users": len(task), "cut_ts": m.cut_ts, "window_s": end - m.cut_ts, "systems": res}


def _meta(cfg: EvalConfig, m: Loaded, data_dir: Path) -> dict[str, object]:
    return {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "artifacts": str(cfg.artifacts),
        "data_dir": str(data_dir),
        "model_version": m.report.get("model_version", ""),
        "n_items": len(m.item_ids),
        "n_events": len(m.ds.events),
        "cut_ts": m.cut_ts if m.cut_ts is not None else "none (all events trained on)",
        "index": str(m.index_params.get("type", "")),
        "machine": f"{platform.machine()}, {_cores()} cores, {platform.python_version()}",
    }


def _cores() -> int:
    return len(os.sched_getaffinity(0))


def checks(results: dict[str, object]) -> list[dict[str, object]]:
    """The project's quality targets, each with its measured value and threshold."""
    out: list[dict[str, object]] = []

    def add(name: str, value: float, threshold: float, passed: bool, detail: str) -> None:
        out.append(
            {
                "name": name,
                "value": value,
                "threshold": threshold,
                "passed": bool(passed),
                "detail": detail,
            }
        )

    search = results.get("search", {}).get("systems", {})  # type: ignore[union-attr]
    if "teacher_exact" in search and "student_exact" in search:
        ratio = search["student_exact"]["recall@100"] / max(
            search["teacher_exact"]["recall@100"], 1e-9
        )
        add("student keeps teacher Recall@100", ratio, 0.95, ratio >= 0.95, "student / teacher")
    if "student_faiss" in search and "student_faiss_rerank" in search:
        gain = search["student_faiss_rerank"]["ndcg@10"] - search["student_faiss"]["ndcg@10"]
        add("rerank NDCG@10 gain", gain, 0.05, gain >= 0.05, "retrieve+rerank - retrieval only")
        for base in ("bm25", "popularity"):
            if base in search:
                diff = search["student_faiss_rerank"]["ndcg@10"] - search[base]["ndcg@10"]
                add(f"rerank beats {base} NDCG@10", diff, 0.0, diff > 0, f"rerank - {base}")
    if "served" in search and "served_rerank" in search:
        gain = search["served_rerank"]["ndcg@10"] - search["served"]["ndcg@10"]
        add(
            "served rerank NDCG@10 gain",
            gain,
            0.04,
            gain >= 0.04,
            "served path in its budget - served retrieval only (same repository)",
        )
    distil = results.get("distillation", {})
    for row in distil.get("rows", []) if isinstance(distil, dict) else []:
        if row["name"] == distil.get("chosen"):
            s = row["speedup_vs_teacher"]
            add("chosen student encodes faster", s, 1.0, s > 1.0, "texts/s over the teacher's")
    rec = results.get("recommendation", {}).get("systems", {})  # type: ignore[union-attr]
    if "popularity" in rec and "student_faiss" in rec:
        ratio = rec["student_faiss"]["recall@50"] / max(rec["popularity"]["recall@50"], 1e-9)
        add(
            "two-tower Recall@50 vs popularity",
            ratio,
            2.0,
            ratio >= 2.0,
            "served retrieval (FAISS + prior) / popularity",
        )
    drift = results.get("drift", {})
    upd = drift.get("update") if isinstance(drift, dict) else None
    if upd:
        frac = upd["recovered_fraction"]
        add("update recovers lost quality", frac, 0.5, frac >= 0.5, "recovered / lost")
        tf = upd["time_fraction"]
        add("update time vs full training", tf, 0.1, tf <= 0.1, "update s / full train s")
    return out
