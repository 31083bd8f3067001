"""The FAISS index over item vectors (inner product; vectors are L2-normalised).

Built by ``towerserve export`` (``export/bundle.py``) and, for artifacts not yet exported, by
evaluation (``towers/evaluation/systems.py``) the same way; it lives in ``towers`` so that
evaluation need not import ``export`` (the import contract in ``pyproject.toml``).
"""

from __future__ import annotations

import logging
import math

import faiss
import numpy as np

log = logging.getLogger(__name__)

__all__ = ["FLAT_BELOW", "build_index", "ivf_lists"]

#: Below this many items an exact flat index is both faster and simpler than IVF.
FLAT_BELOW = 2000


def ivf_lists(n_items: int) -> int:
    """Inverted lists for ``n_items``: about ``4 sqrt(n)``, at least 39 training points each."""
    return max(1, min(int(4 * math.sqrt(n_items)), n_items // 39))


def build_index(
    vectors: np.ndarray, ids: np.ndarray, *, kind: str = "auto", nprobe: int = 16, seed: int = 7
) -> tuple[faiss.Index, dict[str, object]]:
    """An index whose search returns item ids; and its parameters for the manifest.

    ``kind``: ``"flat"`` (exact), ``"ivf"`` (IVF-Flat, ``nprobe`` lists searched) or ``"auto"``
    (flat below ``FLAT_BELOW`` items, IVF above).
    """
    n, dim = vectors.shape
    if len(ids) != n:
        raise ValueError(f"{n} vectors but {len(ids)} ids")
    if kind not in ("auto", "flat", "ivf"):
        raise ValueError(f"unknown index kind {kind!r}: auto, flat or ivf")
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if kind == "flat" or (kind == "auto" and n < FLAT_BELOW):
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        index.add_with_ids(x, ids.astype(np.int64))
        return index, {"type": "Flat", "nlist": 0, "nprobe": 0}
    nlist = ivf_lists(n)
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = seed
    index.train(x)
    index.add_with_ids(x, ids.astype(np.int64))
    index.nprobe = min(nprobe, nlist)
    log.info("IVF%d,Flat over %d items, nprobe %d", nlist, n, index.nprobe)
    return index, {"type": f"IVF{nlist},Flat", "nlist": nlist, "nprobe": int(index.nprobe)}
