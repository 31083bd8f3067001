"""The FAISS index over item vectors (inner product; vectors are L2-normalised).

Built by ``towerserve export`` (``export/bundle.py``) and, for artifacts not yet exported, by
evaluation (``towers/evaluation/systems.py``) the same way; it lives in ``towers`` so that
evaluation need not import ``export`` (the import contract in ``pyproject.toml``).

Kinds (all FAISS's own classes; every search returns item ids):

* ``flat``: exact, ``IndexIDMap2(IndexFlatIP)``;
* ``ivf``: IVF-Flat, ``nlist`` lists, ``nprobe`` searched per query;
* ``hnsw``: ``IndexIDMap2(IndexHNSWFlat)``, ``M`` links per node, ``efSearch`` candidates
  kept per query (at least the depth asked for);
* ``ivfpq``: ``IndexIDMap2(IndexRefineFlat(IVF-PQ))``: IVF lists of 4-bit fast-scan PQ codes
  (``pq_m`` sub-quantizers), whose best ``k_factor x k`` are re-scored exactly from the
  stored float vectors (so it holds the float vectors too: no memory saved, only scan time);
* ``auto``: chosen by catalog size (:func:`auto_kind`).

The manifest's ``index`` dict records the kind and every parameter (``type`` is the FAISS
factory-style name). The search-time ones (``nprobe``, ``efSearch``, ``k_factor``) are not
all kept by ``faiss.write_index``, so whoever reads an index applies them with
:func:`apply_search_params` (the retriever does) or passes :func:`search_parameters` per call.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import faiss
import numpy as np

log = logging.getLogger(__name__)

__all__ = [
    "FLAT_BELOW",
    "KINDS",
    "SEARCH_DEFAULTS",
    "apply_search_params",
    "auto_kind",
    "build_index",
    "ivf_centroids",
    "ivf_lists",
    "search_parameters",
    "train_centroids",
]

#: Below this many items an exact flat index is both faster and simpler than IVF.
FLAT_BELOW = 2000
#: Index kinds :func:`build_index` accepts.
KINDS = ("auto", "flat", "ivf", "hnsw", "ivfpq")
#: At most this many training points per IVF list (k-means on a subsample: a 1M catalog
#: trains in seconds instead of minutes, with the same recall in the sweep).
TRAIN_PER_LIST = 64


def ivf_lists(n_items: int) -> int:
    """Inverted lists for ``n_items``: about ``4 sqrt(n)``, at least 39 training points each."""
    return max(1, min(int(4 * math.sqrt(n_items)), n_items // 39))


#: Search-time defaults per kind, chosen by ``benchmarks/faiss_sweep.py`` (Recall@100 >= 0.95
#: against exact search, single-query p99 <= 1 ms on one thread; generated hard vectors, D 128;
#: benchmarks/results/faiss_sweep_1m_2026-11-28.md). IVF-Flat with ``ivf_lists(n)`` lists:
#: nprobe 16 reached only Recall@100 0.92 at 20k and 100k items and 0.91 at 1M; nprobe 32
#: reached 0.98, 0.97 and 0.96 (the 1M sweep's pick: IVF4096 nprobe 32, p50 0.29 / p99
#: 0.40 ms; exact flat p50 23 ms). IVF-PQ: 2-dimension sub-quantizers never reached 0.95 (0.93
#: at k_factor 16); 1-dimension ones did at nprobe 32-48, k_factor 8 (0.957-0.970), slower
#: than IVF-Flat at equal recall there. HNSW (M 32, efConstruction 40) stayed at 0.85-0.87.
SEARCH_DEFAULTS: dict[str, dict[str, float]] = {
    "ivf": {"nprobe": 32},
    "ivfpq": {"nprobe": 48, "k_factor": 8.0},
    "hnsw": {"efSearch": 128},
}


def auto_kind(n_items: int) -> str:
    """The index kind ``auto`` builds for ``n_items``: ``flat`` (exact) below
    :data:`FLAT_BELOW`, else ``ivf`` (IVF-Flat, ``ivf_lists(n)`` lists, nprobe 32), the sweep's
    pick at 1M items (:data:`SEARCH_DEFAULTS`)."""
    return "flat" if n_items < FLAT_BELOW else "ivf"


def build_index(
    vectors: np.ndarray,
    ids: np.ndarray,
    *,
    kind: str = "auto",
    nprobe: int | None = None,
    seed: int = 7,
    nlist: int | None = None,
    hnsw_m: int = 32,
    ef_construction: int = 40,
    ef_search: int | None = None,
    pq_m: int | None = None,
    k_factor: float | None = None,
    centroids: np.ndarray | None = None,
) -> tuple[faiss.Index, dict[str, Any]]:
    """An index whose search returns item ids; and its parameters for the manifest.

    ``vectors`` float32 ``[N, D]``, ``ids`` int64 ``[N]``. ``kind``: one of :data:`KINDS`
    (module docstring). ``nlist`` defaults to :func:`ivf_lists`; ``pq_m`` (``ivfpq``) to ``D``
    sub-quantizers of 4 bits (half a byte per dimension); ``nprobe``, ``ef_search`` and
    ``k_factor`` to :data:`SEARCH_DEFAULTS`. ``centroids`` float32
    ``[nlist, D]``: IVF list centres to reuse (:func:`train_centroids` over the same vectors)
    instead of training k-means again. Search-time parameters are set on the
    returned index too.
    """
    n, dim = vectors.shape
    if len(ids) != n:
        raise ValueError(f"{n} vectors but {len(ids)} ids")
    if kind not in KINDS:
        raise ValueError(f"unknown index kind {kind!r}: {', '.join(KINDS)}")
    if kind == "auto":
        kind = auto_kind(n)
    defaults = SEARCH_DEFAULTS.get(kind, {})
    nprobe = int(nprobe or defaults.get("nprobe", 0))
    ef_search = int(ef_search or defaults.get("efSearch", 0))
    k_factor = float(k_factor or defaults.get("k_factor", 0.0))
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    lists = min(nlist or ivf_lists(n), max(1, n // 39))
    if centroids is not None:
        lists = len(centroids)
    params: dict[str, Any]
    if kind == "flat":
        index: faiss.Index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        params = {"type": "Flat", "kind": "flat", "nlist": 0, "nprobe": 0}
    elif kind == "ivf":
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, lists, faiss.METRIC_INNER_PRODUCT)
        params = {"type": f"IVF{lists},Flat", "kind": "ivf", "nlist": lists, "nprobe": nprobe}
    elif kind == "hnsw":
        hnsw = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = ef_construction
        index = faiss.IndexIDMap2(hnsw)
        params = {
            "type": f"HNSW{hnsw_m},Flat",
            "kind": "hnsw",
            "M": hnsw_m,
            "efConstruction": ef_construction,
            "efSearch": ef_search,
            "nlist": 0,
            "nprobe": 0,
        }
    else:  # ivfpq
        m = pq_m or dim
        if dim % m:
            raise ValueError(f"pq_m {m} must divide the dimension {dim}")
        factory = f"IVF{lists},PQ{m}x4fs,RFlat"
        index = faiss.IndexIDMap2(faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT))
        params = {
            "type": factory,
            "kind": "ivfpq",
            "nlist": lists,
            "nprobe": nprobe,
            "pq_m": m,
            "k_factor": k_factor,
        }
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        if centroids is None:
            centroids = train_centroids(x, lists, seed=seed)
        ivf.quantizer.add(np.ascontiguousarray(centroids, dtype=np.float32))
        index.train(_sample(x, lists, seed))  # a filled quantizer is not trained again
    index.add_with_ids(x, ids.astype(np.int64))
    params = {**params, **apply_search_params(index, params)}
    log.info("%s over %d items: %s", params["type"], n, params)
    return index, params


def _sample(x: np.ndarray, nlist: int, seed: int) -> np.ndarray:
    """At most ``TRAIN_PER_LIST * nlist`` rows of ``x``, drawn without replacement."""
    n = len(x)
    train = min(n, TRAIN_PER_LIST * nlist)
    return x if train == n else x[np.sort(np.random.default_rng(seed).choice(n, train, False))]


def train_centroids(x: np.ndarray, nlist: int, *, seed: int = 7) -> np.ndarray:
    """IVF list centres for the vectors ``x`` float32 ``[N, D]``: FAISS's k-means with
    inner-product assignment (as ``IndexIVF.train`` runs it) on a subsample of at most
    ``TRAIN_PER_LIST * nlist`` rows; float32 ``[nlist, D]``."""
    dim = x.shape[1]
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
    ivf.cp.seed = seed
    ivf.train(_sample(x, nlist, seed))
    out = ivf_centroids(ivf)
    assert out is not None
    return out


def ivf_centroids(index: faiss.Index) -> np.ndarray | None:
    """The IVF list centres of ``index`` (float32 ``[nlist, D]``), or None if not IVF."""
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is None:
        return None
    return np.asarray(ivf.quantizer.reconstruct_n(0, ivf.nlist), dtype=np.float32)


def _layers(index: faiss.Index) -> list[faiss.Index]:
    """``index`` and the indexes inside it (ID maps, refinement), outermost first."""
    out = [faiss.downcast_index(index)]
    while True:
        top = out[-1]
        if isinstance(top, faiss.IndexIDMap2 | faiss.IndexIDMap):
            out.append(faiss.downcast_index(top.index))
        elif isinstance(top, faiss.IndexRefine):
            out.append(faiss.downcast_index(top.base_index))
        else:
            return out


def apply_search_params(index: faiss.Index, params: Mapping[str, Any]) -> dict[str, Any]:
    """Set the search-time parameters in ``params`` (``nprobe``, ``efSearch``, ``k_factor``;
    missing or 0: keep the index's own) on ``index`` and return those now in effect.

    ``nprobe`` is capped at the index's ``nlist``. Indexes read with ``faiss.read_index`` keep
    ``nprobe`` but not ``efSearch`` (HNSW) nor always ``k_factor`` (refinement): so call this
    after every read.
    """
    applied: dict[str, Any] = {}
    for layer in _layers(index):
        if isinstance(layer, faiss.IndexIVF):
            if params.get("nprobe"):
                layer.nprobe = max(1, min(int(params["nprobe"]), int(layer.nlist)))
            applied["nprobe"] = int(layer.nprobe)
        elif isinstance(layer, faiss.IndexHNSW):
            if params.get("efSearch"):
                layer.hnsw.efSearch = int(params["efSearch"])
            applied["efSearch"] = int(layer.hnsw.efSearch)
        elif isinstance(layer, faiss.IndexRefine):
            if params.get("k_factor"):
                layer.k_factor = float(params["k_factor"])
            applied["k_factor"] = float(layer.k_factor)
    return applied


def search_parameters(
    index: faiss.Index, exclude: faiss.IDSelector | None = None
) -> faiss.SearchParameters:
    """Per-call search parameters for ``index`` (read from it: call
    :func:`apply_search_params` first) that also leave out the item ids ``exclude`` selects.

    ``exclude`` selects the ids to *keep* (an ``IDSelectorNot`` of the removed ids, say). The
    caller keeps ``exclude`` and the returned object alive while searching (SWIG holds raw
    pointers); the returned object references the selectors it made.
    """
    layers = _layers(index)
    keep: list[object] = []
    sel = exclude
    idmap = next(
        (la for la in layers if isinstance(la, faiss.IndexIDMap2 | faiss.IndexIDMap)), None
    )
    refine = next((la for la in layers if isinstance(la, faiss.IndexRefine)), None)
    if sel is not None and refine is not None and idmap is not None:
        # The ID map rewrites only the outer parameters' selector; the refinement passes its
        # base index the inner parameters as they are, so those must see internal positions.
        sel = faiss.IDSelectorTranslated(idmap.id_map, sel)
        keep.append(sel)
    inner = layers[-1]
    base: faiss.SearchParameters
    if isinstance(inner, faiss.IndexIVF):
        base = faiss.SearchParametersIVF(sel=sel, nprobe=int(inner.nprobe))  # type: ignore[call-arg]
    elif isinstance(inner, faiss.IndexHNSW):
        base = faiss.SearchParametersHNSW(sel=sel, efSearch=int(inner.hnsw.efSearch))  # type: ignore[call-arg]
    else:
        base = faiss.SearchParameters(sel=sel)  # type: ignore[call-arg]
    out = base
    if refine is not None:
        out = faiss.IndexRefineSearchParameters(  # type: ignore[call-arg]
            sel=sel, k_factor=float(refine.k_factor), base_index_params=base
        )
        keep.append(base)
    out._towerserve_keep = keep  # keep the SWIG objects referenced as long as ``out``
    return out
