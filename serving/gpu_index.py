"""Candidate recall on a GPU: FAISS-GPU when the installed FAISS has it, else exact top-k.

:func:`to_device` turns the bundle's CPU FAISS index into an object with FAISS's search
signature (``search(x [nq, D] float32, k) -> (scores float32 [nq, k], ids int64 [nq, k])``,
``-1`` ids where fewer than ``k`` exist) that searches on a CUDA device:

* ``faiss-gpu``: FAISS built with GPU support (``faiss.StandardGpuResources`` exists): an
  IVF-Flat index is cloned with ``index_cpu_to_gpu`` and keeps its ``nprobe``; any other kind
  (flat, HNSW, refined IVF-PQ: their exact vectors) becomes ``GpuIndexFlatIP`` (positions
  mapped back to item ids on the host).
* ``torch-exact``: otherwise (faiss-cpu installed, torch with CUDA): every item vector on the
  device, one matmul and ``torch.topk`` per batch of queries; exact, so Recall@k is 1 against
  fp32 exact search up to ties at ``dtype`` precision (fp32 by default; fp16 halves memory and
  time per query at a small recall cost, measured by ``benchmarks/gpu_bench.py``).

Removed items (``removed_ids``) are taken out of the device copy at load, so no search
selector is needed. The chosen backend is :attr:`DeviceIndex.backend`, logged at load and
reported by the retriever in its log and Triton metrics.
"""

from __future__ import annotations

import logging

import faiss
import numpy as np

log = logging.getLogger(__name__)

__all__ = ["DeviceIndex", "TorchExactIndex", "index_vectors", "to_device"]


def index_vectors(index: faiss.Index) -> tuple[np.ndarray, np.ndarray]:
    """``(vectors float32 [N, D], ids int64 [N])`` stored in an ``IndexIDMap(2)`` over an index
    that reconstructs them exactly (flat, HNSW-Flat, IVF-PQ refined by flat vectors) or an
    IVF-Flat index (read from its inverted lists); raises ``TypeError`` for other kinds."""
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None and not isinstance(index, faiss.IndexIDMap2 | faiss.IndexIDMap):
        if ivf.code_size != ivf.d * 4:  # IVF-Flat stores each vector as d float32 codes
            raise TypeError(f"cannot read vectors out of {type(index).__name__}: IVF-Flat only")
        invlists = ivf.invlists
        if invlists is None:
            raise TypeError(f"{type(index).__name__} has no inverted lists")
        vec_parts: list[np.ndarray] = []
        id_parts: list[np.ndarray] = []
        for lst in range(ivf.nlist):
            n = invlists.list_size(lst)
            if n == 0:
                continue
            id_parts.append(faiss.rev_swig_ptr(invlists.get_ids(lst), n).copy())
            codes = faiss.rev_swig_ptr(invlists.get_codes(lst), n * invlists.code_size)
            vec_parts.append(np.frombuffer(codes.copy(), dtype=np.float32).reshape(n, ivf.d))
        if not id_parts:
            return np.zeros((0, ivf.d), np.float32), np.zeros(0, np.int64)
        return np.concatenate(vec_parts), np.concatenate(id_parts).astype(np.int64)
    if isinstance(index, faiss.IndexIDMap2 | faiss.IndexIDMap):
        map_ids = faiss.vector_to_array(index.id_map).astype(np.int64)
        inner = faiss.downcast_index(index.index)
        return inner.reconstruct_n(0, inner.ntotal).astype(np.float32), map_ids
    if isinstance(index, faiss.IndexFlat):
        return index.reconstruct_n(0, index.ntotal).astype(np.float32), np.arange(
            index.ntotal, dtype=np.int64
        )
    raise TypeError(f"cannot read vectors out of {type(index).__name__}")


class DeviceIndex:
    """What the retriever needs of an index: ``d``, ``ntotal``, ``metric_type``, ``search``
    and ``backend`` (the name of what searches)."""

    backend = "?"
    d: int
    ntotal: int
    metric_type = faiss.METRIC_INNER_PRODUCT

    def search(self, x: np.ndarray, k: int, params: object = None) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError


