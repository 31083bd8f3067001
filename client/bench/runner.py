"""One benchmark run: prepare, serve, run the sections, write the results.

:func:`run_bench` checks perf_analyzer first (before anything slow), builds or reuses the
catalog and the bundle (:mod:`client.bench.catalog`), writes the repository, starts the real
``tritonserver`` on free loopback ports (its log in ``<out>/tritonserver.log``), warms it up,
runs the sections, stops it, and writes ``results.json``, ``report.md`` and the plots under
the output folder.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import platform
import re
import shlex
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from client.bench.catalog import Prepared, prepare_bundle, prepare_catalog
from client.bench.config import BenchConfig
from client.bench.jitter import measure_jitter
from client.bench.memory import sample_memory
from client.bench.perf import perf_environment
from client.bench.report import targets, write_outputs
from client.bench.requests import build_requests, mix_summary
from client.bench.sections import BenchContext, Section, available_sections
from export.repository_settings import RERANK_ITEM_TOKENS, RepositoryError

log = logging.getLogger(__name__)

#: Requests sent before measuring, so the first perf_analyzer point meets a warm server.
WARMUP_REQUESTS = 10
#: Size of one sample of the host-jitter workload, ms (about a request's CPU time here).
JITTER_SAMPLE_MS = 5.0


class BenchError(RuntimeError):
    """The benchmark could not run (bad settings, a missing model, a server that failed)."""


def resolve_sections(cfg: BenchConfig) -> list[Section]:
    """The sections to run, in the order given; ``soak`` is added when ``soak_minutes > 0``.

    Raises:
        BenchError: an unknown section, or ``soak`` without minutes.
    """
    known = available_sections()
    names = list(dict.fromkeys(cfg.sections))
    if cfg.soak_minutes > 0 and "soak" not in names:
        names.append("soak")
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise BenchError(
            f"unknown section(s) {', '.join(unknown) or '(none given)'}; choose from "
            f"{', '.join(known)}"
        )
    if "soak" in names and cfg.soak_minutes <= 0:
        raise BenchError("section soak needs --soak-minutes greater than 0")
    return [known[n] for n in names]


def _host() -> dict[str, Any]:
    model = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu_model": model, "platform": platform.platform()}


def _loadavg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def prepare(cfg: BenchConfig) -> Prepared:
    """The catalog, the bundle over it and its Triton repository (cached where possible)."""
    from export.repository import write_repository
    from towers.bundle_contract import int8_files, load_manifest

    if not cfg.artifacts.is_dir():
        raise BenchError(
            f"{cfg.artifacts} is not a folder: pass --artifacts from `towerserve train`"
        )
    cache = cfg.cache_dir
    if cfg.data_dir is not None:
        data_dir, catalog_reused = cfg.data_dir, True
        catalog_key = (
            "data-" + "".join(c if c.isalnum() else "_" for c in str(cfg.data_dir.resolve()))[-60:]
        )
    else:
        assert cfg.catalog_items is not None
        data_dir, catalog_reused = prepare_catalog(
            cache, items=cfg.catalog_items, users=cfg.n_users, queries=cfg.n_queries, seed=cfg.seed
        )
        catalog_key = data_dir.name
    bundle, bundle_reused, prior = prepare_bundle(
        cfg.artifacts, data_dir, cache, catalog_key=catalog_key, index=cfg.index, nprobe=cfg.nprobe
    )
    rerank_precision = cfg.rerank_precision
    if rerank_precision == "auto":  # bf16 measured as fast as int8 here (README, Fast path)
        rerank_precision = ""
    quantized = all((bundle / n).is_file() for n in int8_files("reranker"))
    if rerank_precision == "int8" and not quantized:
        from client.int8_export import add_int8_reranker, training_contexts

        diff = add_int8_reranker(bundle, training_contexts(cfg.artifacts, data_dir))
        log.info("reranker quantized to int8 for the bench (max abs logit diff %.3f)", diff)
    repository = write_repository(
        bundle,
        bundle.parent / "repository",
        cpu_engine=cfg.cpu_engine,
        cpu_precision=cfg.cpu_precision,
        user_engine=cfg.user_engine,
        rerank_precision=rerank_precision,
        rerank_instances=cfg.rerank_instances,
        rerank_threads=cfg.rerank_threads,
        rerank_depth=cfg.rerank_depth,
        rerank_max_call=cfg.rerank_max_call,
        reserve_ms=cfg.reserve_ms,
    )
    manifest = load_manifest(bundle)
    return Prepared(
        data_dir=data_dir,
        bundle=bundle,
        repository=repository,
        model_version=manifest.model_version,
        n_items=manifest.n_items,
        index=dict(manifest.index),
        catalog_reused=catalog_reused,
        bundle_reused=bundle_reused,
        prior=prior,
        serving={
            "cpu_engine": cfg.cpu_engine,
            "cpu_precision": cfg.cpu_precision,
            "user_engine": cfg.user_engine,
            "rerank_precision": rerank_precision or cfg.cpu_precision,
            "rerank_instances": str(cfg.rerank_instances),
            "rerank_threads": str(cfg.rerank_threads),
            "rerank_item_tokens": str(RERANK_ITEM_TOKENS),
            "rerank_depth": str(cfg.rerank_depth or "all"),
            "rerank_max_call": str(cfg.rerank_max_call),
            "reserve_ms": f"{cfg.reserve_ms:g}",
        },
    )


def run_bench(
    cfg: BenchConfig, console: Console | None = None, command: list[str] | None = None
) -> dict[str, Any]:
    """Run the benchmark and return everything it wrote to ``results.json``.

    ``console`` shows progress bars (none when ``None``); ``command`` is recorded in the
    report (default ``sys.argv``).

    Raises:
        PerfAnalyzerUnavailable: a section needs perf_analyzer and it cannot run here.
        BenchError: see :class:`BenchError`.
    """
    from serving.triton import TritonServer, TritonServerError, free_ports

    started = time.perf_counter()
    sections = resolve_sections(cfg)
    out_dir = cfg.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {
        "run": {
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": shlex.join(command if command is not None else sys.argv),
            "host": {**_host(), "loadavg_start": _loadavg()},
            "tritonserver": "2.51 (nvidia-pytriton " + _version("nvidia-pytriton") + ")",
            "tritonclient": _version("tritonclient"),
            "sections": [s.name for s in sections],
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(cfg).items()},
        }
    }
    ctx = BenchContext(cfg=cfg, out_dir=out_dir)
    if any(s.needs_perf for s in sections):
        ctx.perf_exe, ctx.perf_env = perf_environment()  # fail fast, before the export
    server: TritonServer | None = None
    results: dict[str, dict[str, Any]] = {}
    progress = (
        Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed:.0f}/{task.total:.0f}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        if console is not None
        else None
    )
    try:
        if any(s.needs_server for s in sections):
            if console is not None:
                console.rule("catalog, export, repository")
            try:
                prep = prepare(cfg)
            except (FileNotFoundError, RepositoryError) as exc:
                raise BenchError(str(exc)) from exc
            ctx.prepared = prep
            doc["catalog"] = {
                "data_dir": str(prep.data_dir),
                "bundle": str(prep.bundle),
                "model_version": prep.model_version,
                "n_items": prep.n_items,
                "index": prep.index,
                "prior": prep.prior,
                "serving": prep.serving,
                "catalog_reused": prep.catalog_reused,
                "bundle_reused": prep.bundle_reused,
            }
            ctx.requests = build_requests(
                prep.data_dir, cfg.n_requests, seed=cfg.seed, search_share=cfg.search_share
            )
            doc["requests"] = {**mix_summary(ctx.requests), "k": cfg.k}
            if cfg.jitter_s > 0:  # the host alone: nothing of the server running yet
                if console is not None:
                    console.rule(f"host jitter ({cfg.jitter_s:g} s of fixed work)")
                doc["run"]["host"]["jitter"] = measure_jitter(cfg.jitter_s, JITTER_SAMPLE_MS)
            grpc_port, http_port, metrics_port = free_ports(3)
            server = TritonServer(
                prep.repository,
                grpc_port=grpc_port,
                http_port=http_port,
                metrics_port=metrics_port,
                log_file=(out_dir / "tritonserver.log").resolve(),
            )
            if console is not None:
                console.rule("starting tritonserver")
            server.start()
            try:
                server.wait_ready(timeout_s=cfg.server_ready_timeout_s)
            except (TritonServerError, TimeoutError) as exc:
                raise BenchError(f"tritonserver did not become ready: {exc}") from exc
            ctx.url, ctx.server_pid = server.url_grpc, server.pid
            doc["server"] = {"reranker_calibration": reranker_calibration(server.log_tail(200_000))}
            doc["memory"] = {"ready": sample_memory(server.pid).to_dict()}
            _warm_up(ctx)
            doc["memory"]["warm"] = sample_memory(server.pid).to_dict()
        if progress is not None:
            progress.start()
            ctx.progress = progress
        for section in sections:
            log.info("section %s", section.name)
            results[section.name] = section.run(ctx)
        if server is not None:
            doc["memory"]["end"] = sample_memory(server.pid).to_dict()
    finally:
        if progress is not None:
            progress.stop()
        if server is not None:
            server.stop()
    doc["run"]["host"]["loadavg_end"] = _loadavg()
    doc["run"]["seconds"] = time.perf_counter() - started
    doc["sections"] = results
    doc["targets"] = targets(doc)
    parts = []
    for section in sections:
        res = results[section.name]
        plots = section.plots(res, out_dir) if section.plots is not None else []
        parts.append((section.name, section.title, section.markdown(res), plots))
    doc["run"]["outputs"] = sorted(p.name for _, _, _, ps in parts for p in ps)
    write_outputs(doc, parts, out_dir)
    if not cfg.keep_raw:
        _drop_raw(out_dir / "raw")
    return doc


_CALIBRATION = re.compile(
    r"reranker: ([0-9.]+) us per pair-token, ([0-9.]+) ms per candidate of (\d+) tokens "
    r"\(calls of (\d+)\)"
)


def reranker_calibration(server_log: str) -> dict[str, float] | None:
    """The reranker's cost estimate measured at load, from the server log: ``us_per_token``
    (per pair-token, what every call is predicted from; serving/reranker.py), and for reading
    ``ms_per_candidate`` at ``width`` tokens with calls of ``call_size``."""
    found = _CALIBRATION.findall(server_log)
    if not found:
        return None
    us, ms, width, call = found[-1]
    return {
        "us_per_token": float(us),
        "ms_per_candidate": float(ms),
        "width": float(width),
        "call_size": float(call),
    }


def _warm_up(ctx: BenchContext) -> None:
    from client.grpc_client import TowerServeClient, TowerServeError

    assert ctx.url is not None
    with TowerServeClient(ctx.url, timeout_s=ctx.cfg.client_timeout_s) as client:
        for r in ctx.requests[:WARMUP_REQUESTS]:
            try:
                client.recommend(
                    r.query,
                    user_id=r.user_id,
                    history=r.history_ids,
                    history_ts=r.history_ts,
                    k=ctx.cfg.k,
                    budget_ms=max(ctx.cfg.budgets_ms),
                )
            except TowerServeError as exc:
                raise BenchError(f"the server refused a benchmark request: {exc}") from exc


def _drop_raw(folder: Path) -> None:
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
