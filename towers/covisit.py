"""The co-visitation candidate source of the retriever: who bought X also bought Y.

Two towers see item text (and, optionally, an id vector); what shoppers do *together* is best
learnt straight from the interaction matrix, which is why item-kNN and EASE beat text towers on
real rating data. The retriever therefore keeps, per item, its ``n_neighbours`` strongest
collaborative neighbours and, for a request without a query, scores every neighbour of the
request's history (``sum over history items of weight(h, j)``), merges these candidates with the
FAISS ones and ranks the union by

    cosine(user, item) + prior_weight * prior(item) + covisit_weight * covisit(item) / max

where ``max`` is the request's largest co-visitation score (so the weight is on a 0..1 scale
whatever the history's length). The weights are fitted on the last days before the training
cut (:func:`fit_covisit_weight`), so data where text says everything gets weight 0 and
data where identity matters most gets a large one.

Neighbour weights (``kind``):

- ``ease``: the EASE item x item weights (Steck 2019, ridge ``l2``), each item's row cut to its
  ``n_neighbours`` largest; dense in the interacted items, so used when at most
  :data:`COVISIT_EASE_MAX_ITEMS` items have interactions;
- ``item_knn``: cosine of items' user sets (sparse; any catalog size).

Only events before the cut are counted; items without interactions have no neighbours (new
items come from FAISS alone). The table is numpy-only at serving time: ``indptr``/
``neighbour_ids``/``weights`` in CSR layout over the rows of ``item_ids`` (sorted), about
``12 * n_items * n_neighbours`` bytes (120 MB at 100k items and 100 neighbours).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

    from towers.features import PriorLookup
    from towers.next_item import NextItemTask
    from towers.prior import ItemPrior

log = logging.getLogger(__name__)

__all__ = [
    "COVISIT_WEIGHTS",
    "COVISIT_EASE_MAX_ITEMS",
    "N_NEIGHBOURS",
    "CovisitTable",
    "build_covisit",
    "blend_covisit",
    "covisit_lists",
    "fit_covisit_weight",
    "fit_model_covisit",
]

#: Neighbours kept per item.
N_NEIGHBOURS = 100
#: Largest number of interacted items for which the ``auto`` kind builds EASE (a dense
#: float64 ``n x n`` inverse: 800 MB and about 20 s on two cores at 10,000 items).
COVISIT_EASE_MAX_ITEMS = 10_000
#: Candidate weights of the normalised co-visitation score (cosine spans [-1, 1]; 1000 ranks
#: by co-visitation first, cosine breaking ties).
COVISIT_WEIGHTS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 1000.0)


@dataclass(frozen=True)
class CovisitTable:
    """Per-item collaborative neighbours in CSR layout.

    ``item_ids`` int64 ``[n]`` sorted ascending; the neighbours of ``item_ids[r]`` are
    ``neighbour_ids[indptr[r]:indptr[r + 1]]`` (int64) with ``weights`` (float32, > 0).
    ``kind`` is ``ease`` or ``item_knn``; ``weight`` the fitted blend weight (0: unused).
    """

    item_ids: np.ndarray
    indptr: np.ndarray
    neighbour_ids: np.ndarray
    weights: np.ndarray
    kind: str = "item_knn"
    weight: float = 0.0

    def __post_init__(self) -> None:
        n = len(self.item_ids)
        if self.indptr.shape != (n + 1,) or self.indptr[0] != 0:
            raise ValueError(f"indptr must be [{n + 1}] starting at 0, got {self.indptr.shape}")
        if int(self.indptr[-1]) != len(self.neighbour_ids) or len(self.weights) != len(
            self.neighbour_ids
        ):
            raise ValueError("indptr, neighbour_ids and weights disagree on the entry count")
        if n > 1 and not np.all(np.diff(self.item_ids) > 0):
            raise ValueError("item_ids must be sorted ascending without repeats")

    def __len__(self) -> int:
        return int(len(self.neighbour_ids))

    def with_weight(self, weight: float) -> CovisitTable:
        return CovisitTable(
            self.item_ids, self.indptr, self.neighbour_ids, self.weights, self.kind, float(weight)
        )

    def scores(
        self, history_ids: np.ndarray, history_weights: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(item_ids int64 [m], scores float32 [m])``: every neighbour of the history with
        its summed weight (unknown history ids add nothing), best first, normalised so the
        best is 1; empty when the history has no known item with neighbours.
        ``history_weights`` (``[h]``, default 1 each) scales each history item's row."""
        hist = np.asarray(history_ids, dtype=np.int64).ravel()
        if len(hist) == 0 or len(self.item_ids) == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        hw = (
            np.ones(len(hist), np.float32)
            if history_weights is None
            else np.asarray(history_weights, np.float32).ravel()
        )
        pos = np.minimum(np.searchsorted(self.item_ids, hist), len(self.item_ids) - 1)
        known = self.item_ids[pos] == hist
        rows, hw = pos[known], hw[known]
        starts, ends = self.indptr[rows], self.indptr[rows + 1]
        lengths = ends - starts
        if lengths.sum() == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        take = np.concatenate([np.arange(s, e) for s, e in zip(starts, ends)])
        ids = self.neighbour_ids[take]
        vals = self.weights[take] * np.repeat(hw, lengths)
        uniq, inv = np.unique(ids, return_inverse=True)
        summed = np.bincount(inv, weights=vals).astype(np.float32)
        order = np.argsort(-summed, kind="stable")
        best = float(summed[order[0]])
        if best <= 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        return uniq[order], summed[order] / best

    def save(self, path: Path) -> None:
        """One ``.npz`` (uncompressed) holding the arrays, ``kind`` and ``weight``."""
        with open(path, "wb") as f:
            np.savez(
                f,
                item_ids=self.item_ids,
                indptr=self.indptr,
                neighbour_ids=self.neighbour_ids,
                weights=self.weights,
                kind=np.array(self.kind),
                weight=np.array(self.weight, dtype=np.float64),
            )

    @classmethod
    def load(cls, path: Path) -> CovisitTable:
        """The table saved at ``path``.

        Raises:
            ValueError: the file is not a co-visitation table (names what is missing).
        """
        try:
            with np.load(path) as doc:
                return cls(
                    doc["item_ids"].astype(np.int64),
                    doc["indptr"].astype(np.int64),
                    doc["neighbour_ids"].astype(np.int64),
                    doc["weights"].astype(np.float32),
                    str(doc["kind"]),
                    float(doc["weight"]),
                )
        except (KeyError, OSError, ValueError) as exc:
            raise ValueError(f"{path} is not a co-visitation table: {exc}") from exc


