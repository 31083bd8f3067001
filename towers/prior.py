"""The trending-popularity prior of the retriever, and how its weight is fitted.

Two towers score by cosine, and item vectors come from text alone, so they cannot know what
sells *now*. For requests without a query (recommendation) the retriever therefore ranks by
``cosine(user, item) + weight * prior(item)``, where ``prior`` is the standardised
``log1p`` of the item's interaction count decayed by age (half-life ``half_life_s``) as of a
time ``at_ts``. It is part of the model version: ``towerserve train`` computes it as of its
training cut and fits ``weight`` on the newest training events; ``towerserve train --from``
(the incremental update) recomputes it as of the end of its window, which is what makes an
update catch new trends in seconds.

Search requests (non-empty query) rank by cosine alone: graded search relevance is about the
text, not about what is popular.

While serving, the prior moves with the live event stream (serving/prior_stream.py): the
retriever decays the raw counts to the newest event time and adds new events, then applies the
*same* standardisation (``mean``, ``std`` of ``log1p`` counts at ``at_ts``), so the fitted
weight keeps its meaning. For that the bundle carries the raw decayed ``counts`` beside the
values (:func:`bundle_arrays`) and the manifest's ``prior`` the ``mean`` and ``std``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import faiss
import numpy as np
import pandas as pd

from towers.bundle_contract import PRIOR_META_FILE, PRIOR_VALUES_FILE
from towers.metrics import FitMetric, fit_metric

if TYPE_CHECKING:
    from towers.next_item import NextItemTask

log = logging.getLogger(__name__)

__all__ = [
    "PRIOR_FILE",
    "NO_DECAY_S",
    "PRIOR_HALF_LIFE_S",
    "PRIOR_HALF_LIVES_S",
    "PRIOR_META_FILE",
    "PRIOR_WEIGHTS",
    "RANDOM_VALIDATION_FRAC",
    "ItemPrior",
    "bundle_arrays",
    "compute_prior",
    "fit_model_prior",
    "fit_prior_weight",
    "load_prior",
    "save_prior",
    "validation_events",
    "validation_split",
    "ValidationSplit",
]

#: Half-life of an interaction's contribution to the prior: 3 days, in seconds (the default
#: of :func:`compute_prior`; training chooses among :data:`PRIOR_HALF_LIVES_S`).
PRIOR_HALF_LIFE_S = 3 * 86_400.0
#: "No decay": a half-life of 100 years (finite, so it stays plain JSON in the manifest).
NO_DECAY_S = 100 * 365 * 86_400.0
#: Half-lives :func:`fit_model_prior` chooses from on validation, seconds: a day, 3 days, a
#: week, a month and no decay (data spanning years wants a long memory; launches a short one).
PRIOR_HALF_LIVES_S = (86_400.0, 3 * 86_400.0, 7 * 86_400.0, 30 * 86_400.0, NO_DECAY_S)
#: Candidate weights tried by :func:`fit_prior_weight` (the prior is standardised and cosine
#: is in [-1, 1], so 0.05 moves an item by a twentieth of the cosine range per std).
PRIOR_WEIGHTS = (0.0, 0.01, 0.02, 0.03, 0.04, 0.05, 0.07, 0.1, 0.15, 0.2)
#: Length of the validation window the weight is fitted on: the last 3 days before the cut.
VALIDATION_S = 3 * 86_400.0
#: List length of the Recall@K a time validation's fits maximise (and the cold share reads).
VALIDATION_K = 50
#: Share of the events held out at random to fit a model for the random protocol (its prior,
#: co-visitation table and blends: :func:`validation_events` ``validation="random"``).
RANDOM_VALIDATION_FRAC = 0.1
#: The artifacts' file names (the bundle contract's; old names kept for importers).
PRIOR_FILE = PRIOR_VALUES_FILE


@dataclass(frozen=True)
class ItemPrior:
    """Per-item prior values (``values[r]`` for items-table row ``r``) and how they were made.

    ``default`` is the value of an item with no interactions (new items get it); ``at_ts`` the
    unix second the counts stop at; ``weight`` the fitted weight for history-only requests.
    ``mean`` and ``std`` standardise ``log1p(counts)`` into ``values``; ``counts`` are the raw
    decayed counts (float64 ``[n]``) as of ``at_ts``. The three are ``None`` for a prior read
    from artifacts made before the moving prior (:func:`bundle_arrays` recounts them).
    """

    values: np.ndarray  # float32 [n]
    default: float
    at_ts: int
    half_life_s: float
    weight: float = 0.0
    mean: float | None = None
    std: float | None = None
    counts: np.ndarray | None = None  # float64 [n]

    def meta(self) -> dict[str, float | int]:
        """The scalars (manifest ``prior``, ``prior.json``); ``mean``/``std`` when known."""
        doc: dict[str, float | int] = {
            "default": self.default,
            "at_ts": self.at_ts,
            "half_life_s": self.half_life_s,
            "weight": self.weight,
        }
        if self.mean is not None and self.std is not None:
            doc["mean"], doc["std"] = self.mean, self.std
        return doc

    def with_weight(self, weight: float) -> ItemPrior:
        return replace(self, weight=float(weight))


def compute_prior(
    events: pd.DataFrame,
    item_ids: np.ndarray,
    at_ts: int,
    half_life_s: float = PRIOR_HALF_LIFE_S,
    weight: float = 0.0,
) -> ItemPrior:
    """The prior as of ``at_ts``: every event before it counts ``0.5 ** (age / half_life_s)``.

    Raises:
        ValueError: ``half_life_s`` is not positive.
    """
    if not half_life_s > 0:
        raise ValueError(f"half_life_s must be > 0, got {half_life_s}")
    ts = events["ts"].to_numpy(np.int64)
    keep = ts < at_ts
    decay = np.exp2(-(at_ts - ts[keep]) / half_life_s)
    counts = pd.Series(decay).groupby(events["item_id"].to_numpy()[keep]).sum()
    decayed = counts.reindex(item_ids, fill_value=0.0).to_numpy(np.float64)
    raw = np.log1p(decayed)
    mean, std = raw.mean(), raw.std()
    std = std if std > 0 else 1.0
    values = ((raw - mean) / std).astype(np.float32)
    return ItemPrior(
        values,
        float(-mean / std),
        int(at_ts),
        float(half_life_s),
        float(weight),
        mean=float(mean),
        std=float(std),
        counts=decayed,
    )


def bundle_arrays(
    prior: ItemPrior, item_ids: np.ndarray, events: pd.DataFrame
) -> tuple[ItemPrior, dict[str, np.ndarray]]:
    """What the bundle's ``item_prior.npz`` holds (``item_ids``, ``values`` and, for the
    moving prior, ``counts``) and the prior whose :meth:`ItemPrior.meta` goes into the manifest.

    A prior without raw counts (artifacts trained before the moving prior) is recounted from
    ``events`` as of its ``at_ts`` with its half-life; when the recount does not reproduce its
    values (another data set) the counts are left out, and the served prior stays frozen
    (logged)."""
    if prior.counts is None:
        again = compute_prior(events, item_ids, prior.at_ts, prior.half_life_s, prior.weight)
        if np.allclose(again.values, prior.values, atol=1e-4):
            prior = replace(again, values=prior.values, default=prior.default)
        else:
            log.warning(
                "the prior's values are not reproduced by recounting the data set's events: "
                "the served prior stays frozen (no raw counts in the bundle)"
            )
    arrays = {"item_ids": np.asarray(item_ids, np.int64), "values": prior.values}
    if prior.counts is not None:
        arrays["counts"] = np.asarray(prior.counts, np.float64)
    return prior, arrays


def fit_prior_weight(
    evaluate: Callable[[float], float],
    weights: tuple[float, ...] = PRIOR_WEIGHTS,
    *,
    what: str = "prior",
) -> tuple[float, dict[str, float]]:
    """The weight with the best ``evaluate(weight)`` (a validation metric, higher is better;
    ties go to the smaller weight), and every weight's score keyed by ``str(weight)``."""
    scores = {str(w): float(evaluate(w)) for w in weights}
    best = max(weights, key=lambda w: (scores[str(w)], -w))
    log.info("%s weight %.3f (validation %s)", what, best, scores)
    return float(best), scores


