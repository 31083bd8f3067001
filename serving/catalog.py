"""The catalog tables of a bundle, all aligned with ``item_ids``: id -> row lookups
(:class:`ItemRows`) and what the reranker reads per item (:class:`ItemTexts`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from towers.bundle_contract import (
    ITEM_IDS_FILE,
    ITEM_TITLES_FILE,
    ITEM_TOKENS_FILE,
    POPULARITY_FILE,
    BundleError,
)

__all__ = ["ItemRows", "ItemTexts"]


class ItemRows:
    """Rows of item ids in a catalog table, by binary search (no per-item Python dict).

    ``item_ids`` int64 ``[N]``, unique; row ``i`` of every aligned table describes
    ``item_ids[i]``. Memory: two int64 arrays of ``N``.
    """

    def __init__(self, item_ids: np.ndarray) -> None:
        ids = np.asarray(item_ids, dtype=np.int64).reshape(-1)
        order = np.argsort(ids, kind="stable")
        sorted_ids = ids[order]
        if len(ids) > 1 and np.any(sorted_ids[1:] == sorted_ids[:-1]):
            dup = sorted_ids[1:][sorted_ids[1:] == sorted_ids[:-1]][0]
            raise ValueError(f"item id {int(dup)} appears more than once in the catalog")
        self.item_ids = ids
        self._sorted = sorted_ids
        self._order = order

    def __len__(self) -> int:
        return len(self.item_ids)

    def lookup(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(rows, known)`` for ``ids``: ``known`` bool ``[n]``; ``rows`` int64 ``[n]``, valid
        where ``known`` (0 elsewhere)."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if len(self._sorted) == 0:
            return np.zeros(len(ids), dtype=np.int64), np.zeros(len(ids), dtype=bool)
        pos = np.searchsorted(self._sorted, ids)
        pos = np.minimum(pos, len(self._sorted) - 1)
        known = self._sorted[pos] == ids
        rows = np.where(known, self._order[pos], 0).astype(np.int64)
        return rows, known


class ItemTexts:
    """What the reranker knows per item, aligned with ``item_ids``: pre-tokenized text
    (``offsets`` int64 ``[N+1]`` into ``tokens`` int ``[T]``, no special tokens), ``titles``
    and ``popularity`` float32 ``[N]``."""

    def __init__(
        self,
        item_ids: np.ndarray,
        offsets: np.ndarray,
        tokens: np.ndarray,
        titles: Sequence[str],
        popularity: np.ndarray,
    ) -> None:
        self.rows = ItemRows(item_ids)
        n = len(self.rows)
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.tokens = np.asarray(tokens, dtype=np.int64)
        self.titles = [str(t) for t in titles]
        self.popularity = np.asarray(popularity, dtype=np.float32)
        if (
            len(self.offsets) != n + 1
            or len(self.titles) != n
            or len(self.popularity) != n
            or (n and (self.offsets[0] != 0 or self.offsets[-1] != len(self.tokens)))
        ):
            raise ValueError(
                f"item tables disagree: {n} item ids, {len(self.offsets)} offsets (need N + 1, "
                f"0 to {len(self.tokens)} tokens), {len(self.titles)} titles, "
                f"{len(self.popularity)} popularity values"
            )
        #: Titles as UTF-8 bytes, object ``[N]`` (what a BYTES output tensor holds).
        self.title_bytes = np.empty(n, dtype=object)
        self.title_bytes[:] = [t.encode("utf-8") for t in self.titles]

    @classmethod
    def from_dir(cls, folder: Path) -> ItemTexts:
        """Load ``item_tokens.npz``, ``item_titles.json`` and ``popularity.npy`` (aligned with
        ``item_ids.npy`` when present; a different order is refused)."""
        folder = Path(folder)
        with np.load(folder / ITEM_TOKENS_FILE) as f:
            ids, offsets, tokens = f["item_ids"], f["offsets"], f["tokens"]
        ids_path = folder / ITEM_IDS_FILE
        if ids_path.is_file() and not np.array_equal(np.load(ids_path), ids):
            raise BundleError(f"{folder}: {ITEM_TOKENS_FILE} and {ITEM_IDS_FILE} list other items")
        titles = json.loads((folder / ITEM_TITLES_FILE).read_text())
        return cls(ids, offsets, tokens, titles, np.load(folder / POPULARITY_FILE))

    def item_tokens(self, row: int) -> np.ndarray:
        return self.tokens[self.offsets[row] : self.offsets[row + 1]]