def build_covisit(
    events: pd.DataFrame,
    item_ids: np.ndarray,
    *,
    until_ts: int | None,
    kind: str = "auto",
    n_neighbours: int = N_NEIGHBOURS,
    l2: float = 500.0,
) -> CovisitTable:
    """The neighbour table of ``events`` before ``until_ts`` (unix s; all when ``None``) over
    the catalog ``item_ids``. ``kind`` ``auto`` picks ``ease`` when at most
    :data:`COVISIT_EASE_MAX_ITEMS` items have interactions, else ``item_knn``.

    Raises:
        ValueError: an unknown ``kind``, or ``n_neighbours`` < 1.
    """
    import scipy.sparse as sp

    from towers.cooccurrence import EASE, ItemKNN, interactions

    if kind not in ("auto", "ease", "item_knn"):
        raise ValueError(f"kind must be auto, ease or item_knn, got {kind!r}")
    if n_neighbours < 1:
        raise ValueError(f"n_neighbours must be >= 1, got {n_neighbours}")
    ids = np.sort(np.asarray(item_ids, dtype=np.int64))
    data = interactions(events, ids, until_ts=until_ts)
    n_active = int((np.diff(data.matrix.tocsc().indptr) > 0).sum())
    if kind == "auto":
        kind = "ease" if n_active <= COVISIT_EASE_MAX_ITEMS else "item_knn"
    if kind == "ease":
        ease = EASE(data, l2=l2)
        w = np.maximum(ease.weights, 0.0)  # negative weights: "not together"; unused
        sub = sp.csr_matrix(w)
        sel = sp.csr_matrix(
            (np.ones(len(ease.active), np.float32), (ease.active, np.arange(len(ease.active)))),
            shape=(len(ids), len(ease.active)),
        )
        full = (sel @ sub @ sel.T).tocsr()
    else:
        full = ItemKNN(data, n_neighbours).similarity.tocsr()
    full.eliminate_zeros()
    indptr, nbr, wts = [0], [], []
    for r in range(full.shape[0]):
        s, e = full.indptr[r], full.indptr[r + 1]
        vals, cols = full.data[s:e], full.indices[s:e]
        if len(vals) > n_neighbours:
            keep = np.argpartition(-vals, n_neighbours - 1)[:n_neighbours]
            vals, cols = vals[keep], cols[keep]
        order = np.argsort(-vals, kind="stable")
        nbr.append(ids[cols[order]])
        wts.append(vals[order].astype(np.float32))
        indptr.append(indptr[-1] + len(vals))
    table = CovisitTable(
        ids,
        np.asarray(indptr, dtype=np.int64),
        np.concatenate(nbr) if nbr else np.zeros(0, np.int64),
        np.concatenate(wts) if wts else np.zeros(0, np.float32),
        kind,
    )
    log.info(
        "co-visitation table: %s over %d interacted of %d items, %d entries",
        kind,
        n_active,
        len(ids),
        len(table),
    )
    return table


