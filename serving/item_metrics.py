"""Prometheus metrics of the served index and its pending item changes (issue 11 item 5).

Reported through Triton's own metrics port (Python backend ``pb_utils.MetricFamily``, as
serving/stage_metrics.py does), so one scrape of ``:8002/metrics`` holds them beside Triton's;
no second HTTP server. Gauges, labelled ``model="retriever"``:

* ``towerserve_index_info{model_version, created_at}`` 1 for the index version served;
* ``towerserve_index_age_seconds``: seconds since that index was built (its manifest's
  ``created_at``), as of the last request;
* ``towerserve_index_items``: vectors in the main index;
* ``towerserve_items_pending_changes``: item changes searched beside it (upserts and deletes
  in the delta, serving/item_changes.py) until a rebuild folds them in;
* ``towerserve_items_log_version``: the change-log version the retriever serves.

Updated on each batch of requests (a few gauge sets). Where the backend has no custom-metric
support, nothing is reported.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Any

from serving.retriever import Retriever

log = logging.getLogger(__name__)

__all__ = ["GAUGES", "IndexMetrics", "created_timestamp"]

#: Gauge name -> description.
GAUGES = {
    "towerserve_index_age_seconds": "Seconds since the served index was built",
    "towerserve_index_items": "Vectors in the main index",
    "towerserve_items_pending_changes": "Item upserts and deletes served from the delta",
    "towerserve_items_log_version": "Item change-log version the retriever serves",
}
INFO = "towerserve_index_info"


def created_timestamp(created_at: str) -> float | None:
    """Unix seconds of an ISO 8601 time (``None`` when empty or unreadable)."""
    try:
        return datetime.fromisoformat(created_at).timestamp() if created_at else None
    except ValueError:
        return None


class IndexMetrics:
    """The gauges of one retriever; :meth:`update` sets them from its current state."""

    def __init__(
        self, pb_utils: Any, retriever: Retriever, *, model_version: str, created_at: str
    ) -> None:
        self.retriever = retriever
        self.created_s = created_timestamp(created_at)
        self._gauges: dict[str, Any] = {}
        self._families: list[Any] = []
        family_cls = getattr(pb_utils, "MetricFamily", None)
        if family_cls is None:
            return
        try:
            labels = {"model": "retriever"}
            info = family_cls(
                name=INFO, description="1 for the index served", kind=family_cls.GAUGE
            )
            self._info = info.Metric(
                labels={**labels, "model_version": model_version, "created_at": created_at}
            )
            self._info.set(1.0)
            self._families.append(info)
            for name, text in GAUGES.items():
                family = family_cls(name=name, description=text, kind=family_cls.GAUGE)
                self._families.append(family)
                self._gauges[name] = family.Metric(labels=labels)
            self.update()
        except Exception:  # metrics must never stop a model from loading
            log.warning("could not report the index metrics", exc_info=True)
            self._gauges = {}

    def update(self) -> None:
        if not self._gauges:
            return
        try:
            delta = self.retriever.delta.current() if self.retriever.delta is not None else None
            if self.created_s is not None:
                self._gauges["towerserve_index_age_seconds"].set(time.time() - self.created_s)
            self._gauges["towerserve_index_items"].set(float(self.retriever.index.ntotal))
            self._gauges["towerserve_items_pending_changes"].set(
                float(len(delta)) if delta is not None else 0.0
            )
            self._gauges["towerserve_items_log_version"].set(
                float(delta.version) if delta is not None else 0.0
            )
        except Exception:  # never fail a request over a metric
            log.warning("could not update the index metrics", exc_info=True)
