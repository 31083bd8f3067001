"""``towerserve demo``: the whole path on the embedded synthetic data, end to end.

generate -> train -> export (ONNX, index, repository) -> offline metrics -> start the real
tritonserver -> send sample gRPC requests -> print -> stop (unless ``keep_serving``).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pandas as pd
from rich.console import Console
from rich.table import Table

log = logging.getLogger(__name__)


#: Budget of the served_rerank system in the demo's evaluation, ms (a search frontend's).
RERANK_BUDGET_MS = 25.0


@dataclass
class DemoConfig:
    """Settings of one demo run; sizes are counts, ports TCP ports on ``host``."""

    workdir: Path = Path("runs/demo")
    preset: str = "demo"
    n_items: int = 5000
    n_users: int = 2000
    n_queries: int = 1500
    seed: int = 7
    keep_serving: bool = False
    grpc_port: int = 8001
    host: str = "127.0.0.1"
    budget_ms: float = 100.0


def run_demo(cfg: DemoConfig, console: Console) -> dict[str, object]:
    """Run every stage and return the offline metrics and sample answers."""
    from client.display import print_recommendation
    from client.grpc_client import TowerServeClient
    from client.served_eval import (
        load_served,
        served_recommendation_systems,
        served_search_systems,
    )
    from export.bundle import build_bundle
    from export.repository import write_repository
    from serving.triton import TritonServer, free_ports
    from towers.config import preset_config
    from towers.data import GenerateConfig, generate, load_dataset
    from towers.evaluation.harness import EvalConfig, ExtraSystems, run_eval
    from towers.train import train

    started = time.perf_counter()
    data_dir, artifacts = cfg.workdir / "data", cfg.workdir / "artifacts"
    repository = cfg.workdir / "repository"
    console.rule("1/5 data")
    generate(
        GenerateConfig(
            n_items=cfg.n_items, n_users=cfg.n_users, n_queries=cfg.n_queries, seed=cfg.seed
        ),
        data_dir,
        progress=True,
    )
    console.rule("2/5 train (distil, fine-tune, reranker)")
    report = train(data_dir, artifacts, preset_config(cfg.preset, seed=cfg.seed))  # type: ignore[arg-type]
    console.print(f"trained model {report['model_version']}: seconds per stage {report['seconds']}")
    console.rule("3/5 export (ONNX + parity, embeddings, FAISS, repository)")
    manifest = build_bundle(artifacts, data_dir, artifacts / "bundle")
    write_repository(artifacts / "bundle", repository)
    console.print(f"index {manifest.index}, ONNX parity {manifest.onnx_parity_max_abs_diff}")
    console.rule("4/5 offline metrics: held-out test queries and the week after the cut")
    served = load_served(repository)
    results = run_eval(
        EvalConfig(
            artifacts=artifacts,
            data_dir=data_dir,
            out_dir=cfg.workdir / "report",
            sections=("search", "recommendation"),
        ),
        ExtraSystems(
            search=served_search_systems(served, RERANK_BUDGET_MS),
            recommendation=served_recommendation_systems(served, RERANK_BUDGET_MS),
            served_path=served.where,
        ),
    )
    del served
    print_metrics(results, console)
    metrics = {k: results[k] for k in ("search", "recommendation", "checks") if k in results}

    console.rule("5/5 serve with the real tritonserver, query over gRPC")
    ds = load_dataset(data_dir)
    http_port, metrics_port = free_ports(2)
    server = TritonServer(
        repository,
        grpc_port=cfg.grpc_port,
        http_port=http_port,
        metrics_port=metrics_port,
        host=cfg.host,
    )
    answers = []
    server.start()
    try:
        server.wait_ready(timeout_s=300)
        with TowerServeClient(f"{cfg.host}:{cfg.grpc_port}") as client:
            for label, kwargs in sample_requests(ds.queries, ds.events):
                rec = client.recommend(k=5, budget_ms=cfg.budget_ms, **kwargs)
                console.print(f"[bold]{label}[/bold]")
                print_recommendation(str(kwargs.get("query", "")), rec, console)
                answers.append({"request": label, "item_ids": rec.item_ids})
        console.print(f"demo finished in {time.perf_counter() - started:.0f} s")
        if cfg.keep_serving:
            console.print(f"serving on {cfg.host}:{cfg.grpc_port} (gRPC); Ctrl-C stops it")
            try:
                while server.is_running:
                    time.sleep(1)
            except KeyboardInterrupt:
                pass
    finally:
        server.stop()
    out = {"metrics": metrics, "answers": answers, "model_version": report["model_version"]}
    (cfg.workdir / "demo_result.json").write_text(json.dumps(out, indent=2))
    return out


def sample_requests(queries: pd.DataFrame, events: pd.DataFrame) -> list[tuple[str, dict]]:
    """A few test queries, a returning user with no query, and query plus history."""
    test = queries[queries["split"] == "test"]["query_text"].drop_duplicates().head(3).tolist()
    reqs: list[tuple[str, dict]] = [(f"search: {q!r}", {"query": q}) for q in test]
    if len(events):
        user = int(events.sort_values("ts")["user_id"].iloc[-1])
        reqs.append((f"homepage for returning user {user} (stored history)", {"user_id": user}))
        recent = events[events["user_id"] == user].sort_values("ts").tail(5)
        if test:
            reqs.append(
                (
                    f"search {test[0]!r} with 5 recent items",
                    {
                        "query": test[0],
                        "history": recent["item_id"].tolist(),
                        "history_ts": recent["ts"].tolist(),
                    },
                )
            )
    return reqs


def print_metrics(results: dict[str, object], console: Console) -> None:
    """The search and recommendation tables of an eval run, then its checks."""
    columns = {
        "search": ("recall@10", "recall@100", "ndcg@10", "mrr@10", "p50 ms"),
        "recommendation": ("recall@10", "recall@50", "ndcg@10", "coverage@10"),
    }
    for section, cols in columns.items():
        part = results.get(section)
        if not isinstance(part, dict):
            continue
        size = part.get("n_queries", part.get("n_users"))
        unit = "queries" if section == "search" else "users"
        table = Table(title=f"{section}: {size} held-out {unit}")
        table.add_column("system", no_wrap=True)
        for c in cols:
            table.add_column(c, justify="right")
        for name, row in part["systems"].items():
            keys = ["latency_ms_p50" if c == "p50 ms" else c for c in cols]
            table.add_row(name, *(f"{row[k]:.3f}" if k in row else "-" for k in keys))
        console.print(table)
    for check in cast(list[dict[str, Any]], results.get("checks", [])):
        mark = {"passed": "[green]pass[/green]", "failed": "[red]miss[/red]"}.get(
            check.get("status", ""), "[yellow]inconclusive[/yellow]"
        )
        console.print(
            f"{mark} {check['name']}: {check['value']:.3f} (target {check['threshold']:g}, "
            f"{check['detail']})"
        )
