"""Live user events (issue 12): store read/write latency and event-to-answer freshness.

    .venv/bin/python benchmarks/event_store_bench.py --out runs/event_bench
    .venv/bin/python benchmarks/event_store_bench.py --repository runs/repository --out DIR
    .venv/bin/python benchmarks/event_store_bench.py --skip-server --out DIR   # stores only

1. Store: for SQLite (WAL, synchronous=FULL, a file in --out) and Redis (a private
   redis-server started here with --appendonly yes --appendfsync always, or --redis-url), fill
   ``--users`` users x ``--per-user`` events (batches of 5000), then time ``--reads``
   ``recent(user, 20)`` calls of random users (what the user tower does per request) and
   ``--writes`` single-event appends (what one ``events`` request does), one thread,
   ``time.perf_counter_ns``: p50, p99, max.
2. Server: the real tritonserver on a repository (--repository, or a tiny model trained here
   on a generated data set in ``--out/work``: about 2 minutes on 2 cores), once per backend.
   ``--trials`` times: a user id the server has never seen, one event recorded through
   ``client.events.EventsClient``, then ``recommend("", user_id)`` (budget 0) until it
   answers; the time from the start of the record call to the end of that answer, and the
   number of recommend calls it took (1 means the very next request saw the event). Each
   first answer is compared with the answer for the same item sent as explicit history.

Writes ``event_store_bench.json`` and ``event_store_bench.md`` under --out and prints the
markdown.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from serving.events.redis_store import RedisEventStore  # noqa: E402
from serving.events.sqlite_store import SqliteEventStore  # noqa: E402
from serving.events.store import EventBatch, EventStore  # noqa: E402

HISTORY_READ = 20  # towers.features.MAX_HISTORY: what the user tower asks the store for


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="Folder for the report and work.")
    p.add_argument("--users", type=int, default=10_000, help="Users in the filled store.")
    p.add_argument("--per-user", type=int, default=50, help="Events per user in the store.")
    p.add_argument("--reads", type=int, default=5000, help="Timed history reads per store.")
    p.add_argument("--writes", type=int, default=500, help="Timed one-event writes per store.")
    p.add_argument("--trials", type=int, default=200, help="Event -> answer trials per store.")
    p.add_argument("--repository", type=Path, help="Exported repository (else trains tiny).")
    p.add_argument(
        "--artifacts", type=Path, help="Trained artifacts to export (instead of training)."
    )
    p.add_argument("--data", type=Path, help="Catalog of --artifacts (default: its training).")
    p.add_argument(
        "--untrained",
        action="store_true",
        help="Serve untrained demo-size towers (export/untrained.py) instead of training the "
        "tiny preset: seconds instead of minutes; the timings do not depend on the weights.",
    )
    p.add_argument("--redis-url", help="Use this Redis instead of starting one.")
    p.add_argument("--skip-server", action="store_true", help="Store timings only.")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def quantiles_us(ns: list[int]) -> dict[str, float]:
    arr = np.asarray(ns, dtype=np.float64) / 1000
    return {
        "n": int(len(arr)),
        "p50_us": float(np.percentile(arr, 50)),
        "p99_us": float(np.percentile(arr, 99)),
        "max_us": float(arr.max()),
    }


def start_redis(folder: Path) -> tuple[subprocess.Popen | None, str]:
    import redis

    from serving.triton import free_port

    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server not found: apt-get install -y redis-server, or --redis-url")
    shutil.rmtree(folder, ignore_errors=True)  # a fresh, empty server every run
    folder.mkdir(parents=True)
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder),
         "--appendonly", "yes", "--appendfsync", "always", "--save", ""],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    for _ in range(200):
        try:
            client.ping()
            return proc, url
        except redis.ConnectionError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("redis-server did not start")


def bench_store(store: EventStore, args: argparse.Namespace, n_items: int) -> dict[str, Any]:
    rng = np.random.default_rng(args.seed)
    total = args.users * args.per_user
    users = np.repeat(np.arange(args.users, dtype=np.int64), args.per_user)
    items = rng.integers(0, n_items, total)
    ts = 1_767_225_600 + rng.integers(0, 28 * 86_400, total)
    start = time.perf_counter()
    for lo in range(0, total, 5000):
        sl = slice(lo, lo + 5000)
        store.append(EventBatch.of(users[sl], items[sl], ts[sl], np.zeros(len(items[sl]))))
    fill_s = time.perf_counter() - start
    reads = []
    for user in rng.integers(0, args.users, args.reads).tolist():
        t0 = time.perf_counter_ns()
        got, _ = store.recent(user, HISTORY_READ)
        reads.append(time.perf_counter_ns() - t0)
        assert len(got) == min(HISTORY_READ, args.per_user)
    writes = []
    for i in range(args.writes):
        one = EventBatch.of([int(rng.integers(0, args.users))], [i % n_items], [2_000_000_000], [0])
        t0 = time.perf_counter_ns()
        store.append(one)
        writes.append(time.perf_counter_ns() - t0)
    return {
        "events": total,
        "fill_s": fill_s,
        "read": quantiles_us(reads),
        "write": quantiles_us(writes),
    }


def tiny_repository(
    work: Path, artifacts: Path | None, data: Path | None, untrained: bool = False
) -> Path:
    """Export ``artifacts`` (or generate a small data set and train the tiny preset on it, as
    tests/conftest.py's ``tiny_model`` does) to ``work/repository``."""
    from export.bundle import build_bundle
    from export.repository import write_repository
    from towers.config import preset_config
    from towers.data import GenerateConfig, generate
    from towers.train import train

    if (work / "repository").is_dir():
        return work / "repository"
    if artifacts is None:
        data = work / "data"
        generate(GenerateConfig(n_items=1500, n_users=200, n_queries=600, seed=3), data)
        artifacts = work / "artifacts"
        if untrained:
            from export.untrained import write_untrained_artifacts

            write_untrained_artifacts(data, artifacts)
        else:
            train(data, artifacts, preset_config("tiny", seed=3))
    build_bundle(artifacts, data, work / "bundle")
    return write_repository(work / "bundle", work / "repository")


def bench_server(repository: Path, settings: Any, trials: int, seed: int) -> dict[str, Any]:
    from client.events import EventsClient
    from client.grpc_client import TowerServeClient, TowerServeError
    from serving.events.settings import configure_repository
    from serving.triton import TritonServer, free_ports

    configure_repository(repository, settings)
    item_ids = np.load(repository / "events" / "1" / "item_ids.npy")
    rng = np.random.default_rng(seed)
    g, h, m = free_ports(3)
    server = TritonServer(repository, grpc_port=g, http_port=h, metrics_port=m)
    server.start()
    try:
        server.wait_ready(timeout_s=300)
        url = f"127.0.0.1:{g}"
        base = 1_000_000_000 + int(time.time()) % 1_000_000 * 1000  # fresh users every run
        times_ns, record_ns, polls, same = [], [], [], 0
        with TowerServeClient(url) as rec, EventsClient(url) as ev:
            rec.recommend("warm up", k=10, budget_ms=0)
            for trial in range(trials):
                user, item = base + trial, int(rng.choice(item_ids))
                now = int(time.time())
                t0 = time.perf_counter_ns()
                ev.record(user, [item], event_types="click", ts=now)
                record_ns.append(time.perf_counter_ns() - t0)
                n = 0
                while True:
                    n += 1
                    try:
                        answer = rec.recommend("", user_id=user, k=10, budget_ms=0)
                        break
                    except TowerServeError:
                        if time.perf_counter_ns() - t0 > 10e9:
                            raise
                times_ns.append(time.perf_counter_ns() - t0)
                polls.append(n)
                explicit = rec.recommend("", history=[item], history_ts=[now], k=10, budget_ms=0)
                same += int(explicit.item_ids == answer.item_ids)
    finally:
        server.stop()
    ms = np.asarray(times_ns, dtype=np.float64) / 1e6
    return {
        "trials": trials,
        "event_to_answer_p50_ms": float(np.percentile(ms, 50)),
        "event_to_answer_p99_ms": float(np.percentile(ms, 99)),
        "event_to_answer_max_ms": float(ms.max()),
        "record": quantiles_us(record_ns),
        "recommend_calls_max": int(max(polls)),
        "first_answer_is_the_explicit_history_answer": same,
    }


def markdown(doc: dict[str, Any]) -> str:
    lines = [
        "# Live user events: store latency and event-to-answer freshness",
        "",
        f"Command: `{doc['command']}`",
        "",
        f"Machine: {doc['machine']}; {doc['date']}. Other jobs were running (shared cores).",
        "",
        f"## Store, in process ({doc['users']} users x {doc['per_user']} events, reads of the "
        f"newest {HISTORY_READ})",
        "",
        "| store | fill s | read p50 us | read p99 us | read max us | write p50 us | "
        "write p99 us |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in doc["stores"].items():
        lines.append(
            f"| {name} | {r['fill_s']:.1f} | {r['read']['p50_us']:.0f} | "
            f"{r['read']['p99_us']:.0f} | {r['read']['max_us']:.0f} | "
            f"{r['write']['p50_us']:.0f} | {r['write']['p99_us']:.0f} |"
        )
    if doc.get("server"):
        lines += [
            "",
            "## Real server: event recorded -> next recommend answer",
            "",
            "| store | trials | p50 ms | p99 ms | max ms | record p99 ms | recommend calls "
            "needed (max) | first answer = explicit-history answer |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for name, r in doc["server"].items():
            lines.append(
                f"| {name} | {r['trials']} | {r['event_to_answer_p50_ms']:.1f} | "
                f"{r['event_to_answer_p99_ms']:.1f} | {r['event_to_answer_max_ms']:.1f} | "
                f"{r['record']['p99_us'] / 1000:.1f} | {r['recommend_calls_max']} | "
                f"{r['first_answer_is_the_explicit_history_answer']}/{r['trials']} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    from serving.events.settings import EventSettings

    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    redis_proc, redis_url = (None, args.redis_url)
    if redis_url is None:
        redis_proc, redis_url = start_redis(args.out / "redis")
    doc: dict[str, Any] = {
        "command": "python " + shlex.join(["benchmarks/event_store_bench.py", *sys.argv[1:]]),
        "machine": f"{cpu_model()}, {os.cpu_count()} CPUs visible, {platform.platform()}",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "users": args.users,
        "per_user": args.per_user,
        "stores": {},
        "server": {},
    }
    try:
        sqlite_path = args.out / "bench.events.sqlite"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{sqlite_path}{suffix}").unlink(missing_ok=True)
        stores: dict[str, EventStore] = {
            "sqlite": SqliteEventStore(sqlite_path, max_per_user=args.per_user),
            "redis": RedisEventStore(
                redis_url, max_per_user=args.per_user, prefix=f"bench:{time.time_ns()}:"
            ),
        }
        for name, store in stores.items():
            print(f"store {name} ...", flush=True)
            doc["stores"][name] = bench_store(store, args, n_items=1500)
            store.close()
        if not args.skip_server:
            repository = args.repository or tiny_repository(
                args.out / "work", args.artifacts, args.data, args.untrained
            )
            for name, settings in (
                ("sqlite", EventSettings("sqlite", args.out / "server.events.sqlite")),
                ("redis", EventSettings("redis", None, redis_url)),
            ):
                print(f"server {name} ...", flush=True)
                doc["server"][name] = bench_server(repository, settings, args.trials, args.seed)
    finally:
        if redis_proc is not None:
            redis_proc.terminate()
            redis_proc.wait()
    (args.out / "event_store_bench.json").write_text(json.dumps(doc, indent=2))
    text = markdown(doc)
    (args.out / "event_store_bench.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
