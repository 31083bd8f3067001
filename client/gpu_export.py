"""``towerserve export --engine tensorrt``: FP16 TensorRT engines added to a bundle.

UNVERIFIED here (no machine of this project has TensorRT; see export/tensorrt.py). Each graph's
engine is built from its ONNX graph, checked against ONNX Runtime on sample inputs of the
graph's own kind, written beside it as ``<graph>.plan`` and given a checksum in the manifest.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["add_tensorrt_engines"]

GRAPHS = ("item_tower", "user_tower", "reranker")


def _sample_feeds(kind: str, dim: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 29000, size=(4, 17)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[0, 9:] = 0
    ids = ids * mask
    if kind == "item_tower":
        return {"input_ids": ids, "attention_mask": mask}
    if kind == "reranker":
        types = np.zeros_like(ids)
        types[:, 8:] = 1
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    hist = rng.normal(size=(4, 5, dim)).astype(np.float32)
    hist /= np.linalg.norm(hist, axis=-1, keepdims=True)
    weights = np.full((4, 5), 0.2, np.float32)
    has_query = np.array([[1.0], [1.0], [1.0], [0.0]], np.float32)
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "has_query": has_query,
        "history_vectors": hist,
        "history_weights": weights,
    }


def add_tensorrt_engines(bundle: Path) -> dict[str, float]:
    """Build, check and checksum ``<graph>.plan`` for each graph in ``bundle``; returns the
    parity (max abs difference from ONNX Runtime) per graph."""
    from dataclasses import replace

    from export.tensorrt import build_engine, check_engine_parity
    from serving.tensorrt_engine import TensorRTGraph
    from towers.bundle_contract import load_manifest, onnx_file, sha256, tensorrt_file

    manifest = load_manifest(bundle)
    parity: dict[str, float] = {}
    checksums = dict(manifest.checksums)
    for kind in GRAPHS:
        onnx_path = bundle / onnx_file(kind)
        plan = build_engine(onnx_path, bundle / tensorrt_file(kind))
        engine = TensorRTGraph(plan)
        parity[plan.name] = check_engine_parity(
            onnx_path, engine.run, _sample_feeds(kind, manifest.dim)
        )
        checksums[plan.name] = sha256(plan)
        log.info("%s: TensorRT FP16 engine, max abs diff from ONNX %.2e", kind, parity[plan.name])
    replace(
        manifest,
        checksums=checksums,
        onnx_parity_max_abs_diff={**manifest.onnx_parity_max_abs_diff, **parity},
    ).write(bundle)
    return parity
