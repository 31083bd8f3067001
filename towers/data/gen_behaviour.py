"""Synthetic users and their behaviour log, with preferences that drift over time.

Internal to :mod:`towers.data.generate`. Model, all vectorised with numpy:

* Each user has an activity level (gamma, mean 1), a home department, three *early*
  preferred product types and three *late* ones (each slot is replaced with probability
  ``pref_drift``; replacements come from the late-season popularity), six preferred brands
  (one per preferred type's department) and a preferred price band.
* The global popularity of departments follows a seasonal trend: each department's weight is
  multiplied by ``exp(seasonal_strength * slope * (2 f - 1))`` with ``slope`` uniform in
  [-1, 1] and ``f`` in [0, 1) the position in the time range.
* A session at time ``f`` has an intent: with probability 0.8 one of the user's preferred
  types, taken from the late set with probability ``f`` (so preferences shift gradually),
  otherwise a type drawn from the global popularity at that time.
* Item popularity trends: a share of the items (``Trends.share``) each launch at a random time;
  before it their popularity is a fifth of their base, at launch it jumps to ``boost`` times
  the base and decays back with an e-folding time of ``days``. Views draw their candidates
  from the popularity of their day, so what sells changes from week to week and a model's
  popularity knowledge goes stale.
* A session views 1 + Poisson(3) items, mostly of the intent type (15 % of views go to a
  complement type, 5 % to a random type). Each view picks the best of 6 popularity-weighted
  candidates after scoring brand and price-band affinity plus Gumbel noise, then funnels:
  click (25 % + 15 % if a preferred brand), add_to_cart (30 % of clicks), purchase (55 % of
  carts), each a few seconds to minutes after the previous step.
* Optionally (``bundles``, off by default) a share of views is redrawn from hidden bundles of
  items of unrelated product types (:mod:`towers.data.gen_structure`), before the funnel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from towers.data.gen_items import Items, ItemSampler, TaxonomyArrays
from towers.data.gen_structure import Bundles, apply_bundles
from towers.data.schema import EVENT_TYPES
from towers.data.taxonomy import PRICE_BANDS

__all__ = ["Preferences", "Trends", "make_events", "make_users"]

SECONDS_PER_DAY = 86_400
#: Probability that a session's (or query's) intent comes from the user's own preferences.
P_PREFERRED = 0.8
#: Fraction of views of a complement of the session intent, and of a random type.
P_COMPLEMENT_VIEW = 0.15
P_RANDOM_VIEW = 0.05
#: Mean number of item views per session (1 + Poisson(mean - 1)).
MEAN_VIEWS = 4.0
#: Funnel probabilities: click per view (+ bonus for a preferred brand), cart per click,
#: purchase per cart.
P_CLICK, P_CLICK_BRAND_BONUS, P_CART, P_PURCHASE = 0.25, 0.15, 0.30, 0.55
#: Expected events per view under the funnel above (about 1.43 with the brand bonus).
EVENTS_PER_VIEW = 1.0 + 0.3 * (1.0 + P_CART * (1.0 + P_PURCHASE))
#: Candidates scored per view.
N_CANDIDATES = 6
#: Preferred price band probabilities (budget, mid, premium, luxury).
BAND_PREFS = np.array([0.3, 0.4, 0.2, 0.1])


def sample_rows(cdf: np.ndarray, rows: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Draw a column index per request from row-specific categorical distributions.

    ``cdf`` is (R, K) cumulative probabilities (each row non-decreasing, last column 1.0),
    ``rows`` picks the row of each request and ``u`` are uniforms in [0, 1). One
    ``searchsorted`` over the flattened, row-offset CDF does all requests.
    """
    n_rows, k = cdf.shape
    flat = (cdf + np.arange(n_rows)[:, None]).ravel()
    idx = np.searchsorted(flat, rows + u, side="right") - rows * k
    return np.clip(idx, 0, k - 1)


def _cdf(weights: np.ndarray) -> np.ndarray:
    """Row-normalised cumulative sums of a (R, K) non-negative weight matrix."""
    cum = np.cumsum(weights, axis=1)
    total = cum[:, -1:]
    return cum / np.where(total > 0, total, 1.0)