def fit_covisit_weight(
    evaluate: Callable[[float], float], weights: tuple[float, ...] = COVISIT_WEIGHTS
) -> tuple[float, dict[str, float]]:
    """The weight with the best ``evaluate(weight)`` (a validation metric, higher is better;
    ties go to the smaller weight), and every weight's score keyed by ``str(weight)``: the
    prior's search (:func:`towers.prior.fit_prior_weight`) over :data:`COVISIT_WEIGHTS`."""
    from towers.prior import fit_prior_weight

    return fit_prior_weight(evaluate, weights, what="co-visitation")


def blend_covisit(
    ids: np.ndarray,
    scores: np.ndarray,
    floor: float,
    covisit_ids: np.ndarray,
    covisit_scores: np.ndarray,
    weight: float,
    *,
    prior: Callable[[np.ndarray], np.ndarray] | None = None,
    prior_weight: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Merge retrieval candidates with co-visitation candidates and rank the union.

    ``ids`` int64 ``[C]`` and ``scores`` float32 ``[C]`` are the retrieval candidates (no
    ``-1``) scored ``cosine + prior_weight * prior``; ``covisit_ids``/``covisit_scores`` come
    from :meth:`CovisitTable.scores` (normalised to a best of 1). A candidate found only by
    co-visitation was not among the best by cosine, so its cosine is taken as ``floor`` (the
    lowest cosine retrieval fetched; an upper bound of its own) plus its prior. Every
    candidate's score gains ``weight * covisit`` (0 when not a neighbour). Returns ``(ids,
    scores)`` of the union, best first (ties: retrieval order, then co-visitation order).
    """
    ids = np.asarray(ids, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float32)
    cv_ids = np.asarray(covisit_ids, dtype=np.int64)
    cv = np.asarray(covisit_scores, dtype=np.float32)
    if len(cv_ids) == 0 or weight <= 0:
        return ids, scores
    # a co-visitation score for the retrieved candidates, and the neighbours not retrieved
    order = np.argsort(cv_ids, kind="stable")
    sorted_ids, sorted_cv = cv_ids[order], cv[order]
    pos = np.minimum(np.searchsorted(sorted_ids, ids), len(sorted_ids) - 1)
    hit = sorted_ids[pos] == ids
    boost = np.where(hit, sorted_cv[pos], 0.0).astype(np.float32)
    fresh = ~np.isin(cv_ids, ids)
    new_ids, new_cv = cv_ids[fresh], cv[fresh]
    new_base = np.full(len(new_ids), floor, dtype=np.float32)
    if prior is not None and prior_weight > 0 and len(new_ids):
        new_base = new_base + np.float32(prior_weight) * prior(new_ids)
    all_ids = np.concatenate([ids, new_ids])
    all_scores = np.concatenate([scores + weight * boost, new_base + weight * new_cv])
    best = np.argsort(-all_scores, kind="stable")
    return all_ids[best], all_scores[best].astype(np.float32)


def covisit_lists(
    cos: np.ndarray,
    ids: np.ndarray,
    neighbours: Sequence[tuple[np.ndarray, np.ndarray]],
    weight: float,
    k: int,
    exclude: Sequence[np.ndarray],
    *,
    prior: PriorLookup | None = None,
    prior_weight: float = 0.0,
) -> list[list[int]]:
    """Each user's top ``k`` item ids as the served retriever ranks a request without a query.

    ``cos``/``ids`` ``[U, C]``: the FAISS candidates by cosine, best first (``-1`` = none);
    ``neighbours`` each user's :meth:`CovisitTable.scores`; ``exclude`` each user's ids never
    returned. Candidates are re-ranked with ``prior`` (when its weight is > 0), merged with the
    neighbours by :func:`blend_covisit`. Shared by training's weight fit and evaluation, so both
    rank exactly as serving/retriever.py does.
    """
    from towers.features import rank_with_prior

    ok_all = ids >= 0
    floors = np.where(ok_all, cos, np.inf).min(axis=1)
    use_prior = prior is not None and prior_weight > 0
    if use_prior:
        assert prior is not None
        base, ids = rank_with_prior(cos, ids, prior(np.maximum(ids, 0)), prior_weight)
    else:
        base = cos
    out = []
    for u, skip in enumerate(exclude):
        ok = ids[u] >= 0
        top, _ = blend_covisit(
            ids[u][ok].astype(np.int64),
            base[u][ok],
            float(floors[u]) if ok.any() else 0.0,
            *neighbours[u],
            weight,
            prior=prior if use_prior else None,
            prior_weight=prior_weight if use_prior else 0.0,
        )
        seen = set(map(int, skip))
        out.append([int(i) for i in top if int(i) not in seen][:k])
    return out


def fit_model_covisit(
    events: pd.DataFrame,
    item_ids: np.ndarray,
    at_ts: int,
    user_vectors: Callable[[NextItemTask], np.ndarray],
    item_vectors: np.ndarray,
    *,
    prior: ItemPrior | None = None,
    n_candidates: int = 100,
    validation_s: float | None = None,
    kind: str = "auto",
    max_users: int = 1000,
    seed: int = 0,
) -> tuple[CovisitTable, dict[str, float]]:
    """The co-visitation table of the events before ``at_ts``, its weight fitted on the last
    ``validation_s`` seconds before it (default: the prior's validation window).

    The validation task is the next-item task of ``[at_ts - validation_s, at_ts)``, ranked the
    way the served retriever ranks a request without a query: the ``PRIOR_OVERFETCH`` x
    ``n_candidates`` best items by cosine, re-ranked with ``prior`` (computed again as of the
    window start, with its half-life and weight), merged with the neighbours of the user's
    history in a table built from the events before the window (:func:`blend_covisit`); the
    weight of :data:`COVISIT_WEIGHTS` with the best Recall@50 wins (ties: the smaller). With no
    users to validate on, the weight is 0 (the table is kept but unused). Returns the table and
    the validation Recall@50 of each weight.
    """
    import faiss

    from towers.features import PRIOR_OVERFETCH, PriorLookup
    from towers.metrics import recall_at_k
    from towers.next_item import next_item_task
    from towers.prior import VALIDATION_K, VALIDATION_S, compute_prior

    window = VALIDATION_S if validation_s is None else validation_s
    start = int(at_ts - window)
    item_ids = np.asarray(item_ids, dtype=np.int64)
    task = next_item_task(events, start, int(at_ts), max_users=max_users, seed=seed)
    final = build_covisit(events, item_ids, until_ts=at_ts, kind=kind)
    if len(task) == 0:
        log.warning("no users to fit the co-visitation weight on: it stays unused")
        return final, {}
    table = build_covisit(events, item_ids, until_ts=start, kind=final.kind)
    users = np.ascontiguousarray(user_vectors(task), dtype=np.float32)
    fetch = min(PRIOR_OVERFETCH * max(n_candidates, VALIDATION_K), len(item_ids))
    index = faiss.IndexFlatIP(item_vectors.shape[1])
    index.add(np.ascontiguousarray(item_vectors, dtype=np.float32))
    cos, rows = index.search(users, fetch)
    ids = np.where(rows >= 0, item_ids[np.maximum(rows, 0)], -1)
    lookup, pw = None, 0.0
    if prior is not None and prior.weight > 0:
        val = compute_prior(events, item_ids, start, prior.half_life_s)
        lookup, pw = PriorLookup(item_ids, val.values, val.default), prior.weight
    neighbours = [table.scores(h) for h in task.hist_ids]

    def recall(weight: float) -> float:
        lists = covisit_lists(
            cos, ids, neighbours, weight, VALIDATION_K, task.hist_ids, prior=lookup, prior_weight=pw
        )
        return recall_at_k(lists, task.targets, VALIDATION_K)

    weight, scores = fit_covisit_weight(recall)
    log.info(
        "co-visitation: %s, weight %.3f, fitted on %d users of the last %.1f days",
        final.kind,
        weight,
        len(task),
        window / 86_400,
    )
    return final.with_weight(weight), scores
