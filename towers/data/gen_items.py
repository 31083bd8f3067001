"""Synthetic catalogue items: attributes, prices, titles, descriptions and latent popularity.

Internal to :mod:`towers.data.generate`. Everything is vectorised over items with numpy and
pyarrow compute; loops run only over the taxonomy (a few hundred product types).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from towers.data.strings import join_strings, take_strings
from towers.data.taxonomy import (
    COLORS,
    DEPARTMENTS,
    MATERIAL_STYLES,
    PRICE_BAND_ADJECTIVES,
    PRICE_BAND_RATIOS,
    PRICE_BANDS,
    PRODUCT_LINES,
    PRODUCT_TYPES,
)

__all__ = ["ItemSampler", "Items", "TaxonomyArrays", "make_items"]

#: Exponent of the Zipf-like popularity of product types (weight ~ rank^-a).
TYPE_ZIPF = 0.7
#: Exponent of the Zipf-like latent popularity of items (weight ~ rank^-a).
ITEM_ZIPF = 1.0
#: Relative colour frequencies (black, white, grey and navy are the most common).
COLOR_WEIGHTS = np.array([8, 7, 5, 4, 4, 4, 3, 2, 2, 2, 2, 2, 2, 1.5, 1.0])


@dataclass(frozen=True)
class TaxonomyArrays:
    """The taxonomy as integer-indexed arrays (types, departments, brands, vocabularies)."""

    type_names: np.ndarray  # (T,) object
    type_dept: np.ndarray  # (T,) int64
    base_price: np.ndarray  # (T,) float64, currency units
    has_color: np.ndarray  # (T,) bool
    has_material: np.ndarray  # (T,) bool
    has_size: np.ndarray  # (T,) bool
    complements: np.ndarray  # (T, 3) int64 type indices, -1 padded
    n_complements: np.ndarray  # (T,) int64
    dept_names: np.ndarray  # (D,) object
    brand_names: np.ndarray  # (B,) object
    brand_start: np.ndarray  # (D,) first brand index of each department
    brand_count: np.ndarray  # (D,)
    material_names: np.ndarray  # all departments' materials, concatenated
    material_start: np.ndarray  # (D,)
    material_count: np.ndarray  # (D,)
    size_names: np.ndarray  # all departments' sizes, concatenated
    size_start: np.ndarray  # (D,)
    size_count: np.ndarray  # (D,)
    size_prefix: np.ndarray  # (D,) object
    material_style: np.ndarray  # (D,) int64 index into taxonomy.MATERIAL_STYLES
    purposes: np.ndarray  # (D, 4) object

    @classmethod
    def build(cls) -> TaxonomyArrays:
        """Index the constant taxonomy."""
        dept_index = {d.name: i for i, d in enumerate(DEPARTMENTS)}
        type_index = {t.name: i for i, t in enumerate(PRODUCT_TYPES)}
        comps = np.full((len(PRODUCT_TYPES), 3), -1, dtype=np.int64)
        for i, t in enumerate(PRODUCT_TYPES):
            comps[i, : len(t.complements)] = [type_index[c] for c in t.complements]

        def offsets(lists: list[tuple[str, ...]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            counts = np.array([len(x) for x in lists], dtype=np.int64)
            starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
            names = np.array([w for x in lists for w in x] or [""], dtype=object)
            return names, starts, counts

        brands, b_start, b_count = offsets([d.brands for d in DEPARTMENTS])
        mats, m_start, m_count = offsets([d.materials for d in DEPARTMENTS])
        sizes, s_start, s_count = offsets([d.sizes for d in DEPARTMENTS])
        purposes = np.array([list(d.purposes[:4]) for d in DEPARTMENTS], dtype=object)
        return cls(
            type_names=np.array([t.name for t in PRODUCT_TYPES], dtype=object),
            type_dept=np.array([dept_index[t.department] for t in PRODUCT_TYPES]),
            base_price=np.array([t.base_price for t in PRODUCT_TYPES]),
            has_color=np.array([t.has_color for t in PRODUCT_TYPES]),
            has_material=np.array([t.has_material for t in PRODUCT_TYPES]),
            has_size=np.array([t.has_size for t in PRODUCT_TYPES]),
            complements=comps,
            n_complements=(comps >= 0).sum(axis=1),
            dept_names=np.array([d.name for d in DEPARTMENTS], dtype=object),
            brand_names=brands,
            brand_start=b_start,
            brand_count=b_count,
            material_names=mats,
            material_start=m_start,
            material_count=m_count,
            size_names=sizes,
            size_start=s_start,
            size_count=s_count,
            size_prefix=np.array([d.size_prefix for d in DEPARTMENTS], dtype=object),
            material_style=np.array([MATERIAL_STYLES.index(d.material_style) for d in DEPARTMENTS]),
            purposes=purposes,
        )

    @property
    def n_types(self) -> int:
        return len(self.type_names)

    @property
    def n_depts(self) -> int:
        return len(self.dept_names)

    def type_weights(self, rng: np.random.Generator) -> np.ndarray:
        """Zipf-like popularity of product types over a random ranking, summing to 1."""
        ranks = rng.permutation(self.n_types)
        w = (ranks + 1.0) ** -TYPE_ZIPF
        return w / w.sum()

    def brand_in_dept(self, dept: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Global brand index for departments ``dept`` from uniforms ``u`` in [0, 1); the first
        brands of a department are more common (u^1.5 skew)."""
        local = np.minimum(
            (u**1.5 * self.brand_count[dept]).astype(np.int64), self.brand_count[dept] - 1
        )
        return self.brand_start[dept] + local