@dataclass(frozen=True)
class Trends:
    """Item launches: ``share`` of items trend, peaking at ``boost`` times their base
    popularity at launch and decaying with an e-folding time of ``days``."""

    share: float = 0.0
    boost: float = 1.0
    days: float = 3.0
    #: Popularity multiplier of a trending item before its launch.
    before: float = 0.2

    def samplers(
        self,
        n_bins: int,
        days: int,
        rng: np.random.Generator,
        items: Items,
        sampler: ItemSampler,
        n_types: int,
    ) -> list[ItemSampler]:
        """One item sampler per time bin (``n_bins`` equal bins over ``days`` days), with each
        trending item's popularity at the bin's middle."""
        if self.share <= 0.0 or self.boost <= 1.0:
            return [sampler] * n_bins
        n = len(items.popularity)
        trending = rng.random(n) < self.share
        launch_day = rng.uniform(-self.days, days, n)
        out = []
        for b in range(n_bins):
            day = (b + 0.5) * days / n_bins
            age = day - launch_day
            decay = np.exp(-np.maximum(age, 0.0) / self.days)
            mult = np.where(age < 0, self.before, 1.0 + (self.boost - 1.0) * decay)
            pop = items.popularity * np.where(trending, mult, 1.0)
            out.append(ItemSampler(items.type_idx, pop, n_types))
        return out


