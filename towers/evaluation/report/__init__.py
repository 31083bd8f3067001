"""The evaluation report: ``report.md`` with tables, PNG plots under ``plots/`` and the raw
``results.json``, from the results dict the evaluation harness produces.

Every section of ``results`` (``meta``, ``checks``, ``search``, ``recommendation``,
``distillation``, ``drift``) is optional: a missing or empty one is skipped in the tables and
the plots. ``None`` and NaN values show as "–" in tables and are left out of plots. Plots are
drawn on ``matplotlib.figure.Figure`` objects (Agg, no pyplot global state) at 110 dpi.
Every file is written to a temporary name in the same folder and then ``os.replace``-d, so a
reader never sees half a file; ``report.md`` is written last.

Modules: :mod:`.tables` (values, column order, Markdown tables), :mod:`.plots` (figures),
:mod:`.sections` (one function per report section), :mod:`.files` (atomic writes, JSON) and
:mod:`.write` (:func:`write_report`, which puts them together).
"""

from __future__ import annotations

from towers.evaluation.report.tables import format_value, metric_columns
from towers.evaluation.report.write import write_report

__all__ = ["format_value", "metric_columns", "write_report"]
