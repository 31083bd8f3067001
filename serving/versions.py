"""Model versions inside one Triton repository, and which one answered a request.

A repository written by ``towerserve export`` holds version ``1`` of every model. ``towerserve
publish`` (client/publish.py) adds version folders ``N+1`` beside ``N`` and pins every step of
the ``recommend`` ensemble to one version number, so a request runs wholly on one version:

* :func:`version_folders` and :func:`pinned_version` read that layout back;
* a version folder's own ``manifest.json`` names its model version: a model whose config leaves
  the ``model_version`` parameter empty (every model of a published repository: one config
  serves several versions) takes it from there (:func:`version_parameters`);
* each answer of ``recommend`` carries ``SERVED_BY``: one label ``<folder>:<model version>`` per
  stage that holds version-bearing files (user_tower, retriever, reranker). The retriever
  refuses a user vector of another model version than its index (:func:`extend_trail`), so a
  mixed answer is an error, never a silent wrong list.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from serving.bundle import load_manifest
from serving.errors import RequestError

__all__ = [
    "ENSEMBLE",
    "SERVED_BY",
    "extend_trail",
    "pinned_version",
    "served_by",
    "trail_labels",
    "version_folders",
    "version_label",
    "version_parameters",
]

#: The ensemble whose steps are pinned to one version.
ENSEMBLE = "recommend"
#: The output (and stage input) that carries the version labels of an answer.
SERVED_BY = "SERVED_BY"

Handler = Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]


def version_folders(repository: Path, model: str) -> list[int]:
    """The version numbers of ``model`` on disk (folders named by a positive integer),
    ascending; empty when the model has none."""
    folder = Path(repository) / model
    if not folder.is_dir():
        return []
    return sorted(
        int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit() and int(p.name)
    )


def pinned_version(repository: Path) -> int | None:
    """The version every step of the ``recommend`` ensemble is pinned to, or ``None`` when
    its steps take the latest (``model_version: -1``) or there is no ensemble.

    Raises:
        ValueError: the config does not parse, or its steps name different versions.
    """
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    path = Path(repository) / ENSEMBLE / "config.pbtxt"
    if not path.is_file():
        return None
    config = model_config_pb2.ModelConfig()
    try:
        text_format.Parse(path.read_text(), config)
    except (OSError, text_format.ParseError) as exc:
        raise ValueError(f"{path} is not a readable model config: {exc}") from exc
    pins = {int(step.model_version) for step in config.ensemble_scheduling.step}
    if pins == {-1} or not pins:
        return None
    if len(pins) != 1 or -1 in pins:
        raise ValueError(
            f"{path} pins its steps to different versions {sorted(pins)}: a request could mix "
            "models; pin them to one (towerserve publish or rollback)"
        )
    return pins.pop()


def version_parameters(folder: Path, params: Mapping[str, str]) -> dict[str, str]:
    """``params`` with ``model_version`` taken from ``folder``'s ``manifest.json`` when the
    config leaves it empty (a config that serves several version folders)."""
    out = dict(params)
    if not out.get("model_version"):
        out["model_version"] = load_manifest(Path(folder)).model_version
    return out


def version_label(folder: Path) -> str:
    """``<version folder name>:<model version>`` of a version folder, e.g. ``2:tiny-3f2a``."""
    folder = Path(folder)
    return f"{folder.name}:{load_manifest(folder).model_version}"


def trail_labels(value: np.ndarray | None) -> list[str]:
    """The labels of a ``SERVED_BY`` tensor (bytes or str), in stage order."""
    if value is None:
        return []
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in np.ravel(value)]


def _model_version(label: str) -> str:
    return label.split(":", 1)[1] if ":" in label else label


def extend_trail(
    tensors: Mapping[str, np.ndarray], label: str, *, require_same_model: bool = False
) -> np.ndarray:
    """The ``SERVED_BY`` tensor of a stage: the labels it received plus its own ``label``.

    ``require_same_model``: refuse (:class:`RequestError`) input labels of another model
    version than ``label``'s (the retriever: a user vector of another model lives in another
    vector space, and its search would be meaningless).
    """
    labels = trail_labels(tensors.get(SERVED_BY))
    if require_same_model:
        own = _model_version(label)
        other = sorted({_model_version(x) for x in labels} - {own})
        if other:
            raise RequestError(
                f"mixed model versions: the input comes from model version {other[0]!r}, this "
                f"stage serves {own!r}; pin every step of the recommend ensemble to one version "
                "(towerserve publish)"
            )
    return np.array([x.encode("utf-8") for x in [*labels, label]], dtype=np.object_)


def served_by(handler: Handler, folder: Path, *, require_same_model: bool = False) -> Handler:
    """``handler`` whose outputs also carry ``SERVED_BY`` (:func:`extend_trail`) for the
    version folder ``folder``. The check runs before ``handler``."""
    label = version_label(folder)

    def run(tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        trail = extend_trail(tensors, label, require_same_model=require_same_model)
        return {**handler(tensors), SERVED_BY: trail}

    return run
