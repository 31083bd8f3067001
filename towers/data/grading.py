"""ESCI-style graded relevance of items for a structured query.

A query is a product type plus up to four mentioned attributes (brand, colour, material,
price band). An item's label for it is

* 3 exact: same product type and every mentioned attribute matches;
* 2 substitute: same product type, some mentioned attribute differs;
* 1 complement: the item's type is a complement of the query's type
  (:data:`towers.data.taxonomy.COMPLEMENTS` unless another relation is given);
* 0 irrelevant: anything else.

Matching is exact after lower-casing and stripping both sides. :class:`Grader` precomputes
integer codes and a type index once per items table, so grading one query costs time
proportional to the items of its type and complement types, not to the catalogue.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

import numpy as np
import pandas as pd

from towers.data.taxonomy import COMPLEMENTS

__all__ = ["ATTRIBUTES", "Grader", "QueryAttributes", "grade"]

#: Query attributes other than the product type, in the order they are compared.
ATTRIBUTES: tuple[str, ...] = ("brand", "color", "material", "price_band")


@dataclass(frozen=True)
class QueryAttributes:
    """What a query asks for; ``None`` means the query does not mention that attribute."""

    product_type: str
    brand: str | None = None
    color: str | None = None
    material: str | None = None
    price_band: str | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, object]) -> QueryAttributes:
        """Build from a ``queries`` row (dict or Series); NaN, None and "" mean unmentioned.

        Raises:
            ValueError: the row has no usable ``product_type``.
        """
        values: dict[str, str | None] = {}
        for f in fields(cls):
            v = row.get(f.name) if hasattr(row, "get") else None
            if v is None or (isinstance(v, float) and math.isnan(v)) or str(v).strip() == "":
                values[f.name] = None
            else:
                values[f.name] = str(v)
        if values["product_type"] is None:
            raise ValueError(
                "a graded query needs a product_type; got none (queries without structured "
                "attributes can only use the labels stored in qrels)"
            )
        return cls(**values)  # type: ignore[arg-type]

    def mentioned(self) -> dict[str, str]:
        """The mentioned attributes among :data:`ATTRIBUTES`, name -> value."""
        return {a: v for a in ATTRIBUTES if (v := getattr(self, a)) is not None}


def _norm(values: pd.Series) -> pd.Series:
    return values.fillna("").astype("str").str.strip().str.lower()


class Grader:
    """Grades queries against one items table (rows in the table's order).

    Args:
        items: DataFrame with at least ``product_type``; missing attribute columns count as
            empty (so a query mentioning them never matches exactly).
        complements: product type -> its complement types; defaults to the synthetic
            taxonomy's relation. Types are compared lower-cased.
    """

    def __init__(
        self,
        items: pd.DataFrame,
        complements: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        if "product_type" not in items.columns:
            raise ValueError(
                "grading needs an items column 'product_type'; columns given: "
                + ", ".join(map(str, items.columns))
            )
        self.n_items = len(items)
        rel = COMPLEMENTS if complements is None else complements
        self._complements = {
            k.strip().lower(): [c.strip().lower() for c in v] for k, v in rel.items()
        }
        codes, uniques = pd.factorize(_norm(items["product_type"]), sort=True)
        self._type_code = {str(u): i for i, u in enumerate(uniques)}
        self._row_type = codes.astype(np.int64)
        self._order = np.argsort(codes, kind="stable")
        self._bounds = np.searchsorted(codes[self._order], np.arange(len(uniques) + 1))
        self._attr_codes: dict[str, np.ndarray] = {}
        self._attr_vocab: dict[str, dict[str, int]] = {}
        for a in ATTRIBUTES:
            col = _norm(items[a]) if a in items.columns else pd.Series([""] * len(items))
            c, u = pd.factorize(col)
            self._attr_codes[a] = c.astype(np.int32)
            self._attr_vocab[a] = {str(v): i for i, v in enumerate(u)}

    def rows_of_type(self, product_type: str) -> np.ndarray:
        """Row positions (int64, ascending) of the items of ``product_type``."""
        code = self._type_code.get(product_type.strip().lower())
        if code is None:
            return np.empty(0, dtype=np.int64)
        return np.sort(self._order[self._bounds[code] : self._bounds[code + 1]])

    def graded_rows(self, query: QueryAttributes) -> dict[int, np.ndarray]:
        """Row positions of the items labelled 3, 2 and 1 (ascending); label 0 is the rest."""
        same = self.rows_of_type(query.product_type)
        match = np.ones(len(same), dtype=bool)
        for attr, value in query.mentioned().items():
            code = self._attr_vocab[attr].get(value.strip().lower(), -2)
            match &= self._attr_codes[attr][same] == code
        qtype = query.product_type.strip().lower()
        comp_types = [c for c in self._complements.get(qtype, []) if c != qtype]
        comp = [self.rows_of_type(c) for c in comp_types]
        comp_rows = np.unique(np.concatenate(comp)) if comp else np.empty(0, dtype=np.int64)
        return {3: same[match], 2: same[~match], 1: comp_rows}

    def labels(self, query: QueryAttributes) -> np.ndarray:
        """Labels 0..3 for every item, int8 array aligned with the items table's rows."""
        out = np.zeros(self.n_items, dtype=np.int8)
        rows = self.graded_rows(query)
        for label in (1, 2, 3):
            out[rows[label]] = label
        return out

    def irrelevant_mask(self, rows: np.ndarray, query: QueryAttributes) -> np.ndarray:
        """Boolean mask over ``rows`` (row positions): True where the label is 0."""
        qtype = query.product_type.strip().lower()
        codes = {self._type_code.get(qtype, -1)}
        codes |= {self._type_code.get(c, -1) for c in self._complements.get(qtype, [])}
        return ~np.isin(self._row_type[rows], list(codes))


def grade(
    items: pd.DataFrame,
    query: QueryAttributes,
    complements: Mapping[str, Sequence[str]] | None = None,
) -> np.ndarray:
    """Labels 0..3 (int8, one per items row) of ``items`` for ``query``.

    One-shot convenience; build a :class:`Grader` to grade many queries against one table.
    """
    return Grader(items, complements).labels(query)
