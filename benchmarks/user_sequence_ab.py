"""Does a user tower that reads the history as a sequence beat the recency-weighted mean?

Side by side on one trained run's item vectors (frozen, ``item_embeddings.npy``), three ways
to turn a user's newest ``MAX_HISTORY`` items into a user vector for a request without a
query:

- ``mean (as trained)``: the run's own user tower (recency-weighted mean through its
  history projection), not retrained;
- ``mean``: that projection retrained here;
- ``sequence``: the same projection plus :class:`towers.models.HistorySequence`
  (self-attention over the history with recency ranks), trained here the same way.

Both trained arms are fitted as the training stage ``user_history`` fits them
(towers.history_fit.train_arm, with the run's training settings) on the (history -> next
item) pairs of the events before the run's training cut (``towers.examples.history_pairs``;
the newest 10% held out to stop on). Test: the pairs whose next item falls after the cut (their
history may run past the cut, as a live server's does), Recall@50 over the whole catalog with
the history's items excluded, and the paired bootstrap interval of the per-pair gain of
``sequence`` over ``mean`` (pairs of one user are not independent, so the interval is
somewhat narrow). Tower only: the served retriever adds co-visitation and the prior on top.

    python benchmarks/user_sequence_ab.py --artifacts ARTIFACTS --out results.json
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from towers.config import TrainConfig
from towers.data.loader import load_dataset
from towers.examples import history_pairs, positions
from towers.history_fit import HistoryPath, PairTensors, train_arm
from towers.metrics import paired_gain
from towers.models import UserTower, load_module

log = logging.getLogger("user_sequence_ab")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--artifacts", type=Path, required=True, help="a `towerserve train` output")
    ap.add_argument("--data", type=Path, help="its data set (default: the one it was trained on)")
    ap.add_argument("--max-pairs", type=int, default=100_000, help="training pairs at most")
    ap.add_argument("--out", type=Path, help="write the results as JSON here")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    report = json.loads((args.artifacts / "train_report.json").read_text())
    cfg = TrainConfig(**report["config"])
    torch.manual_seed(cfg.seed)
    cut = report["events_until_ts"]
    if cut is None:
        raise SystemExit("the run has no training cut (a random-split run): use a time-cut one")
    ds = load_dataset(args.data or Path(report["data_dir"]))
    items_df = ds.items.reset_index(drop=True)
    pos_of = positions(items_df)
    items = torch.from_numpy(np.load(args.artifacts / "item_embeddings.npy").astype(np.float32))
    if len(items) != len(items_df):
        raise SystemExit(f"{len(items)} item vectors for {len(items_df)} items")
    rng = np.random.default_rng(cfg.seed)
    train_pairs = history_pairs(ds.events[ds.events["ts"] < cut], pos_of, args.max_pairs, rng)
    test_pairs = history_pairs(ds.events, pos_of, len(ds.events), rng).since(cut)
    train, test = (PairTensors(p, items, cfg.recency_tau_s) for p in (train_pairs, test_pairs))
    n = len(train_pairs.target_pos)
    log.info("%d training pairs, %d test pairs", n, len(test_pairs.target_pos))
    order = np.argsort(train_pairs.target_ts, kind="stable")
    n_valid = max(1, round(n * cfg.id_valid_frac))
    fit_idx, valid_idx = order[: n - n_valid], order[n - n_valid :]
    counts = np.ones(len(items))
    np.add.at(counts, train_pairs.target_pos[fit_idx], 1.0)
    log_q = torch.from_numpy(np.log(counts / counts.sum())).float()
    tower = load_module("user_tower", args.artifacts / "user_tower")
    assert isinstance(tower, UserTower)
    tower.sequence = None  # the arms start from the fine-tuned mean path
    results: dict[str, object] = {"n_train_pairs": n, "n_test_pairs": len(test_pairs.target_pos)}
    arms = {"mean (as trained)": HistoryPath(tower, sequence=False)}
    for name, sequence in (("mean", False), ("sequence", True)):
        arm = HistoryPath(tower, sequence)
        t0 = time.perf_counter()
        _, curve, epoch = train_arm(arm, train, fit_idx, valid_idx, log_q, cfg, name)
        results[f"fit {name}"] = {
            "best_epoch": epoch,
            "valid_recall@50": curve,
            "seconds": round(time.perf_counter() - t0, 1),
        }
        arms[name] = arm
    every = np.arange(len(test_pairs.target_pos))
    hits = {name: test.hits(arm, every) for name, arm in arms.items()}
    touched = np.unique(train_pairs.target_pos)
    cold = ~np.isin(test_pairs.target_pos, touched)  # never a training target
    results["n_test_pairs_cold"] = int(cold.sum())
    for name, h in hits.items():
        results[f"test recall@50 {name}"] = round(float(h.mean()), 4)
        results[f"test recall@50 {name}, cold targets"] = round(float(h[cold].mean()), 4)
    gain, lo, hi = paired_gain(hits["sequence"], hits["mean"])
    interval = [round(lo, 4), round(hi, 4)]
    results["sequence - mean"] = {"gain": round(gain, 4), "95% interval": interval}
    print(json.dumps(results, indent=2))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
