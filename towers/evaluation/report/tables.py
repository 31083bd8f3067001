"""Values and Markdown tables of the evaluation report: cell formatting, metric column order,
column titles with units, and the table writer.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np

from towers.evaluation.report.files import _json_default

__all__ = ["MISSING", "format_value", "metric_columns"]

MISSING = "–"
_AT_K = re.compile(r"^(?P<base>[a-z_]+)@(?P<k>\d+)$")
# Quality metrics first (recall, ndcg, mrr, then other @K metrics), then coverage, throughput,
# latency, then anything else in first-seen order.
_AT_K_RANK = {"recall": 0, "ndcg": 1, "mrr": 2}


def _plain(value: Any) -> Any:
    """``value`` with numpy scalars turned into Python ones."""
    return value.item() if isinstance(value, np.generic) else value


def _number(value: Any) -> float | None:
    """``value`` as a finite float, or None for None, NaN, infinities, bools and non-numbers."""
    value = _plain(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _format_ts(ts: int) -> str:
    """A unix time in seconds as ``YYYY-MM-DD HH:MM UTC`` (the raw number when out of range)."""
    try:
        return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")
    except (OverflowError, OSError, ValueError):
        return f"{ts}"


def format_value(name: str, value: Any) -> str:
    """One table cell for metric or field ``name``.

    None, NaN and infinities give "–". Floats: ``*_per_s`` throughput with thousands separators
    and 1 decimal; latency / ``*_ms*`` and seconds with 1 decimal; ``speedup*`` as ``3.2×``;
    ``params_m`` (millions) with 2 decimals; other values in [-1, 1] (recall, NDCG, MRR,
    coverage, fractions) with 3 decimals; larger ones with 2 decimals below 100, else 1 decimal
    with thousands separators. Ints: ``*_ts`` as a UTC time, others with thousands separators.
    Strings are returned as they are; bools as "yes"/"no"; numpy scalars count as Python ones.
    """
    value = _plain(value)
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return _format_ts(value) if name.endswith("_ts") else f"{value:,}"
    if not isinstance(value, float):
        return json.dumps(value, default=_json_default, ensure_ascii=False)
    if not math.isfinite(value):
        return MISSING
    if name.endswith("_per_s"):
        return f"{value:,.1f}"
    if "latency" in name or "_ms" in name or name == "seconds" or name.endswith("_seconds"):
        return f"{value:,.1f}"
    if name.startswith("speedup"):
        return f"{value:.1f}×"
    if name == "params_m" or name.endswith("_params_m"):
        return f"{value:,.2f}"
    if abs(value) <= 1.0:
        return f"{value:.3f}"
    return f"{value:.2f}" if abs(value) < 100 else f"{value:,.1f}"


def _column_rank(name: str) -> tuple[int, str, int]:
    """Sort key of a metric column: kind, then metric name, then K."""
    m = _AT_K.match(name)
    if m:
        base, k = m["base"], int(m["k"])
        if base == "coverage":
            return (4, base, k)
        return (_AT_K_RANK.get(base, 3), base, k)
    if name.startswith("coverage"):
        return (4, name, 0)
    if name.endswith("_per_s"):
        return (5, "", 0)
    if "latency" in name:
        return (6, "", 0)
    return (7, "", 0)


def metric_columns(rows: Iterable[Mapping[str, Any]], skip: Sequence[str] = ()) -> list[str]:
    """Names of the numeric fields present in at least one row, in a stable order: recall@K
    by K, ndcg, mrr, other @K metrics, coverage, throughput (``*_per_s``), latency, others in
    first-seen order. Fields that are never a number (strings, lists, only None) are left out.
    """
    seen: dict[str, int] = {}
    for row in rows:
        for key, value in row.items():
            if key not in skip and key not in seen and _number(value) is not None:
                seen[key] = len(seen)
    return sorted(seen, key=lambda c: (_column_rank(c), seen[c]))


def _at_k_columns(columns: Iterable[str], base: str = "recall") -> list[tuple[int, str]]:
    """``(K, column)`` for the ``<base>@K`` columns, sorted by K."""
    out = []
    for c in columns:
        m = _AT_K.match(c)
        if m and m["base"] == base:
            out.append((int(m["k"]), c))
    return sorted(out)


def _header(name: str) -> str:
    """Column title with its unit: ``queries_per_s`` -> ``queries/s``, ``latency_ms_p50`` ->
    ``latency p50 (ms)``."""
    m = re.fullmatch(r"latency_ms_(p\d+|mean|max)", name)
    if m:
        return f"latency {m[1]} (ms)"
    if name.endswith("_per_s"):
        return name[: -len("_per_s")].replace("_", " ") + "/s"
    if name == "params_m":
        return "params (M)"
    if name == "speedup_vs_teacher":
        return "speed-up vs teacher"
    return name.replace("_", " ") if "@" not in name else name


# ---------------------------------------------------------------------------------------------
# markdown


def _cell(text: str) -> str:
    """``text`` made safe for one Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], align: str = "") -> list[str]:
    """Markdown table lines; ``align`` has one letter per column, "l" or "r" (numbers); columns
    past its end are "l" for the first and "r" for the rest."""
    letters = align or "l"
    letters += "r" * (len(headers) - len(letters))
    align_row = ["---:" if a == "r" else "---" for a in letters[: len(headers)]]
    lines = [
        "| " + " | ".join(_cell(h) for h in headers) + " |",
        "| " + " | ".join(align_row) + " |",
    ]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def _system_table(systems: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One row per system, one column per metric present in at least one system."""
    columns = metric_columns(systems.values())
    rows = [[name] + [with_interval(c, vals) for c in columns] for name, vals in systems.items()]
    return _table(["system"] + [_header(c) for c in columns], rows)


def with_interval(name: str, row: Mapping[str, Any]) -> str:
    """``row[name]`` formatted, followed by its 95% interval ``[lo, hi]`` when ``row["ci95"]``
    holds one for ``name``."""
    text = format_value(name, row.get(name))
    ci = row.get("ci95")
    bounds = ci.get(name) if isinstance(ci, Mapping) else None
    if isinstance(bounds, Sequence) and len(bounds) == 2:
        lo, hi = (_number(b) for b in bounds)
        if lo is not None and hi is not None and math.isfinite(lo) and math.isfinite(hi):
            text += f" [{format_value(name, lo)}, {format_value(name, hi)}]"
    return text


def _image(title: str, rel_path: str | None) -> list[str]:
    return ["", f"![{title}]({rel_path})"] if rel_path else []
