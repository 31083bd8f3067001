"""Does a user tower that reads the history as a sequence beat the recency-weighted mean?

Side by side on one trained run's item vectors (frozen, ``item_embeddings.npy``), three ways
to turn a user's newest ``MAX_HISTORY`` items into a user vector for a request without a
query:

- ``mean (as trained)``: the run's own user tower (recency-weighted mean through its
  history projection), not retrained;
- ``mean``: that projection retrained here;
- ``sequence``: the same projection plus :class:`towers.models.HistorySequence`
  (self-attention over the history with recency ranks), trained here the same way.

Both trained arms see the same (history -> next item) pairs of the events before the run's
training cut (``towers.examples.history_pairs``; the newest ``--valid-frac`` held out to stop
on), a full softmax over the catalog at temperature ``--temperature``, AdamW, at most
``--epochs`` passes with patience 2. Test: the pairs whose next item falls after the cut (their
history may run past the cut, as a live server's does), Recall@50 over the whole catalog with
the history's items excluded, and the paired bootstrap interval of the per-pair gain of
``sequence`` over ``mean`` (pairs of one user are not independent, so the interval is
somewhat narrow). Tower only: the served retriever adds co-visitation and the prior on top.

    python benchmarks/user_sequence_ab.py --artifacts runs/demo_art --out results.json
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from towers.data.loader import load_dataset
from towers.examples import HistoryPairs, history_pairs, positions
from towers.features import MAX_HISTORY
from towers.metrics import paired_gain
from towers.models import HistorySequence, UserTower, load_module
from towers.train import recency_weights_padded

log = logging.getLogger("user_sequence_ab")


class HistoryUser(nn.Module):
    """The history path of a user tower: recency-weighted mean through a projection, plus an
    optional :class:`HistorySequence`; output L2-normalised ``[B, dim]``."""

    def __init__(self, tower: UserTower, sequence: bool) -> None:
        super().__init__()
        self.history = copy.deepcopy(tower.history)
        self.scale = nn.Parameter(tower.history_scale.detach().clone())
        dim = self.history.in_features
        self.sequence = HistorySequence(dim, max_len=MAX_HISTORY) if sequence else None

    def forward(self, vectors: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        pooled = (vectors * weights.unsqueeze(-1)).sum(1)
        out = self.history(pooled) * self.scale
        if self.sequence is not None:
            out = out + self.sequence(vectors, weights)
        return nn.functional.normalize(out, dim=-1, eps=1e-6)


def inputs(
    pairs: HistoryPairs, idx: np.ndarray, items: torch.Tensor, tau_s: float
) -> tuple[torch.Tensor, torch.Tensor]:
    hist = pairs.hist_pos[idx]
    vecs = items[torch.from_numpy(np.maximum(hist, 0))] * torch.from_numpy(hist >= 0)[..., None]
    w = np.stack(
        [recency_weights_padded(h, t, tau_s) for h, t in zip(hist, pairs.hist_ts[idx])]
    ).astype(np.float32)
    # a real item whose weight underflowed still counts as real for the sequence block
    w = np.where((hist >= 0) & (w <= 0), 1e-30, w).astype(np.float32)
    return vecs, torch.from_numpy(w)


def hits_at(
    model: nn.Module, pairs: HistoryPairs, items: torch.Tensor, tau_s: float, k: int = 50
) -> np.ndarray:
    """Per pair: 1.0 when the target is in the top ``k`` (history items excluded)."""
    out = []
    model.eval()
    with torch.no_grad():
        for start in range(0, len(pairs.target_pos), 2048):
            idx = np.arange(start, min(start + 2048, len(pairs.target_pos)))
            scores = model(*inputs(pairs, idx, items, tau_s)) @ items.T
            hist = torch.from_numpy(pairs.hist_pos[idx])
            rows = torch.arange(len(idx))[:, None].expand_as(hist)
            ok = hist >= 0
            scores[rows[ok], hist[ok]] = float("-inf")
            top = torch.topk(scores, k, dim=1).indices.numpy()
            out.append((top == pairs.target_pos[idx][:, None]).any(axis=1))
    return np.concatenate(out).astype(np.float64)


def fit(
    model: HistoryUser,
    pairs: HistoryPairs,
    items: torch.Tensor,
    args: argparse.Namespace,
) -> dict[str, object]:
    """Train on the older pairs, stop on the newest ``valid_frac``; keeps the best epoch."""
    order = np.argsort(pairs.target_ts, kind="stable")
    n_valid = int(round(len(order) * args.valid_frac))
    fit_idx, valid_idx = order[: len(order) - n_valid], order[len(order) - n_valid :]
    valid = HistoryPairs(*(a[valid_idx] for a in vars(pairs).values()))
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    rng = np.random.default_rng(args.seed)
    best = float(hits_at(model, valid, items, args.tau_s).mean())
    best_state, best_epoch, stale, curve = copy.deepcopy(model.state_dict()), 0, 0, [best]
    for epoch in range(1, args.epochs + 1):
        model.train()
        perm = rng.permutation(fit_idx)
        for start in range(0, len(perm), args.batch):
            idx = perm[start : start + args.batch]
            users = model(*inputs(pairs, idx, items, args.tau_s))
            logits = users @ items.T / args.temperature
            loss = nn.functional.cross_entropy(logits, torch.from_numpy(pairs.target_pos[idx]))
            opt.zero_grad()
            loss.backward()
            opt.step()
        recall = float(hits_at(model, valid, items, args.tau_s).mean())
        curve.append(round(recall, 4))
        log.info("epoch %d: validation Recall@50 %.4f", epoch, recall)
        if recall > best:
            best, best_epoch, stale = recall, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            stale += 1
            if stale >= 2:
                break
    model.load_state_dict(best_state)
    return {"best_epoch": best_epoch, "valid_recall@50": curve}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--artifacts", type=Path, required=True, help="a `towerserve train` output")
    ap.add_argument("--data", type=Path, help="its data set (default: the one it was trained on)")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--temperature", type=float, default=0.05)
    ap.add_argument("--valid-frac", type=float, default=0.1)
    ap.add_argument("--max-pairs", type=int, default=100_000, help="training pairs at most")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", type=Path, help="write the results as JSON here")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.manual_seed(args.seed)
    report = json.loads((args.artifacts / "train_report.json").read_text())
    cut = report["events_until_ts"]
    if cut is None:
        raise SystemExit("the run has no training cut (a random-split run): use a time-cut one")
    ds = load_dataset(args.data or Path(report["data_dir"]))
    items_df = ds.items.reset_index(drop=True)
    pos_of = positions(items_df)
    items = torch.from_numpy(np.load(args.artifacts / "item_embeddings.npy").astype(np.float32))
    if len(items) != len(items_df):
        raise SystemExit(f"{len(items)} item vectors for {len(items_df)} items")
    args.tau_s = float(report["config"]["recency_tau_s"])
    rng = np.random.default_rng(args.seed)
    train_pairs = history_pairs(ds.events[ds.events["ts"] < cut], pos_of, args.max_pairs, rng)
    every = history_pairs(ds.events, pos_of, len(ds.events), rng)
    test = every.since(cut)
    log.info("%d training pairs, %d test pairs", len(train_pairs.target_pos), len(test.target_pos))
    tower = load_module("user_tower", args.artifacts / "user_tower")
    assert isinstance(tower, UserTower)
    arms: dict[str, HistoryUser] = {"mean (as trained)": HistoryUser(tower, sequence=False)}
    results: dict[str, object] = {"n_train_pairs": len(train_pairs.target_pos)}
    results["n_test_pairs"] = len(test.target_pos)
    for name, seq in (("mean", False), ("sequence", True)):
        arm = HistoryUser(tower, sequence=seq)
        t0 = time.perf_counter()
        results[f"fit {name}"] = fit(arm, train_pairs, items, args) | {
            "seconds": round(time.perf_counter() - t0, 1)
        }
        arms[name] = arm
    hits = {name: hits_at(arm, test, items, args.tau_s) for name, arm in arms.items()}
    for name, h in hits.items():
        results[f"test recall@50 {name}"] = round(float(h.mean()), 4)
    gain, lo, hi = paired_gain(hits["sequence"], hits["mean"])
    interval = [round(lo, 4), round(hi, 4)]
    results["sequence - mean"] = {"gain": round(gain, 4), "95% interval": interval}
    print(json.dumps(results, indent=2))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
