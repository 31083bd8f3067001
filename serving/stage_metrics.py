"""Custom Triton metrics of the stages (Python backend ``pb_utils.MetricFamily``).

``towerserve_stage_backend{model, backend}`` is a gauge set to 1 for what runs each stage
(``onnxruntime-cpu``, ``openvino-cpu-bf16``, ``torch-cuda-fp16``, ``tensorrt``, ``faiss-cpu``,
``faiss-gpu``, ``torch-exact`` ...), so a scrape of the metrics port says whether a GPU server
really serves from its GPU. Where the backend has no custom-metric support (older Triton),
nothing is reported and the choice is only in the log.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["BACKEND_METRIC", "graph_backend", "report_backend"]

BACKEND_METRIC = "towerserve_stage_backend"
_families: dict[int, Any] = {}


def graph_backend(graph: object) -> str:
    """A short name for what runs ``graph`` (a serving.graphs graph object)."""
    name = type(graph).__name__
    if name == "OnnxModel":
        return "onnxruntime-cpu"
    if name == "TorchGraph":
        device = getattr(graph, "device", "cuda")
        kind = getattr(device, "type", str(device))
        return f"torch-{kind}-{getattr(graph, 'precision', '?')}"
    if name == "OpenVinoGraph":
        return f"openvino-cpu-{getattr(graph, 'precision', '?')}"
    if name == "TensorRTGraph":
        return "tensorrt"
    return name


def report_backend(pb_utils: Any, model: str, backend: str) -> object | None:
    """Set ``towerserve_stage_backend{model=..., backend=...}`` to 1 and log the choice;
    returns the metric (keep it referenced for the model's lifetime) or None."""
    log.info("%s runs on %s", model, backend)
    family_cls = getattr(pb_utils, "MetricFamily", None)
    if family_cls is None:
        return None
    try:
        family = _families.get(id(pb_utils))
        if family is None:
            family = family_cls(
                name=BACKEND_METRIC,
                description="1 for the runtime or index backend that serves each stage",
                kind=family_cls.GAUGE,
            )
            _families[id(pb_utils)] = family
        metric = family.Metric(labels={"model": model, "backend": backend})
        metric.set(1.0)
        return metric
    except Exception:  # a metrics failure must never stop a model from loading
        log.warning("could not report %s for %s", BACKEND_METRIC, model, exc_info=True)
        return None
