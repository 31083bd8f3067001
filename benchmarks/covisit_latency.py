"""What the long history costs the retriever per request (issue 9), in process.

    .venv/bin/python benchmarks/covisit_latency.py --repository runs/repository --out runs/cv_lat

Loads the ``retriever`` stage of a written repository exactly as Triton does
(serving.stage_params, one OpenMP thread) and times ``Retriever.search`` for requests without
a query whose history holds 0 (no co-visitation), 20, 200 and 1,000 catalog items (random
items, the table reading at most its fitted ``history``), in interleaved rounds (a random
order each round) so machine noise spreads over all of them; and the same with the table's
``history`` raised to 1,000.
Writes ``latency.json`` and ``latency.md`` (median and p99 wall time, and the median of the
thread's CPU time, which a loaded machine disturbs less, in ms) under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

log = logging.getLogger("covisit_latency")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--repository", type=Path, required=True, help="written Triton repository")
    p.add_argument("--out", type=Path, required=True, help="folder for latency.json / .md")
    p.add_argument("--rounds", type=int, default=200, help="requests per history length")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    from serving import stage_params

    retriever = stage_params.retriever(
        *stage_params.repository_params(args.repository, "retriever")
    )
    if retriever.covisit is None:
        p.error(f"{args.repository}'s retriever has no co-visitation table with a weight")
    table = retriever.covisit
    rng = np.random.default_rng(0)
    items = table.item_ids
    dim = retriever.dim
    cases = {"no history": 0, "20 items": 20, "200 items": 200, "1000 items": 1000}
    tables = {"fitted": table, "history 1000": table.with_settings(history=1000)}
    times: dict[str, list[float]] = {}
    cpu_times: dict[str, list[float]] = {}  # this thread's CPU time: robust to a loaded machine
    for _ in range(args.rounds):
        vec = rng.normal(size=(1, dim)).astype(np.float32)
        vec /= np.linalg.norm(vec)
        combos = [(tn, cn) for tn in tables for cn in cases]
        for i in rng.permutation(len(combos)):  # a new order each round: no order bias
            tname, cname = combos[i]
            retriever.covisit = tables[tname]
            n = cases[cname]
            hist = rng.choice(items, size=n, replace=False) if n else None
            start, cpu = time.perf_counter(), time.thread_time()
            retriever.search(vec, 10, has_query=False, history_ids=hist)
            key = f"{tname}, {cname}"
            times.setdefault(key, []).append(time.perf_counter() - start)
            cpu_times.setdefault(key, []).append(time.thread_time() - cpu)
    out = {
        k: {
            "p50_ms": 1e3 * float(np.median(v)),
            "p99_ms": 1e3 * float(np.quantile(v, 0.99)),
            "cpu_p50_ms": 1e3 * float(np.median(cpu_times[k])),
        }
        for k, v in sorted(times.items())
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latency.json").write_text(json.dumps({"table": table.settings(), **out}, indent=2))
    lines = [
        f"# Retriever.search without a query, {args.repository}, {args.rounds} requests each",
        "",
        "| table, history sent | p50 ms | p99 ms | CPU p50 ms |",
        "| --- | ---: | ---: | ---: |",
        *(
            f"| {k} | {v['p50_ms']:.2f} | {v['p99_ms']:.2f} | {v['cpu_p50_ms']:.2f} |"
            for k, v in out.items()
        ),
    ]
    (args.out / "latency.md").write_text("\n".join(lines) + "\n")
    log.info("\n%s", "\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
