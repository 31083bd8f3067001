"""Index versions: a FAISS index tied to the item-tower version whose vectors it holds.

An *index version folder* (``towerserve index build``) holds ``index.faiss`` and
``index_manifest.json`` (:class:`IndexVersion`): the model version, the dimension, the item
count, the index kind and parameters (towers/index.py) and the index file's size in bytes and
sha256. Before an index is served it is checked (:func:`check_index_version`,
:func:`load_index_version`); each failure raises :class:`IndexVersionError` whose ``reason``
says which check failed:

* ``missing``: no manifest or no index file, or a manifest that is not one;
* ``model_version``: built from another item tower's vectors than the served model's;
* ``dim``: the index dimension differs from the served model's;
* ``truncated``: the index file is shorter than the manifest records (a copy cut short);
* ``corrupt``: same size but another checksum, or FAISS cannot read it, or what it reads
  contradicts the manifest (vector count or dimension).

Reading the whole file for its checksum costs about 1 s per GB (sha256, one core).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from towers.bundle_contract import INDEX_FILE, INDEX_MANIFEST_FILE, BundleError, sha256
from towers.index import build_index

log = logging.getLogger(__name__)

__all__ = [
    "REASONS",
    "IndexVersion",
    "IndexVersionError",
    "build_index_version",
    "check_index_version",
    "load_index_version",
    "read_index_version",
]

#: The values of :attr:`IndexVersionError.reason`.
REASONS = ("missing", "model_version", "dim", "truncated", "corrupt")


class IndexVersionError(BundleError):
    """An index version that must not be served; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, message: str) -> None:
        if reason not in REASONS:
            raise ValueError(f"reason must be one of {REASONS}, got {reason!r}")
        super().__init__(f"{reason}: {message}")
        self.reason = reason


