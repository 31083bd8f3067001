"""Choose the FAISS index by a recall floor: a sweep of the kinds ``towers.index`` builds.

For item vectors ``[N, D]`` and held-out query vectors ``[Q, D]`` (all L2-normalised), each
grid point is built with :func:`towers.index.build_index` (training and adding on all cores),
its search-time parameter applied with :func:`towers.index.apply_search_params`, and measured:

* Recall@k (k = 100 by default): the share of the exact top k (``faiss.IndexFlatIP`` over the
  same vectors) that the index returns in its top k, averaged over the queries;
* single-query latency: one query per ``search`` call on ONE thread
  (``faiss.omp_set_num_threads(1)``, as the served retriever runs), ``time.perf_counter_ns``
  around the call, after a warm-up; p50 and p99 in milliseconds;
* build time (train and add, seconds, all cores) and the serialised index size in bytes
  (``faiss.serialize_index``: what the index holds in memory, give or take a few headers).

The chosen point is the one with the lowest p50 among those with Recall@k >= ``floor`` and p99
<= ``p99_max_ms``. :func:`write_report` writes ``faiss_sweep.json``, ``faiss_sweep.md`` and
``faiss_sweep.png`` (Recall@k against p99, log scale). ``benchmarks/faiss_sweep.py`` is the
command line.

:func:`clustered_vectors` makes a catalog that is not easy for ANN: unit vectors from many
anisotropic clusters (each spread along its own random low-dimensional subspace) whose centres
group into overlapping families, with a steep (Zipf) size distribution, so a few clusters hold
a large share of the items; queries are noisy, recency-weighted means of a short history drawn
from one to three clusters (the user tower's input is the like), never catalog vectors.
"""

from __future__ import annotations

import logging
import math
import os
import platform
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from tqdm import tqdm

from towers.index import apply_search_params, build_index, train_centroids

log = logging.getLogger(__name__)

__all__ = [
    "Grid",
    "Point",
    "choose",
    "clustered_vectors",
    "held_out_queries",
    "run_sweep",
    "write_report",
]


@dataclass(frozen=True)
class Grid:
    """The points to sweep. ``*_nlist``: IVF lists (build-time); ``nprobe``/``ef_search``/
    ``k_factor``: search-time values tried on each built index; empty tuples skip a kind."""

    flat: bool = True
    flat_queries: int = 100  # exact search is slow at 1M: its latency from the first few
    ivf_nlist: tuple[int, ...] = (1024, 4096)
    ivf_nprobe: tuple[int, ...] = (16, 32, 48, 64, 96)
    hnsw_m: tuple[int, ...] = (32,)
    hnsw_ef_construction: int = 40
    hnsw_ef_search: tuple[int, ...] = (128, 256, 512)
    ivfpq_nlist: tuple[int, ...] = (4096,)
    ivfpq_sub_dims: tuple[int, ...] = (2, 1)  # dimensions per 4-bit sub-quantizer (pq_m = D / v)
    ivfpq_nprobe: tuple[int, ...] = (32, 48, 64, 96)
    ivfpq_k_factor: tuple[float, ...] = (4.0, 8.0, 16.0)


