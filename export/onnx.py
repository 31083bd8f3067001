"""ONNX export of the towers and the reranker, with a parity check against PyTorch.

Every graph has dynamic batch and sequence axes. ``check_parity`` runs the exported graph in
ONNX Runtime on sample inputs and fails when the largest absolute difference from the fp32
PyTorch module exceeds ``tol`` (default 1e-4).

The cross-encoder is exported as pairs (``reranker``, inputs ``PAIR_INPUTS``: every runtime,
the GPU ones included) and, when it has one layer, also in its context-once form
(``reranker_context_once``: towers.models.ContextOnceCrossEncoder, one context and many items,
the context's keys and values computed once per call; inputs ``CONTEXT_ONCE_INPUTS``), which
the CPU runtimes serve (serving/graphs.py). Its parity is checked against the pair model on
the same pairs.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from towers.features import (
    CONTEXT_ONCE_INPUTS,
    PAIR_INPUTS,
    build_context_once,
    build_pairs,
)
from towers.models import ContextOnceCrossEncoder, CrossEncoder, ItemTower, UserTower

log = logging.getLogger(__name__)

PARITY_TOL = 1e-4
#: Changes when the exported graphs change for the same weights (caches of exported bundles,
#: e.g. ``towerserve bench``'s, key on it): 2 = the cross-encoder's last layer for ``[CLS]``
#: only (towers.models.cls_only_forward); 3 = a 1-layer one's context once per call
#: (towers.models.ContextOnceCrossEncoder).
GRAPH_FORMAT = 3


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
            list(PAIR_INPUTS),
            ["score"],
            {"input_ids": seq, "attention_mask": seq, "token_type_ids": seq, "score": {0: "batch"}},
        )
    if kind == "reranker_context_once":
        context = {0: "one", 1: "context"}
        items = {0: "batch", 1: "item"}
        return (
            list(CONTEXT_ONCE_INPUTS),
            ["score"],
            {
                "context_ids": context,
                "context_mask": context,
                "item_ids": items,
                "item_mask": items,
                "score": {0: "batch"},
            },
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
        weights[0, 0] = 0.0  # ... and one whose history is padded on the left
        has_query = torch.tensor([[1.0]] * (batch - 1) + [[0.0]])
        return (ids, mask, has_query, hist, weights)
    if kind == "reranker_context_once":
        query, items = _sample_pairs(batch, seq)
        feeds = build_context_once(query, items, pad_to=8)
        return tuple(torch.from_numpy(feeds[n]) for n in CONTEXT_ONCE_INPUTS)
    types = torch.zeros_like(ids)
    types[:, seq // 2 :] = 1
    return (ids, mask, types)


def _sample_pairs(batch: int, seq: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """A context of ``seq // 3`` tokens and ``batch`` items of 1 to ``seq`` tokens."""
    rng = np.random.default_rng(0)
    query = rng.integers(1000, 29000, max(1, seq // 3))
    lengths = np.linspace(1, seq, batch).astype(int)
    return query, [rng.integers(1000, 29000, int(n)) for n in lengths]


def has_context_once_form(module: nn.Module) -> bool:
    """Whether ``module`` is a cross-encoder with a context-once form (one BERT layer)."""
    return isinstance(module, CrossEncoder) and module.bert.config.num_hidden_layers == 1


def export_onnx(kind: str, module: nn.Module, path: Path) -> Path:
    """Write ``module`` as ONNX to ``path`` (weights embedded, one file) and return it; kind
    ``reranker_context_once`` writes a 1-layer :class:`CrossEncoder` in its context-once form."""
    if not isinstance(module, ItemTower | UserTower | CrossEncoder):
        raise TypeError(f"cannot export {type(module).__name__}")
    module = module.float().eval()
    if kind == "reranker_context_once":
        if not has_context_once_form(module):
            raise ValueError("the context-once form needs a 1-layer cross-encoder")
        module = ContextOnceCrossEncoder(module)  # type: ignore[arg-type]
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
    """Largest absolute difference between ONNX Runtime and PyTorch fp32; raises above ``tol``
    (kind ``reranker_context_once``: the graph against the pair model ``module`` on the same
    pairs)."""
    module = module.float().eval()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    if kind == "reranker_context_once":
        # against the pair model itself, on the same pairs
        query, items = _sample_pairs(6, 17)
        pairs = [torch.from_numpy(a) for a in build_pairs(query, items)]
        with torch.no_grad():
            expected = module(*pairs).numpy()
        got = sess.run(None, build_context_once(query, items, pad_to=8))[0]
    else:
        inputs = sample_inputs(kind, module, batch=4, seq=17)
        names, _, _ = io_spec(kind)
        with torch.no_grad():
            expected = module(*inputs).numpy()
        got = sess.run(None, {n: t.numpy() for n, t in zip(names, inputs)})[0]
    diff = float(np.max(np.abs(got - expected)))
    if not diff <= tol:
        raise ParityError(f"{path.name}: ONNX differs from PyTorch by {diff:.2e} > {tol:.0e}")
    log.info("%s parity: max abs diff %.2e", path.name, diff)
    return diff