@dataclass(frozen=True)
class IndexVersion:
    """What ``index_manifest.json`` records about one index version.

    ``dim`` the vector dimension D, ``n_items`` the vectors held, ``index`` the kind and
    parameters (towers/index.py), ``index_bytes`` and ``index_sha256`` the size and digest of
    ``index.faiss``, ``created_at`` ISO 8601 UTC, ``source`` what the vectors came from
    (e.g. the shard folders and their embed manifests' model version).
    """

    model_version: str
    dim: int
    n_items: int
    index: dict[str, Any]
    index_bytes: int
    index_sha256: str
    created_at: str = ""
    source: list[str] = field(default_factory=list)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], source: str = INDEX_MANIFEST_FILE) -> IndexVersion:
        """Parse a manifest document; :class:`IndexVersionError` (``missing``) naming
        ``source`` when a field is absent or of the wrong type."""
        try:
            return cls(
                model_version=str(doc["model_version"]),
                dim=int(doc["dim"]),
                n_items=int(doc["n_items"]),
                index=dict(doc["index"]),
                index_bytes=int(doc["index_bytes"]),
                index_sha256=str(doc["index_sha256"]),
                created_at=str(doc.get("created_at", "")),
                source=[str(s) for s in doc.get("source", [])],
            )
        except KeyError as exc:
            raise IndexVersionError("missing", f"{source} lacks {exc.args[0]!r}") from exc
        except (TypeError, ValueError) as exc:
            raise IndexVersionError(
                "missing", f"{source} has a field of the wrong type: {exc}"
            ) from exc

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_index_version(
    vectors: np.ndarray,
    item_ids: np.ndarray,
    out: Path,
    *,
    model_version: str,
    kind: str = "auto",
    nprobe: int | None = None,
    source: list[str] | None = None,
) -> IndexVersion:
    """Build the FAISS index of ``vectors`` (float32 ``[N, D]``, L2-normalised) under
    ``item_ids`` (int64 ``[N]``, unique) with towers.index.build_index and write it with its
    manifest to ``out`` (written beside it as ``out.tmp``, then renamed into place: a reader
    never sees half a folder). Returns the manifest."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    item_ids = np.asarray(item_ids, dtype=np.int64)
    if vectors.ndim != 2 or len(vectors) != len(item_ids):
        raise ValueError(
            f"need vectors [N, D] and N item ids, got {vectors.shape}, {item_ids.shape}"
        )
    if len(np.unique(item_ids)) != len(item_ids):
        raise ValueError("item ids must be unique")
    if not model_version:
        raise ValueError("an index version needs the model_version of its vectors")
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    index, params = build_index(vectors, item_ids, kind=kind, nprobe=nprobe)
    faiss.write_index(index, str(tmp / INDEX_FILE))
    version = IndexVersion(
        model_version=model_version,
        dim=int(vectors.shape[1]),
        n_items=int(len(item_ids)),
        index=dict(params),
        index_bytes=(tmp / INDEX_FILE).stat().st_size,
        index_sha256=sha256(tmp / INDEX_FILE),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        source=list(source or []),
    )
    (tmp / INDEX_MANIFEST_FILE).write_text(json.dumps(version.to_dict(), indent=2))
    if out.exists():
        old = out.with_name(out.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)
    log.info(
        "index %s: %s, %d items, dim %d, model %s",
        out,
        params.get("type"),
        version.n_items,
        version.dim,
        model_version,
    )
    return version


def read_index_version(folder: Path) -> IndexVersion:
    """The manifest of an index version folder; :class:`IndexVersionError` (``missing``)."""
    path = Path(folder) / INDEX_MANIFEST_FILE
    if not path.is_file():
        raise IndexVersionError(
            "missing",
            f"{path} does not exist: not an index version folder (towerserve index build)",
        )
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IndexVersionError("missing", f"{path} is not readable JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise IndexVersionError("missing", f"{path} must hold a JSON object")
    return IndexVersion.from_dict(doc, source=str(path))


def check_index_version(
    folder: Path, *, model_version: str | None = None, dim: int | None = None
) -> IndexVersion:
    """Check an index version folder against the served model (``model_version``, ``dim``;
    ``None`` skips that check) and its file against the manifest (size, then sha256).
    Returns the manifest; raises :class:`IndexVersionError` naming the first failed check."""
    folder = Path(folder)
    version = read_index_version(folder)
    if model_version and version.model_version != model_version:
        raise IndexVersionError(
            "model_version",
            f"{folder} holds vectors of model version {version.model_version!r}, but the served "
            f"model is {model_version!r}: re-embed the catalog with that model "
            "(towerserve embed) and build the index from its shards",
        )
    if dim is not None and version.dim != dim:
        raise IndexVersionError(
            "dim", f"{folder} holds vectors of dimension {version.dim}, the served model {dim}"
        )
    path = folder / INDEX_FILE
    if not path.is_file():
        raise IndexVersionError("missing", f"{path} does not exist")
    size = path.stat().st_size
    if size < version.index_bytes:
        raise IndexVersionError(
            "truncated",
            f"{path} has {size} of the {version.index_bytes} bytes its manifest records",
        )
    if size > version.index_bytes:
        raise IndexVersionError(
            "corrupt", f"{path} has {size} bytes, its manifest records {version.index_bytes}"
        )
    got = sha256(path)
    if got != version.index_sha256:
        raise IndexVersionError(
            "corrupt",
            f"{path} does not match its checksum (expected {version.index_sha256[:12]}..., "
            f"got {got[:12]}...)",
        )
    return version


def load_index_version(
    folder: Path, *, model_version: str | None = None, dim: int | None = None
) -> tuple[faiss.Index, IndexVersion]:
    """:func:`check_index_version`, then read the index and check that it holds what the
    manifest says. Returns ``(index, manifest)``."""
    version = check_index_version(folder, model_version=model_version, dim=dim)
    path = Path(folder) / INDEX_FILE
    try:
        index = faiss.read_index(str(path))
    except RuntimeError as exc:
        raise IndexVersionError("corrupt", f"{path} is not a readable FAISS index: {exc}") from exc
    if index.d != version.dim or index.ntotal != version.n_items:
        raise IndexVersionError(
            "corrupt",
            f"{path} holds {index.ntotal} vectors of dim {index.d}, its manifest "
            f"{version.n_items} of dim {version.dim}",
        )
    return index, version