def save_prior(prior: ItemPrior, folder: Path) -> None:
    """``item_prior.npy`` (float32, items-table order) and ``prior.json`` into ``folder``."""
    np.save(folder / PRIOR_FILE, prior.values.astype(np.float32))
    (folder / PRIOR_META_FILE).write_text(json.dumps(prior.meta(), indent=2))


def load_prior(folder: Path) -> ItemPrior | None:
    """The prior saved in ``folder``, or ``None`` for artifacts made before it existed."""
    meta_path = folder / PRIOR_META_FILE
    if not meta_path.is_file() or not (folder / PRIOR_FILE).is_file():
        return None
    meta = json.loads(meta_path.read_text())
    return ItemPrior(
        np.load(folder / PRIOR_FILE).astype(np.float32),
        float(meta["default"]),
        int(meta["at_ts"]),
        float(meta["half_life_s"]),
        float(meta.get("weight", 0.0)),
        mean=float(meta["mean"]) if "mean" in meta else None,
        std=float(meta["std"]) if "std" in meta else None,
    )


def validation_events(
    events: pd.DataFrame,
    at_ts: int,
    validation: str = "time",
    *,
    validation_s: float | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Which rows of ``events`` the fits validate on (bool ``[len(events)]``): with
    ``validation="time"`` those of the last ``validation_s`` seconds before ``at_ts`` (default
    :data:`VALIDATION_S`); with ``"random"`` a random :data:`RANDOM_VALIDATION_FRAC` of the
    events before ``at_ts`` (``seed``). The one definition the prior's fit
    (:func:`fit_model_prior`), the co-visitation fits (:func:`towers.covisit.validation_ranking`)
    and the holdout towers of towers/train.py share.

    Raises:
        ValueError: ``validation`` is neither time nor random.
    """
    if validation not in ("time", "random"):
        raise ValueError(f"validation must be time or random, got {validation!r}")
    ts = events["ts"].to_numpy()
    before = ts < at_ts
    if validation == "random":
        mask = np.zeros(len(events), dtype=bool)
        draws = np.random.default_rng(seed).random(int(before.sum()))
        mask[np.flatnonzero(before)] = draws < RANDOM_VALIDATION_FRAC
        return mask
    window = VALIDATION_S if validation_s is None else validation_s
    return before & (ts >= int(at_ts - window))


@dataclass(frozen=True)
class ValidationSplit:
    """What a fit validates on (:func:`validation_split`): ``task`` the validation users'
    next-item task, ``fit_events`` the events the fitted thing may count, ``until_ts`` the
    second before which it counts them, ``label`` the validation's name for logs."""

    task: NextItemTask
    fit_events: pd.DataFrame
    until_ts: int
    label: str


def validation_split(
    events: pd.DataFrame,
    at_ts: int,
    validation: str = "time",
    *,
    validation_s: float | None = None,
    max_users: int = 1000,
    seed: int = 0,
) -> ValidationSplit | None:
    """The validation of the fits as of ``at_ts``, one definition for the prior, the
    co-visitation table and the EASE baseline: with ``validation="time"`` the next-item task
    of the last ``validation_s`` seconds (default :data:`VALIDATION_S`) with the events
    before that window; with ``"random"`` the random protocol's task of the
    :func:`validation_events` share (every other training item of the user excluded) with the
    rest, counted up to ``at_ts``. ``None`` when no user is left to validate on.

    Raises:
        ValueError: ``validation`` is neither time nor random.
    """
    from towers.next_item import next_item_task, random_split_task

    if validation not in ("time", "random"):
        raise ValueError(f"validation must be time or random, got {validation!r}")
    before = events["ts"].to_numpy() < at_ts
    if validation == "random":
        held = validation_events(events, at_ts, "random", seed=seed)
        fit_events = events[before & ~held]
        if len(fit_events) == 0:
            return None
        task = random_split_task(fit_events, events[held], max_users=max_users, seed=seed)
        until, label = int(at_ts), f"a random {RANDOM_VALIDATION_FRAC:.0%} of the events"
    else:
        window = VALIDATION_S if validation_s is None else validation_s
        until, label = int(at_ts - window), f"the last {window / 86_400:.1f} days"
        fit_events = events[before]
        task = next_item_task(events, until, int(at_ts), max_users=max_users, seed=seed)
    return ValidationSplit(task, fit_events, until, label) if len(task) else None


def fit_model_prior(
    events: pd.DataFrame,
    item_ids: np.ndarray,
    at_ts: int,
    user_vectors: Callable[[NextItemTask], np.ndarray],
    item_vectors: np.ndarray,
    *,
    validation_s: float = VALIDATION_S,
    half_lives_s: tuple[float, ...] = PRIOR_HALF_LIVES_S,
    max_users: int = 1000,
    seed: int = 0,
    validation: str = "time",
    metric: FitMetric | None = None,
) -> tuple[ItemPrior, dict[str, float]]:
    """The prior as of ``at_ts`` with its half-life and weight fitted on the last
    ``validation_s`` seconds before it, or, with ``validation="random"`` (a model for the
    random protocol), on the random share of the events the co-visitation fit holds out
    (:func:`validation_events`, same ``seed``): that protocol's targets are
    spread over the whole time range, not after its end.

    The validation task is the next-item task of ``[at_ts - validation_s, at_ts)`` (see
    :mod:`towers.evaluation.recommend`), or the random protocol's task of the held-out share
    (every other item of the user excluded), ranked the way the served retriever ranks: the
    ``PRIOR_OVERFETCH`` x depth best items by cosine, re-ranked with a prior computed as of the
    window start (of the events left in, as of ``at_ts``, for a random validation); the
    (half-life, weight) pair with the best ``metric`` wins (default
    :func:`towers.metrics.fit_metric`: Recall@50 for a time validation, top-100 accuracy for a
    random one, the metric its protocol judges; ties: the first half-life of
    ``half_lives_s``, the smaller weight). With no users to validate on the weight is 0
    (cosine only) and the half-life the first one. ``user_vectors`` maps a task to its user
    vectors ``[U, dim]``. Returns the prior and the validation ``metric`` of each pair, keyed
    ``"<half-life days>d/<weight>"``.

    Raises:
        ValueError: ``half_lives_s`` is empty, or ``validation`` is neither time nor random.
    """
    from towers.features import MAX_HISTORY, PRIOR_OVERFETCH, rank_with_prior
    from towers.next_item import exclude_history

    if not half_lives_s:
        raise ValueError("half_lives_s must name at least one half-life")
    split = validation_split(
        events, at_ts, validation, validation_s=validation_s, max_users=max_users, seed=seed
    )
    if split is None:
        log.warning("no users to fit the prior weight on: the retriever ranks by cosine only")
        return compute_prior(events, item_ids, at_ts, half_lives_s[0]), {}
    task, prior_events, start, label = split.task, split.fit_events, split.until_ts, split.label
    metric = fit_metric(validation) if metric is None else metric
    users = np.ascontiguousarray(user_vectors(task), dtype=np.float32)
    longest = max((len(e) for e in task.excluded), default=0)
    depth = min(PRIOR_OVERFETCH * (metric.k + max(MAX_HISTORY, longest)), len(item_ids))
    index = faiss.IndexFlatIP(item_vectors.shape[1])
    index.add(np.ascontiguousarray(item_vectors, dtype=np.float32))
    cos, rows = index.search(users, depth)

    scores: dict[str, float] = {}
    best: tuple[float, float, float] | None = None  # (metric, half-life, weight)
    for half_life in half_lives_s:
        val_prior = compute_prior(prior_events, item_ids, start, half_life).values

        def fit_score(weight: float, val_prior: np.ndarray = val_prior) -> float:
            _, ranked = rank_with_prior(cos, rows, val_prior[np.maximum(rows, 0)], weight)
            return metric.mean(exclude_history(ranked, item_ids, task, metric.k), task.targets)

        weight, by_weight = fit_prior_weight(fit_score)
        for w, r in by_weight.items():
            scores[f"{half_life / 86_400:g}d/{w}"] = r
        if best is None or by_weight[str(weight)] > best[0]:
            best = (by_weight[str(weight)], half_life, weight)
    assert best is not None
    _, half_life, weight = best
    log.info(
        "prior: half-life %.1f days, weight %.3f, fitted on %s of %d users of %s",
        half_life / 86_400,
        weight,
        metric.name,
        len(task),
        label,
    )
    return compute_prior(events, item_ids, at_ts, half_life, weight), scores
