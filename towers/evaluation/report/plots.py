"""Plots of the evaluation report: PNG figures drawn on ``matplotlib.figure.Figure`` objects
(Agg, no pyplot global state) at 110 dpi and saved under ``<out_dir>/plots/``.

matplotlib is imported only when a figure is drawn. ``None`` and NaN values are left out.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from towers.evaluation.report.files import _atomic_write
from towers.evaluation.report.tables import _at_k_columns, _column_rank, _number, metric_columns

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DPI = 110
# Distinct markers and alternating line styles keep identical curves visible on top of each other.
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h")


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
