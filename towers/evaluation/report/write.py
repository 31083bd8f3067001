"""Writing the evaluation report: ``results.json``, the plots and ``report.md``."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path

from towers.evaluation.report.files import _atomic_write, _json_default
from towers.evaluation.report.plots import _Plots
from towers.evaluation.report.sections import _SECTIONS, _checks_section, _meta_section

log = logging.getLogger(__name__)


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