@dataclass
class Point:
    """One measured configuration. Latencies in milliseconds, build in seconds, size in bytes."""

    kind: str
    type: str
    build: dict[str, Any]
    search: dict[str, Any]
    recall: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    build_s: float
    bytes: int
    queries: int
    chosen: bool = False
    meets: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def clustered_vectors(
    n_items: int,
    n_queries: int,
    dim: int,
    *,
    seed: int = 0,
    items_per_cluster: int = 250,
    zipf: float = 1.0,
    rank: int = 16,
    families: int = 64,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """``(items float32 [n_items, dim], queries float32 [n_queries, dim], description)``.

    ``n_items / items_per_cluster`` clusters (at least 2) with sizes proportional to
    ``rank^-zipf``; each cluster is its centre plus a Gaussian spread along ``rank`` random
    directions with decaying scales, plus small isotropic noise; centres are noisy copies of
    ``families`` family centres. Queries: a history of 1-20 fresh draws from 1-3 clusters
    (picked by size), recency-weighted mean plus noise. All unit norm. The description names
    every parameter (for the report).
    """
    rng = np.random.default_rng(seed)
    n_clusters = max(2, n_items // items_per_cluster)
    weights = 1.0 / np.arange(1, n_clusters + 1) ** zipf
    weights /= weights.sum()
    sizes = np.floor(weights * n_items).astype(np.int64)
    sizes[: n_items - int(sizes.sum())] += 1  # the remainder to the biggest clusters
    fam = _unit(rng.normal(size=(families, dim)))
    centres = _unit(
        fam[rng.integers(0, families, n_clusters)] + 0.8 * _unit(rng.normal(size=(n_clusters, dim)))
    )
    r = min(rank, dim)
    decay = 1.0 / np.sqrt(np.arange(1, r + 1))
    spread = rng.uniform(0.25, 0.6, size=n_clusters)

    def draw(c: int, count: int, g: np.random.Generator) -> np.ndarray:
        basis, _ = np.linalg.qr(np.random.default_rng([seed, c]).normal(size=(dim, r)))
        z = g.normal(size=(count, r)) * (spread[c] * decay)
        noise = g.normal(size=(count, dim)) * (0.08 / math.sqrt(dim))
        return (centres[c] + z @ basis.T + noise).astype(np.float32)

    items = np.empty((n_items, dim), dtype=np.float32)
    start = 0
    for c in tqdm(range(n_clusters), desc="clusters", disable=not progress, leave=False):
        items[start : start + sizes[c]] = draw(c, int(sizes[c]), rng)
        start += int(sizes[c])
    items = _unit(items[rng.permutation(n_items)])

    qrng = np.random.default_rng([seed, 1])
    queries = np.empty((n_queries, dim), dtype=np.float32)
    for i in range(n_queries):
        interests = qrng.choice(n_clusters, size=int(qrng.integers(1, 4)), p=weights)
        h = int(qrng.integers(1, 21))
        picks = qrng.choice(interests, size=h)
        hist = _unit(np.stack([draw(int(c), 1, qrng)[0] for c in picks]))
        w = 0.8 ** np.arange(h)[::-1]  # newest last, weighted most
        queries[i] = (w @ hist) / w.sum() + qrng.normal(size=dim) * (0.15 / math.sqrt(dim))
    desc = {
        "source": "generated",
        "generator": "towers.index_sweep.clustered_vectors",
        "seed": seed,
        "clusters": n_clusters,
        "largest_cluster_share": round(float(sizes.max()) / n_items, 4),
        "zipf": zipf,
        "rank": r,
        "families": families,
        "queries": "recency-weighted mean of 1-20 fresh draws from 1-3 clusters, plus noise",
    }
    return items, _unit(queries), desc


def held_out_queries(
    vectors: np.ndarray, n_queries: int, *, seed: int = 0, noise: float = 0.1
) -> tuple[np.ndarray, np.ndarray]:
    """``(items, queries)`` from one set of real vectors: ``n_queries`` random rows are held
    out of the catalog and each becomes a query plus Gaussian noise of norm about ``noise``."""
    rng = np.random.default_rng(seed)
    n = len(vectors)
    if n_queries >= n:
        raise ValueError(f"cannot hold out {n_queries} of {n} vectors")
    held = rng.choice(n, size=n_queries, replace=False)
    keep = np.ones(n, dtype=bool)
    keep[held] = False
    dim = vectors.shape[1]
    q = vectors[held] + rng.normal(size=(n_queries, dim)) * (noise / math.sqrt(dim))
    return _unit(vectors[keep]), _unit(q)


def _latency_and_hits(
    index: faiss.Index, queries: np.ndarray, k: int, warmup: int = 20
) -> tuple[np.ndarray, np.ndarray]:
    """``(latency ns int64 [Q], ids int64 [Q, k])``: one query per call, on one thread."""
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        for i in range(min(warmup, len(queries))):
            index.search(queries[i : i + 1], k)
        lat = np.empty(len(queries), dtype=np.int64)
        ids = np.empty((len(queries), k), dtype=np.int64)
        for i in range(len(queries)):
            q = queries[i : i + 1]
            t0 = time.perf_counter_ns()
            _, found = index.search(q, k)
            lat[i] = time.perf_counter_ns() - t0
            ids[i] = found[0]
    finally:
        faiss.omp_set_num_threads(threads)
    return lat, ids


def _recall(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean over rows of ``|found_i ∩ exact_i| / k``."""
    k = exact.shape[1]
    return float(
        np.mean([len(np.intersect1d(f, e)) / k for f, e in zip(found, exact, strict=True)])
    )


def _measure(
    kind: str,
    index: faiss.Index,
    meta: dict[str, Any],
    build: dict[str, Any],
    search: dict[str, Any],
    queries: np.ndarray,
    exact: np.ndarray,
    build_s: float,
    size: int,
) -> Point:
    applied = apply_search_params(index, search)
    lat, ids = _latency_and_hits(index, queries, exact.shape[1])
    ms = lat / 1e6
    return Point(
        kind=kind,
        type=str(meta["type"]),
        build=build,
        search=applied,
        recall=_recall(ids, exact[: len(queries)]),
        p50_ms=float(np.percentile(ms, 50)),
        p99_ms=float(np.percentile(ms, 99)),
        mean_ms=float(ms.mean()),
        build_s=build_s,
        bytes=size,
        queries=len(queries),
    )


def _plan(grid: Grid, dim: int) -> list[tuple[str, dict[str, Any], list[dict[str, Any]]]]:
    """``(kind, build options, [search options])`` for each index to build."""
    plan: list[tuple[str, dict[str, Any], list[dict[str, Any]]]] = []
    if grid.flat:
        plan.append(("flat", {}, [{}]))
    for nlist in grid.ivf_nlist:
        plan.append(("ivf", {"nlist": nlist}, [{"nprobe": p} for p in grid.ivf_nprobe]))
    for m in grid.hnsw_m:
        build = {"hnsw_m": m, "ef_construction": grid.hnsw_ef_construction}
        plan.append(("hnsw", build, [{"efSearch": e} for e in grid.hnsw_ef_search]))
    searches = [
        {"nprobe": p, "k_factor": f} for p in grid.ivfpq_nprobe for f in grid.ivfpq_k_factor
    ]
    for nlist in grid.ivfpq_nlist:
        for sub in grid.ivfpq_sub_dims:
            plan.append(("ivfpq", {"nlist": nlist, "pq_m": max(1, dim // sub)}, searches))
    return [(k, b, s) for k, b, s in plan if s]


def run_sweep(
    items: np.ndarray,
    queries: np.ndarray,
    grid: Grid,
    *,
    k: int = 100,
    floor: float = 0.95,
    p99_max_ms: float = 1.0,
    seed: int = 7,
    progress: bool = True,
) -> dict[str, Any]:
    """Measure every point of ``grid`` over ``items`` ``[N, D]`` with ``queries`` ``[Q, D]``;
    return the results document (``points``, ``chosen``, settings), see the module docstring."""
    load_before = os.getloadavg()
    started = time.perf_counter()
    items = np.ascontiguousarray(items, dtype=np.float32)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    n, dim = items.shape
    k = min(k, n)
    ids = np.arange(n, dtype=np.int64)
    t0 = time.perf_counter()
    exact_index = faiss.IndexFlatIP(dim)
    exact_index.add(items)
    _, exact = exact_index.search(queries, k)
    del exact_index
    log.info(
        "exact top %d of %d queries over %d items in %.1f s",
        k,
        len(queries),
        n,
        time.perf_counter() - t0,
    )
    plan = _plan(grid, dim)
    points: list[Point] = []
    bar = tqdm(total=sum(len(s) for _, _, s in plan), desc="faiss sweep", disable=not progress)
    centres: dict[int, tuple[np.ndarray, float]] = {}  # nlist -> (centroids, k-means s)
    for kind, build, searches in plan:
        bar.set_postfix_str(f"building {kind} {build}")
        kmeans_s = 0.0
        centroids = None
        if kind in ("ivf", "ivfpq"):
            nlist = min(int(build["nlist"]), max(1, n // 39))
            if nlist not in centres:  # k-means once per nlist, shared by IVF-Flat and IVF-PQ
                t0 = time.perf_counter()
                trained = train_centroids(items, nlist, seed=seed)
                centres[nlist] = (trained, time.perf_counter() - t0)
            centroids, kmeans_s = centres[nlist]
        t0 = time.perf_counter()
        index, meta = build_index(items, ids, kind=kind, seed=seed, centroids=centroids, **build)
        build_s = kmeans_s + time.perf_counter() - t0  # what building it alone would take
        size = int(faiss.serialize_index(index).nbytes)
        build_rec = {
            key: v for key, v in meta.items() if key not in ("nprobe", "efSearch", "k_factor")
        }
        for search in searches:
            bar.set_postfix_str(f"{meta['type']} {search}")
            q = queries[: grid.flat_queries] if kind == "flat" else queries
            point = _measure(kind, index, meta, build_rec, search, q, exact, build_s, size)
            point.extra = {"kmeans_s": round(kmeans_s, 2)} if kmeans_s else {}
            log.info(
                "%s %s: recall@%d %.4f, p50 %.3f ms, p99 %.3f ms",
                point.type,
                point.search,
                k,
                point.recall,
                point.p50_ms,
                point.p99_ms,
            )
            points.append(point)
            bar.update(1)
        del index
    bar.close()
    chosen = choose(points, floor=floor, p99_max_ms=p99_max_ms)
    return {
        "n_items": n,
        "dim": dim,
        "n_queries": len(queries),
        "k": k,
        "floor": floor,
        "p99_max_ms": p99_max_ms,
        "threads_search": 1,
        "threads_build": faiss.omp_get_max_threads(),
        "faiss": faiss.__version__,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "cpus": os.cpu_count(),
        "sweep_s": round(time.perf_counter() - started, 1),
        "load_average_1m": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "points": [asdict(p) for p in points],
        "chosen": asdict(chosen) if chosen else None,
    }


def choose(points: Sequence[Point], *, floor: float, p99_max_ms: float) -> Point | None:
    """The lowest-p50 point with ``recall >= floor`` and ``p99_ms <= p99_max_ms`` (marked
    ``chosen``; every qualifying point is marked ``meets``), or None."""
    ok = [p for p in points if p.recall >= floor and p.p99_ms <= p99_max_ms]
    for p in ok:
        p.meets = True
    if not ok:
        return None
    best = min(ok, key=lambda p: (p.p50_ms, p.p99_ms))
    best.chosen = True
    return best


def _fmt_params(d: dict[str, Any], drop: Iterable[str] = ("type", "kind")) -> str:
    return ", ".join(f"{k}={v}" for k, v in d.items() if k not in drop and v not in (None, 0))


def markdown(doc: dict[str, Any]) -> str:
    """The results document as a markdown report (vectors used, settings, one row a point)."""
    vec = doc.get("vectors", {})
    k = doc["k"]
    lines = [
        f"# FAISS sweep: {doc['n_items']:,} items, dimension {doc['dim']}",
        "",
        *([f"- Command: `{doc['command']}`"] if doc.get("command") else []),
        f"- Vectors: {_fmt_params(vec, drop=())}",
        f"- Queries: {doc['n_queries']:,} held out (never in the index); Recall@{k} against exact "
        "search (`faiss.IndexFlatIP`) over the same items",
        f"- Latency: one query per `search` call, ONE thread (`faiss.omp_set_num_threads(1)`), "
        f"`time.perf_counter_ns`; build (train + add) on {doc['threads_build']} threads"
        + (f"; the sweep took {doc['sweep_s']:.0f} s" if doc.get("sweep_s") else ""),
        f"- FAISS {doc['faiss']}, {doc['machine']}, {doc.get('cpus')} CPUs, 1-minute load "
        f"average {doc.get('load_average_1m')} (start, end): a shared machine, so latencies "
        "are noisy; compare points of this one run",
        f"- Choice: lowest p50 with Recall@{k} >= {doc['floor']} and p99 <= {doc['p99_max_ms']} ms",
        "",
    ]
    chosen = doc.get("chosen")
    flat = next((p for p in doc["points"] if p["kind"] == "flat"), None)
    if chosen:
        lines.append(
            f"**Chosen: {chosen['type']} ({_fmt_params(chosen['search'])}): Recall@{k} "
            f"{chosen['recall']:.4f}, p50 {chosen['p50_ms']:.3f} ms, "
            f"p99 {chosen['p99_ms']:.3f} ms, build {chosen['build_s']:.0f} s, "
            f"{chosen['bytes'] / 2**20:,.0f} MiB**"
        )
    else:
        lines.append("**No point meets the floor and the p99 limit.**")
    if flat:
        lines.append(
            f"\nExact flat in the same run: Recall@{k} {flat['recall']:.4f}, p50 "
            f"{flat['p50_ms']:.3f} ms, p99 {flat['p99_ms']:.3f} ms ({flat['queries']} queries)."
        )
    lines += [
        "",
        f"| index | build | search | Recall@{k} | p50 ms | p99 ms | build s | MiB | meets |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | :---: |",
    ]
    for p in doc["points"]:
        mark = "**chosen**" if p["chosen"] else ("yes" if p["meets"] else "")
        lines.append(
            f"| {p['type']} | {_fmt_params(p['build'])} | {_fmt_params(p['search'])} | "
            f"{p['recall']:.4f} | {p['p50_ms']:.3f} | {p['p99_ms']:.3f} | {p['build_s']:.1f} | "
            f"{p['bytes'] / 2**20:,.0f} | {mark} |"
        )
    return "\n".join(lines) + "\n"


def plot(doc: dict[str, Any], path: Path) -> None:
    """Recall@k against p99 latency (log scale), one series per kind, the limits as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for kind in dict.fromkeys(p["kind"] for p in doc["points"]):
        pts = [p for p in doc["points"] if p["kind"] == kind]
        ax.plot([p["p99_ms"] for p in pts], [p["recall"] for p in pts], "o", label=kind)
    if doc.get("chosen"):
        c = doc["chosen"]
        ax.plot([c["p99_ms"]], [c["recall"]], "k*", markersize=14, label="chosen")
    ax.axhline(doc["floor"], color="grey", linestyle="--", linewidth=1)
    ax.axvline(doc["p99_max_ms"], color="grey", linestyle=":", linewidth=1)
    ax.set_xscale("log")
    ax.set_xlabel("single-query p99 latency, ms (one thread)")
    ax.set_ylabel(f"Recall@{doc['k']} vs exact")
    ax.set_title(f"FAISS sweep, {doc['n_items']:,} x {doc['dim']} ({doc['vectors']['source']})")
    ax.legend(loc="lower right")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(doc: dict[str, Any], out: Path) -> dict[str, Path]:
    """Write ``faiss_sweep.json``, ``.md`` and ``.png`` under ``out``; return their paths."""
    import json

    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out / "faiss_sweep.json",
        "md": out / "faiss_sweep.md",
        "png": out / "faiss_sweep.png",
    }
    paths["json"].write_text(json.dumps(doc, indent=1) + "\n")
    paths["md"].write_text(markdown(doc))
    plot(doc, paths["png"])
    return paths
