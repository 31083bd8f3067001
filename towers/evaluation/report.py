"""The evaluation report: ``report.md`` with tables, PNG plots under ``plots/`` and the raw
``results.json``, from the results dict the evaluation harness produces.

Every section of ``results`` (``meta``, ``checks``, ``search``, ``recommendation``,
``distillation``, ``drift``) is optional: a missing or empty one is skipped in the tables and
the plots. ``None`` and NaN values show as "–" in tables and are left out of plots. Plots are
drawn on ``matplotlib.figure.Figure`` objects (Agg, no pyplot global state) at 110 dpi.
Every file is written to a temporary name in the same folder and then ``os.replace``-d, so a
reader never sees half a file; ``report.md`` is written last.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["format_value", "metric_columns", "write_report"]

log = logging.getLogger(__name__)

DPI = 110
MISSING = "–"
_AT_K = re.compile(r"^(?P<base>[a-z_]+)@(?P<k>\d+)$")
# Quality metrics first (recall, ndcg, mrr, then other @K metrics), then coverage, throughput,
# latency, then anything else in first-seen order.
_AT_K_RANK = {"recall": 0, "ndcg": 1, "mrr": 2}
# Distinct markers and alternating line styles keep identical curves visible on top of each other.
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h")


# ---------------------------------------------------------------------------------------------
# values and columns


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
    rows = [
        [name] + [format_value(c, vals.get(c)) for c in columns] for name, vals in systems.items()
    ]
    return _table(["system"] + [_header(c) for c in columns], rows)


def _image(title: str, rel_path: str | None) -> list[str]:
    return ["", f"![{title}]({rel_path})"] if rel_path else []


# ---------------------------------------------------------------------------------------------
# files


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file next to ``path``, then ``os.replace`` it onto ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; a report is meant to be read by others
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _json_default(obj: Any) -> Any:
    """JSON for numpy scalars and arrays, paths and datetimes; anything else is a TypeError."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, datetime):
        return obj.isoformat()
    raise TypeError(f"results hold a {type(obj).__name__}, which JSON cannot store: {obj!r}")


def _new_figure(width_in: float = 7.0, height_in: float = 4.2) -> tuple[Figure, Axes]:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:  # not a core dependency of towerserve
        raise ImportError(
            "the evaluation report draws its plots with matplotlib: pip install 'matplotlib>=3.8'"
        ) from exc
    fig = Figure(figsize=(width_in, height_in), dpi=DPI)
    FigureCanvasAgg(fig)  # an Agg canvas of its own (no pyplot), so text can be measured
    return fig, fig.add_subplot()


class _Plots:
    """Saves figures as ``<out_dir>/plots/<name>.png`` and returns their relative links."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.written: list[Path] = []

    def save(self, fig: Figure, name: str) -> str:
        buf = io.BytesIO()
        try:
            fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
        finally:
            fig.clear()  # free the artists; no pyplot, so nothing global holds the figure
        path = self.out_dir / "plots" / f"{name}.png"
        _atomic_write(path, buf.getvalue())
        self.written.append(path)
        return f"plots/{name}.png"


def _legend(ax: Axes) -> None:
    """Legend outside the axes, on the right, so it never hides a point."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize="small", frameon=False)


# Label positions tried in order: (dx, dy) in points, horizontal and vertical alignment.
_LABEL_OFFSETS = (
    (6, 4, "left", "bottom"),
    (6, -4, "left", "top"),
    (-6, 4, "right", "bottom"),
    (-6, -4, "right", "top"),
    (0, 8, "center", "bottom"),
    (0, -8, "center", "top"),
    (6, 14, "left", "bottom"),
    (6, -14, "left", "top"),
    (-6, 14, "right", "bottom"),
    (-6, -14, "right", "top"),
)


