"""ONNX export of the towers and the reranker, with a parity check against PyTorch.

Every graph has dynamic batch and sequence axes. ``check_parity`` runs the exported graph in
ONNX Runtime on sample inputs and fails when the largest absolute difference from the fp32
PyTorch module exceeds ``tol`` (default 1e-4).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from towers.models import CrossEncoder, ItemTower, UserTower

log = logging.getLogger(__name__)

PARITY_TOL = 1e-4
#: Changes when the exported graphs change for the same weights (caches of exported bundles,
#: e.g. ``towerserve bench``'s, key on it): 2 = the cross-encoder's last layer for ``[CLS]``
#: only (towers.models.cls_only_forward).
GRAPH_FORMAT = 2


class ParityError(RuntimeError):
    """The exported graph disagrees with the PyTorch module beyond the tolerance."""


def io_spec(kind: str) -> tuple[list[str], list[str], dict[str, dict[int, str]]]:
    """Input names, output names and dynamic axes of each exported graph."""
    seq = {0: "batch", 1: "seq"}
    if kind == "item_tower":
        return (
            ["input_ids", "attention_mask"],
            ["embedding"],
            {"input_ids": seq, "attention_mask": seq, "embedding": {0: "batch"}},
        )
    if kind == "user_tower":
        return (
            ["input_ids", "attention_mask", "has_query", "history_vectors", "history_weights"],
            ["user_vector"],
            {
                "input_ids": seq,
                "attention_mask": seq,
                "has_query": {0: "batch"},
                "history_vectors": {0: "batch", 1: "history"},
                "history_weights": {0: "batch", 1: "history"},
                "user_vector": {0: "batch"},
            },
        )
    if kind == "reranker":
        return (
            ["input_ids", "attention_mask", "token_type_ids"],
            ["score"],
            {"input_ids": seq, "attention_mask": seq, "token_type_ids": seq, "score": {0: "batch"}},
        )
    raise ValueError(f"unknown graph {kind!r}: item_tower, user_tower or reranker")


def sample_inputs(kind: str, module: nn.Module, batch: int = 3, seq: int = 11) -> tuple:
    """Example inputs with padding, used for tracing and for the parity check."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 29000, (batch, seq), generator=g)
    mask = torch.ones(batch, seq, dtype=torch.int64)
    mask[0, seq // 2 :] = 0  # a padded row
    ids = ids * mask
    if kind == "item_tower":
        return (ids, mask)
    if kind == "user_tower":
        assert isinstance(module, UserTower)
        dim = module.text.proj.out_features
        hist = nn.functional.normalize(torch.randn(batch, 4, dim, generator=g), dim=-1)
        weights = torch.softmax(torch.randn(batch, 4, generator=g), dim=-1)
        weights[1] = 0.0  # a user with no history
        has_query = torch.tensor([[1.0]] * (batch - 1) + [[0.0]])
        return (ids, mask, has_query, hist, weights)
    types = torch.zeros_like(ids)
    types[:, seq // 2 :] = 1
    return (ids, mask, types)


def export_onnx(kind: str, module: nn.Module, path: Path) -> Path:
    """Write ``module`` as ONNX to ``path`` (weights embedded, one file) and return it."""
    if not isinstance(module, ItemTower | UserTower | CrossEncoder):
        raise TypeError(f"cannot export {type(module).__name__}")
    module = module.float().eval()
    inputs, outputs, axes = io_spec(kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.onnx")
    with torch.no_grad():
        torch.onnx.export(
            module,
            sample_inputs(kind, module),
            str(tmp),
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=axes,
            opset_version=18,
            dynamo=False,
        )
    model = onnx.load(str(tmp))  # pulls any external-data side file into memory
    onnx.save_model(model, str(path), save_as_external_data=False)
    tmp.unlink(missing_ok=True)
    tmp.with_name(tmp.name + ".data").unlink(missing_ok=True)
    onnx.checker.check_model(str(path))
    return path


def check_parity(kind: str, module: nn.Module, path: Path, tol: float = PARITY_TOL) -> float:
    """Largest absolute difference between ONNX Runtime and PyTorch fp32; raises above ``tol``."""
    module = module.float().eval()
    inputs = sample_inputs(kind, module, batch=4, seq=17)
    names, _, _ = io_spec(kind)
    with torch.no_grad():
        expected = module(*inputs).numpy()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {n: t.numpy() for n, t in zip(names, inputs)})[0]
    diff = float(np.max(np.abs(got - expected)))
    if not diff <= tol:
        raise ParityError(f"{path.name}: ONNX differs from PyTorch by {diff:.2e} > {tol:.0e}")
    log.info("%s parity: max abs diff %.2e", path.name, diff)
    return diff