@dataclass
class Items:
    """Generated items: the Parquet-ready table plus latent arrays (row = item_id)."""

    table: pa.Table
    type_idx: np.ndarray  # (n,) int64
    brand_idx: np.ndarray  # (n,) int64
    band_idx: np.ndarray  # (n,) int64, index into PRICE_BANDS
    popularity: np.ndarray  # (n,) float64, latent, relative
    type_weight: np.ndarray  # (T,) float64, Zipf-like product type popularity, sums to 1


class ItemSampler:
    """Draws items of given product types with probability proportional to latent popularity.

    Vectorised: items are sorted by type with one global cumulative popularity array, so a
    draw is one ``searchsorted`` per request.
    """

    def __init__(self, type_idx: np.ndarray, popularity: np.ndarray, n_types: int) -> None:
        self.order = np.argsort(type_idx, kind="stable")
        sorted_types = type_idx[self.order]
        self.bounds = np.searchsorted(sorted_types, np.arange(n_types + 1))
        self.counts = np.diff(self.bounds)
        self.cum = np.cumsum(popularity[self.order])
        cum0 = np.concatenate([[0.0], self.cum])
        self.cum_lo = cum0[self.bounds[:-1]]
        self.cum_hi = cum0[self.bounds[1:]]

    @property
    def active(self) -> np.ndarray:
        """Boolean mask of the product types that have at least one item."""
        return self.counts > 0

    def sample(self, types: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Item rows for product types ``types`` (each must be active) and uniforms ``u``
        of the same shape."""
        lo, hi = self.cum_lo[types], self.cum_hi[types]
        pos = np.searchsorted(self.cum, lo + u * (hi - lo), side="right")
        pos = np.clip(pos, self.bounds[types], self.bounds[types + 1] - 1)
        return self.order[pos]


def _mask(arr: pa.Array, keep: np.ndarray) -> pa.Array:
    """``arr`` with nulls where ``keep`` is False."""
    return pc.if_else(pa.array(keep), arr, pa.scalar(None, pa.string()))


def _choose(choice: np.ndarray, options: list[pa.Array]) -> pa.Array:
    out = options[0]
    for k in range(1, len(options)):
        out = pc.if_else(pa.array(choice == k), options[k], out)
    return out


def _capitalize_first(arr: pa.Array) -> pa.Array:
    head = pc.utf8_upper(pc.utf8_slice_codeunits(arr, 0, 1))
    return pc.binary_join_element_wise(head, pc.utf8_slice_codeunits(arr, 1), "")


def make_items(
    n_items: int, rng: np.random.Generator, tax: TaxonomyArrays, item_zipf: float = ITEM_ZIPF
) -> Items:
    """Generate ``n_items`` items with ids 0..n_items-1.

    ``item_zipf`` is the exponent of the items' latent popularity (weight ~ rank^-a over a
    random ranking; larger is steeper).

    Every product type gets at least one item when ``n_items`` >= the number of types. Price
    is ``base_price(type) * brand_tier * lognormal(0, 0.3)`` rounded to .99 (>= 0.99); the
    price band is read off ``price / base_price`` (see ``taxonomy.price_band_of``).
    """
    n = n_items
    type_w = tax.type_weights(rng)
    n_cover = min(n, tax.n_types)
    covered = rng.permutation(tax.n_types)[:n_cover]
    rest = rng.choice(tax.n_types, size=n - n_cover, p=type_w)
    type_idx = rng.permutation(np.concatenate([covered, rest]).astype(np.int64))
    dept = tax.type_dept[type_idx]

    brand_idx = tax.brand_in_dept(dept, rng.random(n))
    brand_tier = np.exp(rng.normal(0.0, 0.35, size=len(tax.brand_names)))
    raw = tax.base_price[type_idx] * brand_tier[brand_idx] * np.exp(rng.normal(0.0, 0.3, n))
    price = np.maximum(np.round(raw) - 0.01, 0.99)
    band_idx = np.searchsorted(
        np.array(PRICE_BAND_RATIOS), price / tax.base_price[type_idx], side="right"
    ).astype(np.int64)

    cw = COLOR_WEIGHTS / COLOR_WEIGHTS.sum()
    color_idx = np.searchsorted(np.cumsum(cw), rng.random(n) * 0.999999, side="right")
    has_color = tax.has_color[type_idx]
    m_count = tax.material_count[dept]
    has_mat = tax.has_material[type_idx] & (m_count > 0)
    mat_idx = tax.material_start[dept] + (rng.random(n) * np.maximum(m_count, 1)).astype(np.int64)
    s_count = tax.size_count[dept]
    has_size = tax.has_size[type_idx] & (s_count > 0)
    size_idx = tax.size_start[dept] + (rng.random(n) * np.maximum(s_count, 1)).astype(np.int64)
    ranks = rng.permutation(n)
    popularity = (ranks + 1.0) ** -item_zipf

    a_type = take_strings(tax.type_names, type_idx)
    a_dept = take_strings(tax.dept_names, dept)
    a_brand = take_strings(tax.brand_names, brand_idx)
    a_color = take_strings(np.array(COLORS, dtype=object), color_idx, has_color)
    a_mat = take_strings(
        tax.material_names, np.minimum(mat_idx, len(tax.material_names) - 1), has_mat
    )
    a_size = take_strings(tax.size_names, np.minimum(size_idx, len(tax.size_names) - 1), has_size)
    a_band = take_strings(np.array(PRICE_BANDS, dtype=object), band_idx)
    adjectives = np.array([PRICE_BAND_ADJECTIVES[b] for b in PRICE_BANDS], dtype=object)
    a_adj = take_strings(adjectives, band_idx)
    a_line = take_strings(
        np.array(PRODUCT_LINES, dtype=object), rng.integers(0, len(PRODUCT_LINES), n)
    )
    a_purpose = take_strings(
        tax.purposes.ravel(), dept * tax.purposes.shape[1] + rng.integers(0, 4, n)
    )
    a_size_prefix = take_strings(tax.size_prefix, dept)

    size_phrase = join_strings(a_size_prefix, a_size, sep="", emit_null=True)
    style = tax.material_style[dept]
    mat_noun = _mask(a_mat, style == 0)  # cotton t-shirt / "in red cotton"
    mat_ingr = _mask(a_mat, style == 1)  # "face cream with aloe vera"
    mat_adj = _mask(a_mat, style == 2)  # "organic honey"
    titles = [
        join_strings(a_brand, a_color, a_mat, a_type),  # Veltro red cotton t-shirt
        join_strings(
            a_brand,
            a_line,
            mat_adj,
            a_type,
            join_strings("in", join_strings(a_color, mat_noun), emit_null=True),
            join_strings("with", mat_ingr, emit_null=True),
        ),  # Veltro Classic t-shirt in red cotton
        join_strings(a_color, a_mat, a_type, "by", a_brand),  # red cotton t-shirt by Veltro
    ]
    title = _choose(rng.choice(3, size=n, p=[0.5, 0.25, 0.25]), titles)
    title = _capitalize_first(join_strings(title, size_phrase, sep=", "))

    made_of = pc.coalesce(
        join_strings("made of", mat_noun, emit_null=True),
        join_strings("with", mat_ingr, emit_null=True),
    )
    in_color = join_strings("in", a_color, emit_null=True)
    descriptions = [
        # A mid-priced red cotton t-shirt from Veltro for everyday wear.
        join_strings("A", a_adj, a_color, a_mat, a_type, "from", a_brand, "for", a_purpose),
        # Veltro t-shirt made of cotton, in red. Great for everyday wear.
        join_strings(join_strings(a_brand, mat_adj, a_type, made_of), in_color, sep=", "),
        # This mid-priced t-shirt by Veltro comes in red. Ideal for everyday wear.
        join_strings(
            "This", a_adj, a_type, "by", a_brand, join_strings("comes", in_color, emit_null=True)
        ),
    ]
    tails = [
        pa.nulls(n, pa.string()),
        join_strings(". Great for", a_purpose),
        join_strings(". Ideal for", a_purpose),
    ]
    choice = rng.choice(3, size=n, p=[0.4, 0.3, 0.3])
    desc = join_strings(_choose(choice, descriptions), _choose(choice, tails), ".", sep="")

    def fill(a: pa.Array) -> pa.Array:
        return pc.fill_null(a, "")

    table = pa.table(
        {
            "item_id": pa.array(np.arange(n, dtype=np.int64)),
            "title": title,
            "description": desc,
            "department": a_dept,
            "product_type": a_type,
            "brand": a_brand,
            "color": fill(a_color),
            "material": fill(a_mat),
            "size": fill(a_size),
            "price": pa.array(price),
            "price_band": a_band,
        }
    )
    return Items(table, type_idx, brand_idx, band_idx, popularity, type_w)
