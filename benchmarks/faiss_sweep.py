"""FAISS sweep: pick the index by a recall floor (issue 10).

    .venv/bin/python benchmarks/faiss_sweep.py --out runs/faiss_sweep            # 1M generated
    .venv/bin/python benchmarks/faiss_sweep.py --bundle runs/artifacts/bundle --out DIR  # real
    .venv/bin/python benchmarks/faiss_sweep.py --items 20000 --queries 200 --quick --out DIR

Sweeps flat, IVF-Flat (nlist x nprobe), HNSW (M x efSearch) and IVF-PQ with exact refinement
(nlist x nprobe x k_factor) over N item vectors; measures Recall@100 against exact search over
held-out queries, single-query p50/p99 latency on one thread, build time and index bytes; picks
the lowest-p50 point with Recall@100 >= --floor and p99 <= --p99-max-ms. Writes
``faiss_sweep.json``, ``faiss_sweep.md`` and ``faiss_sweep.png`` under --out and prints the
markdown. What is measured and how: towers/index_sweep.py.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from towers.bundle_contract import ITEM_EMBEDDINGS_FILE  # noqa: E402
from towers.config import TrainConfig  # noqa: E402
from towers.index_sweep import (  # noqa: E402
    Grid,
    clustered_vectors,
    held_out_queries,
    run_sweep,
    write_report,
)

QUICK = Grid(
    ivf_nlist=(64,),
    ivf_nprobe=(8, 32),
    hnsw_m=(16,),
    hnsw_ef_search=(128,),
    ivfpq_nlist=(64,),
    ivfpq_nprobe=(16,),
    ivfpq_sub_dims=(2,),
    ivfpq_k_factor=(4.0,),
)


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v.strip())


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(",") if v.strip())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (``--help`` lists it)."""
    dim = TrainConfig().dim
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/faiss_sweep"), help="output folder")
    p.add_argument("--items", type=int, default=1_000_000, help="N catalog vectors (generated)")
    p.add_argument("--dim", type=int, default=dim, help=f"D (default {dim}: the towers' dim)")
    p.add_argument("--queries", type=int, default=1000, help="Q held-out query vectors")
    p.add_argument("--vectors", type=Path, help="item vectors .npy [N, D] instead of generated")
    p.add_argument(
        "--bundle",
        type=Path,
        help=f"an exported bundle (runs/artifacts/bundle, or a repository's user_tower/1): "
        f"its {ITEM_EMBEDDINGS_FILE}",
    )
    p.add_argument("--query-vectors", type=Path, help="query vectors .npy [Q, D] (else held out)")
    p.add_argument("--k", type=int, default=100, help="Recall@k and search depth")
    p.add_argument("--floor", type=float, default=0.95, help="Recall@k floor")
    p.add_argument("--p99-max-ms", type=float, default=1.0, help="p99 limit, ms")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="a 2-3 point grid (tests, smoke runs)")
    g = Grid()
    p.add_argument("--ivf-nlist", type=_ints, default=g.ivf_nlist, help="e.g. 1024,4096")
    p.add_argument("--ivf-nprobe", type=_ints, default=g.ivf_nprobe)
    p.add_argument("--hnsw-m", type=_ints, default=g.hnsw_m, help="empty string: skip HNSW")
    p.add_argument("--hnsw-ef-construction", type=int, default=g.hnsw_ef_construction)
    p.add_argument("--hnsw-ef-search", type=_ints, default=g.hnsw_ef_search)
    p.add_argument("--ivfpq-nlist", type=_ints, default=g.ivfpq_nlist)
    p.add_argument(
        "--ivfpq-sub-dims",
        type=_ints,
        default=g.ivfpq_sub_dims,
        help="dimensions per 4-bit PQ sub-quantizer, e.g. 2,1 (pq_m = D/2, D)",
    )
    p.add_argument("--ivfpq-nprobe", type=_ints, default=g.ivfpq_nprobe)
    p.add_argument("--ivfpq-k-factor", type=_floats, default=g.ivfpq_k_factor)
    p.add_argument("--flat-queries", type=int, default=g.flat_queries, help="queries timed on flat")
    p.add_argument("--no-flat", action="store_true", help="skip timing exact flat")
    return p.parse_args(argv)


def load_vectors(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, dict[str, object]]:
    """``(items, queries, description)`` from --vectors/--bundle, else generated."""
    path = args.vectors or (args.bundle / ITEM_EMBEDDINGS_FILE if args.bundle else None)
    if path is None:
        return clustered_vectors(args.items, args.queries, args.dim, seed=args.seed, progress=True)
    vectors = np.load(path).astype(np.float32)
    desc: dict[str, object] = {"source": "file", "path": str(path), "rows": len(vectors)}
    if args.query_vectors:
        queries = np.load(args.query_vectors).astype(np.float32)
        desc["queries"] = f"from {args.query_vectors}"
        return vectors, queries, desc
    items, queries = held_out_queries(vectors, args.queries, seed=args.seed)
    desc["queries"] = "held-out rows of the file plus Gaussian noise (norm 0.1), not indexed"
    return items, queries, desc


def main(argv: list[str] | None = None) -> dict[str, object]:
    """Run the sweep; write and print the report; return the results document."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    items, queries, desc = load_vectors(args)
    if args.quick:
        grid = QUICK
    else:
        grid = Grid(
            flat=not args.no_flat,
            flat_queries=args.flat_queries,
            ivf_nlist=args.ivf_nlist,
            ivf_nprobe=args.ivf_nprobe,
            hnsw_m=args.hnsw_m,
            hnsw_ef_construction=args.hnsw_ef_construction,
            hnsw_ef_search=args.hnsw_ef_search,
            ivfpq_nlist=args.ivfpq_nlist,
            ivfpq_sub_dims=args.ivfpq_sub_dims,
            ivfpq_nprobe=args.ivfpq_nprobe,
            ivfpq_k_factor=args.ivfpq_k_factor,
        )
    doc = run_sweep(items, queries, grid, k=args.k, floor=args.floor, p99_max_ms=args.p99_max_ms)
    command = shlex.join(["benchmarks/faiss_sweep.py", *(sys.argv[1:] if argv is None else argv)])
    doc = {"vectors": desc, "command": command, **doc}
    paths = write_report(doc, args.out)
    print(paths["md"].read_text())
    print(json.dumps({k: str(v) for k, v in paths.items()}))
    return doc


if __name__ == "__main__":
    main()
