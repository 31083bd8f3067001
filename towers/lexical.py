"""Lexical match of a query with item text: BM25 (``bm25s``) over the catalog.

One index serves two purposes: the BM25 baseline of the evaluation harness, and the
``lexical`` feature of the reranker's blend (the BM25 score of each candidate), which adds
exact word matches (brands, sizes, colours) that embeddings blur. Tokenization is bm25s's:
lower case, words of two or more letters or digits, English stop words removed, no stemming.

The index saves as five files (``LEXICAL_FILES``) in a flat folder, so it travels in a
bundle beside the other reranker files. Scoring a query touches only the postings of its
words, then reads ``[N]`` scores: about a millisecond per query for a million items.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import bm25s
import numpy as np

from towers.bundle_contract import LEXICAL_FILES

log = logging.getLogger(__name__)
logging.getLogger("bm25s").setLevel(logging.WARNING)  # it logs every index build at DEBUG

__all__ = ["LEXICAL_FILES", "LexicalIndex"]

STOPWORDS = "en"


class LexicalIndex:
    """BM25 over item texts; rows are positions in the texts it was built from."""

    def __init__(self, bm25: bm25s.BM25) -> None:
        self.bm25 = bm25
        self.n_items = int(bm25.scores["num_docs"])

    @classmethod
    def build(cls, texts: Sequence[str]) -> LexicalIndex:
        """Index ``texts`` (one per item)."""
        tokens = bm25s.tokenize(list(texts), stopwords=STOPWORDS, show_progress=False)
        bm25 = bm25s.BM25()
        bm25.index(tokens, show_progress=False)
        return cls(bm25)

    def save(self, folder: Path) -> None:
        """Write ``LEXICAL_FILES`` into ``folder`` (created if missing)."""
        folder.mkdir(parents=True, exist_ok=True)
        self.bm25.save(str(folder))

    @classmethod
    def load(cls, folder: Path) -> LexicalIndex:
        """Read an index written by :meth:`save`.

        Raises:
            FileNotFoundError: a file of ``LEXICAL_FILES`` is missing.
        """
        missing = [n for n in LEXICAL_FILES if not (Path(folder) / n).is_file()]
        if missing:
            raise FileNotFoundError(f"{folder} lacks the lexical index files {missing}")
        return cls(bm25s.BM25.load(str(folder)))

    def words(self, query: str) -> list[str]:
        """The query's words that the index knows (stop words and unknown words dropped)."""
        toks = bm25s.tokenize([query], stopwords=STOPWORDS, return_ids=False, show_progress=False)
        vocab = self.bm25.vocab_dict
        return [w for w in toks[0] if w in vocab]

    def all_scores(self, query: str) -> np.ndarray:
        """BM25 score of every item, float32 ``[N]`` (all 0 when no word matches)."""
        words = self.words(query)
        if not words:
            return np.zeros(self.n_items, dtype=np.float32)
        return np.asarray(self.bm25.get_scores(words), dtype=np.float32)

    def scores(self, query: str, rows: np.ndarray) -> np.ndarray:
        """BM25 scores of the items at ``rows`` (int ``[n]``), float32 ``[n]``."""
        return self.all_scores(query)[np.asarray(rows, dtype=np.int64)]

    def top(self, query: str, k: int) -> np.ndarray:
        """Rows of the best ``k`` matches, best first; items sharing no word are left out."""
        s = self.all_scores(query)
        k = min(k, len(s))
        if k <= 0:
            return np.zeros(0, dtype=np.int64)
        part = np.argpartition(-s, k - 1)[:k]
        order = part[np.lexsort((part, -s[part]))]
        return order[s[order] > 0].astype(np.int64)
