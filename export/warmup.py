"""Triton ``model_warmup`` samples for the served models, built from the bundle.

Warm-up (on by default; ``warmup=False`` turns it off). Triton's Python backend pays a cost on
the first ``execute`` of every model (14-36 ms each, measured in a fresh demo), on top of the
stages' own in-``initialize`` warm-up, which cannot reach it: the first request through the
``recommend`` ensemble took 87-125 ms against a 100 ms budget while later ones took 65-97 ms.
So each request-path model (``tokenizer``, ``user_tower``, ``retriever``, ``reranker``) and the
``item_tower`` get one Triton ``model_warmup`` sample in their ``config.pbtxt``: Triton runs it
through ``execute`` before it marks the model ready, and the first requests then took 77-82 ms
with normal reranking. (Rechecked on the demo bundle: with ``BUDGET_MS`` 0 the first request
took 42 ms without these samples and 5-8 ms with them, later ones 2-4 ms; with 100 ms the first
request cross-scored 32 candidates without them and 64 with them, as later ones do.) The
ensemble gets none: it has no ``execute`` of its own.

The sample's inputs are files in ``<model>/warmup/`` (raw little-endian tensor bytes; strings
as a 4-byte little-endian length then the UTF-8 bytes, per element), built from the bundle so
they are valid requests: the query "red shirt" (tokenized by the bundle's tokenizer for the
user tower), real item ids from ``item_ids.npy``, a unit user vector of the manifest's ``dim``,
``K = min(5, max_k)``, the largest call (``rerank_max_call``) of candidates with a budget
that easily scores it, ``START_NS`` 0. They must be valid: Triton refuses to load a model
whose warm-up sample gets an error response. Inputs are checked against the config's (names,
types, shapes; every required input present) when the repository is written.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from tritonclient.grpc import model_config_pb2

from export.repository_settings import RepositoryError, RepositorySettings
from towers.bundle_contract import (
    ITEM_IDS_FILE,
    TOKENIZER_FILE,
    TRITON_DTYPES,
    Manifest,
)
from towers.features import CLS_ID, SEP_ID
from towers.text import load_tokenizer, query_inputs

log = logging.getLogger(__name__)

__all__ = [
    "WARMUP_FOLDER",
    "WARMUP_MODELS",
    "add_warmup",
    "encode_tensor",
    "warmup_sample",
]

#: Triton reads ``model_warmup`` input files from this folder of the model's folder.
WARMUP_FOLDER = "warmup"
#: Models that get a ``model_warmup`` sample (the ensemble has no ``execute`` of its own).
WARMUP_MODELS = ("tokenizer", "user_tower", "retriever", "reranker", "item_tower")
WARMUP_QUERY = "red shirt"
WARMUP_K = 5
#: Reranking budget of the warm-up sample, ms from arrival (``START_NS`` 0 means now): far
#: more than the largest call of candidates takes, so the sample runs the cross-encoder.
WARMUP_BUDGET_MS = 1000.0
#: Token ids of WARMUP_QUERY in the teacher's (BERT uncased) vocabulary, used only when the
#: bundle's tokenizer cannot be loaded (then the tokenizer model cannot load either).
WARMUP_QUERY_IDS = (CLS_ID, 2417, 3797, SEP_ID)
#: Unix times (s) of the warm-up history: one hour apart; only their differences matter.
WARMUP_TS = 1_700_000_000


def encode_tensor(array: np.ndarray, data_type: str) -> bytes:
    """``array`` as Triton reads a warm-up ``input_data_file`` of type ``data_type`` (a
    ``TYPE_*`` name): row-major little-endian values; for ``TYPE_STRING`` each element as a
    4-byte little-endian length and its bytes (``str`` encoded as UTF-8)."""
    if data_type not in TRITON_DTYPES:
        raise RepositoryError(f"warm-up inputs of type {data_type} are not supported")
    if data_type == "TYPE_STRING":
        out = []
        for value in np.asarray(array, dtype=object).reshape(-1):
            data = value.encode("utf-8") if isinstance(value, str) else bytes(value)
            out.append(struct.pack("<I", len(data)) + data)
        return b"".join(out)
    dtype = np.dtype(TRITON_DTYPES[data_type]).newbyteorder("<")
    arr = np.asarray(array)
    converted = arr.astype(dtype)
    if not np.array_equal(converted, arr):
        raise RepositoryError(f"warm-up values {arr} do not fit {data_type}")
    return np.ascontiguousarray(converted).tobytes()


def add_warmup(
    config: model_config_pb2.ModelConfig, sample: Mapping[str, np.ndarray]
) -> dict[str, bytes]:
    """Add one ``model_warmup`` sample (batch size 1, run once) reading ``sample`` from
    ``warmup/<name>`` to ``config``; return the files' contents by name. Every input must be
    one the config declares, with a shape its dims allow (a batching model's sample has the
    batch dimension, 1, first); every non-optional input must be there."""
    inputs = {i.name: i for i in config.input}
    unknown = sorted(set(sample) - set(inputs))
    if unknown:
        raise RepositoryError(f"{config.name}: warm-up inputs {unknown} are not in its config")
    missing = sorted(n for n, i in inputs.items() if not i.optional and n not in sample)
    if missing:
        raise RepositoryError(f"{config.name}: warm-up sample lacks inputs {missing}")
    entry = config.model_warmup.add(name="sample", batch_size=1, count=1)
    files = {}
    for name, value in sample.items():
        spec = inputs[name]
        shape = list(np.shape(value))
        if config.max_batch_size > 0:
            if not shape or shape[0] != 1:
                raise RepositoryError(
                    f"{config.name}: warm-up input {name} needs batch dimension 1 first, "
                    f"got shape {shape}"
                )
            shape = shape[1:]
        dims = list(spec.dims)
        if len(shape) != len(dims) or any(d not in (-1, s) for d, s in zip(dims, shape)):
            raise RepositoryError(
                f"{config.name}: warm-up input {name} has shape {shape}, config dims {dims}"
            )
        data_type = model_config_pb2.DataType.Name(spec.data_type)
        tensor = entry.inputs[name]
        tensor.data_type = spec.data_type
        tensor.dims.extend(shape)
        tensor.input_data_file = name
        files[name] = encode_tensor(value, data_type)
    return files


def _query_tokens(bundle: Path) -> tuple[np.ndarray, np.ndarray, float]:
    """``WARMUP_QUERY`` as the tokenizer model sends it to the user tower: input ids,
    attention mask (int64 ``[1, L]``) and has_query."""
    try:
        return query_inputs(load_tokenizer(Path(bundle) / TOKENIZER_FILE), WARMUP_QUERY)
    except Exception as exc:  # an unreadable tokenizer fails its own model, not the writer
        log.warning("warm-up: %s/%s unusable (%s); fixed token ids", bundle, TOKENIZER_FILE, exc)
        ids = np.array([WARMUP_QUERY_IDS], dtype=np.int64)
        return ids, np.ones_like(ids), 1.0


def warmup_sample(
    bundle: Path, model: str, manifest: Manifest, settings: RepositorySettings
) -> dict[str, np.ndarray]:
    """The warm-up request of ``model`` (input arrays by name, with the batch dimension for a
    batching model), built from ``bundle``; empty for a model without one (the ensemble) or
    a bundle without items. See the module docstring for the values."""
    if model not in WARMUP_MODELS:
        return {}
    item_ids = np.load(Path(bundle) / ITEM_IDS_FILE).astype(np.int64).reshape(-1)
    if len(item_ids) == 0:
        log.warning("warm-up: %s has no items; no warm-up samples", bundle)
        return {}
    query = np.array([WARMUP_QUERY], dtype=object)
    k = np.array([min(WARMUP_K, settings.max_k)], dtype=np.int32)
    history = item_ids[:2]
    if model == "tokenizer":
        return {"QUERY": query}
    if model == "item_tower":
        return {"ITEM_TEXT": np.array([[WARMUP_QUERY]], dtype=object)}
    if model == "user_tower":
        ids, mask, has_query = _query_tokens(bundle)
        return {
            "INPUT_IDS": ids,
            "ATTENTION_MASK": mask,
            "HAS_QUERY": np.array([[has_query]], dtype=np.float32),
            "USER_ID": np.array([-1], dtype=np.int64),
            "HISTORY_IDS": history,
            "HISTORY_TS": WARMUP_TS + 3600 * np.arange(len(history), dtype=np.int64),
        }
    if model == "retriever":
        dim = int(manifest.dim)
        return {
            "USER_VECTOR": np.full((1, dim), 1.0 / np.sqrt(dim), dtype=np.float32),
            "K": k,
            "HAS_QUERY": np.ones((1, 1), dtype=np.float32),
        }
    # reranker: the largest call's worth of catalog items, in retrieval order
    candidates = item_ids[: settings.rerank_max_call]
    return {
        "QUERY": query,
        "HISTORY_IDS": history,
        "CANDIDATE_IDS": candidates,
        "CANDIDATE_SCORES": np.linspace(1.0, 0.0, len(candidates), dtype=np.float32),
        "K": k,
        "BUDGET_MS": np.array([WARMUP_BUDGET_MS], dtype=np.float32),
        "START_NS": np.zeros(1, dtype=np.int64),
    }
