"""Item id -> row lookups over the catalog tables of a bundle (all aligned with ``item_ids``)."""

from __future__ import annotations

import numpy as np

__all__ = ["ItemRows"]


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