def _label_points(ax: Axes, points: Sequence[tuple[float, float, str]]) -> None:
    """Name each point at the first offset where the text overlaps no other label or marker and
    stays inside the axes (else the least bad one). Call after the scales and margins are set.
    """
    from matplotlib.transforms import Bbox

    renderer = ax.figure.canvas.get_renderer()
    ax.get_xlim()  # settles the autoscaled limits, which transData uses
    frame = ax.get_window_extent(renderer)
    pad_px = 5.0
    taken = [
        Bbox.from_extents(px - pad_px, py - pad_px, px + pad_px, py + pad_px)
        for px, py in ax.transData.transform([(x, y) for x, y, _ in points])
    ]
    for x, y, text in sorted(points, key=lambda p: -p[1]):
        best_score, best = math.inf, _LABEL_OFFSETS[0]
        for offset in _LABEL_OFFSETS:
            trial = _label(ax, x, y, text, offset)
            box = trial.get_window_extent(renderer)
            trial.remove()
            inside = frame.x0 <= box.x0 and box.x1 <= frame.x1
            inside = inside and frame.y0 <= box.y0 and box.y1 <= frame.y1
            score = sum(box.overlaps(t) for t in taken) + (0 if inside else 2)
            if score < best_score:
                best_score, best = score, offset
            if score == 0:
                break
        taken.append(_label(ax, x, y, text, best).get_window_extent(renderer))


def _label(ax: Axes, x: float, y: float, text: str, offset: tuple[float, float, str, str]) -> Any:
    dx, dy, ha, va = offset
    return ax.annotate(
        text, (x, y), xytext=(dx, dy), textcoords="offset points", ha=ha, va=va, fontsize=8
    )


def _log_x_if_wide(ax: Axes, xs: Sequence[float], ratio: float = 10.0) -> None:
    """Log x-axis when the positive values span at least ``ratio``."""
    if xs and min(xs) > 0 and max(xs) / min(xs) >= ratio:
        ax.set_xscale("log")


# ---------------------------------------------------------------------------------------------
# sections


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
    for c in checks:
        passed = c.get("passed")
        mark = MISSING if not isinstance(passed, bool | np.bool_) else ("✅" if passed else "❌")
        name = str(c.get("name", ""))
        rows.append(
            [
                mark,
                name,
                format_value(name, c.get("value")),
                format_value(name, c.get("threshold")),
                str(c.get("detail", "")),
            ]
        )
    n_passed = sum(r[0] == "✅" for r in rows)
    return [
        "",
        "## Checks",
        "",
        f"{n_passed} of {len(rows)} checks passed.",
        "",
        *_table(["", "check", "value", "threshold", "detail"], rows, align="llrrl"),
    ]


def _plot_recall_at_k(systems: Mapping[str, Mapping[str, Any]], plots: _Plots) -> str | None:
    ks = _at_k_columns(metric_columns(systems.values()))
    if not ks:
        return None
    fig, ax = _new_figure()
    n_series = 0
    for name, vals in systems.items():
        pts = [(k, y) for k, c in ks if (y := _number(vals.get(c))) is not None]
        if pts:
            style = _MARKERS[n_series % len(_MARKERS)], "-" if n_series % 2 == 0 else "--"
            ax.plot(*zip(*pts), marker=style[0], linestyle=style[1], label=name)
            n_series += 1
    if not n_series:
        fig.clear()
        return None
    if ks[0][0] > 0 and ks[-1][0] >= 4 * ks[0][0]:
        ax.set_xscale("log")
    ax.set_xticks([k for k, _ in ks], labels=[str(k) for k, _ in ks])
    ax.minorticks_off()
    ax.set_ylim(bottom=0)
    ax.set_xlabel("K (items retrieved)")
    ax.set_ylabel("Recall@K (fraction of relevant items)")
    ax.set_title("Search: Recall@K per system")
    ax.grid(alpha=0.3)
    if n_series > 1:
        _legend(ax)
    return plots.save(fig, "search_recall_at_k")


