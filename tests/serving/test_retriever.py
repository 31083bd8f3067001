"""The retriever over real small FAISS indexes whose ids are item ids."""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np
import pandas as pd
import pytest

from serving.bundle import BundleError
from serving.errors import RequestError
from serving.retriever import Retriever
from towers.features import PriorLookup

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


def prior_retriever(weight: float) -> tuple[Retriever, np.ndarray]:
    """A flat retriever whose prior strongly favours every tenth item."""
    values = np.where(np.arange(N) % 10 == 0, 3.0, -0.3).astype(np.float32)
    lookup = PriorLookup(IDS, values, default=-1.0)
    return Retriever(
        flat_index(), max_k=50, n_candidates=20, prior=lookup, prior_weight=weight
    ), values


def test_prior_reranks_requests_without_a_query_only() -> None:
    retriever, values = prior_retriever(0.1)
    query = vectors(1, seed=8)
    # With a query: cosine only, exactly as without a prior.
    ids, _ = retriever.search(query, k=10, has_query=True)
    np.testing.assert_array_equal(ids, exact_top(query, 20))
    # Without: the best 20 of cosine + 0.1 * prior among the 80 nearest by cosine.
    ids, scores = retriever.search(query, k=10, has_query=False)
    cos = ITEMS @ query.reshape(-1)
    near = np.argsort(-cos)[:80]
    blended = cos[near] + 0.1 * values[near]
    expected = IDS[near[np.argsort(-blended, kind="stable")[:20]]]
    np.testing.assert_array_equal(ids, expected)
    np.testing.assert_allclose(scores, np.sort(blended)[::-1][:20], rtol=1e-5)
    assert (values[(ids - 10_000) // 3] > 0).sum() > (
        values[(exact_top(query, 20) - 10_000) // 3] > 0
    ).sum()


def test_prior_input_is_optional_and_checked() -> None:
    retriever, _ = prior_retriever(0.1)
    vec, k = vectors(1, seed=9), np.array([5], np.int32)
    plain = retriever.infer({"USER_VECTOR": vec, "K": k})
    with_query = retriever.infer(
        {"USER_VECTOR": vec, "K": k, "HAS_QUERY": np.ones((1, 1), np.float32)}
    )
    np.testing.assert_array_equal(plain["CANDIDATE_IDS"], with_query["CANDIDATE_IDS"])
    no_query = retriever.infer(
        {"USER_VECTOR": vec, "K": k, "HAS_QUERY": np.zeros((1, 1), np.float32)}
    )
    assert not np.array_equal(no_query["CANDIDATE_IDS"], plain["CANDIDATE_IDS"])
    for bad in (
        np.full((1, 1), 0.5, np.float32),
        np.full((1, 1), np.nan, np.float32),
        np.zeros(2, np.float32),
    ):
        with pytest.raises(RequestError, match="HAS_QUERY"):
            retriever.infer({"USER_VECTOR": vec, "K": k, "HAS_QUERY": bad})
    # a zero weight (or no prior) is cosine only
    off, _ = prior_retriever(0.0)
    ids, _ = off.search(vec, k=5, has_query=False)
    np.testing.assert_array_equal(ids, exact_top(vec, 20))
    with pytest.raises(ValueError, match="prior_weight"):
        prior_retriever(-1.0)


def test_prior_loads_from_the_version_folder(tmp_path: Path) -> None:
    index = flat_index()
    faiss.write_index(index, str(tmp_path / "index.faiss"))
    values = np.linspace(-1, 2, N).astype(np.float32)
    np.savez(tmp_path / "item_prior.npz", item_ids=IDS, values=values)
    manifest = {
        "model_version": "v1",
        "dim": DIM,
        "n_items": N,
        "index": {"type": "flat"},
        "recency_tau_s": 3600.0,
        "prior": {"weight": 0.2, "default": -1.5, "at_ts": 0, "half_life_s": 86400.0},
    }
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    retriever = Retriever.from_dir(tmp_path, model_version="v1")
    assert retriever.prior_weight == pytest.approx(0.2)
    assert retriever.prior is not None
    np.testing.assert_allclose(retriever.prior(IDS[:3]), values[:3])
    assert retriever.prior(np.array([7])) == pytest.approx(-1.5)  # unknown id: the default
    (tmp_path / "item_prior.npz").write_bytes(b"not a numpy file")
    with pytest.raises(BundleError, match="item_prior.npz"):
        Retriever.from_dir(tmp_path, model_version="v1")


@pytest.mark.parametrize("weight", [0.0, 0.1], ids=["no-prior", "prior"])
def test_warm_up_leaves_searches_unchanged(weight: float) -> None:
    retriever, _ = prior_retriever(weight)
    query = vectors(1, seed=11)
    before = [retriever.search(query, k=10, has_query=q)[0] for q in (True, False)]
    retriever.warm_up()
    after = [retriever.search(query, k=10, has_query=q)[0] for q in (True, False)]
    for b, a in zip(before, after, strict=True):
        np.testing.assert_array_equal(a, b)


def test_warm_up_on_the_written_repository(repository: Path, bundle: Path) -> None:
    retriever = Retriever.from_dir(repository / "retriever" / "1", model_version="test-v1")
    retriever.warm_up()
    ids, _ = retriever.search(np.load(bundle / "item_embeddings.npy")[3:4], k=5)
    assert ids[0] == np.load(bundle / "item_ids.npy")[3]


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw", "ivfpq"])
def test_every_index_kind_serves_with_its_search_parameters(tmp_path: Path, kind: str) -> None:
    # Saved with poor search-time settings; the manifest's are applied at load, and with them
    # (every list, a deep refinement, a wide beam) the top 10 are the exact ones.
    from towers.index import build_index

    n, dim = 3000, 32
    rng = np.random.default_rng(1)
    items = rng.normal(size=(n, dim)).astype(np.float32)
    faiss.normalize_L2(items)
    ids = (5 + 2 * np.arange(n)).astype(np.int64)
    index, params = build_index(items, ids, kind=kind, nlist=16, nprobe=1, ef_search=10, k_factor=1)
    wanted = {"nprobe": 16, "efSearch": 300, "k_factor": 16.0}
    folder = tmp_path / "retriever" / "1"
    folder.mkdir(parents=True)
    faiss.write_index(index, str(folder / "index.faiss"))
    manifest = {
        "model_version": "v1",
        "dim": dim,
        "n_items": n,
        "index": {**params, **{k: v for k, v in wanted.items() if k in params}},
        "recency_tau_s": 3600.0,
        "max_k": 50,
        "n_candidates": 20,
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    np.save(folder / "removed_ids.npy", ids[:2])
    retriever = Retriever.from_dir(folder, model_version="v1")
    applied = {
        "nprobe": retriever.nprobe,
        "efSearch": retriever.ef_search,
        "k_factor": retriever.k_factor,
    }
    assert {k: v for k, v in applied.items() if v is not None} == {
        k: v for k, v in wanted.items() if k in params and params[k]
    }
    queries = items[:8] + 0.02 * rng.normal(size=(8, dim)).astype(np.float32)
    for q in queries:
        got, scores = retriever.search(q, 10)
        exact = [int(i) for i in ids[np.argsort(-(items @ q))] if i not in ids[:2]][:20]
        assert len(got) == 20 and not set(got.tolist()) & set(ids[:2].tolist())
        assert got[:10].tolist() == exact[:10], kind
        assert np.all(np.diff(scores) <= 1e-6)


def covisit_retriever(weight: float, **kwargs) -> tuple[Retriever, np.ndarray, int]:
    """A flat retriever whose co-visitation table links IDS[0] to the item farthest from
    ``query``; returns it, the query and that far item's id."""
    from towers.covisit import CovisitTable

    query = vectors(1, seed=11)
    far = int(IDS[int(np.argmin(ITEMS @ query.reshape(-1)))])
    table = CovisitTable(
        IDS,
        np.concatenate([[0], np.ones(N, np.int64)]),
        np.array([far], np.int64),
        np.array([1.0], np.float32),
        "item_knn",
        weight,
    )
    return Retriever(flat_index(), max_k=50, n_candidates=20, covisit=table, **kwargs), query, far


def test_covisit_neighbours_join_requests_without_a_query() -> None:
    retriever, query, far = covisit_retriever(1000.0)
    history = np.array([IDS[0]], np.int64)
    ids, scores = retriever.search(query, k=10, has_query=False, history_ids=history)
    assert ids[0] == far and len(ids) == 20
    np.testing.assert_array_equal(ids[1:], exact_top(query, 19))
    # with a query, without a history, or with weight 0: cosine only
    for kwargs in ({"has_query": True, "history_ids": history}, {"has_query": False}):
        ids, _ = retriever.search(query, k=10, **kwargs)
        np.testing.assert_array_equal(ids, exact_top(query, 20))
    off, _, _ = covisit_retriever(0.0)
    assert off.covisit is None
    # a removed neighbour is never drawn from the table
    removed, _, _ = covisit_retriever(1000.0, removed_ids=np.array([far]))
    ids, _ = removed.search(query, k=10, has_query=False, history_ids=history)
    assert far not in ids.tolist()


def test_covisit_history_input_is_checked() -> None:
    retriever, query, far = covisit_retriever(1000.0)
    out = retriever.infer(
        {
            "USER_VECTOR": query,
            "K": np.array([5], np.int32),
            "HAS_QUERY": np.zeros((1, 1), np.float32),
            "HISTORY_IDS": np.array([IDS[0]], np.int64),
        }
    )
    assert out["CANDIDATE_IDS"][0] == far
    with pytest.raises(RequestError, match="at most 1000"):
        retriever.infer(
            {
                "USER_VECTOR": query,
                "K": np.array([5], np.int32),
                "HISTORY_IDS": np.arange(1001, dtype=np.int64),
            }
        )
    with pytest.raises(RequestError, match="HISTORY_IDS must be an integer"):
        retriever.infer(
            {
                "USER_VECTOR": query,
                "K": np.array([5], np.int32),
                "HISTORY_IDS": np.zeros(3, np.float32),
            }
        )


@pytest.mark.parametrize("make_index", [flat_index, lambda: ivf_index()], ids=["flat", "ivf"])
@pytest.mark.parametrize("with_prior", [True, False], ids=["prior", "no-prior"])
def test_history_is_excluded_from_recommendations_only(make_index, with_prior: bool) -> None:
    """With ``exclude_recent`` covering the history, a request without a query gets none of it
    back, the list keeps its length (the search fetches deeper), and everything else is the
    ranking without those items; search requests and retrievers without it keep them."""
    query = vectors(1, seed=7)
    history = exact_top(query, 30)[::3]  # 10 of the best 30 (a history repeats: dropped once)
    history = np.concatenate([history, history[:2]])
    lookup = PriorLookup(IDS, np.random.default_rng(4).normal(size=N).astype(np.float32), 0.0)
    kwargs = {"prior": lookup, "prior_weight": 0.05} if with_prior else {}
    keep = Retriever(make_index(), n_candidates=20, nprobe=8, **kwargs)
    drop = Retriever(make_index(), n_candidates=20, nprobe=8, exclude_recent=1000, **kwargs)
    kept, _ = keep.search(query, k=10, has_query=False, history_ids=history)
    assert set(kept.tolist()) & set(history.tolist())  # the history is among the best
    got, scores = drop.search(query, k=10, has_query=False, history_ids=history)
    assert len(got) == 20 and not set(got.tolist()) & set(history.tolist())
    assert np.all(np.diff(scores) <= 1e-6)
    # ranked as if those items were not in the index (removed ids are left out by FAISS)
    without = Retriever(make_index(), n_candidates=20, nprobe=8, removed_ids=history, **kwargs)
    expected, expected_scores = without.search(query, k=10, has_query=False)
    assert got.tolist() == expected.tolist()
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-6)
    # a search request (with a query) is never filtered
    searched, _ = drop.search(query, k=10, has_query=True, history_ids=history)
    np.testing.assert_array_equal(searched, exact_top(query, 20))
    # through infer, with the flag read from the HISTORY_IDS tensor
    out = drop.infer(
        {
            "USER_VECTOR": query,
            "K": np.array([10], np.int32),
            "HAS_QUERY": np.zeros((1, 1), np.float32),
            "HISTORY_IDS": history,
        }
    )
    assert out["CANDIDATE_IDS"].tolist() == got.tolist()


def test_only_the_newest_history_items_are_excluded() -> None:
    query = vectors(1, seed=7)
    best = exact_top(query, 6)
    history = best[[5, 0, 1, 2]]  # oldest first: best[5] is the oldest
    retriever = Retriever(flat_index(), n_candidates=20, exclude_recent=3)
    ids, _ = retriever.search(query, k=10, has_query=False, history_ids=history)
    assert not set(ids.tolist()) & set(best[:3].tolist()) and best[5] in ids.tolist()
    with pytest.raises(ValueError, match="exclude_recent must be in 0..1000"):
        Retriever(flat_index(), exclude_recent=1001)


def test_excluded_history_items_are_never_drawn_from_the_covisit_table() -> None:
    retriever, query, far = covisit_retriever(1000.0, exclude_recent=1000)
    history = np.array([IDS[0], far], np.int64)  # far: IDS[0]'s neighbour, in the history
    ids, _ = retriever.search(query, k=10, has_query=False, history_ids=history)
    assert far not in ids.tolist() and IDS[0] not in ids.tolist() and len(ids) == 20


@pytest.mark.parametrize("exclude", [False, True], ids=["keep-history", "exclude-history"])
@pytest.mark.parametrize("with_prior", [True, False], ids=["prior", "no-prior"])
def test_served_ranking_equals_the_evaluation_twin(with_prior: bool, exclude: bool) -> None:
    """The retriever's ranking of requests without a query equals towers.covisit.covisit_lists
    (training's weight fit and the eval system ``student_faiss_covisit``) on the same index,
    prior and table: long histories, decay, ramp, the cold share and the excluded history
    included."""
    from towers.covisit import build_covisit, covisit_lists
    from towers.features import PRIOR_OVERFETCH

    rng = np.random.default_rng(21)
    # co-visitation from random baskets over the first 300 items; the other 100 are cold
    rows = [
        (u, int(i), t, "purchase")
        for u in range(200)
        for t, i in enumerate(rng.choice(IDS[:300], size=8, replace=False))
    ]
    events = pd.DataFrame(rows, columns=["user_id", "item_id", "ts", "event_type"])
    table = build_covisit(events, IDS, until_ts=None, kind="ease", n_neighbours=10)
    table = table.with_settings(weight=0.3, history=50, decay=0.9, ramp=5, cold_share=0.2)
    assert table.is_cold(IDS).sum() >= 100
    values = rng.normal(size=N).astype(np.float32)
    lookup = PriorLookup(IDS, values, 0.0) if with_prior else None
    weight = 0.05 if with_prior else 0.0
    depth = 20
    retriever = Retriever(
        flat_index(),
        max_k=50,
        n_candidates=depth,
        covisit=table,
        prior=lookup,
        prior_weight=weight,
        exclude_recent=1000 if exclude else 0,
    )
    users = vectors(12, seed=3)
    histories = [rng.choice(IDS[:300], size=int(rng.integers(1, 80))) for _ in range(12)]
    twin = []
    for user, history in zip(users, histories):
        # the retriever fetches as many more as the request excludes
        skip = np.unique(history) if exclude else np.zeros(0, np.int64)
        fetch = PRIOR_OVERFETCH * depth if with_prior else depth
        cos, ids = flat_index().search(user[None], fetch + len(skip))
        twin += covisit_lists(
            cos,
            ids,
            table,
            [history],
            depth,
            [skip],
            depth=depth,
            prior=lookup,
            prior_weight=weight,
            fetch=fetch,
        )
    moved = 0
    for user, history, expected in zip(users, histories, twin):
        got, scores = retriever.search(user, k=10, has_query=False, history_ids=history)
        assert got.tolist() == expected
        assert not exclude or not set(got.tolist()) & set(history.tolist())
        assert np.all(np.diff(scores) <= 0)  # a cold item moved up takes its place's score
        moved += int(table.is_cold(got[:5]).sum() >= 1)
    assert moved == 12  # the cold share holds a place in every top 5
