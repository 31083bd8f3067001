"""``towerserve bench``: the serving benchmark suite (the work is in :mod:`client.bench`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

console = Console()

__all__ = ["bench_cmd"]


def _numbers(text: str, option: str, kind: type) -> tuple:
    """Comma-separated numbers of ``kind`` (int or float) from ``text``, or a usage error."""
    try:
        return tuple(kind(x) for x in text.split(",") if x.strip())
    except ValueError as exc:
        what = "integers" if kind is int else "numbers"
        raise typer.BadParameter(
            f"comma-separated {what}, got {text!r}", param_hint=option
        ) from exc


def _floats(text: str, option: str) -> tuple[float, ...]:
    return _numbers(text, option, float)


def _ints(text: str, option: str) -> tuple[int, ...]:
    return _numbers(text, option, int)


def bench_cmd(
    artifacts: Annotated[
        Path, typer.Option(help="Trained model (from `towerserve train`).")
    ] = Path("runs/artifacts"),
    catalog: Annotated[
        int | None,
        typer.Option(
            help="Catalog size in items: generated once (seed --seed) and cached; users and "
            "queries keep --users and --queries. [default: 100000, unless --data]"
        ),
    ] = None,
    data: Annotated[
        Path | None, typer.Option(help="Use this data set as the catalog instead of generating.")
    ] = None,
    out: Annotated[Path, typer.Option(help="Folder for results.json, report.md and plots.")] = Path(
        "runs/bench"
    ),
    cache: Annotated[
        Path, typer.Option(help="Cache of generated catalogs and exported bundles.")
    ] = Path("runs/bench-cache"),
    seed: Annotated[int, typer.Option(help="Seed of the generated catalog.")] = 7,
    users: Annotated[int, typer.Option(help="Users of the generated catalog.")] = 2000,
    queries: Annotated[int, typer.Option(help="Queries of the generated catalog.")] = 1500,
    index: Annotated[str, typer.Option(help="Index of the export: auto, flat or ivf.")] = "auto",
    nprobe: Annotated[int, typer.Option(help="IVF lists searched per query.")] = 32,
    cpu_engine: Annotated[
        str, typer.Option(help="Runtime of the served graphs on the CPU: openvino or onnxruntime.")
    ] = "openvino",
    cpu_precision: Annotated[
        str, typer.Option(help="Precision of the towers (and reranker) on the CPU: bf16 or fp32.")
    ] = "bf16",
    user_engine: Annotated[
        str, typer.Option(help="Runtime of the user tower on the CPU: onnxruntime or openvino.")
    ] = "onnxruntime",
    rerank_precision: Annotated[
        str,
        typer.Option(
            help="Precision of the cross-encoder: auto (--cpu-precision), int8 (quantized once "
            "into the cached bundle), bf16 or fp32."
        ),
    ] = "auto",
    rerank_instances: Annotated[
        int, typer.Option(help="Triton instances of the cross-encoder.", min=1)
    ] = 1,
    rerank_threads: Annotated[
        int, typer.Option(help="CPU threads of each cross-encoder instance.", min=1)
    ] = 2,
    rerank_depth: Annotated[
        int,
        typer.Option(
            help="Most candidates cross-scored per request (0: as many as the budget allows).",
            min=0,
        ),
    ] = 0,
    rerank_max_call: Annotated[
        int,
        typer.Option(
            help="Most candidates per cross-encoder call (shorter calls overrun the budget by "
            "less when the machine is busy).",
            min=1,
        ),
    ] = 64,
    reserve_ms: Annotated[
        float,
        typer.Option(
            help="Milliseconds of each budget the reranker keeps for answering (it starts no "
            "call predicted to end later than the budget minus this).",
            min=0.0,
        ),
    ] = 1.0,
    jitter_s: Annotated[
        float,
        typer.Option(
            help="Seconds of fixed single-threaded work timed before the server starts: the "
            "host's p99/p50 ratio, the noise floor under every p99 (0 skips it).",
            min=0.0,
        ),
    ] = 10.0,
    sections: Annotated[
        str,
        typer.Option(
            help="Comma-separated parts to run: serving, soak (see client/bench/sections.py)."
        ),
    ] = "serving",
    concurrency: Annotated[str, typer.Option(help="perf_analyzer concurrencies.")] = "1,4,8",
    budgets_ms: Annotated[
        str, typer.Option("--budgets-ms", help="Reranking budgets in ms (each its own input file).")
    ] = "0,25,50",
    requests: Annotated[
        int, typer.Option(help="Distinct requests in the input data (see --search-share).")
    ] = 200,
    search_share: Annotated[
        float,
        typer.Option(
            help="Share of the requests that are search requests (a held-out query); the rest "
            "are homepage ones (a user's history, empty query). 1 puts every request through "
            "the cross-encoder whatever the model's blend for requests without a query.",
            min=0.0,
            max=1.0,
        ),
    ] = 0.5,
    k: Annotated[int, typer.Option("-k", help="Items per answer (K).")] = 10,
    measurement_interval_ms: Annotated[
        int, typer.Option(help="perf_analyzer measurement window in ms.")
    ] = 5000,
    stability_pct: Annotated[
        float, typer.Option(help="perf_analyzer stability: max/min of 3 windows within this %.")
    ] = 25.0,
    max_trials: Annotated[int, typer.Option(help="perf_analyzer windows before giving up.")] = 6,
    sweep_requests: Annotated[
        int, typer.Option(help="Client-sweep requests per budget (N_SCORED, DEGRADED).")
    ] = 100,
    soak_minutes: Annotated[
        float, typer.Option(help="Also soak this many minutes (0: no soak).")
    ] = 0.0,
    soak_window_s: Annotated[float, typer.Option(help="Soak window in seconds.")] = 60.0,
    soak_concurrency: Annotated[int, typer.Option(help="Soak concurrency.")] = 8,
    soak_budget_ms: Annotated[float, typer.Option(help="Soak reranking budget in ms.")] = 25.0,
    keep_raw: Annotated[
        bool, typer.Option(help="Keep perf_analyzer's input, CSV and profile files in OUT/raw.")
    ] = False,
) -> None:
    """Benchmark the served model: perf_analyzer against `recommend` at each concurrency and
    budget (p50/p90/p99, req/s), a client sweep (N_SCORED, DEGRADED), per-stage times from
    Triton's statistics and server memory; optionally a soak. Writes OUT/results.json,
    OUT/report.md and PNG plots.

    Builds or reuses a catalog of --catalog items, exports the model over it and starts the
    real tritonserver; requests are held-out test queries and real user histories.
    """
    from client.bench import BenchConfig, BenchError, PerfAnalyzerUnavailable, run_bench
    from client.bench.perf import PerfAnalyzerFailed

    try:
        cfg = BenchConfig(
            artifacts=artifacts,
            out_dir=out,
            catalog_items=catalog if catalog is not None or data is not None else 100_000,
            data_dir=data,
            cache_dir=cache,
            seed=seed,
            n_users=users,
            n_queries=queries,
            index=index,
            nprobe=nprobe,
            cpu_engine=cpu_engine,
            cpu_precision=cpu_precision,
            user_engine=user_engine,
            rerank_precision=rerank_precision,
            rerank_instances=rerank_instances,
            rerank_threads=rerank_threads,
            rerank_depth=rerank_depth,
            rerank_max_call=rerank_max_call,
            reserve_ms=reserve_ms,
            jitter_s=jitter_s,
            sections=tuple(s.strip() for s in sections.split(",") if s.strip()),
            n_requests=requests,
            search_share=search_share,
            k=k,
            concurrencies=_ints(concurrency, "--concurrency"),
            budgets_ms=_floats(budgets_ms, "--budgets-ms"),
            measurement_interval_ms=measurement_interval_ms,
            stability_pct=stability_pct,
            max_trials=max_trials,
            sweep_requests=sweep_requests,
            soak_minutes=soak_minutes,
            soak_window_s=soak_window_s,
            soak_concurrency=soak_concurrency,
            soak_budget_ms=soak_budget_ms,
            keep_raw=keep_raw,
        )
    except ValueError as exc:
        console.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(2) from exc
    try:
        doc = run_bench(cfg, console, command=["towerserve", "bench", *sys.argv[2:]])
    except PerfAnalyzerUnavailable as exc:
        console.print(f"[red]perf_analyzer unavailable: {escape(str(exc))}[/red]")
        raise typer.Exit(3) from exc
    except (BenchError, PerfAnalyzerFailed, ValueError) as exc:
        console.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(1) from exc
    points = doc.get("sections", {}).get("serving", {}).get("points", [])
    if points:
        table = Table(title="recommend (perf_analyzer)")
        for col in ("budget_ms", "conc", "p50 ms", "p99 ms", "req/s", "N_SCORED med"):
            table.add_column(col, justify="right")
        for p in points:
            med = p.get("n_scored", {}).get("median")
            table.add_row(
                f"{p['budget_ms']:g}",
                str(p["concurrency"]),
                f"{p['p50_ms']:.1f}",
                f"{p['p99_ms']:.1f}",
                f"{p['throughput_rps']:.0f}",
                "-" if med is None else f"{med:g}",
            )
        console.print(table)
    soak = doc.get("sections", {}).get("soak")
    if soak:
        errors = sum(int(v) for v in soak["errors"].values())
        console.print(
            f"soak {soak['duration_s'] / 60:.1f} min: {soak['requests']} requests, {errors} "
            f"errors, p99 drift {soak['drift']['p99_change_pct']:+.1f}%, memory growth "
            f"{soak['memory']['growth_pct']:+.1f}%"
        )
    for t in doc.get("targets", []):
        mark = "[green]pass[/green]" if t["passed"] else "[red]FAIL[/red]"
        console.print(
            f"{mark} {escape(t['name'])}: {t['value']:.1f} ({t['op']} {t['threshold']:g})"
        )
    console.print(f"[green]report written to {escape(str(out / 'report.md'))}[/green]")
