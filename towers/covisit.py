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

- ``rp3beta`` (the default): the RP3beta random walk (Paudel et al. 2017; ``alpha``,
  ``beta``; towers/cooccurrence.py), sparse, any catalog size. Measured alone on five
  generated data sets and protocols, it ranked above EASE at its validation-chosen ridge on
  every one, and above or level with item-kNN (benchmarks/results/rp3beta_2026-12-01.md);
- ``ease``: the EASE item x item weights (Steck 2019, ridge ``l2``), each item's row cut to its
  ``n_neighbours`` largest; dense in the interacted items, so only tried when at most
  :data:`COVISIT_EASE_MAX_ITEMS` items have interactions;
- ``item_knn``: cosine of items' user sets (sparse; any catalog size).

``auto`` (:func:`fit_model_covisit`) fits every kind and keeps RP3beta unless another is
surely better on validation.

A request's history is read longer than the user tower's (the newest ``history`` of up to
:data:`towers.features.LONG_HISTORY` ids the user tower hands on), each distinct item once,
the ``i``-th newest weighted ``decay ** i``; the weight is ``weight * min(1, n / ramp)`` for a
history of ``n`` items (``ramp`` 0: the same for all), and a ``cold_share`` of every prefix
of the ranked list is kept for *cold* candidates, items the table has no neighbours for
(no interactions before the cut: they come from FAISS by text alone, and co-visitation
would push them out). ``history``, ``decay``, ``ramp``, ``cold_share`` and the weight are
fitted together on the validation window (:func:`fit_model_covisit`); a table saved
before they existed reads as the newest ``MAX_HISTORY`` events, no decay, one weight, no
reserved share.

Only events before the cut are counted; items without interactions have no neighbours (new
items come from FAISS alone). The table is numpy-only at serving time: ``indptr``/
``neighbour_ids``/``weights`` in CSR layout over the rows of ``item_ids`` (sorted), about
``12 * n_items * n_neighbours`` bytes (120 MB at 100k items and 100 neighbours).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from towers.features import MAX_HISTORY
from towers.metrics import RECALL_AT_50, FitMetric, fit_metric

if TYPE_CHECKING:
    import pandas as pd
    import scipy.sparse as sp

    from towers.features import PriorLookup
    from towers.next_item import NextItemTask
    from towers.prior import ItemPrior

log = logging.getLogger(__name__)

__all__ = [
    "COLD_SHARES",
    "COVISIT_WEIGHTS",
    "COVISIT_EASE_MAX_ITEMS",
    "DECAYS",
    "EASE_L2S",
    "HISTORY_LENGTHS",
    "KINDS",
    "N_NEIGHBOURS",
    "RAMPS",
    "RP3_ALPHAS",
    "RP3_BETAS",
    "CovisitTable",
    "build_covisit",
    "choose_cold_share",
    "blend_covisit",
    "covisit_kind",
    "covisit_lists",
    "covisit_rank",
    "fit_covisit_weight",
    "fit_model_covisit",
    "reserve_share",
    "validation_ranking",
]

#: Neighbours kept per item.
N_NEIGHBOURS = 100
#: Largest number of interacted items for which the ``auto`` fit also tries EASE (a dense
#: float64 ``n x n`` inverse: 800 MB and about 20 s on two cores at 10,000 items).
COVISIT_EASE_MAX_ITEMS = 10_000
#: Candidate ridges of an EASE table, fitted on validation (:func:`fit_model_covisit`): the
#: first is the default (Steck's 500), kept unless another is surely better there. Measured on
#: two generated data sets' test weeks, a lower ridge ranked better (100 neighbours per item:
#: 0.2370 -> 0.2469 at 100 on the demo data, 0.2993 -> 0.3140 at 50 on the identity data;
#: benchmarks/results/ease_ridge_2026-11-30.md).
EASE_L2S = (500.0, 50.0, 100.0, 250.0, 1000.0)
#: Candidate RP3beta ``alpha`` and ``beta`` (the first of each is the default, kept unless
#: another pair is surely better on validation). (0.5, 0.3) was the best scorer on test on
#: four of five generated data sets and protocols; on the fifth (5,000-user demo, random
#: split) beta 0.4 and an EASE + item-kNN mix led (benchmarks/results/rp3beta_2026-12-01.md).
RP3_ALPHAS = (0.5, 0.3, 0.7, 1.0)
RP3_BETAS = (0.3, 0.0, 0.1, 0.2, 0.4)
#: The table kinds :func:`build_covisit` builds; ``auto`` means the first, the default.
KINDS = ("rp3beta", "ease", "item_knn")
#: Candidate weights of the normalised co-visitation score (cosine spans [-1, 1]; 1000 ranks
#: by co-visitation first, cosine breaking ties). A finer grid fitted the validation window's
#: noise (benchmarks/results/fullhist_2026-11-29.md).
COVISIT_WEIGHTS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 1000.0)
#: Candidate history lengths (newest events read) for the fit; at most ``LONG_HISTORY``.
HISTORY_LENGTHS = (20, 50, 200, 1000)
#: Candidate per-position decays of the history (1: every event counts the same).
DECAYS = (1.0, 0.97, 0.9, 0.8)
#: Candidate history lengths at which a request's weight reaches the full weight (0: off).
RAMPS = (0, 3, 10, 30)
#: Candidate shares of every list prefix reserved for cold candidates (0: none).
COLD_SHARES = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3)
#: The fitted settings of a table and their types.
_SETTING_TYPES: dict[str, type] = {
    "weight": float,
    "history": int,
    "decay": float,
    "ramp": int,
    "cold_share": float,
}


