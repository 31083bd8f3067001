"""Item co-occurrence models learnt from who interacted with what: item-kNN, RP3beta and EASE.

Shared by the collaborative baselines of the evaluation (towers/evaluation/collaborative.py)
and the retriever's co-visitation table (towers/covisit.py). Both fit on the binary user x
item matrix of the events before a time cut (every event type counts once per user and item).

- :class:`ItemKNN`: cosine similarity of items' user sets, each item's ``n_neighbours`` most
  similar kept; a user's score sums the similarities of their items.
- :class:`RP3Beta`: Paudel et al. (2017), "Updatable, accurate, diverse, and scalable
  recommendations for interactive applications": the three-step random walk item -> user ->
  item over the binary matrix, each transition probability raised to ``alpha``, divided by
  the target item's popularity to the power ``beta`` (so the walk is not drawn only to the
  head), each item's ``n_neighbours`` strongest kept. Sparse, any catalog size; Dacrema et
  al. (2019) found it among the strongest simple baselines.
- :class:`EASE`: Steck (2019), "Embarrassingly Shallow Autoencoders": the closed-form item x
  item ridge regression with a zero diagonal. Dense in the interacted items, so limited to
  :data:`EASE_MAX_ITEMS` of them (memory ``8 * n**2`` bytes, time ``n**3``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

log = logging.getLogger(__name__)

__all__ = [
    "EASE",
    "EASE_MAX_ITEMS",
    "Interactions",
    "ItemKNN",
    "RP3Beta",
    "interactions",
    "keep_top",
    "rp3beta_similarity",
]

#: EASE inverts a dense matrix over the interacted items: 20,000 items is 3.2 GB in float64
#: and about a minute on two cores; above that it is skipped (with the reason in the report).
EASE_MAX_ITEMS = 20_000


@dataclass
class Interactions:
    """Binary users x items matrix (columns in ``item_ids`` order) and the row of each user."""

    matrix: sp.csr_matrix
    user_row: dict[int, int]
    item_ids: np.ndarray

    def user_rows(self, user_ids: Sequence[int], histories: Sequence[np.ndarray]) -> sp.csr_matrix:
        """One binary row per user: the user's row of the matrix (empty for an unknown user)
        plus the items of ``histories`` (unknown item ids ignored)."""
        col_of = {int(i): c for c, i in enumerate(self.item_ids)}
        rows, cols = [], []
        for r, (u, hist) in enumerate(zip(user_ids, histories)):
            row = self.user_row.get(int(u))
            if row is not None:
                start, end = self.matrix.indptr[row], self.matrix.indptr[row + 1]
                cols.extend(self.matrix.indices[start:end].tolist())
                rows.extend([r] * (end - start))
            known = [col_of[int(i)] for i in hist if int(i) in col_of]
            cols.extend(known)
            rows.extend([r] * len(known))
        out = sp.csr_matrix(
            (np.ones(len(rows), dtype=np.float32), (rows, cols)),
            shape=(len(user_ids), len(self.item_ids)),
        )
        out.data[:] = 1.0  # duplicates summed by the constructor: back to binary
        return out


def interactions(
    events: pd.DataFrame, item_ids: np.ndarray, *, until_ts: int | None = None
) -> Interactions:
    """The binary matrix of ``events`` before ``until_ts`` (unix s; all when ``None``) over
    the catalog ``item_ids``; events of items outside the catalog are ignored."""
    ev = events if until_ts is None else events[events["ts"].to_numpy() < until_ts]
    item_ids = np.asarray(item_ids, dtype=np.int64)
    col = pd.Series(np.arange(len(item_ids)), index=item_ids)
    cols = col.reindex(ev["item_id"].to_numpy()).to_numpy()
    known = ~np.isnan(cols)
    users = ev["user_id"].to_numpy()[known]
    uniq, rows = np.unique(users, return_inverse=True)
    matrix = sp.csr_matrix(
        (np.ones(len(rows), dtype=np.float32), (rows, cols[known].astype(np.int64))),
        shape=(len(uniq), len(item_ids)),
    )
    matrix.data[:] = 1.0
    return Interactions(matrix, {int(u): r for r, u in enumerate(uniq)}, item_ids)


class ItemKNN:
    """Item-based kNN: cosine over items' user sets, ``n_neighbours`` kept per item."""

    def __init__(self, data: Interactions, n_neighbours: int = 100) -> None:
        x = data.matrix.tocsc().astype(np.float32)
        norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=0)).ravel())
        xn = x @ sp.diags(1.0 / np.maximum(norms, 1e-9))
        sim = (xn.T @ xn).tocsr()
        sim.setdiag(0.0)
        sim.eliminate_zeros()
        self.similarity = keep_top(sim, n_neighbours)
        self.data = data

    def scores(self, rows: sp.csr_matrix) -> np.ndarray:
        """``[U, n_items]`` scores of binary user rows (from :meth:`Interactions.user_rows`)."""
        return np.asarray((rows @ self.similarity).todense(), dtype=np.float32)


