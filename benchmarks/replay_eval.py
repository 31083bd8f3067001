"""Replay the held-out events through the served path: live vs frozen history, moving vs
frozen prior (issue 12 item 5; protocol in towers/evaluation/replay.py).

    .venv/bin/python benchmarks/replay_eval.py --artifacts runs/demo/artifacts \\
        --repository runs/demo/repository --out runs/replay_eval [--max-users 500]

The artifacts give the data set and the training cut (``train_report.json``); the repository
(written by ``towerserve export`` from them) gives the served stages, run in process
(client/served_replay.py) over a fresh SQLite event store in ``--out``. The same figures come
out of ``towerserve eval --repository R --replay`` (its report's "Replay" section); this script
runs the replay alone (no other eval section) and writes ``replay_eval.json`` and
``replay_eval.md`` under ``--out``, and prints the markdown.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from client.served_replay import served_replay  # noqa: E402
from towers.bundle_contract import TRAIN_REPORT_FILE  # noqa: E402
from towers.data import load_dataset  # noqa: E402
from towers.evaluation.replay import replay_markdown  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--artifacts", type=Path, required=True, help="artifacts of `towerserve train`")
    ap.add_argument("--repository", type=Path, required=True, help="its `towerserve export`")
    ap.add_argument("--data", type=Path, default=None, help="data set (default: trained on)")
    ap.add_argument("--out", type=Path, default=Path("runs/replay_eval"))
    ap.add_argument("--max-users", type=int, default=None, help="users asked about (all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-k", type=int, default=50, help="list length (Recall@k)")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    report = json.loads((args.artifacts / TRAIN_REPORT_FILE).read_text())
    cut = report.get("events_until_ts")
    if cut is None:
        print(f"{args.artifacts} was trained on every event: nothing held out to replay")
        return 2
    ds = load_dataset(args.data or Path(report["data_dir"]))
    started = time.perf_counter()
    last = [0.0]

    def progress(done: int, total: int) -> None:
        if time.perf_counter() - last[0] > 30 or done == total:
            last[0] = time.perf_counter()
            logging.info("replay: %d of %d query events", done, total)

    section = served_replay(
        args.repository,
        ds.events,
        int(cut),
        args.out,
        max_users=args.max_users,
        seed=args.seed,
        k=args.k,
        progress=progress,
    )
    section["command"] = shlex.join([sys.executable, *sys.argv])
    section["machine"] = f"{platform.node()} ({platform.machine()})"
    section["model_version"] = report.get("model_version")
    section["wall_s"] = round(time.perf_counter() - started, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "replay_eval.json").write_text(json.dumps(section, indent=2, default=str))
    text = "\n".join(
        [
            f"# Replay evaluation ({report.get('model_version')})",
            "",
            f"`{section['command']}` ({section['wall_s']} s; moving prior: "
            f"{section.get('moving_prior')})",
            *replay_markdown(section),
        ]
    )
    (args.out / "replay_eval.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
