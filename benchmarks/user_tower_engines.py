"""The served user-tower stage in each CPU runtime, side by side: which one a request should get.

    python benchmarks/user_tower_engines.py --folder runs/demo1l/artifacts/bundle \
        --out runs/user_tower_engines

``--folder`` is a bundle or a repository's ``user_tower/<version>`` folder (``user_tower.onnx``,
``item_ids.npy``, ``item_embeddings.npy``, ``manifest.json``). The stage
(``serving.user_tower.UserEncoder``, the code the server's ``user_tower`` model runs) is
built once per runtime: ONNX Runtime fp32, OpenVINO bf16 and OpenVINO fp32, one thread each
(the served setting). Requests are generated: half with a query of 2-11 word tokens, half
without (homepage), each with a history of 1-39 random catalog items. Every runtime sees
every request once to warm up (OpenVINO compiles kernels per new shape), then ``--rounds``
rounds run the requests through each runtime in turn (interleaved: the machine's load hits
all alike). ``--flush-mb N`` writes an N MB array before every timed call, as a server's
other processes evict a stage's weights from the caches between two of its requests (64 MB
reproduced the server's user_tower time here). Reported per runtime: ``infer`` latency
p50/p99 in ms and the smallest cosine between its user vectors and ONNX Runtime fp32's.
Writes ``results.json`` and ``results.md`` under ``--out``. Timings are for this machine at
this moment: compare within one run.
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

from serving.graphs import Runtime  # noqa: E402
from serving.user_tower import UserEncoder  # noqa: E402
from towers.features import CLS_ID, SEP_ID  # noqa: E402

log = logging.getLogger("user_tower_engines")

#: Runtime name -> (engine, precision).
RUNTIMES = {
    "onnxruntime-fp32": ("onnxruntime", "fp32"),
    "openvino-bf16": ("openvino", "bf16"),
    "openvino-fp32": ("openvino", "fp32"),
}


def make_requests(item_ids: np.ndarray, n: int, seed: int) -> list[dict[str, np.ndarray]]:
    """``n`` user-tower requests (Triton tensors), alternately with and without a query."""
    rng = np.random.default_rng(seed)
    now = int(time.time())
    out = []
    for i in range(n):
        length = int(rng.integers(1, 40))
        history = rng.choice(item_ids, length)
        ts = now - 3600 * np.arange(length, dtype=np.int64)[::-1]
        words = rng.integers(2000, 9000, int(rng.integers(2, 12))) if i % 2 == 0 else []
        tokens = np.array([[CLS_ID, *words, SEP_ID]], dtype=np.int64)
        out.append(
            {
                "INPUT_IDS": tokens,
                "ATTENTION_MASK": np.ones_like(tokens),
                "HAS_QUERY": np.array([[1.0 if len(words) else 0.0]], dtype=np.float32),
                "USER_ID": np.array([-1], dtype=np.int64),
                "HISTORY_IDS": history.astype(np.int64),
                "HISTORY_TS": ts,
            }
        )
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--folder", type=Path, required=True, help="bundle or user_tower version")
    ap.add_argument("--out", type=Path, default=Path("runs/user_tower_engines"))
    ap.add_argument("--requests", type=int, default=200, help="distinct requests (200)")
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds over them (5)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--flush-mb", type=int, default=0, help="MB written before each timed call (0: none)"
    )
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if not (a.folder / "user_tower.onnx").is_file():
        print(
            f"no user_tower.onnx in {a.folder}: pass a bundle or a version folder", file=sys.stderr
        )
        return 2
    if a.requests < 1 or a.rounds < 1 or a.flush_mb < 0:
        print("--requests and --rounds must be >= 1, --flush-mb >= 0", file=sys.stderr)
        return 2
    stages = {
        name: UserEncoder.from_dir(
            a.folder, runtime=Runtime(engine=engine, precision=precision, intra_op_threads=1)
        )
        for name, (engine, precision) in RUNTIMES.items()
    }
    requests = make_requests(next(iter(stages.values())).items.item_ids, a.requests, a.seed)
    vectors: dict[str, np.ndarray] = {}
    for name, stage in stages.items():
        stage.warm_up()
        vectors[name] = np.concatenate([stage.infer(r)["USER_VECTOR"] for r in requests])
    times: dict[str, list[float]] = {name: [] for name in stages}
    junk = np.zeros(a.flush_mb * 2**20 // 8)
    for _ in range(a.rounds):
        for name, stage in stages.items():
            for request in requests:
                if len(junk):
                    junk += 1.0  # evict the stage's weights from the caches
                start = time.perf_counter()
                stage.infer(request)
                times[name].append(time.perf_counter() - start)
    reference = vectors["onnxruntime-fp32"]
    rows = []
    for name in stages:
        ms = np.asarray(times[name]) * 1e3
        rows.append(
            {
                "runtime": name,
                "p50_ms": float(np.median(ms)),
                "p99_ms": float(np.percentile(ms, 99)),
                "min_cosine_to_onnxruntime": float((vectors[name] * reference).sum(1).min()),
            }
        )
    base = rows[0]["p50_ms"]
    a.out.mkdir(parents=True, exist_ok=True)
    result = {
        "folder": str(a.folder),
        "requests": a.requests,
        "rounds": a.rounds,
        "flush_mb": a.flush_mb,
        "rows": rows,
    }
    (a.out / "results.json").write_text(json.dumps(result, indent=2))
    lines = [
        "# User-tower stage by CPU runtime (one thread, interleaved rounds)",
        "",
        f"{a.requests} requests (half with a query) x {a.rounds} rounds; folder `{a.folder}`; "
        f"{a.flush_mb} MB written before each timed call.",
        "",
        "| runtime | infer p50 ms | p99 ms | p50 / ONNX Runtime's | min cosine to ONNX Runtime |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['runtime']} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
            f"{r['p50_ms'] / base:.2f} | {r['min_cosine_to_onnxruntime']:.5f} |"
        )
    (a.out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
