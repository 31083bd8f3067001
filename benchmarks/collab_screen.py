"""Which collaborative scorer ranks a data set best, chosen on validation, then on test (issue 9).

    .venv/bin/python benchmarks/collab_screen.py --data runs/ml_identity --out runs/screen_id
    .venv/bin/python benchmarks/collab_screen.py --data runs/ml_identity_rsplit \\
        --protocol random --out runs/screen_id_random

No towers, no training: the item x item scorers the co-visitation table can hold
(towers/covisit.py) and the baselines are, side by side,

- ``ease@L``: EASE (towers/cooccurrence.py) at each ridge of :data:`towers.covisit.EASE_L2S`
  (the eval's baseline chooses among them on validation);
- ``item_knn``: cosine item-kNN, 100 neighbours;
- ``rp3beta a=A b=B``: RP3beta at each pair of :data:`towers.covisit.RP3_ALPHAS` x
  :data:`towers.covisit.RP3_BETAS`, 100 neighbours per item;
- ``z(ease@L) + w z(item_knn)``: each user's scores standardised over the catalog, summed
  (L 500 and 100; w 0.1 to 1): the mix of EASE and item-kNN proposed in an earlier note;

each scoring a user from their binary row of the matrix plus their history (as the eval's
baselines do) and ranking every item but the excluded ones. Two tasks: **validation** (time:
the next-item task of the last 3 days before the training cut, with the events before those
days; random: a seeded 10% of the training events held out, with the other 90%) and
**test** (time: the task after the cut, as ``towerserve eval`` builds it with the demo
preset's cut at 75% of the time range; random: the held-out share of ``towerserve data
split``). The metric is Recall@50 per user (time) or the random protocol's top-100 accuracy
(random; its per-user shares, :func:`towers.metrics.accuracy_per_query`). Each test row carries
its paired ratio to ``ease@500`` with a 95% bootstrap interval; ``chosen`` marks each family's
best validation row (what fitting on validation would pick). Writes ``screen.json`` and
``screen.md`` under ``--out`` and prints the markdown. About a minute for 2,000 users and
5,000 items on two cores.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

log = logging.getLogger("collab_screen")

#: Days before the cut that a time validation predicts (towers.prior.VALIDATION_S).
VALIDATION_DAYS = 3
#: Share of the training events a random validation holds out.
RANDOM_VALIDATION_SHARE = 0.1
#: Weights of the standardised item-kNN score added to EASE's.
MIX_WEIGHTS = (0.1, 0.2, 0.3, 0.5, 1.0)
#: Where the demo preset cuts training (towers/config.py ``until_frac``).
CUT_FRACTION = 0.75


def _zscore(scores: np.ndarray) -> np.ndarray:
    mean = scores.mean(axis=1, keepdims=True)
    std = scores.std(axis=1, keepdims=True)
    return (scores - mean) / np.maximum(std, 1e-9)


def score_all(events, item_ids, fit_until, task, metric) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    """Every scorer's per-user ``metric`` on ``task``, fitted on ``events`` before
    ``fit_until`` (unix s)."""
    from towers.cooccurrence import EASE, ItemKNN, interactions, rp3beta_similarity
    from towers.covisit import EASE_L2S, N_NEIGHBOURS, RP3_ALPHAS, RP3_BETAS
    from towers.evaluation.collaborative import top_k_excluding

    data = interactions(events, item_ids, until_ts=fit_until)
    rows = data.user_rows(task.user_ids, task.long_histories)
    out: dict[str, np.ndarray] = {}

    def add(name: str, scores: np.ndarray) -> None:
        ranked = top_k_excluding(scores, item_ids, task.excluded, 100)
        out[name] = metric.per_user(ranked, task.targets)

    ease_scores = {}
    for l2 in sorted(EASE_L2S):
        ease_scores[l2] = EASE(data, l2).scores(rows)
        add(f"ease@{l2:g}", ease_scores[l2])
    knn = ItemKNN(data, N_NEIGHBOURS).scores(rows)
    add("item_knn", knn)
    z_knn = _zscore(knn)
    for l2 in (500.0, 100.0):
        z_ease = _zscore(ease_scores[l2])
        for w in MIX_WEIGHTS:
            add(f"z(ease@{l2:g}) + {w:g} z(item_knn)", z_ease + w * z_knn)
    for alpha in RP3_ALPHAS:
        for beta, sim in rp3beta_similarity(data.matrix, alpha, RP3_BETAS, N_NEIGHBOURS).items():
            add(f"rp3beta a={alpha:g} b={beta:g}", np.asarray((rows @ sim).todense()))
    return out


def family(name: str) -> str:
    """The family a row belongs to (one choice per family is made on validation)."""
    if name.startswith("z("):
        return "mix"
    return name.split("@")[0].split(" ")[0]


def tasks(data_dir: Path, protocol: str, max_users: int, seed: int):  # type: ignore[no-untyped-def]
    """``(events, item ids, [(label, events, fit_until, task)] for validation and test)``."""
    from towers.data.dataset import cut_ts_at
    from towers.data.loader import load_dataset
    from towers.data.split import heldout_events
    from towers.next_item import next_item_task, random_split_task

    ds = load_dataset(data_dir)
    events, item_ids = ds.events, ds.items["item_id"].to_numpy(np.int64)
    if protocol == "time":
        cut = cut_ts_at(events, CUT_FRACTION)
        end = int(events["ts"].max()) + 1
        start = int(cut - VALIDATION_DAYS * 86_400)
        before = events[events["ts"].to_numpy() < cut]
        return item_ids, [
            ("validation", before, start, next_item_task(before, start, cut, max_users=max_users)),
            ("test", events, cut, next_item_task(events, cut, end, max_users=max_users)),
        ]
    held = heldout_events(data_dir)
    draws = np.random.default_rng(seed).random(len(events)) < RANDOM_VALIDATION_SHARE
    train, val = events[~draws], events[draws]
    after = int(events["ts"].max()) + 1
    return item_ids, [
        ("validation", train, after, random_split_task(train, val, max_users=max_users)),
        ("test", events, after, random_split_task(events, held, max_users=max_users)),
    ]


def main(argv: list[str] | None = None) -> int:
    from towers.evaluation.confidence import paired_ci
    from towers.metrics import fit_metric

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="a data folder (towerserve data)")
    p.add_argument("--protocol", choices=("time", "random"), default="time")
    p.add_argument("--max-users", type=int, default=2000, help="users sampled per task")
    p.add_argument("--seed", type=int, default=0, help="seed of the random validation share")
    p.add_argument("--out", type=Path, required=True, help="folder for screen.json / .md")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.protocol == "random" and not (args.data / "heldout_events.parquet").exists():
        p.error(f"{args.data} has no held-out share: make one with `towerserve data split`")
    started = time.perf_counter()
    item_ids, splits = tasks(args.data, args.protocol, args.max_users, args.seed)
    metric = fit_metric(args.protocol)
    by_split: dict[str, dict[str, np.ndarray]] = {}
    counts = {}
    for label, events, fit_until, task in splits:
        log.info("%s: %d users", label, len(task))
        counts[label] = len(task)
        by_split[label] = score_all(events, item_ids, fit_until, task, metric)
    val, test = by_split["validation"], by_split["test"]
    chosen: dict[str, str] = {}
    for name in val:
        fam = family(name)
        if fam not in chosen or val[name].mean() > val[chosen[fam]].mean():
            chosen[fam] = name
    rows: dict[str, dict[str, object]] = {}
    for name in test:
        ratio = paired_ci(test[name], test["ease@500"], "ratio")
        rows[name] = {
            "validation": float(val[name].mean()),
            "test": float(test[name].mean()),
            "vs_ease500": list(ratio),
            "chosen": chosen[family(name)] == name,
        }
    metric_name = "Recall@50" if args.protocol == "time" else "top-100 accuracy"
    cmd = " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
    lines = [
        f"Collaborative scorers, `{args.data}`, {args.protocol} protocol, {metric_name} "
        f"(validation {counts['validation']} users, test {counts['test']}); `{cmd}`, "
        f"{time.perf_counter() - started:.0f} s. **bold**: the family's validation choice.",
        "",
        "| scorer | validation | test | test / ease@500 [95%] |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, r in rows.items():
        v, lo, hi = r["vs_ease500"]  # type: ignore[misc]
        label = f"**{name}**" if r["chosen"] else name
        lines.append(
            f"| {label} | {r['validation']:.4f} | {r['test']:.4f} | {v:.3f} [{lo:.3f}, {hi:.3f}] |"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    record: dict[str, object] = {"command": cmd, "protocol": args.protocol, "counts": counts}
    record["rows"] = rows
    (args.out / "screen.json").write_text(json.dumps(record, indent=2))
    (args.out / "screen.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))  # noqa: T201 (a benchmark script's report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
