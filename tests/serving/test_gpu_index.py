"""serving.gpu_index on the CPU: vectors read back out of FAISS indexes, the exact torch
top-k against FAISS exact search, removed items, and the retriever over a device index."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from export.index import build_index
from serving.gpu_index import TorchExactIndex, index_vectors, to_device
from serving.retriever import Retriever


def _catalog(n: int = 3000, dim: int = 32, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = rng.permutation(np.arange(10_000, 10_000 + 5 * n, 5)).astype(np.int64)[:n]
    return x, ids


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw", "ivfpq"])
def test_index_vectors_reads_every_vector_under_its_id(kind):
    x, ids = _catalog()
    index, _ = build_index(x, ids, kind=kind)
    vecs, got_ids = index_vectors(index)
    order = np.argsort(got_ids)
    ref = np.argsort(ids)
    np.testing.assert_array_equal(got_ids[order], ids[ref])
    np.testing.assert_allclose(vecs[order], x[ref], atol=1e-6)


def test_index_vectors_refuses_other_index_kinds():
    with pytest.raises(TypeError, match="cannot read vectors"):
        index_vectors(faiss.IndexHNSWFlat(8, 4))


def test_torch_exact_matches_faiss_exact():
    x, ids = _catalog()
    q = x[:20] + 0.1
    flat, _ = build_index(x, ids, kind="flat")
    ref_s, ref_i = flat.search(q, 50)
    got_s, got_i = TorchExactIndex(x, ids, device="cpu").search(q, 50)
    np.testing.assert_array_equal(got_i, ref_i)
    np.testing.assert_allclose(got_s, ref_s, atol=1e-5)


def test_torch_exact_pads_like_faiss_when_k_exceeds_the_catalog():
    x, ids = _catalog(n=5)
    scores, got = TorchExactIndex(x, ids, device="cpu").search(x[:1], 8)
    assert got.shape == (1, 8) and (got[0, 5:] == -1).all() and np.isneginf(scores[0, 5:]).all()


def test_fp16_vectors_keep_recall():
    x, ids = _catalog()
    q = x[:50] + 0.05
    _, ref = TorchExactIndex(x, ids, device="cpu").search(q, 100)
    _, got = TorchExactIndex(x, ids, device="cpu", dtype="fp16").search(q, 100)
    recall = np.mean([len(set(a) & set(b)) / 100 for a, b in zip(ref, got)])
    assert recall >= 0.95


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw", "ivfpq"])
def test_device_copy_never_returns_removed_items(kind):
    x, ids = _catalog()
    index, _ = build_index(x, ids, kind=kind)
    removed = ids[:500]
    dev = to_device(index, removed, device="cpu")
    assert dev.backend == "torch-exact" and dev.ntotal == len(ids) - 500
    _, got = dev.search(x[:100], 100)
    assert not np.isin(got, removed).any()


def test_retriever_over_a_device_index_answers_like_the_cpu_one():
    x, ids = _catalog()
    flat, _ = build_index(x, ids, kind="flat")
    cpu = Retriever(flat, max_k=50, n_candidates=100)
    dev = Retriever(to_device(flat, device="cpu"), max_k=50, n_candidates=100)
    assert dev.backend == "torch-exact" and cpu.backend == "faiss-cpu"
    for row in range(5):
        a_ids, a_s = cpu.search(x[row], 10)
        b_ids, b_s = dev.search(x[row], 10)
        np.testing.assert_array_equal(a_ids, b_ids)
        np.testing.assert_allclose(a_s, b_s, atol=1e-5)


def test_retriever_refuses_removed_ids_beside_a_device_index():
    x, ids = _catalog(n=100)
    flat, _ = build_index(x, ids, kind="flat")
    with pytest.raises(ValueError, match="drops removed items at load"):
        Retriever(to_device(flat, device="cpu"), removed_ids=ids[:3])
