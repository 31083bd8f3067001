"""Checks on named request tensors, raising :class:`RequestError` that says what is allowed.

Triton already rejects a tensor whose dtype or shape contradicts ``config.pbtxt``; these checks
repeat the ones that matter for the stage logic so it is safe when called directly (tests,
benchmarks, another front end) and so a message names the tensor and the allowed values.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from serving.errors import RequestError

__all__ = [
    "float_scalar",
    "int_matrix",
    "int_scalar",
    "int_vector",
    "require",
    "text_scalar",
]


def require(tensors: Mapping[str, np.ndarray], name: str) -> np.ndarray:
    """The tensor ``name``, or a :class:`RequestError` listing what the request did send."""
    if name not in tensors:
        sent = ", ".join(sorted(tensors)) or "nothing"
        raise RequestError(f"missing input {name} (the request sent {sent})")
    return np.asarray(tensors[name])


def _one(arr: np.ndarray, name: str, what: str) -> np.generic:
    if arr.size != 1:
        raise RequestError(
            f"{name} must hold exactly one {what} (shape [1]), got shape {arr.shape}"
        )
    return arr.reshape(-1)[0]


def int_scalar(arr: np.ndarray, name: str) -> int:
    """One integer from a shape-[1] integer tensor."""
    arr = np.asarray(arr)
    if arr.dtype.kind not in "iu":
        raise RequestError(f"{name} must be an integer tensor, got {arr.dtype}")
    return int(_one(arr, name, "integer").item())


def float_scalar(arr: np.ndarray, name: str) -> float:
    """One float from a shape-[1] floating-point (or integer) tensor; may be inf or nan."""
    arr = np.asarray(arr)
    if arr.dtype.kind not in "fiu":
        raise RequestError(f"{name} must be a numeric tensor, got {arr.dtype}")
    return float(_one(arr, name, "number").item())


def int_vector(arr: np.ndarray, name: str) -> np.ndarray:
    """A 1-D int64 copy of an integer tensor of shape ``[n]`` (``n`` may be 0)."""
    arr = np.asarray(arr)
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.dtype.kind not in "iu":
        raise RequestError(f"{name} must be an integer tensor, got {arr.dtype}")
    if arr.ndim != 1:
        raise RequestError(f"{name} must be 1-D (shape [n]), got shape {arr.shape}")
    return arr.astype(np.int64)


def int_matrix(arr: np.ndarray, name: str, *, max_cols: int) -> np.ndarray:
    """An int64 ``[1, L]`` tensor with ``1 <= L <= max_cols``."""
    arr = np.asarray(arr)
    if arr.dtype.kind not in "iu":
        raise RequestError(f"{name} must be an integer tensor, got {arr.dtype}")
    if arr.ndim != 2 or arr.shape[0] != 1 or not 1 <= arr.shape[1] <= max_cols:
        raise RequestError(
            f"{name} must have shape [1, L] with 1 <= L <= {max_cols}, got shape {arr.shape}"
        )
    return arr.astype(np.int64)


def text_scalar(arr: np.ndarray, name: str) -> str:
    """One UTF-8 string from a shape-[1] BYTES tensor (``str`` items are accepted as they are)."""
    value = _one(np.asarray(arr, dtype=object), name, "string")
    if isinstance(value, str):
        return value
    if not isinstance(value, bytes | np.bytes_):
        raise RequestError(
            f"{name} must be a BYTES tensor of UTF-8 text, got {type(value).__name__}"
        )
    try:
        return bytes(value).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError(
            f"{name} must be UTF-8 text (invalid byte at position {exc.start})"
        ) from exc
