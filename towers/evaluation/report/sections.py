"""Sections of the evaluation report, in the order they appear: meta, checks, search,
recommendation, distillation, time drift. Each returns its Markdown lines (``[]`` to skip it)
and draws its plots through a :class:`~towers.evaluation.report.plots._Plots`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from towers.evaluation.replay import replay_markdown
from towers.evaluation.report.plots import (
    _DRIFT_SERIES,
    _plot_distillation,
    _plot_drift,
    _plot_quality_vs_latency,
    _plot_recall_at_k,
    _plot_recommendation,
    _Plots,
)
from towers.evaluation.report.tables import (
    MISSING,
    _header,
    _image,
    _number,
    _plain,
    _system_table,
    _table,
    format_value,
    metric_columns,
)

log = logging.getLogger(__name__)


def _mapping(results: Mapping[str, Any], key: str) -> Mapping[str, Any] | None:
    """``results[key]`` when it is a non-empty dict; None (skip) when missing or empty."""
    section = results.get(key)
    if section is None:
        return None
    if not isinstance(section, Mapping):
        log.warning("report: %r is a %s, not a dict; section skipped", key, type(section).__name__)
        return None
    return section or None


def _systems(section: Mapping[str, Any] | None) -> dict[str, Mapping[str, Any]]:
    """The ``systems`` dict of a section, keeping only systems whose value is a dict."""
    systems = section.get("systems") if section else None
    if not isinstance(systems, Mapping):
        return {}
    return {str(k): v for k, v in systems.items() if isinstance(v, Mapping)}


def _dict_rows(value: Any) -> list[Mapping[str, Any]]:
    """The dict items of a list section (checks, distillation rows, drift windows); [] if none."""
    if not isinstance(value, Sequence) or isinstance(value, str | bytes):
        return []
    return [row for row in value if isinstance(row, Mapping)]


def _meta_section(results: Mapping[str, Any]) -> list[str]:
    meta = _mapping(results, "meta")
    if not meta:
        return []
    rows = [[str(k), format_value(str(k), v)] for k, v in meta.items()]
    return ["", *_table(["field", "value"], rows, align="ll")]


def _checks_section(results: Mapping[str, Any]) -> list[str]:
    checks = _dict_rows(results.get("checks"))
    if not checks:
        return []
    rows = []
    marks = {"passed": "✅", "failed": "❌", "inconclusive": "❔ inconclusive"}
    for c in checks:
        passed = c.get("passed")
        status = c.get("status")
        if status not in marks and isinstance(passed, bool | np.bool_):
            status = "passed" if passed else "failed"
        name = str(c.get("name", ""))
        ci = c.get("ci95")
        interval = MISSING
        if isinstance(ci, Sequence) and len(ci) == 2 and all(_number(b) is not None for b in ci):
            interval = f"[{format_value(name, ci[0])}, {format_value(name, ci[1])}]"
        rows.append(
            [
                marks.get(str(status), MISSING),
                name,
                format_value(name, c.get("value")),
                interval,
                format_value("n", c.get("n")),
                format_value(name, c.get("threshold")),
                str(c.get("detail", "")),
            ]
        )
    n_passed = sum(r[0] == "✅" for r in rows)
    n_open = sum(r[0] == marks["inconclusive"] for r in rows)
    return [
        "",
        "## Checks",
        "",
        f"{n_passed} of {len(rows)} checks passed, {n_open} inconclusive (decided on fewer "
        "than 200 users or queries, or a 95% interval that contains the threshold). "
        "Intervals: paired bootstrap over the same users or queries.",
        "",
        *_table(
            ["", "check", "value", "95% interval", "n", "threshold", "detail"],
            rows,
            align="llrrrrl",
        ),
    ]


def _search_section(results: Mapping[str, Any], plots: _Plots) -> list[str]:
    section = _mapping(results, "search")
    systems = _systems(section)
    if not systems:
        return []
    lines = ["", "## Search", ""]
    n = section.get("n_queries") if section else None
    if _number(n) is not None:
        lines += [
            f"{format_value('n_queries', n)} labelled queries of the held-out test split.",
            "",
        ]
    lines += _system_table(systems)
    lines += _image("Search Recall@K", _plot_recall_at_k(systems, plots))
    lines += _image("Search quality vs latency", _plot_quality_vs_latency(systems, plots))
    return lines


def _recommendation_section(results: Mapping[str, Any], plots: _Plots) -> list[str]:
    section = _mapping(results, "recommendation")
    systems = _systems(section)
    if not systems:
        return []
    lines = ["", "## Recommendation", ""]
    if section and section.get("protocol") == "random":
        lines += [
            "Protocol: **random split** (a random share of events held out; every held-out "
            "positive is a target; all of a user's training items are excluded from their "
            "list). Not comparable with time-split figures.",
            "",
        ]
    elif section and section.get("protocol") == "time":
        lines += [
            "Protocol: **time split** (each user's new items in the held-out time range after "
            "the training cut, from their history before it).",
            "",
        ]
    parts = []
    if section and _number(section.get("n_users")) is not None:
        parts.append(f"{format_value('n_users', section['n_users'])} users")
    if section and isinstance(_plain(section.get("cut_ts")), int):
        parts.append(f"next events after {format_value('cut_ts', section['cut_ts'])}")
    if section and (window_s := _number(section.get("window_s"))) is not None:
        parts.append(f"within {window_s / 86_400:.1f} days")
    if parts:
        lines += [", ".join(parts) + ".", ""]
    if "student_faiss" in systems:
        lines += [
            "`student_faiss` is the FAISS index re-ranked with the model's trending-popularity "
            "prior; `student_faiss_covisit` adds the co-visitation candidates of the history "
            "(towers/covisit.py), as the served retriever ranks requests without a query; "
            "`student_exact` ranks by the towers' cosine alone.",
            "",
        ]
    lines += _system_table(systems)
    lines += _baseline_ratio_table(section)
    lines += _image("Recommendation recall", _plot_recommendation(systems, plots))
    return lines


def _baseline_ratio_table(section: Mapping[str, Any] | None) -> list[str]:
    """The served path against every baseline (harness ``baseline_ratios``), paired."""
    vs = _mapping(section or {}, "vs_baselines")
    rows = _mapping(vs or {}, "rows")
    if not vs or not rows:
        return []

    def cell(value: Any) -> str:
        if not isinstance(value, list | tuple) or len(value) != 3:
            return "–"
        v, lo, hi = (float(x) for x in value)
        return f"{v:.3f} [{lo:.3f}, {hi:.3f}]"

    lines = [
        "",
        f"`{vs.get('system')}` against each baseline, paired over the same users "
        "(ratio, 95% bootstrap interval; above 1: better):",
        "",
        "| baseline | Recall@50 ratio | top-100 accuracy ratio |",
        "| --- | ---: | ---: |",
    ]
    for base, row in rows.items():
        row = row if isinstance(row, Mapping) else {}
        lines.append(f"| {base} | {cell(row.get('recall@50'))} | {cell(row.get('accuracy@100'))} |")
    return lines


def _distillation_section(results: Mapping[str, Any], plots: _Plots) -> list[str]:
    section = _mapping(results, "distillation")
    rows = _dict_rows(section.get("rows") if section else None)
    if not rows:
        return []
    chosen = section.get("chosen") if section else None
    chosen = str(chosen) if chosen is not None else None
    fixed = ["layers", "params_m"]
    columns = [c for c in fixed if any(_number(r.get(c)) is not None for r in rows)]
    columns += metric_columns(rows, skip=[*fixed, "speedup_vs_teacher"])
    columns += ["speedup_vs_teacher"] * any(
        _number(r.get("speedup_vs_teacher")) is not None for r in rows
    )
    table_rows = []
    for r in rows:
        name = str(r.get("name", ""))
        is_chosen = chosen is not None and name == chosen
        cells = [f"**{name}**" if is_chosen else name]
        cells += [format_value(c, r.get(c)) for c in columns]
        table_rows.append(cells + (["✓" if is_chosen else ""] if chosen else []))
    headers = ["model", *(_header(c) for c in columns)] + (["chosen"] if chosen else [])
    lines = ["", "## Distillation trade-off", ""]
    if chosen:
        lines += [f"Chosen student: **{chosen}**.", ""]
    lines += _table(headers, table_rows, align="l" + "r" * len(columns) + "l")
    lines += _image("Distillation trade-off", _plot_distillation(rows, chosen, plots))
    return lines


def _update_sentence(update: Mapping[str, Any], metric: str) -> str | None:
    """One sentence on the incremental update, from whichever of its fields are present."""
    mode = update.get("mode")
    head = f"The incremental update ({mode})" if mode else "The incremental update"
    if isinstance(_plain(update.get("since_ts")), int):
        head += f" on events since {format_value('since_ts', update['since_ts'])}"
    seconds, full = _number(update.get("seconds")), _number(update.get("full_train_seconds"))
    fraction = _number(update.get("time_fraction"))
    if fraction is None and seconds is not None and full:
        fraction = seconds / full
    params = _number(update.get("trainable_params_m"))
    parts = []
    if seconds is not None:
        cost = f"{seconds:,.1f} s"
        if fraction is not None:
            of_full = f"the {full:,.1f} s" if full is not None else "the"
            cost += f" ({fraction:.1%} of {of_full} full training)"
        trained = f"trained {params:,.2f} M parameters in" if params is not None else "took"
        parts.append(f"{trained} {cost}")
    elif params is not None:
        parts.append(f"trained {params:,.2f} M parameters")
    lost, recovered = _number(update.get("lost")), _number(update.get("recovered"))
    share = _number(update.get("recovered_fraction"))
    if share is None and lost and recovered is not None:
        share = recovered / lost
    if share is not None:
        detail = f" ({recovered:.3f} of {lost:.3f})" if None not in (lost, recovered) else ""
        parts.append(f"recovered {share:.1%} of the {metric} lost to drift{detail}")
    return f"{head} {' and '.join(parts)}." if parts else None


def _drift_section(results: Mapping[str, Any], plots: _Plots) -> list[str]:
    section = _mapping(results, "drift")
    if not section:
        return []
    metric = str(section.get("metric") or "quality")
    windows = _dict_rows(section.get("windows"))
    update = section.get("update")
    sentence = _update_sentence(update, metric) if isinstance(update, Mapping) else None
    if not windows and not sentence:
        return []
    lines = ["", "## Time drift and incremental update", ""]
    if windows:
        fields = ["start_ts", "end_ts", "n_users", *_DRIFT_SERIES]
        present = [f for f in fields if any(w.get(f) is not None for w in windows)]
        rows = [
            [str(w.get("label", i)), *(format_value(f, w.get(f)) for f in present)]
            for i, w in enumerate(windows)
        ]
        names = {"start_ts": "start", "end_ts": "end", "n_users": "users"}
        headers = [names.get(f) or f"{f} ({metric})" for f in present]
        lines += _table(["window", *headers], rows)
        lines += _image(f"{metric} by time window", _plot_drift(windows, metric, plots))
    if sentence:
        lines += ["", sentence]
    return lines


def _replay_section(results: Mapping[str, Any], plots: _Plots) -> list[str]:
    return replay_markdown(_mapping(results, "replay"))


_SECTIONS: tuple[Callable[[Mapping[str, Any], _Plots], list[str]], ...] = (
    _search_section,
    _recommendation_section,
    _replay_section,
    _distillation_section,
    _drift_section,
)
