"""Collaborative baselines for next-item recommendation: item-kNN, EASE and ALS.

Each one learns only from who interacted with what (item identity, no text), which is what
the text towers lack: on real rating data these beat a most-popular list by a wide margin, so
a recommender that does not beat them is not worth serving. All three fit on the binary
user x item matrix of the events before a time cut (every event type counts once per user
and item) and score a user from that row of the matrix plus the request's history.

- :class:`ItemKNN`: cosine similarity of items' user sets (co-occurrence), each item's
  ``n_neighbours`` most similar kept; a user's score sums the similarities of their items.
- :class:`EASE`: Steck (2019), "Embarrassingly Shallow Autoencoders": the closed-form item x
  item ridge regression with a zero diagonal. Dense in the interacted items, so limited to
  :data:`EASE_MAX_ITEMS` of them (memory ``8 * n**2`` bytes, time ``n**3``).
- :class:`ALS`: implicit-feedback matrix factorisation (Hu, Koren, Volinsky 2008) from the
  ``implicit`` library, confidence ``1 + alpha * x``.

Hyper-parameters are the usual defaults of each method, not tuned on the test data.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from towers.cooccurrence import EASE, EASE_MAX_ITEMS, Interactions, ItemKNN, interactions

log = logging.getLogger(__name__)

__all__ = [
    "ALS",
    "EASE",
    "EASE_MAX_ITEMS",
    "Interactions",
    "ItemKNN",
    "interactions",
    "top_k_excluding",
]


def top_k_excluding(
    scores: np.ndarray, item_ids: np.ndarray, exclude: Sequence[np.ndarray], k: int
) -> list[list[int]]:
    """Item ids of the ``k`` best ``scores`` per row (``[U, n_items]``), leaving out each
    row's ``exclude`` ids; ties broken by catalog order."""
    col_of = {int(i): c for c, i in enumerate(item_ids)}
    out = []
    for row, skip in zip(scores, exclude):
        row = row.astype(np.float64, copy=True)
        cols = [col_of[int(i)] for i in skip if int(i) in col_of]
        row[cols] = -np.inf
        kk = min(k, len(row))
        part = np.argpartition(-row, kk - 1)[:kk] if kk else np.empty(0, dtype=np.int64)
        part = part[np.isfinite(row[part])]
        best = part[np.lexsort((part, -row[part]))]
        out.append([int(item_ids[c]) for c in best])
    return out


class ALS:
    """Implicit ALS (``implicit.cpu.als``): ``factors`` dimensions, confidence
    ``1 + alpha * x``, ``iterations`` sweeps, seeded."""

    def __init__(
        self,
        data: Interactions,
        factors: int = 64,
        regularization: float = 0.05,
        alpha: float = 10.0,
        iterations: int = 15,
        seed: int = 7,
    ) -> None:
        from implicit.cpu.als import AlternatingLeastSquares
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1, "blas"):  # implicit parallelises itself (its advice)
            self.model = AlternatingLeastSquares(
                factors=factors,
                regularization=regularization,
                alpha=alpha,
                iterations=iterations,
                random_state=seed,
            )
            self.model.fit(data.matrix.astype(np.float32), show_progress=False)
        self.data = data

    def scores(self, rows: sp.csr_matrix) -> np.ndarray:
        """``[U, n_items]`` scores: each user's factors recomputed from ``rows`` (so a history
        the fit never saw counts), dotted with the item factors."""
        users = self.model.recalculate_user(np.arange(rows.shape[0]), rows.astype(np.float32))
        return np.asarray(users @ self.model.item_factors.T, dtype=np.float32)