class TorchExactIndex(DeviceIndex):
    """Exact inner-product top-k with torch on ``device`` (``cuda``, or ``cpu`` in tests);
    ``dtype`` ``fp32`` or ``fp16`` for the stored vectors and the matmul."""

    backend = "torch-exact"

    def __init__(
        self, vectors: np.ndarray, ids: np.ndarray, *, device: str = "cuda", dtype: str = "fp32"
    ) -> None:
        import torch

        if dtype not in ("fp32", "fp16"):
            raise ValueError(f"dtype must be fp32 or fp16, got {dtype!r}")
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(ids):
            raise ValueError(f"{vectors.shape} vectors for {len(ids)} ids")
        self._torch = torch
        self.device = torch.device(device)
        self.dtype = torch.float16 if dtype == "fp16" else torch.float32
        self.vectors = torch.from_numpy(vectors).to(self.device, self.dtype)
        self.ids = torch.from_numpy(np.asarray(ids, np.int64)).to(self.device)
        self.ntotal, self.d = int(vectors.shape[0]), int(vectors.shape[1])

    def search(self, x: np.ndarray, k: int, params: object = None) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` by inner product; ``params`` is ignored (removal happened at load)."""
        torch = self._torch
        nq = int(x.shape[0])
        kk = min(int(k), self.ntotal)
        with torch.inference_mode():
            q = torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(self.device, self.dtype)
            scores, pos = torch.topk(q @ self.vectors.T, kk, dim=1)
            ids = self.ids[pos]
            out_s = scores.float().cpu().numpy()
            out_i = ids.cpu().numpy()
        if kk < k:  # FAISS's convention: -1 ids and -inf scores past the last result
            pad = k - kk
            out_s = np.concatenate([out_s, np.full((nq, pad), -np.inf, np.float32)], axis=1)
            out_i = np.concatenate([out_i, np.full((nq, pad), -1, np.int64)], axis=1)
        return out_s, out_i


class FaissGpuIndex(DeviceIndex):
    """A FAISS GPU index; ``pos_to_id`` maps positions to item ids for a flat index."""

    backend = "faiss-gpu"

    def __init__(self, index: faiss.Index, pos_to_id: np.ndarray | None, res: object) -> None:
        self.index = index
        self.pos_to_id = pos_to_id
        self.res = res  # keep the GPU resources alive as long as the index
        self.d, self.ntotal = int(index.d), int(index.ntotal)

    def search(self, x: np.ndarray, k: int, params: object = None) -> tuple[np.ndarray, np.ndarray]:
        scores, pos = self.index.search(np.ascontiguousarray(x, np.float32), k)
        if self.pos_to_id is None:
            return scores, pos
        ids = np.where(pos >= 0, self.pos_to_id[np.clip(pos, 0, None)], -1)
        return scores, ids.astype(np.int64)


def faiss_has_gpu() -> bool:
    """True when the installed FAISS was built with GPU support and sees a GPU."""
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def to_device(
    index: faiss.Index,
    removed_ids: np.ndarray | None = None,
    *,
    device: str = "cuda",
    dtype: str = "fp32",
    prefer_faiss: bool = True,
) -> DeviceIndex:
    """A device copy of ``index`` without ``removed_ids`` (module docstring for the choice)."""
    removed = np.unique(np.asarray(removed_ids if removed_ids is not None else [], np.int64))
    if prefer_faiss and faiss_has_gpu() and device.startswith("cuda"):
        res = faiss.StandardGpuResources()
        gpu_no = int(device.split(":")[1]) if ":" in device else 0
        if isinstance(index, faiss.IndexIVFFlat):
            cpu = faiss.clone_index(index)
            if len(removed):
                cpu.remove_ids(faiss.IDSelectorBatch(removed))
            opts = faiss.GpuClonerOptions()
            opts.useFloat16 = dtype == "fp16"
            gpu = faiss.index_cpu_to_gpu(res, gpu_no, cpu, opts)
            faiss.GpuParameterSpace().set_index_parameter(gpu, "nprobe", int(index.nprobe))
            out: DeviceIndex = FaissGpuIndex(gpu, None, res)
        else:
            vectors, ids = _without(index_vectors(index), removed)
            flat = faiss.GpuIndexFlatIP(res, int(index.d))
            flat.add(vectors)
            out = FaissGpuIndex(flat, ids, res)
    else:
        vectors, ids = _without(index_vectors(index), removed)
        out = TorchExactIndex(vectors, ids, device=device, dtype=dtype)
    log.info(
        "index on %s: %s, %d items (%d removed), dim %d",
        device,
        out.backend,
        out.ntotal,
        len(removed),
        out.d,
    )
    return out


def _without(
    pair: tuple[np.ndarray, np.ndarray], removed: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    vectors, ids = pair
    if len(removed) == 0:
        return vectors, ids
    keep = ~np.isin(ids, removed)
    return vectors[keep], ids[keep]
