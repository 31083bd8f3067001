"""The retriever over real small FAISS indexes whose ids are item ids."""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np
import pytest

from serving.bundle import BundleError
from serving.errors import RequestError
from serving.retrieval import Retriever

DIM = 16
N = 400
IDS = (10_000 + 3 * np.arange(N)).astype(np.int64)


def vectors(n: int = N, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)
    faiss.normalize_L2(x)
    return x


ITEMS = vectors()


def flat_index() -> faiss.Index:
    index = faiss.IndexIDMap2(faiss.IndexFlatIP(DIM))
    index.add_with_ids(ITEMS, IDS)
    return index


def ivf_index(nlist: int = 8) -> faiss.Index:
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(DIM), DIM, nlist, faiss.METRIC_INNER_PRODUCT)
    index.train(ITEMS)
    index.add_with_ids(ITEMS, IDS)
    return index


def exact_top(query: np.ndarray, k: int, exclude: set[int] = frozenset()) -> np.ndarray:
    scores = ITEMS @ query.reshape(-1)
    order = [i for i in np.argsort(-scores) if int(IDS[i]) not in exclude]
    return IDS[order[:k]]


@pytest.mark.parametrize("make_index", [flat_index, lambda: ivf_index()], ids=["flat", "ivf"])
def test_top_candidates_are_the_exact_ones(make_index) -> None:
    # An IVF index searching all its lists is exact.
    retriever = Retriever(make_index(), max_k=50, n_candidates=30, nprobe=8)
    query = vectors(1, seed=5)
    ids, scores = retriever.search(query, k=10)
    assert ids.dtype == np.int64 and scores.dtype == np.float32
    assert len(ids) == 30  # max(n_candidates, K)
    np.testing.assert_array_equal(ids, exact_top(query, 30))
    assert np.all(np.diff(scores) <= 1e-6)
    ids, _ = retriever.search(query[0], k=45)  # a [D] vector works too; depth follows K
    np.testing.assert_array_equal(ids, exact_top(query, 45))


@pytest.mark.parametrize("make_index", [flat_index, lambda: ivf_index()], ids=["flat", "ivf"])
def test_removed_ids_are_never_returned_and_do_not_shorten_the_list(make_index) -> None:
    query = vectors(1, seed=6)
    removed = exact_top(query, 5)
    retriever = Retriever(make_index(), n_candidates=20, removed_ids=removed, nprobe=8)
    ids, _ = retriever.search(query, k=10)
    assert len(ids) == 20 and not set(ids) & set(removed.tolist())
    np.testing.assert_array_equal(ids, exact_top(query, 20, set(removed.tolist())))


def test_ivf_nprobe_is_applied() -> None:
    retriever = Retriever(ivf_index(nlist=8), nprobe=3)
    assert retriever.nprobe == 3 and faiss.extract_index_ivf(retriever.index).nprobe == 3
    assert Retriever(ivf_index(nlist=8), nprobe=99).nprobe == 8


@pytest.mark.parametrize("k", [0, -1, 101])
def test_k_out_of_range(k: int) -> None:
    retriever = Retriever(flat_index(), max_k=100)
    with pytest.raises(RequestError, match=r"K must be in 1\.\.100, got"):
        retriever.search(vectors(1), k=k)


@pytest.mark.parametrize(
    "vector,message",
    [
        (np.zeros((1, DIM + 1), np.float32), r"USER_VECTOR must be \[1, 16\]"),
        (np.zeros((2, DIM), np.float32), r"USER_VECTOR must be \[1, 16\]"),
        (np.zeros((1, DIM), np.int64), "USER_VECTOR must be float32"),
        (np.full((1, DIM), np.nan, np.float32), "finite"),
    ],
)
def test_bad_user_vectors(vector: np.ndarray, message: str) -> None:
    with pytest.raises(RequestError, match=message):
        Retriever(flat_index()).search(vector, k=5)


def test_infer_tensors() -> None:
    retriever = Retriever(flat_index(), max_k=20, n_candidates=12)
    out = retriever.infer({"USER_VECTOR": vectors(1, seed=9), "K": np.array([4], np.int32)})
    assert out["CANDIDATE_IDS"].shape == (12,) and out["CANDIDATE_SCORES"].shape == (12,)
    with pytest.raises(RequestError, match="K must hold exactly one integer"):
        retriever.infer({"USER_VECTOR": vectors(1), "K": np.array([4, 5], np.int32)})
    with pytest.raises(RequestError, match="K must be an integer tensor"):
        retriever.infer({"USER_VECTOR": vectors(1), "K": np.array([4.0], np.float32)})
    with pytest.raises(RequestError, match="missing input K"):
        retriever.infer({"USER_VECTOR": vectors(1)})


def _version_dir(tmp_path: Path, index: faiss.Index, **manifest) -> Path:
    folder = tmp_path / "retriever" / "1"
    folder.mkdir(parents=True)
    faiss.write_index(index, str(folder / "index.faiss"))
    doc = {
        "model_version": "v1",
        "dim": DIM,
        "n_items": N,
        "index": {"type": "IVF8,Flat", "nlist": 8, "nprobe": 2},
        "recency_tau_s": 3600.0,
        "max_k": 50,
        "n_candidates": 25,
        **manifest,
    }
    (folder / "manifest.json").write_text(json.dumps(doc))
    return folder


def test_from_dir_uses_the_manifest(tmp_path: Path) -> None:
    folder = _version_dir(tmp_path, ivf_index())
    np.save(folder / "removed_ids.npy", IDS[:3])
    retriever = Retriever.from_dir(folder, model_version="v1")
    assert (retriever.max_k, retriever.n_candidates, retriever.nprobe) == (50, 25, 2)
    assert retriever.removed_ids.tolist() == IDS[:3].tolist()
    assert Retriever.from_dir(folder, model_version="v1", max_k=7).max_k == 7


def test_refuses_an_index_of_another_model_version(tmp_path: Path) -> None:
    folder = _version_dir(tmp_path, flat_index(), model_version="item-tower-B")
    with pytest.raises(BundleError, match="built by model version 'item-tower-B'.*'item-tower-A'"):
        Retriever.from_dir(folder, model_version="item-tower-A")
    with pytest.raises(BundleError, match="no model_version configured"):
        Retriever.from_dir(folder, model_version="")


def test_refuses_an_index_that_contradicts_the_manifest(tmp_path: Path) -> None:
    folder = _version_dir(tmp_path, flat_index(), n_items=N + 1)
    with pytest.raises(BundleError, match="holds 400 vectors of dim 16"):
        Retriever.from_dir(folder, model_version="v1")
    (folder / "index.faiss").write_bytes(b"not an index")
    with pytest.raises(BundleError, match="not a readable FAISS index"):
        Retriever.from_dir(folder, model_version="v1")


def test_missing_manifest(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="manifest.json is missing"):
        Retriever.from_dir(tmp_path, model_version="v1")


def test_from_dir_on_the_written_repository(repository: Path, bundle: Path) -> None:
    retriever = Retriever.from_dir(repository / "retriever" / "1", model_version="test-v1")
    vecs = np.load(bundle / "item_embeddings.npy")
    ids, scores = retriever.search(vecs[3:4], k=5)
    assert ids[0] == np.load(bundle / "item_ids.npy")[3]
    assert scores[0] == pytest.approx(1.0, abs=1e-5)
