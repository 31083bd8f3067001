"""The obvious alternatives every learned system must beat: popularity and BM25.

- :class:`PopularityRanker`: the same list for everyone, most interactions first (over a
  window of the behaviour log before the cut, so it never sees the future).
- :class:`BM25Ranker`: lexical search over the item text with ``bm25s`` (Lucene-style BM25,
  English stop words, no stemming), the standard first-stage baseline of product search.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import bm25s
import numpy as np
import pandas as pd

log = logging.getLogger(__name__)
logging.getLogger("bm25s").setLevel(logging.WARNING)  # it logs every index build at DEBUG


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
    """BM25 over ``texts`` (one per item, aligned with ``item_ids``)."""

    def __init__(self, texts: Sequence[str], item_ids: np.ndarray) -> None:
        self.item_ids = np.asarray(item_ids, dtype=np.int64)
        self.tokenizer = bm25s.tokenization.Tokenizer(stopwords="en")
        corpus = self.tokenizer.tokenize(list(texts), show_progress=False, return_as="tuple")
        self.retriever = bm25s.BM25()
        self.retriever.index(corpus, show_progress=False)

    def search(self, query: str, k: int) -> list[int]:
        """Item ids of the best ``k`` matches, best first; items sharing no word are left
        out (so the list may be shorter than ``k``, or empty)."""
        tokens = self.tokenizer.tokenize(
            [query], update_vocab=False, show_progress=False, return_as="tuple"
        )
        empty = tokens.vocab.get("")  # the placeholder unknown and stop words map to
        ids = [i for i in tokens.ids[0] if i != empty]
        if not ids:
            return []
        k = min(k, len(self.item_ids))
        query_tokens = bm25s.tokenization.Tokenized(ids=[ids], vocab=tokens.vocab)
        docs, scores = self.retriever.retrieve(query_tokens, k=k, show_progress=False, n_threads=1)
        return [int(self.item_ids[d]) for d, s in zip(docs[0], scores[0]) if s > 0]
