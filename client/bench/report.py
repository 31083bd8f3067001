"""``results.json``, ``report.md`` (markdown tables) and PNG plots of a benchmark run.

Rendering only: each function takes the dicts the sections return. Plots use matplotlib's
Agg backend (no display needed).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: Stages shown in the per-stage table, in request order.
STAGE_COLUMNS = ("tokenizer", "user_tower", "retriever", "reranker", "recommend")


def fmt(value: Any, digits: int = 1) -> str:
    """A number for a table: fixed ``digits``, thousands separated; ``-`` for None/NaN."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:,.{digits}f}"
    return str(value)


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], right: int = 1) -> list[str]:
    """Markdown table lines; every column from index ``right`` on is right-aligned."""
    lines = ["| " + " | ".join(header) + " |"]
    lines.append(
        "| " + " | ".join("---" if i < right else "---:" for i in range(len(header))) + " |"
    )
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return lines


def _get(doc: dict[str, Any], *keys: str) -> Any:
    cur: Any = doc
    for key in keys:
        if not isinstance(cur, dict):
            return None
        cur = cur.get(key)
    return cur


# -- serving --------------------------------------------------------------------------------


def _not_needed_pct(point: dict[str, Any]) -> float | None:
    """Share (%) of a point's answers that needed no cross-encoder (``scored_summary``)."""
    scored = point.get("n_scored") or {}
    unneeded = scored.get("unneeded")
    if unneeded is None:
        return None
    total = unneeded + scored.get("count", 0)
    return 100.0 * unneeded / total if total else None


