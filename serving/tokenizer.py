"""Stage 1 of the request path: query text -> user-tower token ids.

Uses the bundle's ``tokenizer.json`` (uncased BERT WordPiece) through the same
``towers.text`` functions training used, so served and trained tokens agree.

Limits:

* a query keeps at most ``MAX_QUERY_TOKENS`` tokens including ``[CLS]``/``[SEP]``; longer
  queries are truncated, never rejected;
* only the first ``MAX_QUERY_CHARS`` characters are tokenized at all, which bounds the cost of
  a huge query (the kept tokens come from the start of the text anyway);
* a query with no tokens (empty or only whitespace/control characters) is an *empty query*:
  ``HAS_QUERY`` is 0 and the user tower relies on the user's history;
* the text must be UTF-8; other bytes are a :class:`RequestError`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from serving.tensors import require, text_scalar
from towers.bundle_contract import TOKENIZER_FILE
from towers.features import MAX_QUERY_CHARS
from towers.text import load_tokenizer, query_inputs, query_token_list

log = logging.getLogger(__name__)

__all__ = ["MAX_QUERY_CHARS", "QueryTokenizer", "TokenizedQuery"]


@dataclass(frozen=True)
class TokenizedQuery:
    """User-tower inputs of one query: ``input_ids``/``attention_mask`` int64 ``[1, L]``
    (``2 <= L <= MAX_QUERY_TOKENS``) and ``has_query`` float32 ``[1, 1]``."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    has_query: np.ndarray


class QueryTokenizer:
    """Tokenizes one query per request; ``clock_ns`` stamps ``START_NS`` (wall-clock ns).

    ``START_NS`` is ``time.time_ns()`` (not ``monotonic_ns``): the reranker, running in another
    Python-backend process, measures the request's budget from it, and only the wall clock is
    comparable across processes.
    """

    def __init__(self, tokenizer: Tokenizer, *, clock_ns: Callable[[], int] = time.time_ns):
        self.tokenizer = tokenizer
        self.clock_ns = clock_ns

    @classmethod
    def from_dir(cls, folder: Path) -> QueryTokenizer:
        """Load ``tokenizer.json`` from a bundle or version folder."""
        path = Path(folder) / TOKENIZER_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing")
        return cls(load_tokenizer(path))

    def tokenize(self, query: str) -> TokenizedQuery:
        """Token ids of ``query`` truncated to ``MAX_QUERY_TOKENS`` (with [CLS] and [SEP])."""
        ids, mask, has_query = query_inputs(self.tokenizer, query)
        return TokenizedQuery(ids, mask, np.array([[has_query]], dtype=np.float32))

    def query_tokens(self, query: str) -> np.ndarray:
        """WordPiece ids without special tokens, at most ``MAX_QUERY_TOKENS - 2`` (reranker)."""
        return query_token_list(self.tokenizer, query[:MAX_QUERY_CHARS])

    def text_tokens(self, text: str, max_tokens: int) -> np.ndarray:
        """WordPiece ids of any text without special tokens, at most ``max_tokens``."""
        ids = self.tokenizer.encode(text[:MAX_QUERY_CHARS]).ids[1:-1]
        return np.asarray(ids[:max_tokens], dtype=np.int64)

    def infer(self, tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Triton tensors: ``QUERY`` BYTES ``[1]`` -> ``INPUT_IDS``, ``ATTENTION_MASK`` int64
        ``[1, L]``, ``HAS_QUERY`` float32 ``[1, 1]``, ``START_NS`` int64 ``[1]``."""
        start_ns = self.clock_ns()
        query = text_scalar(require(tensors, "QUERY"), "QUERY")
        tok = self.tokenize(query)
        return {
            "INPUT_IDS": tok.input_ids,
            "ATTENTION_MASK": tok.attention_mask,
            "HAS_QUERY": tok.has_query,
            "START_NS": np.array([start_ns], dtype=np.int64),
        }

    def warm_up(self) -> None:
        """Run a query and an empty query through :meth:`infer` (tokenizer caches and the
        first-call work). Microseconds to a few milliseconds: well under a second."""
        for query in (b"red cotton shirt", b""):
            self.infer({"QUERY": np.array([query], dtype=object)})
