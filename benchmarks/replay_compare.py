"""Two models' replays of the same held-out events, compared paired over users.

    .venv/bin/python benchmarks/replay_compare.py OLD/replay_eval.json NEW/replay_eval.json

Each file is a ``benchmarks/replay_eval.py`` (or ``towerserve eval --replay``) result with
per-user figures (``per_user``, written since 2026-11-30). For every variant both have, the
users both asked about are paired, and the printed table gives each model's Recall@k and
the difference new - old with its 95% paired bootstrap interval (towers.metrics.paired_gain)
and the verdict (inconclusive under 200 users or when the interval holds 0).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from towers.metrics import paired_gain  # noqa: E402

MIN_USERS = 200


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("old", type=Path, help="the reference replay_eval.json")
    ap.add_argument("new", type=Path, help="the replay_eval.json compared with it")
    args = ap.parse_args()
    docs = []
    for path in (args.old, args.new):
        if not path.is_file():
            raise SystemExit(f"no such file: {path}")
        doc = json.loads(path.read_text())
        doc = doc.get("replay", doc)  # an eval report's section, or the script's result
        if "user_ids" not in doc:
            raise SystemExit(f"{path} has no per-user figures: replay it again with this code")
        docs.append(doc)
    old, new = docs
    k = new.get("k", 50)
    head = f"| variant | old Recall@{k} | new Recall@{k} | new - old [95%, paired] | users |"
    print(head + " verdict |")
    print("| --- | ---: | ---: | --- | ---: | --- |")
    for name, row in new["variants"].items():
        if name not in old["variants"]:
            continue
        a = dict(zip(new["user_ids"], row["per_user"]))
        b = dict(zip(old["user_ids"], old["variants"][name]["per_user"]))
        users = sorted(set(a) & set(b))
        x, y = np.array([a[u] for u in users]), np.array([b[u] for u in users])
        gain, lo, hi = paired_gain(x, y)
        verdict = "inconclusive"
        if len(users) >= MIN_USERS and (lo > 0 or hi < 0):
            verdict = "new better" if lo > 0 else "old better"
        print(
            f"| {name} | {y.mean():.4f} | {x.mean():.4f} | {gain:+.4f} [{lo:+.4f}, {hi:+.4f}] "
            f"| {len(users)} | {verdict} |"
        )


if __name__ == "__main__":
    main()