def serving_markdown(res: dict[str, Any]) -> list[str]:
    """The serving section: latency and throughput, request kinds, client sweep, stages,
    memory."""
    points, sweeps = res.get("points", []), res.get("sweeps", [])
    s = res.get("settings", {})
    out = [
        f"perf_analyzer over gRPC, measurement interval {s.get('measurement_interval_ms')} ms, "
        f"stability {fmt(s.get('stability_pct'), 0)}% (max {s.get('max_trials')} trials; a point "
        "that did not stabilise is marked and measured again with the check relaxed). "
        "Latencies are perf_analyzer's client-side percentiles of the stable windows; "
        "N_SCORED and degraded under load are over every request of the run that needed the "
        "cross-encoder; a request whose blend gives it no weight (the homepage requests of a "
        "model whose blend for requests without a query keeps the retrieval order: "
        "serving/reranker.py) needs none, is left out of both and counted under 'not needed %' "
        "(`--search-share 1` puts every request through the cross-encoder).",
        "",
    ]
    rows = [
        [
            fmt(p["budget_ms"], 0),
            p["concurrency"],
            p["p50_ms"],
            p["p90_ms"],
            p["p99_ms"],
            p["throughput_rps"],
            _get(p, "n_scored", "median"),
            100 * (_get(p, "n_scored", "share_degraded") or 0.0),
            _not_needed_pct(p),
            p["errors"],
            "yes" if p["stable"] else "no",
        ]
        for p in points
    ]
    out += table(
        [
            "budget_ms",
            "concurrency",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "req/s",
            "N_SCORED median",
            "degraded %",
            "not needed %",
            "errors",
            "stable",
        ],
        rows,
    )
    out += ["", "By request kind (perf_analyzer's requests, every trial):", ""]
    rows = []
    for p in points:
        kinds = p.get("by_kind", {})
        rows.append(
            [
                fmt(p["budget_ms"], 0),
                p["concurrency"],
                _get(kinds, "search", "p50_ms"),
                _get(kinds, "search", "p99_ms"),
                _get(kinds, "homepage", "p50_ms"),
                _get(kinds, "homepage", "p99_ms"),
            ]
        )
    out += table(
        [
            "budget_ms",
            "concurrency",
            "search p50 ms",
            "search p99 ms",
            "homepage p50 ms",
            "homepage p99 ms",
        ],
        rows,
    )
    if sweeps:
        out += [
            "",
            f"Client sweep: {sweeps[0].get('requests')} requests one at a time per budget "
            "(client/grpc_client.py, no queueing): candidates the cross-encoder scored "
            "(N_SCORED) and the share of answers it could not finish (DEGRADED).",
            "",
        ]
        rows = [
            [
                fmt(w["budget_ms"], 0),
                _get(w, "n_scored", "median"),
                _get(w, "n_scored", "p10"),
                _get(w, "n_scored", "p90"),
                _get(w, "n_scored", "mean"),
                100 * (_get(w, "n_scored", "share_degraded") or 0.0),
                _get(w, "by_kind", "search", "n_scored", "median"),
                _get(w, "by_kind", "homepage", "n_scored", "median"),
                _get(w, "latency", "p50_ms"),
                _get(w, "latency", "p99_ms"),
                w["errors"],
            ]
            for w in sweeps
        ]
        out += table(
            [
                "budget_ms",
                "N_SCORED median",
                "p10",
                "p90",
                "mean",
                "degraded %",
                "median search",
                "median homepage",
                "p50 ms",
                "p99 ms",
                "errors",
            ],
            rows,
        )
    out += [
        "",
        "Per stage, from Triton's statistics API (deltas over each perf_analyzer run): mean "
        "queue / compute ms per request (compute = input + infer + output).",
        "",
    ]
    rows = []
    for p in points:
        stages = p.get("stages", {})
        row: list[Any] = [fmt(p["budget_ms"], 0), p["concurrency"]]
        for name in STAGE_COLUMNS:
            st = stages.get(name)
            row.append("-" if st is None else f"{st['queue_ms']:.2f} / {st['compute_ms']:.2f}")
        row.append(sum(int(st.get("failures", 0)) for st in stages.values()))
        rows.append(row)
    out += table(["budget_ms", "concurrency", *STAGE_COLUMNS, "failed"], rows)
    mem = res.get("memory", {})
    before, after = mem.get("before", {}), mem.get("after", {})
    if before.get("processes") or after.get("processes"):
        out += [
            "",
            "Server memory (tritonserver and its python-backend stubs; RSS sums shared pages "
            "once per process, PSS shares them out):",
            "",
        ]
        names = sorted(
            {p["name"] for p in before.get("processes", []) + after.get("processes", [])}
        )

        def by_name(sample: dict[str, Any], name: str) -> float:
            return float(sum(p["rss_mb"] for p in sample.get("processes", []) if p["name"] == name))

        rows = [[n, by_name(before, n), by_name(after, n)] for n in names]
        rows.append(["total RSS", before.get("rss_mb"), after.get("rss_mb")])
        rows.append(["total PSS", before.get("pss_mb"), after.get("pss_mb")])
        out += table(["process", "before MB", "after MB"], rows)
    return out


