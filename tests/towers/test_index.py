"""towers.index: every kind returns item ids, records its parameters and applies search-time
ones (the retriever round trip is in tests/serving/test_retriever.py)."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from towers.index import FLAT_BELOW, KINDS, apply_search_params, auto_kind, build_index

N, DIM = 3000, 32


def _catalog(n: int = N) -> tuple[np.ndarray, np.ndarray]:
    x = np.random.default_rng(0).normal(size=(n, DIM)).astype(np.float32)
    faiss.normalize_L2(x)
    return x, np.arange(n, dtype=np.int64) * 10 + 7


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw", "ivfpq"])
def test_each_kind_finds_items_by_their_own_vector(kind: str) -> None:
    x, ids = _catalog()
    index, params = build_index(x, ids, kind=kind, nprobe=64, ef_search=64, k_factor=8)
    assert params["kind"] == kind and index.ntotal == N
    _, found = index.search(x[:20], 1)
    assert found[:, 0].tolist() == ids[:20].tolist()


def test_parameters_are_recorded_and_applied() -> None:
    x, ids = _catalog()
    _, hnsw = build_index(x, ids, kind="hnsw", hnsw_m=16, ef_construction=32, ef_search=77)
    assert (hnsw["type"], hnsw["M"], hnsw["efConstruction"], hnsw["efSearch"]) == (
        "HNSW16,Flat",
        16,
        32,
        77,
    )
    index, pq = build_index(x, ids, kind="ivfpq", nlist=32, nprobe=5, pq_m=16, k_factor=3)
    assert pq["type"] == "IVF32,PQ16x4fs,RFlat"
    assert (pq["nlist"], pq["nprobe"], pq["k_factor"], pq["pq_m"]) == (32, 5, 3.0, 16)
    assert apply_search_params(index, {"nprobe": 500, "k_factor": 6}) == {
        "nprobe": 32,  # capped at nlist
        "k_factor": 6.0,
    }
    assert faiss.extract_index_ivf(index).nprobe == 32
    assert apply_search_params(index, {}) == {"nprobe": 32, "k_factor": 6.0}  # kept


def test_auto_and_errors() -> None:
    assert auto_kind(FLAT_BELOW - 1) == "flat" and auto_kind(FLAT_BELOW) == "ivf"
    assert set(KINDS) == {"auto", "flat", "ivf", "hnsw", "ivfpq"}
    x, ids = _catalog(500)
    assert build_index(x, ids)[1]["type"] == "Flat"
    with pytest.raises(ValueError, match="unknown index kind"):
        build_index(x, ids, kind="lsh")
    with pytest.raises(ValueError, match="divide"):
        build_index(x, ids, kind="ivfpq", pq_m=5)


def test_defaults_follow_the_sweep() -> None:
    x, ids = _catalog()
    _, ivf = build_index(x, ids)  # auto above FLAT_BELOW: IVF-Flat, nprobe 32
    assert ivf["kind"] == "ivf" and ivf["nprobe"] == 32 and ivf["nlist"] == min(219, N // 39)
    _, pq = build_index(x, ids, kind="ivfpq")
    assert (pq["pq_m"], pq["nprobe"], pq["k_factor"]) == (DIM, 48, 8.0)
    assert build_index(x, ids, kind="hnsw")[1]["efSearch"] == 128