@dataclass
class Preferences:
    """Latent user preferences plus the time-dependent global type popularity."""

    activity: np.ndarray  # (U,) float64, mean about 1
    home_dept: np.ndarray  # (U,) int64
    early_types: np.ndarray  # (U, 3) int64
    late_types: np.ndarray  # (U, 3) int64
    brands: np.ndarray  # (U, 6) int64 brand indices
    band: np.ndarray  # (U,) int64 index into PRICE_BANDS
    global_cdf: np.ndarray  # (n_bins, T) cumulative type popularity per day bin
    n_bins: int

    def intent_types(
        self, users: np.ndarray, f: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        """Product type of a session or query by ``users`` (-1 = anonymous) at time fractions
        ``f`` in [0, 1): a preferred type (early or late set, by ``f``) with probability
        ``P_PREFERRED``, else a draw from the global popularity at ``f``."""
        n = len(users)
        bins = np.minimum((f * self.n_bins).astype(np.int64), self.n_bins - 1)
        out = sample_rows(self.global_cdf, bins, rng.random(n))
        known = users >= 0
        use_pref = known & (rng.random(n) < P_PREFERRED)
        slot = rng.integers(0, 3, n)
        late = rng.random(n) < f
        u = np.where(known, users, 0)
        pref = np.where(late, self.late_types[u, slot], self.early_types[u, slot])
        return np.where(use_pref, pref, out)


def make_users(
    n_users: int,
    days: int,
    pref_drift: float,
    seasonal_strength: float,
    rng: np.random.Generator,
    tax: TaxonomyArrays,
    items: Items,
    sampler: ItemSampler,
) -> tuple[pa.Table, Preferences]:
    """Generate ``n_users`` users (ids 0..n_users-1) and their latent preferences.

    Only product types that have items are ever preferred or drawn.
    """
    type_pop = items.type_weight * sampler.active
    slopes = rng.uniform(-1.0, 1.0, tax.n_depts) * seasonal_strength
    n_bins = days
    f_bins = (np.arange(n_bins) + 0.5) / n_bins
    season = np.exp(slopes[tax.type_dept][None, :] * (2.0 * f_bins[:, None] - 1.0))
    global_cdf = _cdf(type_pop[None, :] * season)

    def dept_cdf(f: float) -> tuple[np.ndarray, np.ndarray]:
        """(D,) department CDF and (D, T) within-department type CDFs at time ``f``."""
        w = type_pop * np.exp(slopes[tax.type_dept] * (2.0 * f - 1.0))
        onehot = tax.type_dept[None, :] == np.arange(tax.n_depts)[:, None]
        within = _cdf(onehot * w[None, :])
        dept_w = (onehot * w[None, :]).sum(axis=1)
        return np.cumsum(dept_w) / dept_w.sum(), within

    activity = rng.gamma(2.0, 0.5, n_users)
    dept0, within0 = dept_cdf(0.0)
    _, within1 = dept_cdf(1.0)
    home = np.minimum(np.searchsorted(dept0, rng.random(n_users), side="right"), tax.n_depts - 1)
    early = np.empty((n_users, 3), dtype=np.int64)
    early[:, 0] = sample_rows(within0, home, rng.random(n_users))
    early[:, 1] = sample_rows(within0, home, rng.random(n_users))
    early[:, 2] = sample_rows(global_cdf[:1], np.zeros(n_users, np.int64), rng.random(n_users))
    # Late preferences: each slot drifts with probability pref_drift, to a type that is
    # popular late in the range, half the time within the home department.
    late_global = sample_rows(
        global_cdf[-1:], np.zeros(n_users * 3, np.int64), rng.random(n_users * 3)
    ).reshape(n_users, 3)
    late_home = sample_rows(within1, np.repeat(home, 3), rng.random(n_users * 3)).reshape(
        n_users, 3
    )
    replacement = np.where(rng.random((n_users, 3)) < 0.5, late_home, late_global)
    late = np.where(rng.random((n_users, 3)) < pref_drift, replacement, early)
    all_types = np.concatenate([early, late], axis=1)
    brands = tax.brand_in_dept(tax.type_dept[all_types], rng.random(all_types.shape))
    band = np.minimum(
        np.searchsorted(np.cumsum(BAND_PREFS), rng.random(n_users), side="right"),
        len(PRICE_BANDS) - 1,
    )
    prefs = Preferences(activity, home, early, late, brands, band, global_cdf, n_bins)

    def joined(names: np.ndarray) -> list[str]:
        return ["|".join(row) for row in names.tolist()]

    table = pa.table(
        {
            "user_id": pa.array(np.arange(n_users, dtype=np.int64)),
            "home_department": pa.array(tax.dept_names[home].tolist(), pa.string()),
            "early_types": pa.array(joined(tax.type_names[early]), pa.string()),
            "late_types": pa.array(joined(tax.type_names[late]), pa.string()),
            "preferred_brands": pa.array(joined(tax.brand_names[brands]), pa.string()),
            "price_band": pa.array(np.array(PRICE_BANDS, dtype=object)[band].tolist()),
            "activity": pa.array(activity),
        }
    )
    return table, prefs


def make_events(
    prefs: Preferences,
    events_per_user: float,
    start_ts: int,
    days: int,
    rng: np.random.Generator,
    tax: TaxonomyArrays,
    items: Items,
    sampler: ItemSampler,
    trends: Trends | None = None,
    bundles: tuple[Bundles, float, np.random.Generator] | None = None,
) -> pa.Table:
    """Generate the behaviour log (about ``events_per_user`` events per user on average),
    sorted by user_id, ts and funnel step, with ``ts`` in ``[start_ts, start_ts + days
    * 86400)`` unix seconds and session ids numbered 0.. in that order.

    ``bundles`` is ``(bundles, strength, rng)``: redraw that share of views from hidden
    bundles with their own random stream (:func:`towers.data.gen_structure.apply_bundles`);
    ``None`` leaves the views as drawn."""
    n_users = len(prefs.activity)
    span = days * SECONDS_PER_DAY
    per_session = MEAN_VIEWS * EVENTS_PER_VIEW
    extra = np.maximum(prefs.activity * events_per_user / per_session - 1.0, 0.0)
    n_sessions = 1 + rng.poisson(extra)
    s_user = np.repeat(np.arange(n_users, dtype=np.int64), n_sessions)
    s_f = rng.random(len(s_user))
    order = np.lexsort((s_f, s_user))  # sessions by user, then time
    s_user, s_f = s_user[order], s_f[order]
    n_s = len(s_user)
    s_start = start_ts + (s_f * (span - 3_600)).astype(np.int64)
    s_intent = prefs.intent_types(s_user, s_f, rng)

    # Views.
    n_views = 1 + rng.poisson(MEAN_VIEWS - 1.0, n_s)
    v_sess = np.repeat(np.arange(n_s, dtype=np.int64), n_views)
    n_v = len(v_sess)
    v_user = s_user[v_sess]
    v_type = s_intent[v_sess]
    r = rng.random(n_v)
    n_comp = tax.n_complements[v_type]
    comp = tax.complements[v_type, (rng.random(n_v) * n_comp).astype(np.int64)]
    use_comp = (r < P_COMPLEMENT_VIEW) & (comp >= 0)
    use_comp &= sampler.active[np.maximum(comp, 0)]
    v_type = np.where(use_comp, comp, v_type)
    bins = np.minimum((s_f[v_sess] * prefs.n_bins).astype(np.int64), prefs.n_bins - 1)
    rand_type = sample_rows(prefs.global_cdf, bins, rng.random(n_v))
    v_type = np.where(r > 1.0 - P_RANDOM_VIEW, rand_type, v_type)

    # Candidates come from the item popularity of the view's day (trends included).
    day_samplers = (trends or Trends()).samplers(
        days, days, rng, items, sampler, len(sampler.counts)
    )
    v_day = np.minimum((s_f[v_sess] * days).astype(np.int64), days - 1)
    cand = np.empty((n_v, N_CANDIDATES), dtype=np.int64)
    u_cand = rng.random((n_v, N_CANDIDATES))
    for day in np.unique(v_day):
        rows = np.flatnonzero(v_day == day)
        cand[rows] = (
            day_samplers[day]
            .sample(np.repeat(v_type[rows], N_CANDIDATES), u_cand[rows].ravel())
            .reshape(len(rows), N_CANDIDATES)
        )
    brand_match = (items.brand_idx[cand][:, :, None] == prefs.brands[v_user][:, None, :]).any(-1)
    band_gap = np.abs(items.band_idx[cand] - prefs.band[v_user][:, None])
    score = 1.2 * brand_match - 0.6 * band_gap + rng.gumbel(size=cand.shape)
    best = np.argmax(score, axis=1)
    v_item = cand[np.arange(n_v), best]
    v_brand = brand_match[np.arange(n_v), best]
    if bundles is not None:
        v_item = apply_bundles(v_user, v_sess, v_item, bundles[1], bundles[0], bundles[2])
        v_brand = (items.brand_idx[v_item][:, None] == prefs.brands[v_user]).any(-1)

    gaps = 1 + rng.exponential(40.0, n_v).astype(np.int64)
    cum = np.cumsum(gaps)
    first = np.concatenate([[0], np.cumsum(n_views)[:-1]])
    v_ts = s_start[v_sess] + cum - cum[first][v_sess] + gaps[first][v_sess] - 1

    click = rng.random(n_v) < P_CLICK + P_CLICK_BRAND_BONUS * v_brand
    cart = click & (rng.random(n_v) < P_CART)
    buy = cart & (rng.random(n_v) < P_PURCHASE)
    c_ts = v_ts + rng.integers(2, 21, n_v)
    a_ts = c_ts + rng.integers(5, 61, n_v)
    p_ts = a_ts + rng.integers(20, 301, n_v)

    step = np.concatenate(
        [np.zeros(n_v, np.int8), np.ones(click.sum(), np.int8)]
        + [np.full(cart.sum(), 2, np.int8), np.full(buy.sum(), 3, np.int8)]
    )
    user = np.concatenate([v_user, v_user[click], v_user[cart], v_user[buy]])
    item = np.concatenate([v_item, v_item[click], v_item[cart], v_item[buy]])
    ts = np.concatenate([v_ts, c_ts[click], a_ts[cart], p_ts[buy]])
    sess = np.concatenate([v_sess, v_sess[click], v_sess[cart], v_sess[buy]])
    ts = np.minimum(ts, start_ts + span - 1)
    order = np.lexsort((step, ts, user))
    item_ids = items.table.column("item_id").to_numpy()
    return pa.table(
        {
            "user_id": pa.array(user[order]),
            "item_id": pa.array(item_ids[item[order]]),
            "event_type": pa.array(list(EVENT_TYPES), pa.string()).take(pa.array(step[order])),
            "ts": pa.array(ts[order].astype(np.int64)),
            "session_id": pa.array(sess[order].astype(np.int64)),
        }
    )
