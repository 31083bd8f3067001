"""The FAISS index over item vectors: moved to :mod:`towers.index` (so that evaluation can build
it without importing ``export``); re-exported here for importers of the old path."""

from __future__ import annotations

from towers.index import FLAT_BELOW, build_index, ivf_lists

__all__ = ["FLAT_BELOW", "build_index", "ivf_lists"]
