"""Synthetic search queries with structured attributes, text splits and graded qrels.

Internal to :mod:`towers.data.generate`. A query starts from a target item: its product type
comes from the asking user's (drifting) preferences or the global popularity at the query's
time, the item is drawn by popularity within that type, and 0-3 of its brand, colour,
material and price band are mentioned. Query texts are lower-case and built from a few
templates ("red cotton t-shirt", "veltro t-shirt in red", "cheap running shoes for long
walks"). Labels come from :class:`towers.data.grading.Grader`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from towers.data.gen_behaviour import SECONDS_PER_DAY, Preferences
from towers.data.gen_items import Items, ItemSampler, TaxonomyArrays
from towers.data.grading import ATTRIBUTES, Grader, QueryAttributes
from towers.data.schema import SPLITS
from towers.data.taxonomy import PRICE_BAND_WORDS

__all__ = ["MAX_PER_LABEL", "N_NEGATIVES", "SPLIT_FRACTIONS", "make_qrels", "make_queries"]

#: Share of queries from anonymous visitors (user_id -1).
P_ANONYMOUS = 0.1
#: Probabilities of mentioning 0, 1, 2 or 3 attributes besides the product type.
N_ATTR_PROBS = (0.3, 0.35, 0.25, 0.1)
#: Train / valid / test shares of the distinct query texts.
SPLIT_FRACTIONS = (0.7, 0.1, 0.2)
#: qrels keep at most this many items per label 1, 2 and 3 per query (random sample).
MAX_PER_LABEL = 300
#: qrels add this many random label-0 items per query (fewer only in tiny catalogues).
N_NEGATIVES = 20


def _query_text(rng: np.random.Generator, ptype: str, attrs: dict[str, str], purpose: str) -> str:
    """Lower-case query text for a product type and mentioned attributes."""
    price = ""
    if "price_band" in attrs:
        words = PRICE_BAND_WORDS[attrs["price_band"]]
        price = words[int(rng.integers(len(words)))]
    brand = attrs.get("brand", "").lower()
    color = attrs.get("color", "")
    material = attrs.get("material", "")

    def words(*parts: str) -> str:
        return " ".join(p for p in parts if p)

    template = int(rng.choice(4, p=[0.45, 0.2, 0.15, 0.2]))
    if template == 1:  # red cotton t-shirt veltro
        return words(price, color, material, ptype, brand)
    if template == 2 and color and not material:  # veltro t-shirt in red
        return words(price, brand, ptype, "in", color)
    if template == 3:  # cheap veltro t-shirt for everyday wear
        return words(price, brand, color, material, ptype, "for", purpose)
    return words(price, brand, color, material, ptype)  # cheap veltro red cotton t-shirt


def make_queries(
    n_queries: int,
    prefs: Preferences,
    start_ts: int,
    days: int,
    rng: np.random.Generator,
    tax: TaxonomyArrays,
    items: Items,
    sampler: ItemSampler,
) -> pa.Table:
    """Generate ``n_queries`` queries (ids 0..n-1), sorted by ts, split 70/10/20 by distinct
    query text (a text never appears in two splits)."""
    n = n_queries
    n_users = len(prefs.activity)
    cum_act = np.cumsum(prefs.activity) / prefs.activity.sum()
    users = np.minimum(np.searchsorted(cum_act, rng.random(n), side="right"), n_users - 1)
    users = np.where(rng.random(n) < P_ANONYMOUS, -1, users).astype(np.int64)
    f = np.sort(rng.random(n))
    ts = start_ts + (f * days * SECONDS_PER_DAY).astype(np.int64)
    types = prefs.intent_types(users, f, rng)
    target = sampler.sample(types, rng.random(n))
    n_attrs = rng.choice(4, size=n, p=N_ATTR_PROBS)

    tbl = items.table
    cols = {c: tbl.column(c).to_numpy(zero_copy_only=False)[target] for c in ATTRIBUTES}
    dept = tax.type_dept[types]
    purpose = tax.purposes[dept, rng.integers(0, tax.purposes.shape[1], n)]
    texts: list[str] = []
    mentioned: dict[str, list[str | None]] = {a: [None] * n for a in ATTRIBUTES}
    for q in range(n):  # a few thousand queries: a Python loop is fine here
        available = [a for a in ATTRIBUTES if cols[a][q]]
        k = min(int(n_attrs[q]), len(available))
        chosen = {a: str(cols[a][q]) for a in rng.permutation(available)[:k]}
        for a, v in chosen.items():
            mentioned[a][q] = v
        texts.append(_query_text(rng, str(tax.type_names[types[q]]), chosen, str(purpose[q])))

    unique = np.array(sorted(set(texts)), dtype=object)
    shuffled = unique[rng.permutation(len(unique))]
    n_train = int(round(SPLIT_FRACTIONS[0] * len(unique)))
    n_valid = int(round(SPLIT_FRACTIONS[1] * len(unique)))
    split_of = {t: SPLITS[0] for t in shuffled[:n_train]}
    split_of.update({t: SPLITS[1] for t in shuffled[n_train : n_train + n_valid]})
    split_of.update({t: SPLITS[2] for t in shuffled[n_train + n_valid :]})

    return pa.table(
        {
            "query_id": pa.array(np.arange(n, dtype=np.int64)),
            "query_text": pa.array(texts, pa.string()),
            "user_id": pa.array(users),
            "ts": pa.array(ts),
            "split": pa.array([split_of[t] for t in texts], pa.string()),
            "product_type": pa.array(tax.type_names[types].tolist(), pa.string()),
            **{a: pa.array(mentioned[a], pa.string()) for a in ATTRIBUTES},
        }
    )


def make_qrels(queries: pa.Table, items: pd.DataFrame, rng: np.random.Generator) -> pa.Table:
    """Graded qrels for every query: all items labelled 3, 2 and 1 (each capped at
    ``MAX_PER_LABEL`` by a random sample) plus ``N_NEGATIVES`` random label-0 items.

    Sorted by query_id, label (descending), item_id.
    """
    grader = Grader(items)
    item_ids = items["item_id"].to_numpy()
    n_items = len(item_ids)
    q_ids, q_items, q_labels = [], [], []
    qdf = queries.select(["query_id", "product_type", *ATTRIBUTES]).to_pandas()
    for row in qdf.itertuples(index=False):
        query = QueryAttributes.from_row(row._asdict())
        graded = grader.graded_rows(query)
        for label in (3, 2, 1):
            rows = graded[label]
            if len(rows) > MAX_PER_LABEL:
                rows = np.sort(rng.choice(rows, MAX_PER_LABEL, replace=False))
            q_items.append(rows)
            q_labels.append(np.full(len(rows), label, np.int8))
        negatives = np.empty(0, dtype=np.int64)
        for _ in range(8):  # rejection sampling; label 0 is nearly everything
            draw = rng.integers(0, n_items, 4 * N_NEGATIVES)
            draw = draw[grader.irrelevant_mask(draw, query)]
            negatives = np.concatenate([negatives, draw])
            _, first = np.unique(negatives, return_index=True)
            negatives = negatives[np.sort(first)]
            if len(negatives) >= N_NEGATIVES:
                break
        negatives = np.sort(negatives[:N_NEGATIVES])
        q_items.append(negatives)
        q_labels.append(np.zeros(len(negatives), np.int8))
        n_rows = sum(len(x) for x in q_items[-4:])
        q_ids.append(np.full(n_rows, row.query_id, np.int64))
    rows = np.concatenate(q_items)
    return pa.table(
        {
            "query_id": pa.array(np.concatenate(q_ids)),
            "item_id": pa.array(item_ids[rows].astype(np.int64)),
            "label": pa.array(np.concatenate(q_labels)),
        }
    )
