"""Item co-occurrence models learnt from who interacted with what: item-kNN and EASE.

Shared by the collaborative baselines of the evaluation (towers/evaluation/collaborative.py)
and the retriever's co-visitation table (towers/covisit.py). Both fit on the binary user x
item matrix of the events before a time cut (every event type counts once per user and item).

- :class:`ItemKNN`: cosine similarity of items' user sets, each item's ``n_neighbours`` most
  similar kept; a user's score sums the similarities of their items.
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

__all__ = ["EASE", "EASE_MAX_ITEMS", "Interactions", "ItemKNN", "interactions", "keep_top"]

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