@dataclass(frozen=True)
class CovisitTable:
    """Per-item collaborative neighbours in CSR layout.

    ``item_ids`` int64 ``[n]`` sorted ascending; the neighbours of ``item_ids[r]`` are
    ``neighbour_ids[indptr[r]:indptr[r + 1]]`` (int64, each one of ``item_ids``) with
    ``weights`` (float32, > 0). ``kind`` is one of :data:`KINDS`; ``weight`` the fitted
    blend weight (0: unused); ``history`` (>= 1) the newest history items read, ``decay``
    (0 < decay <= 1) the weight of each older position, ``ramp`` (>= 0) the history length
    at which a request gets the full weight, ``cold_share`` (0 <= share < 1) the share of every
    list prefix kept for items without neighbours (module docstring); ``l2`` the EASE ridge
    the neighbours were computed with, ``alpha``/``beta`` the RP3beta ones (each unused by
    the other kinds; an update recounts with them).
    """

    item_ids: np.ndarray
    indptr: np.ndarray
    neighbour_ids: np.ndarray
    weights: np.ndarray
    kind: str = "item_knn"
    weight: float = 0.0
    history: int = MAX_HISTORY
    decay: float = 1.0
    ramp: int = 0
    cold_share: float = 0.0
    l2: float = EASE_L2S[0]
    alpha: float = RP3_ALPHAS[0]
    beta: float = RP3_BETAS[0]
    #: Row of each neighbour (positions in ``item_ids``), and whether each row has neighbours.
    _neighbour_rows: np.ndarray = field(init=False, repr=False, compare=False)
    _has_row: np.ndarray = field(init=False, repr=False, compare=False)

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
        self._check_settings()
        rows = np.searchsorted(self.item_ids, self.neighbour_ids)
        if len(rows) and (
            rows.max() >= n or not np.array_equal(self.item_ids[rows], self.neighbour_ids)
        ):
            raise ValueError("every neighbour id must be one of item_ids")
        object.__setattr__(self, "_neighbour_rows", rows.astype(np.int64))
        object.__setattr__(self, "_has_row", np.diff(self.indptr) > 0)

    def __len__(self) -> int:
        return int(len(self.neighbour_ids))

    def _check_settings(self) -> None:
        if self.history < 1 or not 0 < self.decay <= 1 or self.ramp < 0:
            raise ValueError(
                f"need history >= 1, 0 < decay <= 1 and ramp >= 0, got {self.history}, "
                f"{self.decay}, {self.ramp}"
            )
        if not 0 <= self.cold_share < 1:
            raise ValueError(f"cold_share must be in [0, 1), got {self.cold_share}")
        if not np.isfinite(self.weight) or self.weight < 0:
            raise ValueError(f"weight must be finite and >= 0, got {self.weight}")

    def with_weight(self, weight: float) -> CovisitTable:
        return self.with_settings(weight=weight)

    def with_settings(self, **settings: float) -> CovisitTable:
        """This table (its arrays shared, not copied) with other ``weight``/``history``/
        ``decay``/``ramp``/``cold_share``.

        Raises:
            ValueError: an unknown name or a value out of range.
        """
        unknown = set(settings) - set(_SETTING_TYPES)
        if unknown:
            raise ValueError(f"unknown settings {sorted(unknown)}: allowed {list(_SETTING_TYPES)}")
        new = copy.copy(self)
        for name, value in settings.items():
            object.__setattr__(new, name, _SETTING_TYPES[name](value))
        new._check_settings()
        return new

    def fitted_like(self, other: CovisitTable) -> CovisitTable:
        """This table's neighbours with ``other``'s fitted weight and settings (an
        incremental update recounts the neighbours and keeps its parent's fit)."""
        return self.with_settings(**other.settings())

    def params(self) -> dict[str, float]:
        """What the neighbours were computed with, as :func:`build_covisit` takes it: ``l2``,
        ``alpha``, ``beta`` (only the kind's own ones matter)."""
        return {"l2": self.l2, "alpha": self.alpha, "beta": self.beta}

    def settings(self) -> dict[str, float]:
        """The fitted settings: ``weight``, ``history``, ``decay``, ``ramp``, ``cold_share``."""
        return {
            "weight": self.weight,
            "history": self.history,
            "decay": self.decay,
            "ramp": self.ramp,
            "cold_share": self.cold_share,
        }

    def is_cold(self, item_ids: np.ndarray) -> np.ndarray:
        """bool ``[m]``: which ``item_ids`` the table has no neighbours for (cold items)."""
        q = np.asarray(item_ids, dtype=np.int64)
        if len(self.item_ids) == 0:
            return np.ones(q.shape, dtype=bool)
        pos = np.minimum(np.searchsorted(self.item_ids, q), len(self.item_ids) - 1)
        return ~((self.item_ids[pos] == q) & self._has_row[pos])

    def request_weight(self, n_history: int) -> float:
        """The blend weight of a request handing on ``n_history`` history items:
        ``weight * min(1, min(n_history, history) / ramp)`` (``weight`` when ``ramp`` is 0)."""
        if self.ramp <= 0:
            return float(self.weight)
        return float(self.weight) * min(1.0, min(n_history, self.history) / self.ramp)

    def neighbours(
        self, history_ids: np.ndarray, limit: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`scores` of a request's history (oldest first, any length): its newest
        ``history`` ids, each distinct item once at its newest position ``i`` (0 = newest),
        weighted ``decay ** i``; the best ``limit`` of them (all when ``None``)."""
        hist = np.asarray(history_ids, dtype=np.int64).ravel()[-self.history :]
        if len(hist) == 0:
            return self.scores(hist)
        newest_first = hist[::-1]
        _, first = np.unique(newest_first, return_index=True)
        order = np.sort(first)  # distinct items, newest first, at their newest position
        weights = None if self.decay == 1.0 else np.power(self.decay, order).astype(np.float32)
        return self.scores(newest_first[order], weights, limit)

    def scores(
        self,
        history_ids: np.ndarray,
        history_weights: np.ndarray | None = None,
        limit: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(item_ids int64 [m], scores float32 [m])``: every neighbour of the history with
        its summed weight (unknown history ids add nothing), best first (ties: by id),
        normalised so the best is 1; empty when the history has no known item with neighbours.
        ``history_weights`` (``[h]``, default 1 each) scales each history item's row; ``limit``
        keeps the best ``limit`` (exactly the first ``limit`` of the whole list, sorted in
        ``O(m + limit log limit)``)."""
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
        total = int(lengths.sum())
        if total == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        # the entries of every history row, gathered without a Python loop
        offsets = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
        take = np.arange(total) + offsets
        vals = self.weights[take].astype(np.float64) * np.repeat(hw, lengths)
        dense = np.bincount(self._neighbour_rows[take], weights=vals, minlength=len(self.item_ids))
        hit = np.flatnonzero(dense > 0)  # item order (ids sorted): ties keep id order
        summed = dense[hit].astype(np.float32)
        if limit is not None and 0 < limit < len(summed):
            # every candidate at least as good as the limit-th (ties included), in id order
            kth = np.partition(-summed, limit - 1)[limit - 1]
            keep = np.flatnonzero(-summed <= kth)
            hit, summed = hit[keep], summed[keep]
        order = np.argsort(-summed, kind="stable")
        if limit is not None:
            order = order[: max(limit, 0)]
        if len(order) == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        best = float(summed[order[0]])
        return self.item_ids[hit[order]], summed[order] / best

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
                history=np.array(self.history, dtype=np.int64),
                decay=np.array(self.decay, dtype=np.float64),
                ramp=np.array(self.ramp, dtype=np.int64),
                cold_share=np.array(self.cold_share, dtype=np.float64),
                l2=np.array(self.l2, dtype=np.float64),
                alpha=np.array(self.alpha, dtype=np.float64),
                beta=np.array(self.beta, dtype=np.float64),
            )

    @classmethod
    def load(cls, path: Path) -> CovisitTable:
        """The table saved at ``path`` (one saved before ``history``, ``decay``, ``ramp``,
        ``cold_share``, ``l2``, ``alpha`` and ``beta`` existed reads with their defaults: the
        behaviour it was fitted with).

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
                    int(doc["history"]) if "history" in doc else MAX_HISTORY,
                    float(doc["decay"]) if "decay" in doc else 1.0,
                    int(doc["ramp"]) if "ramp" in doc else 0,
                    float(doc["cold_share"]) if "cold_share" in doc else 0.0,
                    float(doc["l2"]) if "l2" in doc else EASE_L2S[0],
                    float(doc["alpha"]) if "alpha" in doc else RP3_ALPHAS[0],
                    float(doc["beta"]) if "beta" in doc else RP3_BETAS[0],
                )
        except (KeyError, OSError, ValueError) as exc:
            raise ValueError(f"{path} is not a co-visitation table: {exc}") from exc


def covisit_kind(
    events: pd.DataFrame, item_ids: np.ndarray, *, until_ts: int | None, kind: str = "auto"
) -> str:
    """The kind :func:`build_covisit` builds for these arguments (``auto``: the default kind,
    ``KINDS[0]``), without building it.

    Raises:
        ValueError: an unknown ``kind``.
    """
    _check_kind(kind)
    return KINDS[0] if kind == "auto" else kind


def _check_kind(kind: str) -> None:
    if kind != "auto" and kind not in KINDS:
        raise ValueError(f"kind must be auto or one of {', '.join(KINDS)}, got {kind!r}")


def _active_items(matrix: sp.spmatrix) -> int:
    """How many columns (items) of the user x item ``matrix`` have an interaction."""
    return int((np.diff(matrix.tocsc().indptr) > 0).sum())


def _ease_fits(events: pd.DataFrame, item_ids: np.ndarray, until_ts: int | None) -> bool:
    """Whether at most :data:`COVISIT_EASE_MAX_ITEMS` items have interactions before
    ``until_ts`` (EASE's dense inverse stays affordable)."""
    from towers.cooccurrence import interactions

    ids = np.sort(np.asarray(item_ids, dtype=np.int64))
    return _active_items(interactions(events, ids, until_ts=until_ts).matrix) <= (
        COVISIT_EASE_MAX_ITEMS
    )


def build_covisit(
    events: pd.DataFrame,
    item_ids: np.ndarray,
    *,
    until_ts: int | None,
    kind: str = "auto",
    n_neighbours: int = N_NEIGHBOURS,
    l2: float = EASE_L2S[0],
    alpha: float = RP3_ALPHAS[0],
    beta: float = RP3_BETAS[0],
) -> CovisitTable:
    """The neighbour table of ``events`` before ``until_ts`` (unix s; all when ``None``) over
    the catalog ``item_ids``. ``kind`` ``auto`` is the default kind, ``KINDS[0]``; ``l2`` is
    EASE's ridge (> 0), ``alpha`` (> 0) and ``beta`` (>= 0) RP3beta's.

    Raises:
        ValueError: an unknown ``kind``, ``n_neighbours`` < 1, or a parameter out of range.
    """
    import scipy.sparse as sp

    from towers.cooccurrence import EASE, ItemKNN, interactions, rp3beta_similarity

    _check_kind(kind)
    if n_neighbours < 1:
        raise ValueError(f"n_neighbours must be >= 1, got {n_neighbours}")
    if not l2 > 0:
        raise ValueError(f"l2 must be > 0, got {l2}")
    ids = np.sort(np.asarray(item_ids, dtype=np.int64))
    data = interactions(events, ids, until_ts=until_ts)
    n_active = _active_items(data.matrix)
    if kind == "auto":
        kind = KINDS[0]
    if kind == "ease":
        ease = EASE(data, l2=l2)
        w = np.maximum(ease.weights, 0.0)  # negative weights: "not together"; unused
        sub = sp.csr_matrix(w)
        sel = sp.csr_matrix(
            (np.ones(len(ease.active), np.float32), (ease.active, np.arange(len(ease.active)))),
            shape=(len(ids), len(ease.active)),
        )
        full = (sel @ sub @ sel.T).tocsr()
    elif kind == "rp3beta":
        full = rp3beta_similarity(data.matrix, alpha, (beta,), n_neighbours)[float(beta)]
    else:
        full = ItemKNN(data, n_neighbours).similarity.tocsr()
    table = _table_of(full, ids, n_neighbours, kind, l2=float(l2), alpha=alpha, beta=beta)
    log.info(
        "co-visitation table: %s over %d interacted of %d items, %d entries",
        kind,
        n_active,
        len(ids),
        len(table),
    )
    return table


def _table_of(
    full: sp.csr_matrix, ids: np.ndarray, n_neighbours: int, kind: str, **params: float
) -> CovisitTable:
    """The table of the item x item weights ``full`` (rows and columns in ``ids`` order):
    each row's ``n_neighbours`` largest positive weights, best first."""
    full = full.tocsr(copy=True)
    full.data[full.data < 0] = 0.0
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
    return CovisitTable(
        ids,
        np.asarray(indptr, dtype=np.int64),
        np.concatenate(nbr) if nbr else np.zeros(0, np.int64),
        np.concatenate(wts) if wts else np.zeros(0, np.float32),
        kind,
        **{k: float(v) for k, v in params.items()},
    )


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


def reserve_share(
    ids: np.ndarray,
    scores: np.ndarray,
    reserved: np.ndarray,
    share: float,
    limit: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Reorder a ranked list so that every prefix of length ``p`` holds at least
    ``floor(share * p)`` of the ``reserved`` candidates (bool ``[n]``) while any are left,
    each group keeping its own order; otherwise the list's order. Scores stay by place: the
    ``p``-th score is still the ``p``-th, so a sorted list stays sorted (a later merge by score,
    the delta's, keeps the order) and an item moved up takes the score of the place it takes.
    ``share`` 0 returns the list unchanged; ``limit`` reorders only the first ``limit`` places
    (the rest follow in the list's order)."""
    if share <= 0 or len(ids) == 0 or not reserved.any() or reserved.all():
        return ids, scores
    res = np.flatnonzero(reserved)
    order: list[int] = []
    taken = np.zeros(len(ids), dtype=bool)
    n_res, next_res, nxt = 0, 0, 0
    places = len(ids) if limit is None else min(limit, len(ids))
    for p in range(1, places + 1):
        while taken[nxt]:
            nxt += 1
        while next_res < len(res) and taken[res[next_res]]:
            next_res += 1
        if next_res < len(res) and n_res < int(share * p + 1e-9):
            pick = int(res[next_res])
        else:
            pick = nxt
        taken[pick] = True
        n_res += int(reserved[pick])
        order.append(pick)
    idx = np.concatenate([np.asarray(order, dtype=np.int64), np.flatnonzero(~taken)])
    return ids[idx], scores


def covisit_rank(
    ids: np.ndarray,
    scores: np.ndarray,
    floor: float,
    table: CovisitTable,
    history_ids: np.ndarray,
    *,
    prior: Callable[[np.ndarray], np.ndarray] | None = None,
    prior_weight: float = 0.0,
    drop: np.ndarray | None = None,
    max_new: int | None = None,
    neighbours: tuple[np.ndarray, np.ndarray] | None = None,
    limit: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One request's ranking with co-visitation, as the served retriever does it.

    ``ids``/``scores`` are the retrieval candidates (no ``-1``) scored ``cosine +
    prior_weight * prior`` best first, ``floor`` the lowest cosine fetched; ``history_ids``
    the history handed on (oldest first). Its :meth:`CovisitTable.neighbours` (or the given
    ``neighbours``, the same precomputed), less ``drop`` (removed or changed items), the first
    ``max_new`` of them, join by :func:`blend_covisit` at :meth:`CovisitTable.request_weight`;
    then :func:`reserve_share` keeps ``table.cold_share`` of every prefix for cold candidates
    (of the first ``limit`` places: the ones returned). Without neighbours or weight the
    candidates come back unchanged.
    """
    if neighbours is None:  # only the first max_new are used: at most len(drop) fall out
        limit_new = None if max_new is None else max_new + (0 if drop is None else len(drop))
        neighbours = table.neighbours(history_ids, limit_new)
    cv_ids, cv = neighbours
    if drop is not None and len(drop) and len(cv_ids):
        keep = ~np.isin(cv_ids, drop)
        cv_ids, cv = cv_ids[keep], cv[keep]
    if max_new is not None:
        cv_ids, cv = cv_ids[:max_new], cv[:max_new]
    weight = table.request_weight(len(history_ids))
    if len(cv_ids) == 0 or weight <= 0 or len(ids) == 0:
        return ids, scores
    out_ids, out = blend_covisit(
        ids, scores, floor, cv_ids, cv, weight, prior=prior, prior_weight=prior_weight
    )
    return reserve_share(out_ids, out, table.is_cold(out_ids), table.cold_share, limit)


def covisit_lists(
    cos: np.ndarray,
    ids: np.ndarray,
    table: CovisitTable,
    histories: Sequence[np.ndarray],
    k: int,
    exclude: Sequence[np.ndarray],
    *,
    depth: int | None = None,
    prior: PriorLookup | None = None,
    prior_weight: float = 0.0,
    neighbours: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
    fetch: int | None = None,
) -> list[list[int]]:
    """Each user's top ``k`` item ids as the served retriever ranks a request without a query
    (:func:`covisit_ranked`, whose arguments these are)."""
    ranked = covisit_ranked(
        cos,
        ids,
        table,
        histories,
        exclude,
        depth=depth,
        prior=prior,
        prior_weight=prior_weight,
        neighbours=neighbours,
        fetch=fetch,
    )
    return [[int(i) for i in row_ids[:k]] for row_ids, _ in ranked]


def covisit_ranked(
    cos: np.ndarray,
    ids: np.ndarray,
    table: CovisitTable,
    histories: Sequence[np.ndarray],
    exclude: Sequence[np.ndarray],
    *,
    depth: int | None = None,
    prior: PriorLookup | None = None,
    prior_weight: float = 0.0,
    neighbours: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
    fetch: int | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each user's candidates as the served retriever returns them for a request without a
    query: item ids int64 and their retrieval scores float32 (``CANDIDATE_SCORES``), best
    first, at most ``depth`` (all when ``None``), ``exclude`` ids left out.

    ``cos``/``ids`` ``[U, F]``: the FAISS candidates by cosine, best first (``-1`` = none; ``F``
    the retriever's fetch: ``PRIOR_OVERFETCH * depth`` with a prior, ``depth`` without);
    ``histories`` each user's history handed on (oldest first, up to ``LONG_HISTORY``);
    ``exclude`` each user's ids never returned. Candidates are re-ranked with ``prior`` (when its
    weight is > 0), the best ``depth`` kept, ranked with the table by :func:`covisit_rank` and
    cut to ``depth`` again: exactly serving/retriever.py's steps. ``neighbours`` (each user's
    :meth:`CovisitTable.neighbours`) saves recomputing them while a fit varies the other
    settings. With ``fetch``, the ranking of a retriever that excludes the history
    (``exclude_recent``): each user's ``exclude`` ids are dropped from the candidates and the
    neighbours first, as if they were not in the index, and each row keeps its first
    ``fetch`` others (``F`` must then be ``fetch`` plus the longest exclusion).
    """
    from towers.features import rank_with_prior

    if fetch is not None:
        ids = ids.copy()
        for u, skip in enumerate(exclude):
            ids[u][np.isin(ids[u], skip)] = -1
        order = np.argsort(ids < 0, axis=1, kind="stable")  # the others first, by cosine
        cos = np.take_along_axis(cos, order, 1)[:, :fetch]
        ids = np.take_along_axis(ids, order, 1)[:, :fetch]

    ok_all = ids >= 0
    floors = np.where(ok_all, cos, np.inf).min(axis=1)
    use_prior = prior is not None and prior_weight > 0
    if use_prior:
        assert prior is not None
        base, ids = rank_with_prior(cos, ids, prior(np.maximum(ids, 0)), prior_weight)
    else:
        base = cos
    cut = ids.shape[1] if depth is None else depth
    base, ids = base[:, :cut], ids[:, :cut]
    out = []
    for u, skip in enumerate(exclude):
        ok = ids[u] >= 0
        top, top_scores = covisit_rank(
            ids[u][ok].astype(np.int64),
            base[u][ok].astype(np.float32),
            float(floors[u]) if ok_all[u].any() else 0.0,
            table,
            histories[u],
            prior=prior if use_prior else None,
            prior_weight=prior_weight if use_prior else 0.0,
            max_new=cos.shape[1],
            drop=np.asarray(skip, np.int64) if fetch is not None and len(skip) else None,
            neighbours=None if neighbours is None else neighbours[u],
            limit=cut,
        )
        top, top_scores = np.asarray(top, np.int64)[:cut], np.asarray(top_scores, np.float32)[:cut]
        keep = ~np.isin(top, np.asarray(skip, np.int64))
        out.append((top[keep], top_scores[keep]))
    return out


@dataclass(frozen=True)
class ValidationRanking:
    """A validation task ranked the way the served retriever ranks requests without a query,
    with what was known before it (:func:`validation_ranking`).

    ``table`` holds the neighbours of the events before the validation (its settings are
    varied by the fits); ``cos``/``ids`` the FAISS candidates of the task's users;
    ``exclude``/``fetch`` as :func:`covisit_ranked` takes them; ``prior``/``prior_weight``
    the prior as of the validation; ``label`` names the validation for logs; ``fit_events``
    and ``table_until`` what ``table`` was built from (to build it again with other settings).
    """

    task: NextItemTask
    table: CovisitTable
    cos: np.ndarray
    ids: np.ndarray
    depth: int
    exclude: Sequence[np.ndarray]
    fetch: int | None
    prior: PriorLookup | None
    prior_weight: float
    label: str
    fit_events: pd.DataFrame | None = None
    table_until: int | None = None

    def ranked(
        self,
        table: CovisitTable,
        neighbours: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Each user's served candidates and retrieval scores with ``table``
        (:func:`covisit_ranked`)."""
        return covisit_ranked(
            self.cos,
            self.ids,
            table,
            self.task.long_histories,
            self.exclude,
            depth=self.depth,
            prior=self.prior,
            prior_weight=self.prior_weight,
            neighbours=neighbours,
            fetch=self.fetch,
        )


def validation_ranking(
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
    validation: str = "time",
    l2: float = EASE_L2S[0],
    alpha: float = RP3_ALPHAS[0],
    beta: float = RP3_BETAS[0],
) -> ValidationRanking | None:
    """The validation of :func:`fit_model_covisit` (its arguments): the next-item task of the
    last ``validation_s`` seconds before ``at_ts``, or with ``validation="random"`` of a random
    :data:`towers.prior.RANDOM_VALIDATION_FRAC` of the events before it (every training item
    excluded; both from :func:`towers.prior.validation_split`), with the co-visitation table
    (``kind``, ``l2``, ``alpha``, ``beta``) and prior of the events before the validation,
    and each user's FAISS candidates. ``None`` when there is nothing to validate on.

    Raises:
        ValueError: ``validation`` is neither time nor random.
    """
    import faiss

    from towers.features import PRIOR_OVERFETCH, PriorLookup
    from towers.prior import VALIDATION_K, compute_prior, validation_split

    item_ids = np.asarray(item_ids, dtype=np.int64)
    split = validation_split(
        events, at_ts, validation, validation_s=validation_s, max_users=max_users, seed=seed
    )
    if split is None:
        return None
    task, fit_events, start, label = split.task, split.fit_events, split.until_ts, split.label
    table = build_covisit(
        fit_events, item_ids, until_ts=start, kind=kind, l2=l2, alpha=alpha, beta=beta
    )
    users = np.ascontiguousarray(user_vectors(task), dtype=np.float32)
    depth = min(max(n_candidates, VALIDATION_K), len(item_ids))
    lookup, pw = None, 0.0
    if prior is not None and prior.weight > 0:
        val = compute_prior(fit_events, item_ids, start, prior.half_life_s)
        lookup, pw = PriorLookup(item_ids, val.values, val.default), prior.weight
    fetch = min(PRIOR_OVERFETCH * depth, len(item_ids)) if pw > 0 else depth
    # the random protocol excludes every training item: ranked as a retriever that excludes
    # them (covisit_ranked's fetch), over a search that deep plus the longest exclusion
    exclude = task.excluded if validation == "random" else task.hist_ids
    keep = fetch if validation == "random" else None
    extra = max((len(e) for e in exclude), default=0) if keep is not None else 0
    index = faiss.IndexFlatIP(item_vectors.shape[1])
    index.add(np.ascontiguousarray(item_vectors, dtype=np.float32))
    cos, rows = index.search(users, min(fetch + extra, len(item_ids)))
    ids = np.where(rows >= 0, item_ids[np.maximum(rows, 0)], -1)
    return ValidationRanking(
        task, table, cos, ids, depth, exclude, keep, lookup, pw, label, fit_events, start
    )


def _fit_one_kind(
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
    validation: str = "time",
    per_user: list[float] | None = None,
    ease_l2s: Sequence[float] = EASE_L2S,
) -> tuple[CovisitTable, dict[str, float]]:
    """The co-visitation table of the events before ``at_ts``, its weight and settings fitted
    on the last ``validation_s`` seconds before it (default: the prior's validation window),
    or, with ``validation="random"`` (a model for the random protocol, towers/data/split.py),
    on a random :data:`towers.prior.RANDOM_VALIDATION_FRAC` of the events: the table and prior
    of the rest, the task of :func:`towers.next_item.random_split_task` (every training item
    excluded, ranked as a retriever with ``exclude_recent`` 1000 ranks), since that protocol's
    targets are spread over the whole time range, not after its end.

    The validation task is the next-item task of ``[at_ts - validation_s, at_ts)``, ranked the
    way the served retriever ranks a request without a query (:func:`covisit_lists`): the
    ``PRIOR_OVERFETCH`` x ``n_candidates`` best items by cosine, re-ranked with ``prior``
    (computed again as of the window start, with its half-life and weight), merged with the
    neighbours of the user's long history in a table built from the events before the window.
    The fit metric (:func:`fit_metric`: per-user Recall@50 for a time validation, the random
    protocol's own top-100 accuracy for a random one; "Recall@50" below) picks, in turn (ties:
    the first of each grid):

    0. for an EASE table, its ridge among ``ease_l2s`` (:data:`EASE_L2S`; :func:`_choose_ease_l2`:
       the first unless another is surely better, ranked by the table alone); for an RP3beta
       table, its ``alpha`` and ``beta`` among :data:`RP3_ALPHAS` x :data:`RP3_BETAS` by the
       same rule (:func:`_choose_rp3beta`);
    1. the weight of :data:`COVISIT_WEIGHTS`;
    2. ``history`` and ``decay`` (:data:`HISTORY_LENGTHS` x :data:`DECAYS`; lengths past the
       longest validation history are not tried: they read the same events as the first
       length that covers it);
    3. the weight again, then ``ramp`` (:data:`RAMPS`);
    4. ``cold_share`` (:data:`COLD_SHARES`): the best Recall@50 on cold targets (items
       without interactions before the window) among the shares whose overall Recall@50 is
       not surely below the best share's (the 95% paired bootstrap interval of the best
       one's per-user gain reaches 0); ties: the smaller share (:func:`choose_cold_share`;
       ``cold@text``, the towers alone on cold targets, is reported beside it).

    With no users to validate on, the weight is 0 (the table is kept but unused). Returns the
    table (an EASE table's ``l2`` the chosen ridge) and the validation scores (each the fit
    metric): ``l2=X`` (each candidate ridge's, EASE only), ``alpha=A,beta=B`` (each
    candidate pair's, RP3beta only), ``str(weight)`` (at the final settings),
    ``history=H,decay=D``, ``ramp=R``, ``cold_share=S`` (with ``cold@...`` twins, the cold
    targets' Recall@50 whatever the metric) and ``cold@text``, and ``final`` (the table
    returned).
    """
    from towers.metrics import recall_at_k
    from towers.prior import VALIDATION_K

    metric = fit_metric(validation)
    item_ids = np.asarray(item_ids, dtype=np.int64)
    if not ease_l2s:
        raise ValueError("ease_l2s must name at least one ridge")
    # the final table's kind (``auto`` resolved on all the events), for the validation tables
    # too; the final table itself is built once, with the ridge the validation chooses
    table_kind = covisit_kind(events, item_ids, until_ts=at_ts, kind=kind)
    val = validation_ranking(
        events,
        item_ids,
        at_ts,
        user_vectors,
        item_vectors,
        prior=prior,
        n_candidates=n_candidates,
        validation_s=validation_s,
        kind=table_kind,
        max_users=max_users,
        seed=seed,
        validation=validation,
        l2=ease_l2s[0],
    )
    if val is None:
        log.warning("no users to fit the co-visitation weight on: it stays unused")
        return build_covisit(events, item_ids, until_ts=at_ts, kind=table_kind, l2=ease_l2s[0]), {}
    scores: dict[str, float] = {}
    params = {"l2": ease_l2s[0], "alpha": RP3_ALPHAS[0], "beta": RP3_BETAS[0]}
    chosen: CovisitTable | None = None
    if table_kind == "ease" and len(ease_l2s) > 1:
        params["l2"], by_l2, chosen = _choose_ease_l2(val, item_ids, ease_l2s, metric)
        scores.update(by_l2)
    elif table_kind == "rp3beta":
        (params["alpha"], params["beta"]), by_ab, chosen = _choose_rp3beta(val, item_ids, metric)
        scores.update(by_ab)
    if chosen is not None and chosen is not val.table:
        val = dataclasses.replace(val, table=chosen)
    final = build_covisit(events, item_ids, until_ts=at_ts, kind=table_kind, **params)
    task, table, histories = val.task, val.table, val.task.long_histories
    cold_items = item_ids[table.is_cold(item_ids)]
    cold_targets = [t & set(map(int, cold_items)) for t in task.targets]
    cold_users = [u for u, t in enumerate(cold_targets) if t]
    cache: dict[tuple[int, float], list[tuple[np.ndarray, np.ndarray]]] = {}

    def lists(t: CovisitTable) -> list[list[int]]:
        key = (t.history, t.decay)
        if key not in cache:
            cache[key] = [t.neighbours(h) for h in histories]
        return [[int(i) for i in row[: metric.k]] for row, _ in val.ranked(t, cache[key])]

    def fit_score(t: CovisitTable) -> float:  # the fit metric (Recall@50 for a time validation)
        return metric.mean(lists(t), task.targets)

    def cold_recall(ranked: list[list[int]]) -> float:
        if not cold_users:
            return 0.0
        return recall_at_k(
            [ranked[u] for u in cold_users], [cold_targets[u] for u in cold_users], VALIDATION_K
        )

    current = table.with_settings(weight=0.0)

    def fit_weight(t: CovisitTable) -> CovisitTable:
        weight, by_weight = fit_covisit_weight(lambda w: fit_score(t.with_weight(w)))
        scores.update(by_weight)
        return t.with_weight(weight)

    current = fit_weight(current)
    if current.weight > 0:
        # a length beyond every validation history reads the same events as the one before it
        longest = max(len(h) for h in histories)
        lengths = [
            h for i, h in enumerate(HISTORY_LENGTHS) if i == 0 or HISTORY_LENGTHS[i - 1] < longest
        ]
        grid = {(h, d): current.with_settings(history=h, decay=d) for h in lengths for d in DECAYS}
        by_hd = {key: fit_score(t) for key, t in grid.items()}
        scores.update({f"history={h},decay={d}": v for (h, d), v in by_hd.items()})
        best_hd = max(grid, key=lambda key: by_hd[key])  # ties: the first in grid order
        current = fit_weight(grid[best_hd])
    if current.weight > 0:
        by_ramp = {r: fit_score(current.with_settings(ramp=r)) for r in RAMPS}
        scores.update({f"ramp={r}": v for r, v in by_ramp.items()})
        current = current.with_settings(ramp=max(RAMPS, key=lambda r: by_ramp[r]))
        text = cold_recall(lists(current.with_weight(0.0)))
        scores["cold@text"] = text
        overall, cold, users = {}, {}, {}
        for share in COLD_SHARES:
            ranked = lists(current.with_settings(cold_share=share))
            users[share] = metric.per_user(ranked, task.targets)
            overall[share] = float(users[share].mean()) if len(users[share]) else 0.0
            cold[share] = cold_recall(ranked)
            scores[f"cold_share={share}"] = overall[share]
            scores[f"cold@cold_share={share}"] = cold[share]
        current = current.with_settings(cold_share=choose_cold_share(users, cold, text))
    scores["final"] = fit_score(current) if current.weight > 0 else scores.get("0.0", 0.0)
    if per_user is not None:  # each validation user's fit metric with the table returned
        per_user[:] = metric.per_user(lists(current), task.targets).tolist()
    log.info(
        "co-visitation: %s, %s, fitted on %d users (%d with cold targets) of %s, validation "
        "%s %.4f",
        final.kind,
        current.settings(),
        len(task),
        len(cold_users),
        val.label,
        metric.name,
        scores["final"],
    )
    return final.fitted_like(current), scores


def _choose_ease_l2(
    val: ValidationRanking,
    item_ids: np.ndarray,
    l2s: Sequence[float],
    metric: FitMetric = RECALL_AT_50,
) -> tuple[float, dict[str, float], CovisitTable]:
    """The EASE ridge of ``l2s`` whose table (built from ``val``'s events) ranks ``val``'s
    users best: the first of ``l2s`` unless another is surely better
    (:func:`towers.metrics.surely_better_choice` on per-user ``metric``). Each candidate ranks
    by the table alone (the largest weight of :data:`COVISIT_WEIGHTS`, the longest history of
    :data:`HISTORY_LENGTHS`, no decay): the ridge shapes the table's own order, which the
    later fits then blend. Returns the ridge, the ``l2=X`` scores (each candidate's validation
    ``metric``) and its table."""
    if val.fit_events is None:
        raise ValueError("the validation does not say what its table was built from")
    tables: dict[float, CovisitTable] = {}
    for l2 in l2s:
        tables[l2] = (
            val.table
            if val.table.l2 == l2
            else build_covisit(
                val.fit_events, item_ids, until_ts=val.table_until, kind="ease", l2=l2
            )
        )
    picked, by_l2 = _choose_alone(val, tables, l2s[0], metric)
    chosen = float(picked)
    scores = {f"l2={l2:g}": v for l2, v in by_l2.items()}
    log.info("co-visitation: EASE ridge %g chosen on validation (%s)", chosen, scores)
    return chosen, scores, tables[chosen]


def _choose_rp3beta(
    val: ValidationRanking, item_ids: np.ndarray, metric: FitMetric = RECALL_AT_50
) -> tuple[tuple[float, float], dict[str, float], CovisitTable]:
    """RP3beta's ``(alpha, beta)`` among :data:`RP3_ALPHAS` x :data:`RP3_BETAS` whose table
    (built from ``val``'s events) ranks ``val``'s users best, by the rule and ranking of
    :func:`_choose_ease_l2` (the first pair unless another is surely better). Returns the pair,
    the ``alpha=A,beta=B`` scores and its table."""
    from towers.cooccurrence import interactions, rp3beta_similarity

    if val.fit_events is None:
        raise ValueError("the validation does not say what its table was built from")
    ids = np.sort(np.asarray(item_ids, dtype=np.int64))
    matrix = interactions(val.fit_events, ids, until_ts=val.table_until).matrix
    tables: dict[tuple[float, float], CovisitTable] = {}
    for alpha in RP3_ALPHAS:
        walks = rp3beta_similarity(matrix, alpha, RP3_BETAS, N_NEIGHBOURS)
        for beta, walk in walks.items():
            tables[(alpha, beta)] = _table_of(
                walk, ids, N_NEIGHBOURS, "rp3beta", l2=val.table.l2, alpha=alpha, beta=beta
            )
    default = (RP3_ALPHAS[0], RP3_BETAS[0])
    chosen, scores = _choose_alone(val, tables, default, metric)
    log.info("co-visitation: RP3beta alpha %g, beta %g chosen on validation", *chosen)
    return chosen, {f"alpha={a:g},beta={b:g}": v for (a, b), v in scores.items()}, tables[chosen]


def _choose_alone(
    val: ValidationRanking,
    tables: dict[Any, CovisitTable],
    default: Any,
    metric: FitMetric,
) -> tuple[Any, dict[Any, float]]:
    """The key of ``tables`` whose table alone (the largest weight of :data:`COVISIT_WEIGHTS`,
    the longest history of :data:`HISTORY_LENGTHS`, no decay) ranks ``val``'s users best by
    per-user ``metric``: ``default`` unless another is surely better
    (:func:`towers.metrics.surely_better_choice`). Returns it and each key's mean ``metric``."""
    from towers.metrics import surely_better_choice

    per_user: dict[Any, np.ndarray] = {}
    for key, table in tables.items():
        alone = table.with_settings(weight=max(COVISIT_WEIGHTS), history=max(HISTORY_LENGTHS))
        ranked = [[int(i) for i in row[: metric.k]] for row, _ in val.ranked(alone)]
        per_user[key] = metric.per_user(ranked, val.task.targets)
    chosen = surely_better_choice(per_user, default)
    return chosen, {k: float(v.mean()) if len(v) else 0.0 for k, v in per_user.items()}


def choose_cold_share(
    per_user: dict[float, np.ndarray], cold: dict[float, float], text_cold: float | None = None
) -> float:
    """The cold share to keep: ``per_user[s]`` are the validation users' Recall@50 with share
    ``s`` (the same users, in the same order, for every share), ``cold[s]`` the Recall@50 on
    cold targets, ``text_cold`` the towers' alone (no table).

    Cold start must stay good: the shares whose cold Recall@50 is at least ``text_cold`` are
    eligible (all, when none is or ``text_cold`` is ``None``). Among the eligible shares whose
    overall Recall@50 is not surely below the best share's (the 95% paired bootstrap interval
    of the best one's gain reaches 0), the one with the best cold Recall@50; when every
    eligible share is surely below it, the eligible share with the best overall Recall@50: the
    cheapest that keeps cold items retrievable. Ties: the smaller share. Overall figures of
    the shares differ by noise where the cold ones differ by a factor.

    Towers that never saw the validation (towers/train.py ``holdout_towers``) showed the cost
    the shared ones hid: on the demo data every share above 0 was surely below 0 overall
    (0.2589 at 0, 0.2531 at 0.1), and without the guarantee the fit kept no cold share, where
    cold Recall@50 was 0 against 0.042 for the towers alone and 0.058 at 0.1.
    """
    from towers.metrics import paired_gain

    eligible = [s for s in per_user if text_cold is None or cold[s] >= text_cold] or list(per_user)

    def overall(s: float) -> float:
        return float(per_user[s].mean()) if len(per_user[s]) else 0.0

    best = max(per_user, key=overall)
    near = [s for s in eligible if paired_gain(per_user[best], per_user[s])[1] <= 0.0]
    if near:
        return max(near, key=lambda s: (cold[s], -s))
    return max(eligible, key=lambda s: (overall(s), -s))


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
    validation: str = "time",
) -> tuple[CovisitTable, dict[str, float]]:
    """The co-visitation table of the events before ``at_ts`` and its fitted settings (the
    fit is :func:`_fit_one_kind`'s, which documents the arguments and scores).

    ``kind`` ``auto``: every kind of :data:`KINDS` is fitted (EASE only where it fits, at most
    :data:`COVISIT_EASE_MAX_ITEMS` interacted items) and the default kind (RP3beta) is kept
    unless another is surely better: the best of the others by mean validation fit metric
    (:func:`fit_metric`), kept when the 95% paired bootstrap interval of its per-user gain
    over the default lies above 0. Measured: RP3beta alone ranked above EASE on five
    generated data sets and protocols, and above or level with item-kNN
    (benchmarks/results/rp3beta_2026-12-01.md); until 2026-12-01 EASE was the default. The
    scores are the kept kind's, plus ``kind=K`` (each fitted kind's final fit metric) and
    ``kind_gain_lo=K`` (the lower bound of each other kind's gain over the default).
    """
    from towers.metrics import paired_gain, surely_better_choice

    def fit(kind: str, per_user: list[float]) -> tuple[CovisitTable, dict[str, float]]:
        return _fit_one_kind(
            events,
            item_ids,
            at_ts,
            user_vectors,
            item_vectors,
            prior=prior,
            n_candidates=n_candidates,
            validation_s=validation_s,
            kind=kind,
            max_users=max_users,
            seed=seed,
            validation=validation,
            per_user=per_user,
        )

    first_users: list[float] = []
    first, first_scores = fit(kind, first_users)
    if kind != "auto":
        return first, first_scores
    default = first.kind  # auto resolved: KINDS[0]
    fitted = {default: (first, first_scores, np.asarray(first_users))}
    ease_fits = _ease_fits(events, item_ids, at_ts)
    for other in KINDS:
        if other in fitted or (other == "ease" and not ease_fits):
            continue
        users: list[float] = []
        table, scores = fit(other, users)
        fitted[other] = (table, scores, np.asarray(users))
    summary = {f"kind={k}": sc.get("final", 0.0) for k, (_, sc, _) in fitted.items()}
    # the same validation users, in the same order, for every kind
    paired = {k: u for k, (_, _, u) in fitted.items() if len(u) == len(first_users)}
    for k, u in paired.items():
        if k != default:
            summary[f"kind_gain_lo={k}"] = paired_gain(u, paired[default])[1]
    chosen = surely_better_choice(paired, default) if len(paired) > 1 else default
    if chosen != default:
        log.info("co-visitation: %s chosen over %s on validation (%s)", chosen, default, summary)
    table, scores, _ = fitted[chosen]
    return table, {**scores, **summary}
