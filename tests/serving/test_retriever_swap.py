"""Retriever.swap: a new index version takes over only after it passes every check; a
mismatched, truncated or corrupt one is refused and the old index keeps serving."""

from __future__ import annotations

import numpy as np
import pytest

from serving.retriever import Retriever
from towers.bundle_contract import INDEX_FILE
from towers.index_version import IndexVersionError, build_index_version

#: The serving conftest's bundle (tests/serving/conftest.py: make_bundle).
DIM = 8
MODEL_VERSION = "test-v1"


def _vectors(n: int, dim: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def retriever(bundle) -> Retriever:
    return Retriever.from_dir(bundle, model_version=MODEL_VERSION, omp_threads=None)


def test_swap_serves_the_new_index(retriever, tmp_path) -> None:
    new = _vectors(40, DIM, seed=1)
    build_index_version(new, np.arange(40) + 5000, tmp_path / "v2", model_version=MODEL_VERSION)
    version = retriever.swap(tmp_path / "v2")
    assert version.n_items == 40 and retriever.index.ntotal == 40
    ids, _ = retriever.search(new[7], 1)
    assert ids[0] == 5007 and set(ids.tolist()) <= set(range(5000, 5040))


@pytest.mark.parametrize("damage", ["model_version", "dim", "truncated", "corrupt"])
def test_refused_index_leaves_the_old_one_serving(retriever, tmp_path, damage) -> None:
    probe = _vectors(1, DIM, seed=9)
    before = retriever.search(probe, 5)
    dim = DIM * 2 if damage == "dim" else DIM
    version = "other-v9" if damage == "model_version" else MODEL_VERSION
    build_index_version(
        _vectors(30, dim, 2), np.arange(30), tmp_path / "bad", model_version=version
    )
    path = tmp_path / "bad" / INDEX_FILE
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "corrupt":
        data = bytearray(path.read_bytes())
        data[-5] ^= 0x55
        path.write_bytes(bytes(data))
    old_index = retriever.index
    with pytest.raises(IndexVersionError) as info:
        retriever.swap(tmp_path / "bad")
    assert info.value.reason == damage
    assert retriever.index is old_index
    after = retriever.search(probe, 5)
    assert after[0].tolist() == before[0].tolist()
