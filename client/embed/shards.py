"""Vector shards of a re-embedding job and its manifest (file names: towers/bundle_contract.py).

A shard is a Parquet file with ``item_id`` int64 and ``vector`` (fixed-size list of float32,
``[D]``) per row. It is written to ``<name>.tmp``, flushed to disk and renamed: a shard file
under its final name is always complete, which is what makes a killed job resumable.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from towers.bundle_contract import (
    DELETED_IDS_FILE,
    EMBED_MANIFEST_FILE,
    BundleError,
    sha256,
)

__all__ = [
    "EmbedManifest",
    "ShardInfo",
    "read_embed_manifest",
    "read_job_vectors",
    "read_shard",
    "write_shard",
]


def write_shard(path: Path, item_ids: np.ndarray, vectors: np.ndarray) -> None:
    """Write one shard atomically (``path.tmp``, fsync, rename)."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or len(vectors) != len(item_ids):
        raise ValueError(f"shard needs [N, D] vectors for N ids, got {vectors.shape}")
    flat = pa.array(vectors.reshape(-1), type=pa.float32())
    table = pa.table(
        {
            "item_id": pa.array(np.asarray(item_ids, np.int64), type=pa.int64()),
            "vector": pa.FixedSizeListArray.from_arrays(flat, int(vectors.shape[1])),
        }
    )
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp)
    with tmp.open("rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_shard(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(item_ids int64 [N], vectors float32 [N, D])`` of one shard."""
    table = pq.read_table(path)
    column = table.column("vector").combine_chunks()
    dim = column.type.list_size
    ids = table.column("item_id").to_numpy().astype(np.int64)
    flat = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return ids, flat.reshape(len(ids), dim)


@dataclass(frozen=True)
class ShardInfo:
    """One shard in the manifest: file name, rows, sha256."""

    file: str
    n_items: int
    sha256: str


@dataclass(frozen=True)
class EmbedManifest:
    """``embed_manifest.json``: what a finished re-embedding job wrote.

    ``model_version`` and ``dim`` of the item tower that embedded, ``mode`` ``full`` or
    ``delta``, ``n_items`` vectors in ``shards``, ``n_deleted`` ids in ``deleted_ids.npy``,
    ``bad_rows`` skipped rows per reason, ``engine`` what ran the tower (name, runtime,
    precision, measured items/s), ``catalog`` the input path and fingerprint.
    """

    model_version: str
    dim: int
    mode: str
    n_items: int
    n_deleted: int
    shards: list[ShardInfo]
    bad_rows: dict[str, int]
    engine: dict[str, Any] = field(default_factory=dict)
    catalog: dict[str, str] = field(default_factory=dict)
    created_at: str = ""

    def write(self, folder: Path) -> Path:
        path = Path(folder) / EMBED_MANIFEST_FILE
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        os.replace(tmp, path)
        return path


def read_embed_manifest(folder: Path) -> EmbedManifest:
    """The manifest of a finished job's folder; :class:`BundleError` if absent or malformed."""
    path = Path(folder) / EMBED_MANIFEST_FILE
    if not path.is_file():
        raise BundleError(
            f"{path} does not exist: not the output of a finished `towerserve embed` job "
            "(a killed job resumes when run again with the same arguments)"
        )
    try:
        doc = json.loads(path.read_text())
        doc["shards"] = [ShardInfo(**s) for s in doc["shards"]]
        return EmbedManifest(**doc)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise BundleError(f"{path} is not an embed manifest: {exc}") from exc


def read_job_vectors(folder: Path) -> tuple[EmbedManifest, np.ndarray, np.ndarray, np.ndarray]:
    """``(manifest, item_ids [N], vectors [N, D], deleted_ids [R])`` of a finished job, each
    shard checked against its manifest checksum (:class:`BundleError` naming a bad one)."""
    folder = Path(folder)
    manifest = read_embed_manifest(folder)
    ids, vecs = [np.zeros(0, np.int64)], [np.zeros((0, manifest.dim), np.float32)]
    for shard in manifest.shards:
        path = folder / shard.file
        if not path.is_file():
            raise BundleError(f"{path} is missing")
        if sha256(path) != shard.sha256:
            raise BundleError(f"{path} does not match its checksum in {EMBED_MANIFEST_FILE}")
        i, v = read_shard(path)
        ids.append(i)
        vecs.append(v)
    deleted_path = folder / DELETED_IDS_FILE
    deleted = np.load(deleted_path) if deleted_path.is_file() else np.zeros(0, np.int64)
    return manifest, np.concatenate(ids), np.concatenate(vecs), deleted