def serving_plots(res: dict[str, Any], out_dir: Path) -> list[Path]:
    """``latency_vs_budget.png`` (p50 solid, p99 dashed, one colour per concurrency) and
    ``n_scored_vs_budget.png`` (client sweep median with p10-p90 band)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths: list[Path] = []
    points = res.get("points", [])
    if points:
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        concs = sorted({p["concurrency"] for p in points})
        for i, c in enumerate(concs):
            ps = sorted((p for p in points if p["concurrency"] == c), key=lambda p: p["budget_ms"])
            xs = [p["budget_ms"] for p in ps]
            color = f"C{i}"
            ax.plot(xs, [p["p50_ms"] for p in ps], "o-", color=color, label=f"conc {c} p50")
            ax.plot(xs, [p["p99_ms"] for p in ps], "s--", color=color, label=f"conc {c} p99")
        ax.set_xlabel("budget_ms (reranking budget per request)")
        ax.set_ylabel("latency, ms (perf_analyzer, client side)")
        ax.set_title("recommend: latency against budget")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        paths.append(out_dir / "latency_vs_budget.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    sweeps = [w for w in res.get("sweeps", []) if _get(w, "n_scored", "median") is not None]
    if sweeps:
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        xs = [w["budget_ms"] for w in sweeps]
        ax.plot(xs, [w["n_scored"]["median"] for w in sweeps], "o-", label="median")
        ax.fill_between(
            xs,
            [w["n_scored"]["p10"] for w in sweeps],
            [w["n_scored"]["p90"] for w in sweeps],
            alpha=0.25,
            label="p10-p90",
        )
        ax.set_xlabel("budget_ms")
        ax.set_ylabel("candidates cross-scored (N_SCORED)")
        ax.set_title("client sweep: candidates scored within the budget")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        paths.append(out_dir / "n_scored_vs_budget.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths


# -- soak -----------------------------------------------------------------------------------


def soak_markdown(res: dict[str, Any]) -> list[str]:
    """The soak: errors, drift, memory, and one row per window."""
    err, drift, mem = res.get("errors", {}), res.get("drift", {}), res.get("memory", {})
    out = [
        f"{fmt(res.get('duration_s', 0) / 60, 1)} minutes at concurrency {res.get('concurrency')}, "
        f"budget {fmt(res.get('budget_ms'), 0)} ms, mixed requests, windows of about "
        f"{fmt(res.get('window_s'), 0)} s (one perf_analyzer run each): {fmt(res.get('requests'))} "
        "requests.",
        "",
    ]
    out += table(
        ["figure", "value"],
        [
            ["failed requests (Triton's statistics)", err.get("failed_requests")],
            ["unanswered requests (perf_analyzer)", err.get("unanswered_requests")],
            ["perf_analyzer runs that failed", err.get("perf_analyzer_failures")],
            [
                "p50 / p99 ms, whole soak",
                f"{fmt(_get(res, 'latency', 'p50_ms'))} / {fmt(_get(res, 'latency', 'p99_ms'))}",
            ],
            [
                f"p99 ms, first {fmt(drift.get('span_s', 0) / 60, 1)} min -> last",
                f"{fmt(drift.get('first_p99_ms'))} -> {fmt(drift.get('last_p99_ms'))}",
            ],
            ["p99 drift %", drift.get("p99_change_pct")],
            [
                "server RSS MB: before, warm (after window 1), end",
                f"{fmt(mem.get('before_rss_mb'))}, {fmt(mem.get('warm_rss_mb'))}, "
                f"{fmt(mem.get('end_rss_mb'))}",
            ],
            ["memory growth % (warm -> end)", mem.get("growth_pct")],
            ["stopped early", res.get("stopped_early") or "no"],
        ],
    )
    out += ["", ""]
    rows = [
        [
            w["window"],
            w.get("start_s", 0.0) / 60,
            _get(w, "latency", "count"),
            w.get("throughput_rps"),
            _get(w, "latency", "p50_ms"),
            _get(w, "latency", "p99_ms"),
            _get(w, "n_scored", "median"),
            w.get("failures"),
            w.get("rss_mb"),
            "yes" if w.get("error") else "",
        ]
        for w in res.get("windows", [])
    ]
    out += table(
        [
            "window",
            "start min",
            "requests",
            "req/s",
            "p50 ms",
            "p99 ms",
            "N_SCORED median",
            "failed",
            "RSS MB",
            "perf_analyzer error",
        ],
        rows,
    )
    return out


def soak_plots(res: dict[str, Any], out_dir: Path) -> list[Path]:
    """``soak.png``: p50/p99 per window and server RSS over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    windows = [w for w in res.get("windows", []) if "latency" in w]
    samples = _get(res, "memory", "samples") or []
    if not windows and not samples:
        return []
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(6.4, 6.0), sharex=True)
    xs = [w["end_s"] / 60 for w in windows]
    ax1.plot(xs, [w["latency"]["p50_ms"] for w in windows], "o-", label="p50")
    ax1.plot(xs, [w["latency"]["p99_ms"] for w in windows], "s--", label="p99")
    ax1.set_ylabel("latency, ms")
    ax1.set_title("soak: latency per window and server memory")
    ax1.grid(alpha=0.3)
    ax1.legend(fontsize=8)
    ax2.plot([m["t_s"] / 60 for m in samples], [m["rss_mb"] for m in samples], "o-", label="RSS")
    ax2.plot([m["t_s"] / 60 for m in samples], [m["pss_mb"] for m in samples], "s--", label="PSS")
    ax2.set_xlabel("minutes")
    ax2.set_ylabel("server memory, MB")
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=8)
    fig.tight_layout()
    path = out_dir / "soak.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