def _plot_quality_vs_latency(systems: Mapping[str, Mapping[str, Any]], plots: _Plots) -> str | None:
    """NDCG@10 (or the first NDCG@K) against p50 latency; 1000 / queries_per_s when absent."""
    ndcg = _at_k_columns(metric_columns(systems.values()), base="ndcg")
    if not ndcg:
        return None
    ndcg_col = "ndcg@10" if any(c == "ndcg@10" for _, c in ndcg) else ndcg[0][1]
    points, estimated = [], False
    for name, vals in systems.items():
        y = _number(vals.get(ndcg_col))
        x = _number(vals.get("latency_ms_p50"))
        label = name
        if x is None and (qps := _number(vals.get("queries_per_s"))):
            x, label, estimated = 1000.0 / qps, f"{name}*", True
        if x is not None and x > 0 and y is not None:
            points.append((x, y, label))
    if not points:
        return None
    fig, ax = _new_figure()
    # a legend, not text labels: systems of similar quality and speed sit on top of each other
    for i, (x, y, label) in enumerate(points):
        ax.scatter(
            [x],
            [y],
            s=45,
            color=f"C{i % 10}",
            marker=_MARKERS[i % len(_MARKERS)],
            zorder=3,
            label=label,
        )
    ax.set_xscale("log")
    ax.margins(x=0.25, y=0.15)
    _legend(ax)
    ax.set_xlabel("latency p50 (ms per query, log scale)")
    ax.set_ylabel(f"{ndcg_col} (0-1)")
    ax.set_title(f"Search: quality vs latency ({ndcg_col})")
    ax.grid(alpha=0.3)
    if estimated:
        ax.text(
            0.0,
            -0.2,
            "* no latency measured: 1000 / queries_per_s (batched, not p50)",
            transform=ax.transAxes,
            fontsize=7,
        )
    return plots.save(fig, "quality_vs_latency")


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


def _plot_recommendation(systems: Mapping[str, Mapping[str, Any]], plots: _Plots) -> str | None:
    ks = _at_k_columns(metric_columns(systems.values()))
    if not ks:
        return None
    names = list(systems)
    fig, ax = _new_figure(max(6.0, 1.1 * len(names) + 2.0), 4.2)
    width = 0.8 / len(ks)
    drawn = 0
    for j, (_, col) in enumerate(ks):
        xs, ys = [], []
        for i, name in enumerate(names):
            if (y := _number(systems[name].get(col))) is not None:
                xs.append(i - 0.4 + width * (j + 0.5))
                ys.append(y)
        if xs:
            ax.bar(xs, ys, width=width, label=col, color=f"C{j % 10}")
            drawn += 1
    if not drawn:
        fig.clear()
        return None
    ax.set_xticks(range(len(names)), labels=names, rotation=25, ha="right")
    ax.set_ylim(bottom=0)
    ax.set_xlabel("system")
    ax.set_ylabel("Recall (fraction of next events)")
    ax.set_title("Recommendation: recall of the next events per system")
    ax.grid(alpha=0.3, axis="y")
    if drawn > 1:
        _legend(ax)
    return plots.save(fig, "recommendation")


def _recommendation_section(results: Mapping[str, Any], plots: _Plots) -> list[str]:
    section = _mapping(results, "recommendation")
    systems = _systems(section)
    if not systems:
        return []
    lines = ["", "## Recommendation", ""]
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
            "`student_faiss` is the served retrieval: the FAISS index, re-ranked with the "
            "model's trending-popularity prior (requests without a query); `student_exact` "
            "ranks by the towers' cosine alone.",
            "",
        ]
    lines += _system_table(systems)
    lines += _image("Recommendation recall", _plot_recommendation(systems, plots))
    return lines


def _quality_column(columns: Sequence[str]) -> str | None:
    """The quality metric for the distillation plot: ndcg@10, else recall@100, else the first
    quality metric. NDCG@10 first: recall@100 saturates (every student near 0.98 on the demo
    data), so it hides the differences the plot is for."""
    for preferred in ("ndcg@10", "recall@100"):
        if preferred in columns:
            return preferred
    quality = [c for c in columns if _column_rank(c)[0] <= 3]
    return quality[0] if quality else None


