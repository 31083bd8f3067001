"""The user tower's sequence block in numpy: what serving runs for a request without a query.

``towers.models.HistorySequence`` (torch) is trained and exported inside the user tower's
ONNX graph, which serves requests with a query. A request without one needs only the
history's share of the user vector, and serving computes it here, without the graph (whose
BERT layers would run on an empty query for nothing): the same arithmetic on the same
weights (``HistorySequence.arrays``, saved in the bundle as ``user_history_sequence.npz``),
tested equal to the torch block. Only the newest item's row is carried through the block
after the keys and values, since only it is read out.

Numpy only (serving imports it; pyproject's import contract checks it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

__all__ = ["SEQUENCE_KEYS", "history_sequence", "check_sequence_arrays"]

#: Added to the attention scores of padding (as towers.models.MASKED_SCORE).
_MASKED = -10_000.0
#: The arrays a sequence block is saved as (``HistorySequence.arrays``).
SEQUENCE_KEYS = (
    "heads",
    "rank.weight",
    "norm1.weight",
    "norm1.bias",
    "qkv.weight",
    "qkv.bias",
    "proj.weight",
    "proj.bias",
    "norm2.weight",
    "norm2.bias",
    "ff.0.weight",
    "ff.0.bias",
    "ff.2.weight",
    "ff.2.bias",
    "out.weight",
)


def check_sequence_arrays(params: Mapping[str, np.ndarray], dim: int) -> None:
    """Raise ``ValueError`` naming what is missing or misshapen for a ``dim``-wide block."""
    missing = [k for k in SEQUENCE_KEYS if k not in params]
    if missing:
        raise ValueError(f"sequence block arrays lack {', '.join(missing)}")
    heads = int(params["heads"])
    if heads < 1 or dim % heads:
        raise ValueError(f"sequence block heads {heads} do not divide dim {dim}")
    shapes = {"qkv.weight": (3 * dim, dim), "out.weight": (dim, dim), "proj.weight": (dim, dim)}
    for key, shape in shapes.items():
        if params[key].shape != shape:
            raise ValueError(f"sequence block {key} must be {shape}, got {params[key].shape}")
    if params["rank.weight"].ndim != 2 or params["rank.weight"].shape[1] != dim:
        raise ValueError(f"sequence block rank.weight must be [L, {dim}]")


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-5) * weight + bias


#: sqrt(2 / pi), a Python float (a numpy float64 scalar would promote float32 arrays).
_GELU_C = math.sqrt(2.0 / math.pi)


def _gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(_GELU_C * (x + 0.044715 * x * x * x)))


def history_sequence(
    params: Mapping[str, np.ndarray], vectors: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """The sequence term of the history's share of the user vector, float32 ``[B, D]``.

    ``vectors`` float32 ``[B, H, D]`` are the history's item vectors, oldest first, and
    ``weights`` ``[B, H]`` their recency weights: ``> 0`` marks a real item, 0 padding (on
    either side). A row without real items gets zeros.
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    real = (np.asarray(weights) > 0).astype(np.float32)
    batch, length, dim = vectors.shape
    heads = int(params["heads"])
    head_dim = dim // heads
    rank_table = params["rank.weight"]
    after = np.flip(np.cumsum(np.flip(real, 1), 1), 1) - real
    rank = np.minimum(after, len(rank_table) - 1).astype(np.int64)
    x = vectors + rank_table[rank] * real[..., None]
    # the newest real item's row (index 0 for an empty row, zeroed at the end)
    newest = np.argmax(real * (after == 0), axis=1)
    x_new = x[np.arange(batch), newest]  # [B, D]
    w_qkv, b_qkv = params["qkv.weight"], params["qkv.bias"]
    h = _layer_norm(x, params["norm1.weight"], params["norm1.bias"])
    k = h @ w_qkv[dim : 2 * dim].T + b_qkv[dim : 2 * dim]
    v = h @ w_qkv[2 * dim :].T + b_qkv[2 * dim :]
    q = h[np.arange(batch), newest] @ w_qkv[:dim].T + b_qkv[:dim]  # [B, D]
    qh = q.reshape(batch, heads, 1, head_dim)
    kh = k.reshape(batch, length, heads, head_dim).transpose(0, 2, 3, 1)  # [B, h, d, H]
    vh = v.reshape(batch, length, heads, head_dim).transpose(0, 2, 1, 3)  # [B, h, H, d]
    scores = (qh @ kh) * head_dim**-0.5 + ((1.0 - real) * _MASKED)[:, None, None, :]
    scores = np.exp(scores - scores.max(-1, keepdims=True))
    mixed = (scores / scores.sum(-1, keepdims=True)) @ vh  # [B, h, 1, d]
    x_new = x_new + mixed.reshape(batch, dim) @ params["proj.weight"].T + params["proj.bias"]
    h2 = _layer_norm(x_new, params["norm2.weight"], params["norm2.bias"])
    ff = _gelu_tanh(h2 @ params["ff.0.weight"].T + params["ff.0.bias"])
    x_new = x_new + ff @ params["ff.2.weight"].T + params["ff.2.bias"]
    out = x_new @ params["out.weight"].T
    return (out * real.any(axis=1, keepdims=True)).astype(np.float32)