# -- targets --------------------------------------------------------------------------------


def targets(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The serving targets of issue 10 that this run measured: ``name``, ``value``, ``op``
    (``<=`` or ``>=``), ``threshold`` and ``passed``. Budget 25 ms at concurrency 1 and 4 at
    whatever catalog size was run (the targets are stated for 100k items); the soak's when
    there was one."""
    out: list[dict[str, Any]] = []

    def add(name: str, value: Any, op: str, threshold: float) -> None:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return
        ok = value <= threshold if op == "<=" else value >= threshold
        out.append(
            {"name": name, "value": value, "op": op, "threshold": threshold, "passed": bool(ok)}
        )

    points = _get(doc, "sections", "serving", "points") or []
    for p in points:
        if p["budget_ms"] != 25.0 or p["concurrency"] not in (1, 4):
            continue
        c = p["concurrency"]
        if c == 4:
            add("concurrency 4, budget 25 ms: req/s", p["throughput_rps"], ">=", 60.0)
        add(f"concurrency {c}, budget 25 ms: p99 ms", p["p99_ms"], "<=", 25.0 if c == 1 else 50.0)
        add(
            f"concurrency {c}, budget 25 ms: median N_SCORED",
            _get(p, "n_scored", "median"),
            ">=",
            50.0,
        )
    soak = _get(doc, "sections", "soak")
    if isinstance(soak, dict):
        errors = soak.get("errors", {})
        add("soak: failed requests", sum(int(v) for v in errors.values()), "<=", 0.0)
        add("soak: memory growth %", _get(soak, "memory", "growth_pct"), "<=", 5.0)
        drift = _get(soak, "drift", "p99_change_pct")
        add(
            "soak: p99 drift %, last vs first (absolute)",
            None if drift is None else abs(drift),
            "<=",
            20.0,
        )
    return out


def targets_markdown(rows: list[dict[str, Any]]) -> list[str]:
    """The targets as a table with pass or FAIL."""
    return table(
        ["target", "measured", "threshold", ""],
        [
            [
                r["name"],
                r["value"],
                f"{r['op']} {fmt(r['threshold'], 0)}",
                "pass" if r["passed"] else "FAIL",
            ]
            for r in rows
        ],
    )


# -- the whole report -------------------------------------------------------------------------


def header_markdown(doc: dict[str, Any]) -> list[str]:
    """Title and what was measured on what."""
    run, cat = doc.get("run", {}), doc.get("catalog", {})
    mix = doc.get("requests", {})
    host = run.get("host", {})
    return [
        f"# towerserve bench, {run.get('started_at', '')}",
        "",
        f"- model `{cat.get('model_version')}` over {fmt(cat.get('n_items'))} items "
        f"(index {cat.get('index', {}).get('type')}, nprobe {cat.get('index', {}).get('nprobe')}; "
        f"retriever prior: {cat.get('prior')}; catalog {cat.get('data_dir')})",
        "- served on the CPU with "
        + ", ".join(f"{k} {v}" for k, v in cat.get("serving", {}).items()),
        f"- requests: {fmt(mix.get('requests'))} distinct in turn, {fmt(mix.get('search'))} search "
        f"(held-out test queries, {fmt(mix.get('distinct_queries'))} distinct, anonymous) and "
        f"{fmt(mix.get('homepage'))} homepage (empty query, "
        f"{fmt(mix.get('distinct_users'))} users' histories before the evaluation cut, "
        f"mean length {fmt(mix.get('mean_history_len'))}); "
        f"K={mix.get('k')}",
        f"- host: {host.get('cpus')} CPUs ({host.get('cpu_model')}), load average "
        f"{host.get('loadavg_start')} at start, {host.get('loadavg_end')} at the end; "
        f"tritonserver {run.get('tritonserver')}, perf_analyzer from tritonclient "
        f"{run.get('tritonclient')}",
        f"- server memory (tritonserver and its stubs, RSS / PSS MB): "
        f"{fmt(_get(doc, 'memory', 'ready', 'rss_mb'), 0)} / "
        f"{fmt(_get(doc, 'memory', 'ready', 'pss_mb'), 0)} when ready, "
        f"{fmt(_get(doc, 'memory', 'end', 'rss_mb'), 0)} / "
        f"{fmt(_get(doc, 'memory', 'end', 'pss_mb'), 0)} at the end",
        *_jitter_line(doc),
        *_calibration_line(doc),
        f"- command: `{run.get('command', '')}`; {fmt(run.get('seconds', 0.0), 0)} s in all",
        "",
    ]


def _jitter_line(doc: dict[str, Any]) -> list[str]:
    jit = _get(doc, "run", "host", "jitter")
    if not jit:
        return []
    return [
        f"- host jitter, before the server started (client/bench/jitter.py; "
        f"{fmt(jit['samples'], 0)} runs of one fixed single-threaded workload): p50 "
        f"{jit['p50_ms']:.2f} ms, p99 {jit['p99_ms']:.2f} ms, p99.9 {jit['p999_ms']:.2f} ms: "
        f"**p99/p50 {jit['p99_over_p50']:.2f}**"
    ]


def _noise_floor_lines(doc: dict[str, Any]) -> list[str]:
    """What the host's jitter allows a p99 target: a p50 at most target / (p99/p50)."""
    ratio = _get(doc, "run", "host", "jitter", "p99_over_p50")
    rows = [r for r in doc.get("targets", []) if r["name"].endswith("p99 ms")]
    if not ratio or not rows or not math.isfinite(ratio) or ratio <= 0:
        return []
    needs = "; ".join(
        f"{r['name'].split(':')[0]}: p99 <= {fmt(r['threshold'], 0)} ms needs a p50 of at most "
        f"about {r['threshold'] / ratio:.1f} ms"
        for r in rows
    )
    return [
        f"Noise floor: on this host fixed CPU work has a p99 {ratio:.2f}x its p50 (host jitter "
        f"above), whatever the server does, so {needs}.",
        "",
    ]


def _calibration_line(doc: dict[str, Any]) -> list[str]:
    cal = _get(doc, "server", "reranker_calibration")
    if not cal:
        return []
    return [
        f"- reranker cost measured by the server at load: {cal['us_per_token']:.2f} us per "
        f"pair-token ({cal['ms_per_candidate']:.3f} ms per candidate of {cal['width']:.0f} "
        f"tokens, calls of {cal['call_size']:.0f}); each call is predicted from it and its "
        "moving average, which never falls below a quarter of it"
    ]


def write_outputs(
    doc: dict[str, Any],
    parts: Sequence[tuple[str, str, list[str], list[Path]]],
    out_dir: Path,
) -> dict[str, Path]:
    """Write ``results.json`` and ``report.md`` (header, then per section its title, lines and
    plots: ``(name, title, lines, plot paths)``); return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    results = out_dir / "results.json"
    results.write_text(json.dumps(_finite(doc), indent=2, default=_json_default, allow_nan=False))
    lines = header_markdown(doc)
    if doc.get("targets"):
        lines += [
            "## Targets (issue 10; stated for 100k items on this 2-core machine)",
            "",
            *targets_markdown(doc["targets"]),
            "",
            *_noise_floor_lines(doc),
        ]
    for _name, title, body, plots in parts:
        lines += [f"## {title}", "", *body, ""]
        lines += [f"![{p.stem}]({p.name})" for p in plots]
        if plots:
            lines.append("")
    md = out_dir / "report.md"
    md.write_text("\n".join(lines).rstrip() + "\n")
    return {"results": results, "report": md}


def _finite(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by ``None`` (strict JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