def rp3beta_similarity(
    matrix: sp.csr_matrix, alpha: float, betas: Sequence[float], n_neighbours: int
) -> dict[float, sp.csr_matrix]:
    """RP3beta item x item weights of the binary users x items ``matrix`` for one ``alpha``
    and each of ``betas`` (the walk is computed once; ``beta`` only rescales its columns):
    ``W[i, j] = sum_u (x_ui / deg_i) ** alpha * (x_uj / deg_u) ** alpha / deg_j ** beta``, the
    diagonal zeroed, each row's ``n_neighbours`` largest kept.

    Raises:
        ValueError: ``alpha`` <= 0, a negative ``beta``, or ``n_neighbours`` < 1.
    """
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    if any(b < 0 for b in betas):
        raise ValueError(f"beta must be >= 0, got {list(betas)}")
    if n_neighbours < 1:
        raise ValueError(f"n_neighbours must be >= 1, got {n_neighbours}")
    x = sp.csr_matrix(matrix, dtype=np.float32)
    user_deg = np.asarray(x.sum(axis=1)).ravel()
    item_deg = np.asarray(x.sum(axis=0)).ravel()
    user_to_item = (sp.diags(1.0 / np.maximum(user_deg, 1.0)) @ x).tocsr()  # P(j | u)
    item_to_user = (sp.diags(1.0 / np.maximum(item_deg, 1.0)) @ x.T.tocsr()).tocsr()  # P(u | i)
    user_to_item.data **= alpha
    item_to_user.data **= alpha
    walk = (item_to_user @ user_to_item).tocsr()
    walk.setdiag(0.0)
    walk.eliminate_zeros()
    out = {}
    for beta in betas:
        scaled = (walk @ sp.diags(np.maximum(item_deg, 1.0) ** -float(beta))).tocsr()
        out[float(beta)] = keep_top(scaled, n_neighbours)
    return out


class RP3Beta:
    """RP3beta (module docstring): ``alpha`` > 0 sharpens (> 1) or flattens (< 1) the walk's
    transition probabilities, ``beta`` >= 0 penalises popular targets (0: plain P3)."""

    def __init__(
        self, data: Interactions, alpha: float = 0.5, beta: float = 0.3, n_neighbours: int = 100
    ) -> None:
        self.similarity = rp3beta_similarity(data.matrix, alpha, (beta,), n_neighbours)[float(beta)]
        self.alpha, self.beta = float(alpha), float(beta)
        self.data = data

    def scores(self, rows: sp.csr_matrix) -> np.ndarray:
        """``[U, n_items]`` scores of binary user rows (from :meth:`Interactions.user_rows`)."""
        return np.asarray((rows @ self.similarity).todense(), dtype=np.float32)


class EASE:
    """EASE with ridge ``l2`` over the items with interactions (others score 0).

    Raises:
        ValueError: more than :data:`EASE_MAX_ITEMS` items have interactions.
    """

    def __init__(self, data: Interactions, l2: float = 500.0) -> None:
        x = data.matrix.tocsc()
        active = np.flatnonzero(np.diff(x.indptr) > 0)
        if len(active) > EASE_MAX_ITEMS:
            raise ValueError(
                f"EASE needs a dense {len(active)}^2 matrix: at most {EASE_MAX_ITEMS} items "
                "with interactions"
            )
        xa = x[:, active]
        gram = np.asarray((xa.T @ xa).todense(), dtype=np.float64)
        gram[np.diag_indices_from(gram)] += l2
        inv = np.linalg.inv(gram)
        weights = -inv / np.diag(inv)[None, :]
        weights[np.diag_indices_from(weights)] = 0.0
        self.active = active
        self.weights = weights.astype(np.float32)
        self.n_items = x.shape[1]

    def scores(self, rows: sp.csr_matrix) -> np.ndarray:
        """``[U, n_items]`` scores of binary user rows."""
        out = np.zeros((rows.shape[0], self.n_items), dtype=np.float32)
        out[:, self.active] = np.asarray(rows[:, self.active] @ self.weights, dtype=np.float32)
        return out


def keep_top(sim: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """Each row's ``k`` largest entries (the item's nearest neighbours)."""
    indptr, indices, data = [0], [], []
    for r in range(sim.shape[0]):
        start, end = sim.indptr[r], sim.indptr[r + 1]
        vals, cols = sim.data[start:end], sim.indices[start:end]
        if len(vals) > k:
            keep = np.argpartition(-vals, k - 1)[:k]
            vals, cols = vals[keep], cols[keep]
        indices.extend(cols.tolist())
        data.extend(vals.tolist())
        indptr.append(len(indices))
    return sp.csr_matrix(
        (np.asarray(data, dtype=np.float32), np.asarray(indices), np.asarray(indptr)),
        shape=sim.shape,
    )
