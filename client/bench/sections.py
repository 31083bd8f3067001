"""The parts of a benchmark run (``towerserve bench --sections``) and their registry.

A :class:`Section` measures one thing given a :class:`BenchContext` and returns a JSON-able
dict; its ``markdown`` renders that dict as report lines and ``plots`` draws PNGs. Sections
that need the served model (``needs_server``) share one export and one running server;
``needs_perf`` ones need perf_analyzer, checked before anything slow starts.

Built in: ``serving`` (perf_analyzer per budget and concurrency, client sweep, per-stage
statistics, memory) and ``soak`` (added by ``--soak-minutes``). A new section, for example the
model benchmarks, registers itself with :func:`register_section` from a module that
:data:`PLUGIN_MODULES` lists (imported on first use), so the CLI needs no change.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tritonclient.grpc as grpcclient
from rich.progress import Progress, TaskID

from client.bench import report, stats
from client.bench.catalog import Prepared
from client.bench.config import BenchConfig
from client.bench.memory import sample_memory
from client.bench.perf import run_perf
from client.bench.requests import BenchRequest, write_input_data
from client.bench.soak import run_soak
from client.bench.sweep import client_sweep

log = logging.getLogger(__name__)

#: Modules imported by :func:`available_sections` so that their sections register themselves.
PLUGIN_MODULES: list[str] = []


@dataclass
class BenchContext:
    """What a section gets: the settings, the output folder and, for server sections, the
    prepared catalog/bundle/repository, the running server's gRPC URL and pid, the request
    mix and perf_analyzer (path and environment)."""

    cfg: BenchConfig
    out_dir: Path
    prepared: Prepared | None = None
    url: str | None = None
    server_pid: int | None = None
    requests: list[BenchRequest] = field(default_factory=list)
    perf_exe: Path | None = None
    perf_env: dict[str, str] = field(default_factory=dict)
    progress: Progress | None = None

    def need_server(self) -> tuple[str, Path, dict[str, str]]:
        if self.url is None or self.perf_exe is None:
            raise RuntimeError("this section needs the running server and perf_analyzer")
        return self.url, self.perf_exe, self.perf_env

    def task(self, description: str, total: float) -> TaskID | None:
        return self.progress.add_task(description, total=total) if self.progress else None

    def advance(self, task: TaskID | None, by: float = 1.0, **fields: Any) -> None:
        if self.progress is not None and task is not None:
            self.progress.update(task, advance=by, **fields)


@dataclass(frozen=True)
class Section:
    """One part of the benchmark (see the module docstring)."""

    name: str
    title: str
    run: Callable[[BenchContext], dict[str, Any]]
    markdown: Callable[[dict[str, Any]], list[str]]
    plots: Callable[[dict[str, Any], Path], list[Path]] | None = None
    needs_server: bool = True
    needs_perf: bool = True


SECTIONS: dict[str, Section] = {}


def register_section(section: Section) -> Section:
    """Add ``section`` to the registry (a later one of the same name replaces it)."""
    SECTIONS[section.name] = section
    return section


def available_sections() -> dict[str, Section]:
    """Every registered section, the plugin modules' included."""
    for module in PLUGIN_MODULES:
        importlib.import_module(module)
    return dict(SECTIONS)


# -- serving --------------------------------------------------------------------------------


def run_serving(ctx: BenchContext) -> dict[str, Any]:
    """perf_analyzer at each budget and concurrency, with the statistics delta and memory of
    each point, then a client sweep at each budget."""
    url, exe, env = ctx.need_server()
    cfg = ctx.cfg
    points: list[dict[str, Any]] = []
    sweeps: list[dict[str, Any]] = []
    work = ctx.out_dir / "raw"
    task = ctx.task("perf_analyzer", len(cfg.budgets_ms) * len(cfg.concurrencies))
    sweep_task = ctx.task("client sweep", len(cfg.budgets_ms) * cfg.sweep_requests)
    memory_before = sample_memory(ctx.server_pid)
    with grpcclient.InferenceServerClient(url) as client:
        for budget in cfg.budgets_ms:
            data = write_input_data(ctx.requests, work, budget_ms=budget, k=cfg.k)
            for conc in cfg.concurrencies:
                if ctx.progress is not None and task is not None:
                    ctx.progress.update(
                        task, description=f"perf_analyzer budget {budget:g} ms, conc {conc}"
                    )
                before = stats.snapshot(client)
                point = run_perf(
                    exe,
                    env,
                    url=url,
                    model="recommend",
                    input_data=data,
                    concurrency=conc,
                    budget_ms=budget,
                    measurement_interval_ms=cfg.measurement_interval_ms,
                    stability_pct=cfg.stability_pct,
                    max_trials=cfg.max_trials,
                    work_dir=work,
                    timeout_s=cfg.perf_timeout_s,
                )
                row = point.to_dict()
                row["stages"] = stats.delta(before, stats.snapshot(client))
                row["rss_mb"] = sample_memory(ctx.server_pid).rss_mb
                points.append(row)
                log.info(
                    "budget %g ms, concurrency %d: p50 %.1f ms, p99 %.1f ms, %.0f req/s%s",
                    budget,
                    conc,
                    point.p50_ms,
                    point.p99_ms,
                    point.throughput_rps,
                    "" if point.stable else " (unstable)",
                )
                ctx.advance(task)
            before = stats.snapshot(client)
            sweep = client_sweep(
                url,
                ctx.requests,
                budget_ms=budget,
                n_requests=cfg.sweep_requests,
                k=cfg.k,
                timeout_s=cfg.client_timeout_s,
                on_request=lambda: ctx.advance(sweep_task),
            )
            sweep["stages"] = stats.delta(before, stats.snapshot(client))
            sweeps.append(sweep)
    memory_after = sample_memory(ctx.server_pid)
    return {
        "points": points,
        "sweeps": sweeps,
        "memory": {"before": memory_before.to_dict(), "after": memory_after.to_dict()},
        "settings": {
            "measurement_interval_ms": cfg.measurement_interval_ms,
            "stability_pct": cfg.stability_pct,
            "max_trials": cfg.max_trials,
            "sweep_requests": cfg.sweep_requests,
            "k": cfg.k,
        },
    }


def run_soak_section(ctx: BenchContext) -> dict[str, Any]:
    """The soak (:mod:`client.bench.soak`) at the configured concurrency and budget."""
    url, exe, env = ctx.need_server()
    cfg = ctx.cfg
    if cfg.soak_minutes <= 0:
        raise ValueError("the soak section needs --soak-minutes > 0")
    data = write_input_data(
        ctx.requests, ctx.out_dir / "raw", budget_ms=cfg.soak_budget_ms, k=cfg.k
    )
    task = ctx.task(f"soak {cfg.soak_minutes:g} min", cfg.soak_minutes * 60.0)
    done = [0.0]

    def on_window(n: int, elapsed_s: float) -> None:
        ctx.advance(task, elapsed_s - done[0])
        done[0] = elapsed_s

    return run_soak(
        exe,
        env,
        url=url,
        input_data=data,
        server_pid=ctx.server_pid,
        minutes=cfg.soak_minutes,
        window_s=cfg.soak_window_s,
        concurrency=cfg.soak_concurrency,
        budget_ms=cfg.soak_budget_ms,
        work_dir=ctx.out_dir / "raw" / "soak",
        on_window=on_window,
    )


register_section(
    Section(
        "serving",
        "Serving: perf_analyzer against recommend",
        run_serving,
        report.serving_markdown,
        report.serving_plots,
    )
)
register_section(Section("soak", "Soak", run_soak_section, report.soak_markdown, report.soak_plots))
