"""Index versions: built from vectors with a manifest; a mismatched, truncated or corrupt one
is refused, naming which check failed."""

from __future__ import annotations

import json

import numpy as np
import pytest

from towers.bundle_contract import INDEX_FILE, INDEX_MANIFEST_FILE
from towers.index_version import (
    IndexVersionError,
    build_index_version,
    check_index_version,
    load_index_version,
)

DIM = 16


def vectors(n: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def version_dir(tmp_path):
    build_index_version(vectors(300), np.arange(300) + 10, tmp_path / "v1", model_version="m1")
    return tmp_path / "v1"


def test_build_records_version_dim_and_checksum(version_dir) -> None:
    index, version = load_index_version(version_dir, model_version="m1", dim=DIM)
    assert (version.model_version, version.dim, version.n_items) == ("m1", DIM, 300)
    assert version.index["type"] == "Flat"
    assert version.index_bytes == (version_dir / INDEX_FILE).stat().st_size
    _, ids = index.search(vectors(300)[:1], 1)
    assert ids[0, 0] == 10


def test_rebuild_replaces_the_folder_whole(version_dir) -> None:
    build_index_version(vectors(50, 1), np.arange(50), version_dir, model_version="m2")
    assert check_index_version(version_dir).n_items == 50
    assert not version_dir.with_name("v1.tmp").exists()


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        ("model", "model_version"),
        ("dim", "dim"),
        ("truncate", "truncated"),
        ("flip", "corrupt"),
        ("grow", "corrupt"),
        ("no_manifest", "missing"),
        ("no_index", "missing"),
    ],
)
def test_damaged_or_mismatched_index_is_refused(version_dir, damage, reason) -> None:
    path = version_dir / INDEX_FILE
    model, dim = "m1", DIM
    if damage == "model":
        model = "m0"
    elif damage == "dim":
        dim = DIM * 2
    elif damage == "truncate":
        path.write_bytes(path.read_bytes()[:-100])
    elif damage == "flip":
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    elif damage == "grow":
        path.write_bytes(path.read_bytes() + b"\0")
    elif damage == "no_manifest":
        (version_dir / INDEX_MANIFEST_FILE).unlink()
    else:
        path.unlink()
    with pytest.raises(IndexVersionError, match=f"^{reason}: ") as info:
        load_index_version(version_dir, model_version=model, dim=dim)
    assert info.value.reason == reason


def test_unreadable_index_with_matching_checksum_is_corrupt(version_dir) -> None:
    """A manifest rewritten to match a file FAISS cannot read (not a FAISS index at all)."""
    from towers.bundle_contract import sha256

    path = version_dir / INDEX_FILE
    path.write_bytes(b"garbage" * 10)
    doc = json.loads((version_dir / INDEX_MANIFEST_FILE).read_text())
    doc.update(index_bytes=path.stat().st_size, index_sha256=sha256(path))
    (version_dir / INDEX_MANIFEST_FILE).write_text(json.dumps(doc))
    with pytest.raises(IndexVersionError, match="not a readable FAISS index"):
        load_index_version(version_dir, model_version="m1")


def test_bad_inputs_to_build(tmp_path) -> None:
    with pytest.raises(ValueError, match="unique"):
        build_index_version(vectors(3), np.array([1, 1, 2]), tmp_path / "x", model_version="m")
    with pytest.raises(ValueError, match="model_version"):
        build_index_version(vectors(3), np.arange(3), tmp_path / "x", model_version="")
