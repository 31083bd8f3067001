"""The obvious alternatives every learned system must beat: popularity and BM25.

- :class:`PopularityRanker`: the same list for everyone, most interactions first (over a
  window of the behaviour log before the cut, so it never sees the future).
- :class:`BM25Ranker`: lexical search over the item text with ``bm25s`` (Lucene-style BM25,
  English stop words, no stemming), the standard first-stage baseline of product search.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd

from towers.lexical import LexicalIndex

log = logging.getLogger(__name__)


class PopularityRanker:
    """Items by interaction count in ``[since_ts, until_ts)``, ties by item order.

    Counts all event types; items never interacted with come last in catalog order.
    """

    def __init__(
        self,
        events: pd.DataFrame,
        item_ids: np.ndarray,
        *,
        until_ts: int | None = None,
        since_ts: int | None = None,
    ) -> None:
        ts = events["ts"].to_numpy()
        keep = np.ones(len(events), dtype=bool)
        if until_ts is not None:
            keep &= ts < until_ts
        if since_ts is not None:
            keep &= ts >= since_ts
        counts = events.loc[keep, "item_id"].value_counts()
        score = counts.reindex(item_ids, fill_value=0).to_numpy(np.float64)
        self.ranked_ids = item_ids[np.argsort(-score, kind="stable")].astype(np.int64)

    def top(self, k: int, exclude: Sequence[int] = ()) -> list[int]:
        """The ``k`` most popular items not in ``exclude``."""
        if not len(exclude):
            return [int(i) for i in self.ranked_ids[:k]]
        skip = set(map(int, exclude))
        out: list[int] = []
        for i in self.ranked_ids:
            if int(i) not in skip:
                out.append(int(i))
                if len(out) == k:
                    break
        return out


class BM25Ranker:
    """BM25 over ``texts`` (one per item, aligned with ``item_ids``); see
    :class:`towers.lexical.LexicalIndex`."""

    def __init__(self, texts: Sequence[str], item_ids: np.ndarray) -> None:
        self.item_ids = np.asarray(item_ids, dtype=np.int64)
        self.index = LexicalIndex.build(texts)

    def search(self, query: str, k: int) -> list[int]:
        """Item ids of the best ``k`` matches, best first; items sharing no word are left
        out (so the list may be shorter than ``k``, or empty)."""
        return [int(self.item_ids[r]) for r in self.index.top(query, k)]