def _plot_distillation(
    rows: Sequence[Mapping[str, Any]], chosen: str | None, plots: _Plots
) -> str | None:
    quality = _quality_column(metric_columns(rows))
    if quality is None:
        return None
    points = []
    for row in rows:
        x, y = _number(row.get("texts_per_s")), _number(row.get(quality))
        if x is not None and x > 0 and y is not None:
            points.append((x, y, str(row.get("name", "?"))))
    if not points:
        return None
    fig, ax = _new_figure()
    plain = [p for p in points if p[2] != chosen]
    picked = [p for p in points if p[2] == chosen]
    if plain:
        ax.scatter([p[0] for p in plain], [p[1] for p in plain], s=40, color="C0", label="model")
    if picked:
        ax.scatter(
            [p[0] for p in picked], [p[1] for p in picked], s=160, marker="*", color="C3",
            label=f"chosen ({chosen})", zorder=3,
        )  # fmt: skip
    _log_x_if_wide(ax, [p[0] for p in points])
    ax.margins(x=0.2, y=0.15)
    _label_points(ax, points)
    ax.set_xlabel("encoding throughput (texts/s)")
    ax.set_ylabel(quality)
    ax.set_title(f"Distillation trade-off: {quality} vs throughput")
    ax.grid(alpha=0.3)
    if plain and picked:
        _legend(ax)
    return plots.save(fig, "distillation")


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


_DRIFT_SERIES = ("stale", "updated", "retrained")


def _plot_drift(windows: Sequence[Mapping[str, Any]], metric: str, plots: _Plots) -> str | None:
    labels = [str(w.get("label", i)) for i, w in enumerate(windows)]
    fig, ax = _new_figure(max(6.0, 0.9 * len(labels) + 3.0), 4.2)
    drawn = 0
    for j, series in enumerate(_DRIFT_SERIES):
        pts = [(i, y) for i, w in enumerate(windows) if (y := _number(w.get(series))) is not None]
        if pts:
            ax.plot(*zip(*pts), marker="o", label=series, color=f"C{j}")
            drawn += 1
    if not drawn:
        fig.clear()
        return None
    ax.set_xticks(range(len(labels)), labels=labels, rotation=20 if len(labels) > 5 else 0)
    ax.set_xlabel("time window after the training cut")
    ax.set_ylabel(metric)
    ax.set_title(f"Time drift: {metric} by window")
    ax.grid(alpha=0.3)
    if drawn > 1:
        _legend(ax)
    return plots.save(fig, "drift")


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


_SECTIONS: tuple[Callable[[Mapping[str, Any], _Plots], list[str]], ...] = (
    _search_section,
    _recommendation_section,
    _distillation_section,
    _drift_section,
)


def write_report(results: dict, out_dir: Path) -> Path:
    """Write ``out_dir/report.md``, ``out_dir/results.json`` and PNG plots under
    ``out_dir/plots/``; return the ``report.md`` path.

    ``results.json`` is ``results`` as given (``indent=2``, keys in their order; numpy scalars
    and arrays become numbers and lists; NaN stays ``NaN`` as Python's json writes it).
    Sections, in order: meta table, checks, search, recommendation, distillation, time drift;
    each only when present and non-empty. Plots are only drawn for sections with numbers to
    plot; files from an earlier report in ``out_dir/plots`` are not removed.
    Raises TypeError when ``results`` is not a dict or holds a value JSON cannot store.
    """
    if not isinstance(results, Mapping):
        raise TypeError(f"results must be a dict of sections, got {type(results).__name__}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(results, indent=2, sort_keys=False, ensure_ascii=False, default=_json_default)
    _atomic_write(out_dir / "results.json", (text + "\n").encode("utf-8"))

    plots = _Plots(out_dir)
    lines = ["# towerserve evaluation", *_meta_section(results), *_checks_section(results)]
    for section in _SECTIONS:
        lines += section(results, plots)
    report = out_dir / "report.md"
    _atomic_write(report, ("\n".join(lines) + "\n").encode("utf-8"))
    log.info("report: wrote %s and %d plots", report, len(plots.written))
    return report
