"""Stage 3 of the request path: FAISS top candidates for a user vector.

The index (``index.faiss``) holds the item vectors of one model version under their item ids
(``add_with_ids``) and scores by inner product (vectors are L2-normalised, so this is cosine).
The retriever returns ``max(n_candidates, K)`` candidates, best first, for the reranker:

* it refuses, at load, an index whose manifest names another model version than the one it was
  configured with (an index of another item tower lives in another vector space);
* items listed in an optional ``removed_ids.npy`` (int64 ``[R]``) are never returned; they are
  excluded inside the search (a FAISS ID selector), so they do not eat into the depth;
* the manifest's search-time parameters are applied at load (towers/index.py,
  ``apply_search_params``): ``nprobe`` (IVF, IVF-PQ), ``efSearch`` (HNSW), ``k_factor``
  (IVF-PQ's exact refinement); an IVF index may return fewer candidates than asked when the
  lists searched hold fewer items;
* requests without a query (``HAS_QUERY`` 0: recommendation) are ranked by ``cosine + weight
  * prior``, the model's trending-popularity prior (``item_prior.npz`` and the manifest's
  ``prior``; see towers/prior.py): the ``PRIOR_OVERFETCH`` x depth best by cosine are
  re-ranked and the best ``depth`` kept. Search requests, and requests that leave
  ``HAS_QUERY`` out, rank by cosine alone;
* requests without a query that carry a history (``HISTORY_IDS``, the up to ``LONG_HISTORY``
  newest ids the user tower handed on) also draw candidates from the model's co-visitation
  table (``item_covisit.npz``, towers/covisit.py: each item's strongest collaborative
  neighbours) when it has a weight: the union is ranked by ``cosine + prior_weight * prior +
  covisit_weight * covisit`` (the table's fitted history length, decay and per-length
  weight), with the table's share of every prefix kept for cold items
  (:func:`towers.covisit.covisit_rank`); removed and changed items are never drawn from the
  table;
* with ``exclude_recent`` N > 0 (``towerserve export --exclude-recent N``; 0 by default),
  requests without a query never get back the newest N items of the ``HISTORY_IDS`` they
  carry (what the user just interacted with; 1000: all of it): the search ranks as if those
  items were not in the index (it fetches that many more and drops them), so a long history
  does not eat into the list. Search requests are not filtered.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from serving.bundle import BundleError, check_model_version, load_manifest
from serving.errors import RequestError
from serving.gpu_index import DeviceIndex, to_device
from serving.graphs import cuda_available
from serving.item_changes import DeltaWatcher
from serving.tensors import float_scalar, int_scalar, int_vector, require
from towers.bundle_contract import COVISIT_FILE, INDEX_FILE, PRIOR_BUNDLE_FILE, REMOVED_IDS_FILE
from towers.covisit import CovisitTable, covisit_rank
from towers.features import LONG_HISTORY, PRIOR_OVERFETCH, PriorLookup, rank_with_prior
from towers.index import apply_search_params, search_parameters
from towers.index_version import IndexVersion, load_index_version

log = logging.getLogger(__name__)

__all__ = ["INDEX_FILE", "PRIOR_FILE", "REMOVED_FILE", "Retriever"]

#: Longest ``HISTORY_IDS`` a request may send (the user tower hands on at most this many).
MAX_HISTORY_IDS = LONG_HISTORY

#: Old names of the bundle contract's file names (towers/bundle_contract.py).
REMOVED_FILE = REMOVED_IDS_FILE
PRIOR_FILE = PRIOR_BUNDLE_FILE


class Retriever:
    """Top-``max(n_candidates, K)`` search over ``index`` for one user vector.

    ``dim`` is the vector dimension D; ``max_k`` the largest ``K`` a request may ask for;
    ``removed_ids`` item ids never returned; ``nprobe`` (IVF indexes only) the lists searched,
    ``ef_search`` (HNSW) the candidates kept, ``k_factor`` (refinement) the multiple of the
    depth re-scored exactly; each ``None`` keeps the index's own;
    ``prior`` the popularity prior by item id and ``prior_weight`` its weight for requests
    without a query (0 or no prior: cosine only); ``covisit`` the co-visitation table whose
    neighbours join the candidates of requests without a query (used when its weight > 0);
    ``exclude_recent`` drops the newest that many ``HISTORY_IDS`` of a request from its
    candidates when it has no query (0: none; at most :data:`MAX_HISTORY_IDS`).
    """

    def __init__(
        self,
        index: faiss.Index | DeviceIndex,
        *,
        max_k: int = 100,
        n_candidates: int = 100,
        removed_ids: np.ndarray | None = None,
        nprobe: int | None = None,
        ef_search: int | None = None,
        k_factor: float | None = None,
        prior: PriorLookup | None = None,
        prior_weight: float = 0.0,
        model_version: str = "",
        covisit: CovisitTable | None = None,
        exclude_recent: int = 0,
    ) -> None:
        if not 0 <= exclude_recent <= MAX_HISTORY_IDS:
            raise ValueError(
                f"exclude_recent must be in 0..{MAX_HISTORY_IDS}, got {exclude_recent}"
            )
        #: Newest ``HISTORY_IDS`` a request without a query never gets back (0: none).
        self.exclude_recent = int(exclude_recent)
        #: The item-tower version whose vectors the index holds ("" unknown: swap refuses).
        self.model_version = model_version
        if max_k < 1 or n_candidates < 1:
            raise ValueError(f"max_k and n_candidates must be >= 1, got {max_k}, {n_candidates}")
        if not np.isfinite(prior_weight) or prior_weight < 0:
            raise ValueError(f"prior_weight must be finite and >= 0, got {prior_weight}")
        self.prior = prior if prior_weight > 0 else None
        self.prior_weight = float(prior_weight) if prior is not None else 0.0
        if index.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise ValueError("the index must score by inner product (METRIC_INNER_PRODUCT)")
        self.index = index
        self.dim = int(index.d)
        self.max_k = max_k
        self.n_candidates = n_candidates
        on_device = isinstance(index, DeviceIndex)
        #: What searches: ``faiss-cpu``, or a device backend (serving.gpu_index).
        self.backend = index.backend if isinstance(index, DeviceIndex) else "faiss-cpu"
        self.ivf = None if isinstance(index, DeviceIndex) else faiss.try_extract_index_ivf(index)
        if on_device and removed_ids is not None and len(removed_ids):
            raise ValueError("a device index drops removed items at load (gpu_index.to_device)")
        applied: dict[str, Any] = {}
        if not isinstance(index, DeviceIndex):
            wanted = {"nprobe": nprobe, "efSearch": ef_search, "k_factor": k_factor}
            applied = apply_search_params(index, {k: v for k, v in wanted.items() if v})
        #: Search-time parameters in effect (None where the index has no such parameter).
        self.nprobe: int | None = applied.get("nprobe")
        self.ef_search: int | None = applied.get("efSearch")
        self.k_factor: float | None = applied.get("k_factor")
        removed = np.unique(np.asarray(removed_ids if removed_ids is not None else [], np.int64))
        self.removed_ids = removed
        self._params = None if on_device else self._search_params(removed)
        #: Item changes since the index was built (serving.item_changes), searched beside it.
        self.delta: DeltaWatcher | None = None
        #: Collaborative neighbours of history items (towers/covisit.py); None: unused.
        self.covisit = covisit if covisit is not None and covisit.weight > 0 else None

    def _search_params(self, removed: np.ndarray) -> faiss.SearchParameters | None:
        if len(removed) == 0:
            return None  # the index's own search-time parameters (set above) apply
        # Keep the selectors referenced: the SWIG wrappers hold raw pointers to them.
        self._batch = faiss.IDSelectorBatch(removed)
        self._not_removed = faiss.IDSelectorNot(self._batch)
        assert not isinstance(self.index, DeviceIndex)
        return search_parameters(self.index, self._not_removed)

    @classmethod
    def from_dir(
        cls,
        folder: Path,
        *,
        model_version: str,
        max_k: int | None = None,
        n_candidates: int | None = None,
        omp_threads: int | None = 1,
        device: str = "cpu",
        device_dtype: str = "fp32",
        exclude_recent: int = 0,
    ) -> Retriever:
        """Load ``index.faiss`` (and ``removed_ids.npy`` if present) from a version folder.

        ``model_version`` is the version this retriever is configured for: an index whose
        manifest names another one is refused. ``max_k``/``n_candidates`` default to the
        manifest's. ``omp_threads`` sets FAISS's (process-wide) OpenMP threads; ``None`` keeps
        FAISS's default (all cores). Also refuses an index whose dimension or size contradicts
        the manifest. ``device`` ``cuda`` (or ``cuda:N``) searches on that GPU
        (serving.gpu_index: FAISS-GPU when installed, else exact torch top-k with vectors in
        ``device_dtype``); ``auto`` picks ``cuda`` when torch sees one; default ``cpu``.
        ``exclude_recent``: see :class:`Retriever`.
        """
        folder = Path(folder)
        if device not in ("cpu", "auto") and not device.startswith("cuda"):
            raise ValueError(f"device must be cpu, cuda, cuda:N or auto, got {device!r}")
        if not model_version:
            raise BundleError(
                f"retriever in {folder} has no model_version configured: write the repository "
                "with export.repository.write_repository"
            )
        manifest = load_manifest(folder)
        check_model_version(manifest, model_version, f"the index in {folder}")
        path = folder / INDEX_FILE
        if not path.is_file():
            raise BundleError(f"{path} is missing")
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as exc:
            raise BundleError(f"{path} is not a readable FAISS index: {exc}") from exc
        if index.d != manifest.dim or index.ntotal != manifest.n_items:
            raise BundleError(
                f"{path} holds {index.ntotal} vectors of dim {index.d}, but the manifest says "
                f"{manifest.n_items} items of dim {manifest.dim}"
            )
        if omp_threads:
            faiss.omp_set_num_threads(omp_threads)
        removed_path = folder / REMOVED_FILE
        removed = np.load(removed_path) if removed_path.is_file() else None
        prior, weight = _load_prior(folder, manifest.prior)
        covisit = _load_covisit(folder)
        if device == "auto":
            device = "cuda" if cuda_available() else "cpu"
        searcher: faiss.Index | DeviceIndex = index
        if device != "cpu":
            searcher = to_device(index, removed, device=device, dtype=device_dtype)
            removed = None
        retriever = cls(
            searcher,
            max_k=max_k or manifest.max_k,
            n_candidates=n_candidates or manifest.n_candidates,
            removed_ids=removed,
            nprobe=int(manifest.index.get("nprobe") or 0) or None,
            ef_search=int(manifest.index.get("efSearch") or 0) or None,
            k_factor=float(manifest.index.get("k_factor") or 0) or None,
            prior=prior,
            prior_weight=weight,
            model_version=manifest.model_version,
            covisit=covisit,
            exclude_recent=exclude_recent,
        )
        log.info(
            "retriever %s: %s %s, %d items, dim %d, nprobe %s, efSearch %s, k_factor %s, "
            "%d removed, prior weight %.3f, co-visitation %s, newest %d history items excluded, "
            "version %s",
            path,
            retriever.backend,
            manifest.index.get("type"),
            index.ntotal,
            index.d,
            retriever.nprobe,
            retriever.ef_search,
            retriever.k_factor,
            len(retriever.removed_ids),
            retriever.prior_weight,
            _describe(retriever.covisit),
            retriever.exclude_recent,
            manifest.model_version,
        )
        return retriever

    def swap(self, folder: Path) -> IndexVersion:
        """Serve the index version in ``folder`` (``towerserve index build``) from now on.

        It is checked first (towers/index_version.py: the model version and dimension this
        retriever serves, the file's size and checksum, what FAISS reads); if any check fails,
        :class:`~towers.index_version.IndexVersionError` says which and the old index keeps
        serving. The removed ids and the manifest's search-time parameters (``nprobe``,
        ``efSearch``, ``k_factor``) apply to the new index. CPU indexes only.
        """
        if isinstance(self.index, DeviceIndex):
            raise ValueError("swap works on a CPU index; a device index is loaded with its model")
        if not self.model_version:
            raise BundleError("this retriever has no model_version: it cannot check an index")
        index, version = load_index_version(folder, model_version=self.model_version, dim=self.dim)
        applied = apply_search_params(
            index,
            {
                k: v
                for k, v in version.index.items()
                if k in ("nprobe", "efSearch", "k_factor") and v
            },
        )
        # The removed-ids selectors (made at construction) are id-based: they fit any index.
        params = search_parameters(index, self._not_removed) if len(self.removed_ids) else None
        old_index = self.index
        self.index, self._params = index, params
        self.ivf = faiss.try_extract_index_ivf(index)
        self.nprobe = applied.get("nprobe")
        self.ef_search = applied.get("efSearch")
        self.k_factor = applied.get("k_factor")
        log.info(
            "retriever: swapped to %s (%d items, model %s; was %d items)",
            folder,
            version.n_items,
            version.model_version,
            old_index.ntotal,
        )
        return version

    def check_k(self, k: int) -> int:
        """``k`` if it is in ``1..max_k``, else a :class:`RequestError` naming the range."""
        if not 1 <= k <= self.max_k:
            raise RequestError(f"K must be in 1..{self.max_k}, got {k}")
        return k

    def check_vector(self, user_vector: np.ndarray) -> np.ndarray:
        """``user_vector`` (``[D]`` or ``[1, D]``, finite floats) as float32 ``[1, D]``."""
        vec = np.asarray(user_vector)
        if vec.dtype.kind != "f":
            raise RequestError(f"USER_VECTOR must be float32, got {vec.dtype}")
        if vec.size != self.dim or vec.ndim > 2 or (vec.ndim == 2 and vec.shape[0] != 1):
            raise RequestError(
                f"USER_VECTOR must be [1, {self.dim}] (the index dimension), got shape {vec.shape}"
            )
        vec = np.ascontiguousarray(vec.reshape(1, self.dim), dtype=np.float32)
        if not np.all(np.isfinite(vec)):
            raise RequestError("USER_VECTOR must be finite (no nan or inf)")
        return vec

    def depth(self, k: int) -> int:
        """How many candidates a search for ``k`` items asks FAISS for."""
        return min(max(self.n_candidates, k), int(self.index.ntotal))

    def search(
        self,
        user_vector: np.ndarray,
        k: int,
        *,
        has_query: bool = True,
        history_ids: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(item_ids int64 [n], scores float32 [n])``, best first, ``n <= depth(k)``.

        Without a query (``has_query`` False) and with a prior, the scores are ``cosine +
        prior_weight * prior``; otherwise cosine. Without a query, with a co-visitation table
        and a ``history_ids`` (int64 ``[h]``, oldest first), the history's neighbours join the
        candidates (:func:`towers.covisit.covisit_rank`; a cold item moved up into its
        reserved share takes the score of its place, so scores stay sorted). Without a query
        and with :attr:`exclude_recent`, none of the newest that many ``history_ids`` is
        returned.
        """
        self.check_k(k)
        vec = self.check_vector(user_vector)
        depth = self.depth(k)
        if depth == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        use_prior = self.prior is not None and not has_query
        excluded = np.zeros(0, dtype=np.int64)
        if self.exclude_recent and not has_query and history_ids is not None:
            recent = np.asarray(history_ids, dtype=np.int64).ravel()[-self.exclude_recent :]
            excluded = np.unique(recent)
        fetch = min(PRIOR_OVERFETCH * depth, int(self.index.ntotal)) if use_prior else depth
        delta = self.delta.current() if self.delta is not None else None
        hidden = len(delta.hidden) if delta is not None else 0
        fetch = min(fetch + hidden, int(self.index.ntotal))  # hidden hits are dropped below
        if len(excluded):
            # as if the excluded items were not in the index: the first ``fetch`` others
            deeper = min(fetch + len(excluded), int(self.index.ntotal))
            scores, ids = self.index.search(vec, deeper, params=self._params)
            others = ~np.isin(ids[0], excluded)
            scores, ids = scores[:, others][:, :fetch], ids[:, others][:, :fetch]
        else:
            scores, ids = self.index.search(vec, fetch, params=self._params)
        fetched = scores[0][ids[0] >= 0]
        floor = float(fetched.min()) if len(fetched) else 0.0  # lowest cosine fetched
        if use_prior:
            assert self.prior is not None
            scores, ids = rank_with_prior(scores, ids, self.prior(ids), self.prior_weight)
        keep = ids[0] >= 0  # -1: fewer results than asked (IVF lists, removed items)
        found_ids, found = ids[0][keep].astype(np.int64), scores[0][keep].astype(np.float32)
        found_ids, found = found_ids[: depth + hidden], found[: depth + hidden]
        if self.covisit is not None and not has_query and history_ids is not None:
            drop = self.removed_ids
            if delta is not None and len(delta.hidden):
                drop = np.union1d(drop, delta.hidden)
            if len(excluded):
                drop = np.union1d(drop, excluded)
            found_ids, found = covisit_rank(
                found_ids,
                found,
                floor,
                self.covisit,
                np.asarray(history_ids, dtype=np.int64),
                prior=self.prior if use_prior else None,
                prior_weight=self.prior_weight if use_prior else 0.0,
                drop=drop,
                max_new=fetch,
                limit=depth + hidden,
            )
            found_ids, found = found_ids[: depth + hidden], found[: depth + hidden]
        if delta is None or len(delta) == 0:
            return found_ids[:depth], found[:depth]
        new_ids, new_scores = delta.search(vec, depth + len(excluded))
        if len(excluded) and len(new_ids):
            keep_new = ~np.isin(new_ids, excluded)
            new_ids, new_scores = new_ids[keep_new], new_scores[keep_new]
        if use_prior and len(new_ids):
            assert self.prior is not None
            new_scores = new_scores + self.prior_weight * self.prior(new_ids)
        return delta.merge(found_ids, found, new_ids, new_scores, depth)

    def infer(self, tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Triton tensors: ``USER_VECTOR`` float32 ``[1, D]``, ``K`` int32 ``[1]``, optional
        ``HAS_QUERY`` float32 ``[1, 1]`` (0 = no query: the prior applies; absent = 1) and
        ``HISTORY_IDS`` int64 ``[h]`` (the history the user tower handed on: co-visitation
        candidates) -> ``CANDIDATE_IDS`` int64 ``[n]``, ``CANDIDATE_SCORES`` float32 ``[n]``."""
        k = self.check_k(int_scalar(require(tensors, "K"), "K"))
        has_query = True
        if tensors.get("HAS_QUERY") is not None:
            flag = float_scalar(tensors["HAS_QUERY"], "HAS_QUERY")
            if flag not in (0.0, 1.0):
                raise RequestError(f"HAS_QUERY must be 0 or 1, got {flag}")
            has_query = flag == 1.0
        history = tensors.get("HISTORY_IDS")
        if history is not None:
            history = int_vector(history, "HISTORY_IDS")
            if len(history) > MAX_HISTORY_IDS:
                raise RequestError(
                    f"HISTORY_IDS holds {len(history)} ids: at most {MAX_HISTORY_IDS} allowed"
                )
        ids, scores = self.search(
            require(tensors, "USER_VECTOR"), k, has_query=has_query, history_ids=history
        )
        return {"CANDIDATE_IDS": ids, "CANDIDATE_SCORES": scores}

    def warm_up(self) -> None:
        """Run two :meth:`search` calls for a unit vector at ``K = min(10, max_k)``: a search
        request (cosine) and one without a query (the prior path, when there is a prior), so
        FAISS's first-run work is not paid by a real request. Two searches of at most
        ``PRIOR_OVERFETCH * depth`` candidates: well under a second. Raises what
        :meth:`search` raises."""
        vector = np.full((1, self.dim), 1.0 / np.sqrt(self.dim), dtype=np.float32)
        for has_query in (True, False):
            self.search(vector, min(10, self.max_k), has_query=has_query)


def _load_prior(folder: Path, meta: Mapping[str, float]) -> tuple[PriorLookup | None, float]:
    """The prior of a version folder and its weight; ``(None, 0.0)`` when there is none."""
    path = folder / PRIOR_FILE
    weight = float(meta.get("weight", 0.0))
    if not path.is_file() or weight <= 0:
        return None, 0.0
    try:
        with np.load(path) as doc:
            lookup = PriorLookup(doc["item_ids"], doc["values"], float(meta.get("default", 0.0)))
    except (KeyError, ValueError, OSError) as exc:
        raise BundleError(f"{path} is not a prior (item_ids, values): {exc}") from exc
    return lookup, weight


def _load_covisit(folder: Path) -> CovisitTable | None:
    """The co-visitation table of a version folder, or ``None`` when there is none."""
    path = folder / COVISIT_FILE
    if not path.is_file():
        return None
    try:
        return CovisitTable.load(path)
    except ValueError as exc:
        raise BundleError(str(exc)) from exc


def _describe(covisit: CovisitTable | None) -> str:
    return f"{covisit.kind} weight {covisit.weight:g}" if covisit is not None else "off"
