"""Collaborative baselines for next-item recommendation: item-kNN, RP3beta, EASE and ALS.

Each one learns only from who interacted with what (item identity, no text), which is what
the text towers lack: on real rating data these beat a most-popular list by a wide margin, so
a recommender that does not beat them is not worth serving. All three fit on the binary
user x item matrix of the events before a time cut (every event type counts once per user
and item) and score a user from that row of the matrix plus the request's history.

- :class:`ItemKNN`: cosine similarity of items' user sets (co-occurrence), each item's
  ``n_neighbours`` most similar kept; a user's score sums the similarities of their items.
- :class:`RP3Beta`: Paudel et al. (2017), the item -> user -> item random walk with its
  transition probabilities raised to ``alpha`` and the target's popularity divided out to
  the power ``beta`` (towers/cooccurrence.py); among the strongest simple baselines in
  Dacrema et al. (2019), "Are we really making much progress?".
- :class:`EASE`: Steck (2019), "Embarrassingly Shallow Autoencoders": the closed-form item x
  item ridge regression with a zero diagonal. Dense in the interacted items, so limited to
  :data:`EASE_MAX_ITEMS` of them (memory ``8 * n**2`` bytes, time ``n**3``).
- :class:`ALS`: implicit-feedback matrix factorisation (Hu, Koren, Volinsky 2008) from the
  ``implicit`` library, confidence ``1 + alpha * x``.

Hyper-parameters are the usual defaults of each method, not tuned on the test data, except
EASE's ridge and RP3beta's ``alpha`` and ``beta``: the served co-visitation table chooses
them on a validation window before the cut (towers/covisit.py :data:`~towers.covisit.EASE_L2S`,
:data:`~towers.covisit.RP3_ALPHAS`, :data:`~towers.covisit.RP3_BETAS`), so the baselines
choose their own the same way (:func:`fit_ease_l2`, :func:`fit_rp3beta`) and are never held
to settings the served path improved on.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from towers.cooccurrence import (
    EASE,
    EASE_MAX_ITEMS,
    Interactions,
    ItemKNN,
    RP3Beta,
    interactions,
    rp3beta_similarity,
)

log = logging.getLogger(__name__)

__all__ = [
    "ALS",
    "EASE",
    "EASE_MAX_ITEMS",
    "Interactions",
    "ItemKNN",
    "RP3Beta",
    "fit_ease_l2",
    "fit_rp3beta",
    "interactions",
    "top_k_excluding",
]


def fit_ease_l2(
    events: pd.DataFrame,
    item_ids: np.ndarray,
    at_ts: int,
    *,
    validation: str = "time",
    l2s: Sequence[float] | None = None,
    max_users: int = 1000,
    seed: int = 0,
) -> tuple[float, dict[str, float]]:
    """EASE's ridge for a baseline fitted on the events before ``at_ts``, chosen as the served
    table's is (towers/covisit.py ``_choose_ease_l2``): on the same validation (the next-item
    task of the last :data:`towers.prior.VALIDATION_S` seconds before ``at_ts`` with the events
    before it, or with ``validation="random"`` a random share of them,
    :func:`towers.prior.validation_events`), the first of ``l2s`` (default
    :data:`towers.covisit.EASE_L2S`, Steck's 500 first) unless another ranks the validation
    users surely better (:func:`towers.metrics.surely_better_choice`) in the table's fit
    metric (:func:`towers.metrics.fit_metric`: Recall@50 on a time validation, the random
    protocol's top-100 accuracy on a random one). Returns the ridge and ``l2=X`` validation
    scores in that metric (empty when there is nothing to validate on or too many items for
    EASE: the first ridge then).

    Raises:
        ValueError: ``validation`` is neither time nor random.
    """
    from towers.covisit import EASE_L2S
    from towers.metrics import fit_metric, surely_better_choice
    from towers.prior import validation_split

    grid = tuple(l2s) if l2s is not None else EASE_L2S
    item_ids = np.asarray(item_ids, dtype=np.int64)
    split = validation_split(events, at_ts, validation, max_users=max_users, seed=seed)
    if split is None or len(grid) == 1:
        return grid[0], {}
    task, metric = split.task, fit_metric(validation)
    data = interactions(split.fit_events, item_ids, until_ts=split.until_ts)
    rows = data.user_rows(task.user_ids, task.hist_ids)
    per_user: dict[float, np.ndarray] = {}
    for l2 in grid:
        try:
            model = EASE(data, l2=l2)
        except ValueError as exc:  # too many items: the baseline is skipped anyway
            log.warning("EASE ridge not fitted: %s", exc)
            return grid[0], {}
        ranked = top_k_excluding(model.scores(rows), item_ids, task.excluded, metric.k)
        per_user[l2] = metric.per_user(ranked, task.targets)
    chosen = float(surely_better_choice(per_user, grid[0]))
    scores = {f"l2={l2:g}": float(v.mean()) if len(v) else 0.0 for l2, v in per_user.items()}
    log.info("EASE baseline: ridge %g chosen on validation (%s)", chosen, scores)
    return chosen, scores


def fit_rp3beta(
    events: pd.DataFrame,
    item_ids: np.ndarray,
    at_ts: int,
    *,
    validation: str = "time",
    max_users: int = 1000,
    seed: int = 0,
) -> tuple[tuple[float, float], dict[str, float]]:
    """RP3beta's ``(alpha, beta)`` for a baseline fitted on the events before ``at_ts``,
    chosen as the served table's are (towers/covisit.py ``_choose_rp3beta``) on the validation
    of :func:`fit_ease_l2` and by its rule: the first pair of
    :data:`towers.covisit.RP3_ALPHAS` x :data:`towers.covisit.RP3_BETAS` unless another ranks
    the validation users surely better. Returns the pair and ``alpha=A,beta=B`` validation
    scores (empty when there is nothing to validate on: the first pair then).

    Raises:
        ValueError: ``validation`` is neither time nor random.
    """
    from towers.covisit import N_NEIGHBOURS, RP3_ALPHAS, RP3_BETAS
    from towers.metrics import fit_metric, surely_better_choice
    from towers.prior import validation_split

    default = (RP3_ALPHAS[0], RP3_BETAS[0])
    item_ids = np.asarray(item_ids, dtype=np.int64)
    split = validation_split(events, at_ts, validation, max_users=max_users, seed=seed)
    if split is None:
        return default, {}
    task, metric = split.task, fit_metric(validation)
    data = interactions(split.fit_events, item_ids, until_ts=split.until_ts)
    rows = data.user_rows(task.user_ids, task.hist_ids)
    per_user: dict[tuple[float, float], np.ndarray] = {}
    for alpha in RP3_ALPHAS:
        for beta, sim in rp3beta_similarity(data.matrix, alpha, RP3_BETAS, N_NEIGHBOURS).items():
            scores = np.asarray((rows @ sim).todense(), dtype=np.float32)
            ranked = top_k_excluding(scores, item_ids, task.excluded, metric.k)
            per_user[(alpha, beta)] = metric.per_user(ranked, task.targets)
    chosen = surely_better_choice(per_user, default)
    out = {f"alpha={a:g},beta={b:g}": float(v.mean()) if len(v) else 0.0
           for (a, b), v in per_user.items()}  # fmt: skip
    log.info("RP3beta baseline: alpha %g, beta %g chosen on validation (%s)", *chosen, out)
    return (float(chosen[0]), float(chosen[1])), out


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
