"""How sure a figure is: percentile bootstrap intervals over users or queries.

Every metric of the search and recommendation sections is a mean over queries or users; its
95% interval comes from resampling those queries or users with replacement
(:data:`N_BOOT` times, seeded, so a report is reproducible). A comparison of two systems
(a difference or a ratio of means) resamples the *same* users for both (a paired bootstrap),
which is much tighter than two separate intervals because both systems face the same hard
and easy users.

A check decided on fewer than :data:`MIN_COUNT` users or queries, or whose interval contains
its threshold, is *inconclusive*: the report says so instead of passing or failing it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

__all__ = ["LEVEL", "MIN_COUNT", "N_BOOT", "bootstrap_ci", "paired_ci", "verdict"]

#: Resamples per interval: the interval ends move by about 0.1 standard errors between seeds.
N_BOOT = 1000
#: Coverage of the intervals.
LEVEL = 0.95
#: Fewest users or queries on which a check may pass or fail.
MIN_COUNT = 200

Stat = Literal["diff", "ratio"]


def _resample_means(values: np.ndarray, idx: np.ndarray) -> np.ndarray:
    return values[idx].mean(axis=1)


def _indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def _bounds(samples: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1.0 - level) / 2 * 100
    lo, hi = np.nanpercentile(samples, [tail, 100 - tail])
    return float(lo), float(hi)


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    *,
    n_boot: int = N_BOOT,
    level: float = LEVEL,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (one per user or query);
    ``(nan, nan)`` when there are none."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) == 0:
        return float("nan"), float("nan")
    return _bounds(_resample_means(v, _indices(len(v), n_boot, seed)), level)


def paired_ci(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    stat: Stat,
    *,
    n_boot: int = N_BOOT,
    level: float = LEVEL,
    seed: int = 0,
) -> tuple[float, float, float]:
    """``(value, lo, hi)`` of ``mean(a) - mean(b)`` (``diff``) or ``mean(a) / mean(b)``
    (``ratio``) with a paired bootstrap interval: ``a[i]`` and ``b[i]`` are the same user's.

    Raises:
        ValueError: ``a`` and ``b`` differ in length, or ``stat`` is unknown.
    """
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"paired values differ in length: {len(x)} and {len(y)}")
    if stat not in ("diff", "ratio"):
        raise ValueError(f"stat must be diff or ratio, got {stat!r}")
    if len(x) == 0:
        nan = float("nan")
        return nan, nan, nan
    idx = _indices(len(x), n_boot, seed)
    mx, my = _resample_means(x, idx), _resample_means(y, idx)
    if stat == "diff":
        value, samples = x.mean() - y.mean(), mx - my
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            value = x.mean() / y.mean() if y.mean() > 0 else float("inf")
            samples = np.where(my > 0, mx / np.where(my > 0, my, 1.0), np.inf)
    lo, hi = _bounds(samples, level)
    return float(value), lo, hi


def verdict(
    value: float,
    threshold: float,
    *,
    higher_is_better: bool = True,
    n: int | None = None,
    ci: tuple[float, float] | None = None,
    min_count: int = MIN_COUNT,
) -> str:
    """``passed``, ``failed`` or ``inconclusive`` for a check of ``value`` against
    ``threshold``: inconclusive when decided on fewer than ``min_count`` users or queries
    (``n``; ``None`` = not a per-user figure) or when the interval ``ci`` contains the
    threshold."""
    if n is not None and n < min_count:
        return "inconclusive"
    if ci is not None and np.isfinite(ci[0]) and np.isfinite(ci[1]) and ci[0] < threshold < ci[1]:
        return "inconclusive"
    ok = value >= threshold if higher_is_better else value <= threshold
    return "passed" if ok else "failed"
