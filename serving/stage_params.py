"""Stages built from their Triton model parameters: one place for both the server and a process.

Each served model's ``config.pbtxt`` holds its settings as ``parameters`` (model version,
runtime, threads, chunk sizes ...). The ``model.py`` files build their stage with the functions
here from what Triton hands them, and :func:`repository_params` reads the same parameters from
a written repository, so :class:`serving.pipeline.InProcessRecommend` built from a repository
runs exactly what the server runs: the same stage code, graphs, runtimes and settings.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from serving.backend import float_parameter, int_parameter
from serving.events.settings import live_history
from serving.graphs import runtime_from_params
from serving.item_tower import ItemEncoder
from serving.prior_stream import attach_moving_prior
from serving.reranker import Reranker
from serving.retriever import Retriever
from serving.user_tower import UserEncoder
from serving.versions import pinned_version, version_folders, version_parameters
from towers.features import MAX_ITEM_TOKENS, MAX_QUERY_TOKENS

__all__ = [
    "VERSION",
    "item_encoder",
    "repository_params",
    "reranker",
    "retriever",
    "user_encoder",
]

#: The version folder of every model in a repository written by ``towerserve export``.
VERSION = "1"


def repository_params(repository: Path, model: str) -> tuple[Path, dict[str, str]]:
    """The version folder and the ``parameters`` of ``model`` in a Triton repository, read from
    its ``config.pbtxt`` as Triton reads them. The folder is the version the ``recommend``
    ensemble is pinned to (serving.versions; ``1`` when it is not pinned) and an empty
    ``model_version`` parameter is taken from that folder's manifest. Raises
    ``FileNotFoundError`` or ``ValueError`` (a config that does not parse) naming the file."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    path = Path(repository) / model / "config.pbtxt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: is {repository} a towerserve repository?")
    config = model_config_pb2.ModelConfig()
    try:
        text_format.Parse(path.read_text(), config)
    except text_format.ParseError as exc:
        raise ValueError(f"{path} is not a valid model config: {exc}") from exc
    params = {k: v.string_value for k, v in config.parameters.items()}
    pinned = pinned_version(Path(repository))
    folder = Path(repository) / model / (VERSION if pinned is None else str(pinned))
    if not folder.is_dir():  # a model outside the ensemble keeps one version (publish)
        folder = Path(repository) / model / str(max(version_folders(repository, model) or [1]))
    return folder, version_parameters(folder, params) if folder.is_dir() else params


def _threads(params: Mapping[str, str]) -> int:
    return int_parameter(params, "intra_op_threads", 1)


def user_encoder(folder: Path, params: Mapping[str, str]) -> UserEncoder:
    """The ``user_tower`` stage of version folder ``folder`` with its model ``params``, reading
    the live event store they name (serving.events.settings; the repository is
    ``folder``'s grandparent)."""
    encoder = UserEncoder.from_dir(
        folder,
        model_version=params.get("model_version"),
        runtime=runtime_from_params(params, _threads(params)),
    )
    encoder.live = live_history(params, Path(folder).resolve().parent.parent)
    return encoder


def retriever(folder: Path, params: Mapping[str, str]) -> Retriever:
    """The ``retriever`` stage of version folder ``folder`` with its model ``params``; its
    popularity prior moves with the live event stream unless they say otherwise
    (serving.prior_stream). ``exclude_recent`` (absent: 0) drops the newest that many items
    of a request's history from its candidates when it has no query."""
    stage = Retriever.from_dir(
        folder,
        model_version=params.get("model_version", ""),
        max_k=int_parameter(params, "max_k", 0, low=0) or None,
        n_candidates=int_parameter(params, "n_candidates", 0, low=0) or None,
        omp_threads=int_parameter(params, "omp_threads", 1),
        device=params.get("device", "cpu"),
        device_dtype=params.get("index_precision", "fp32"),
        exclude_recent=int_parameter(params, "exclude_recent", 0, low=0),
    )
    attach_moving_prior(stage, folder, params)
    return stage


def reranker(folder: Path, params: Mapping[str, str]) -> Reranker:
    """The ``reranker`` stage of version folder ``folder`` with its model ``params``."""
    return Reranker.from_dir(
        folder,
        model_version=params.get("model_version"),
        chunk_size=int_parameter(params, "chunk_size", 16),
        max_call=int_parameter(params, "max_call", 0, low=0) or None,
        max_k=int_parameter(params, "max_k", 0, low=0) or None,
        runtime=runtime_from_params(params, _threads(params)),
        reserve_ms=float_parameter(params, "reserve_ms", 1.0),
        max_item_tokens=int_parameter(params, "max_item_tokens", MAX_ITEM_TOKENS),
        max_context_tokens=int_parameter(params, "max_context_tokens", MAX_QUERY_TOKENS - 2, low=0),
        max_scored=int_parameter(params, "max_scored", 0, low=0) or None,
    )


def item_encoder(folder: Path, params: Mapping[str, str], batch_size: int = 64) -> ItemEncoder:
    """The ``item_tower`` stage of version folder ``folder`` with its model ``params``."""
    return ItemEncoder.from_dir(
        folder,
        model_version=params.get("model_version"),
        runtime=runtime_from_params(params, _threads(params)),
        batch_size=batch_size,
    )
