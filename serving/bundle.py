"""The artifact bundle's manifest, as the served models read it, and the checks on it.

A bundle (written by ``export/bundle.py``) is one flat folder whose ``manifest.json`` names
the model version, the embedding dimension, the item count, the index parameters and the
sha256 checksum of every file. Each Triton model's version folder (``<model>/1/``) holds a copy
of that manifest next to the bundle files the model needs, so every stage can tell which model
version it serves and refuse files from another one.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

__all__ = [
    "MANIFEST",
    "BundleError",
    "Manifest",
    "check_model_version",
    "load_manifest",
    "sha256",
    "verify_files",
]

MANIFEST = "manifest.json"


class BundleError(RuntimeError):
    """A bundle or version folder is incomplete, corrupt, or from another model version."""


@dataclass(frozen=True)
class Manifest:
    """What ``manifest.json`` says about one model version.

    ``dim`` is the embedding dimension D, ``n_items`` the catalog size N, ``max_k`` the largest
    number of items one request may ask for, ``n_candidates`` how many candidates the retriever
    hands to the reranker (it searches ``max(n_candidates, K)``), ``recency_tau_s`` the decay
    constant of history weights in seconds, ``checksums`` the sha256 hex digest per file name.
    """

    model_version: str
    dim: int
    n_items: int
    created_at: str
    index: dict[str, Any]
    recency_tau_s: float
    max_k: int = 100
    n_candidates: int = 100
    checksums: dict[str, str] = field(default_factory=dict)
    #: The retriever's popularity prior (towers/prior.py): weight, default, at_ts,
    #: half_life_s; empty for bundles made without one.
    prior: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, doc: dict[str, Any], source: str = MANIFEST) -> Manifest:
        """Parse a manifest document; raises :class:`BundleError` naming ``source``."""
        required = ("model_version", "dim", "n_items", "index", "recency_tau_s")
        missing = [k for k in required if k not in doc]
        if missing:
            raise BundleError(f"{source} lacks {', '.join(missing)}")
        try:
            manifest = cls(
                model_version=str(doc["model_version"]),
                dim=int(doc["dim"]),
                n_items=int(doc["n_items"]),
                created_at=str(doc.get("created_at", "")),
                index=dict(doc["index"]),
                recency_tau_s=float(doc["recency_tau_s"]),
                max_k=int(doc.get("max_k", 100)),
                n_candidates=int(doc.get("n_candidates", 100)),
                checksums={str(k): str(v) for k, v in dict(doc.get("checksums", {})).items()},
                prior={str(k): float(v) for k, v in dict(doc.get("prior") or {}).items()},
            )
        except (TypeError, ValueError) as exc:
            raise BundleError(f"{source} has a field of the wrong type: {exc}") from exc
        if manifest.dim < 1 or manifest.n_items < 0 or manifest.max_k < 1:
            raise BundleError(
                f"{source}: dim must be >= 1, n_items >= 0 and max_k >= 1, got dim "
                f"{manifest.dim}, n_items {manifest.n_items}, max_k {manifest.max_k}"
            )
        if manifest.n_candidates < 1 or not manifest.recency_tau_s > 0:
            raise BundleError(
                f"{source}: n_candidates must be >= 1 and recency_tau_s > 0, got "
                f"{manifest.n_candidates} and {manifest.recency_tau_s}"
            )
        return manifest


def load_manifest(folder: Path) -> Manifest:
    """The manifest of a bundle or version folder; raises :class:`BundleError` naming the file."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise BundleError(f"{path} is missing: not a bundle or model version folder")
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path} is not readable JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise BundleError(f"{path} must hold a JSON object")
    return Manifest.from_dict(doc, source=str(path))


def sha256(path: Path) -> str:
    """Hex sha256 digest of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_files(folder: Path, manifest: Manifest, names: Iterable[str]) -> None:
    """Check that each of ``names`` exists in ``folder`` and matches its manifest checksum.

    Raises :class:`BundleError` naming the first missing file, a file the manifest has no
    checksum for, or a file whose content differs from its checksum.
    """
    for name in names:
        path = Path(folder) / name
        if not path.is_file():
            raise BundleError(f"{path} is missing from the bundle")
        expected = manifest.checksums.get(name)
        if expected is None:
            raise BundleError(f"{path} has no checksum in {MANIFEST}: rebuild the bundle")
        got = sha256(path)
        if got != expected:
            raise BundleError(
                f"{path} does not match its checksum in {MANIFEST} (expected {expected[:12]}..., "
                f"got {got[:12]}...): the file is corrupt or from another bundle"
            )


def check_model_version(manifest: Manifest, expected: str | None, what: str) -> None:
    """Refuse files of another model version than the one ``what`` was configured with.

    ``expected`` ``None`` or empty skips the check (a model configured without a version).
    """
    if expected and manifest.model_version != expected:
        raise BundleError(
            f"{what} was built by model version {manifest.model_version!r}, but this model is "
            f"configured for version {expected!r}: rebuild the repository with "
            "export.repository.write_repository from one bundle"
        )
