"""Training stage ``user_history``: the user tower's history path fitted on the served item
vectors, and a sequence block kept where validation says it helps.

The towers' fine-tuning trains the history path beside the query path for a few hundred
steps, with the item vectors still moving. Once the item vectors are final (``embed_items``),
this stage fits the history path again on them, frozen, for as many passes over the
(history -> next item) pairs as validation rewards (early stopping, as ``finetune_ids``), in
two forms side by side:

- ``mean``: the recency-weighted mean of the history through the tower's projection;
- ``sequence``: the same plus a :class:`towers.models.HistorySequence` (self-attention over
  the history with recency ranks, read out at the newest item), which can tell the current
  session's intent from older taste.

The loss is a full softmax at ``cfg.temperature`` over the items the training pairs touch
(a sampled in-batch softmax with logQ correction above :data:`FULL_SOFTMAX_MAX_ITEMS` such
items): items nobody touched before the cut are left out, since a softmax that always
ranks them as negatives teaches the tower to rank new items down (measured on the demo
data: cold Recall@50 0.078 -> 0.038 through the server with them in). The newest
``cfg.id_valid_frac`` of the pairs (by target time) are held out; the per-pair validation
Recall@50 (history items excluded, as served) decides: ``sequence`` is kept when its paired
bootstrap gain over ``mean`` is surely above 0 (``cfg.user_sequence`` ``auto``; ``on`` keeps
it regardless, ``off`` never fits it), and the refitted ``mean`` replaces the fine-tuned path
only when surely better than it. A refitted path is rescaled to the fine-tuned one's mean
norm, so a request with both a query and a history weighs them as before (the user vector is
normalised, so a request without a query does not see the scale).

Measured (benchmarks/user_sequence_ab.py, README "Sequence-aware user tower").
"""

from __future__ import annotations

import copy
import logging
import time

import numpy as np
import torch
from torch import nn

from towers.config import TrainConfig
from towers.examples import HistoryPairs
from towers.features import padded_recency_weights
from towers.metrics import paired_gain
from towers.models import HistorySequence, UserTower
from towers.progress import progress

log = logging.getLogger(__name__)

__all__ = [
    "FULL_SOFTMAX_MAX_ITEMS",
    "HistoryPath",
    "PairTensors",
    "fit_user_history",
    "train_arm",
]

#: Largest catalog trained with a full softmax; above it, in-batch negatives with logQ.
FULL_SOFTMAX_MAX_ITEMS = 50_000
#: Fewest history pairs worth fitting on (fewer: the fine-tuned path is kept as it is).
MIN_PAIRS = 200
#: Epochs without a validation gain before a fit stops.
PATIENCE = 2


class HistoryPath(nn.Module):
    """A trainable copy of a user tower's history path (the arm of a fit)."""

    def __init__(self, tower: UserTower, sequence: bool) -> None:
        super().__init__()
        self.history = copy.deepcopy(tower.history)
        self.scale = nn.Parameter(tower.history_scale.detach().clone())
        dim = self.history.in_features
        if tower.sequence is not None:
            self.sequence: HistorySequence | None = copy.deepcopy(tower.sequence)
        else:
            self.sequence = HistorySequence(dim) if sequence else None

    def raw(self, vectors: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        out = self.history((vectors * weights.unsqueeze(-1)).sum(1)) * self.scale
        if self.sequence is not None:
            out = out + self.sequence(vectors, weights)
        return out

    def forward(self, vectors: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.raw(vectors, weights), dim=-1, eps=1e-6)


class PairTensors:
    """History pairs as tensors over frozen item vectors."""

    def __init__(self, pairs: HistoryPairs, items: torch.Tensor, tau_s: float) -> None:
        self.hist = pairs.hist_pos
        self.target = pairs.target_pos
        weights = padded_recency_weights(pairs.hist_pos, pairs.hist_ts, tau_s)
        self.weights = torch.from_numpy(weights)
        self.items = items

    def inputs(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        hist = self.hist[idx]
        vecs = self.items[torch.from_numpy(np.maximum(hist, 0))]
        return vecs * torch.from_numpy(hist >= 0).unsqueeze(-1), self.weights[idx]

    def hits(self, path: nn.Module, idx: np.ndarray, k: int = 50) -> np.ndarray:
        """Per pair of ``idx``: 1.0 when its target is in the top ``k`` (history excluded)."""
        out = []
        path.eval()
        with torch.no_grad():
            for start in range(0, len(idx), 1024):
                part = idx[start : start + 1024]
                scores = path(*self.inputs(part)) @ self.items.T
                hist = torch.from_numpy(self.hist[part])
                ok = hist >= 0
                rows = torch.arange(len(part))[:, None].expand_as(hist)
                scores[rows[ok], hist[ok]] = float("-inf")
                top = torch.topk(scores, min(k, scores.shape[1]), dim=1).indices.numpy()
                out.append((top == self.target[part][:, None]).any(axis=1))
        return np.concatenate(out).astype(np.float64) if out else np.zeros(0)


def train_arm(
    arm: HistoryPath,
    pairs: PairTensors,
    fit_idx: np.ndarray,
    valid_idx: np.ndarray,
    log_q: torch.Tensor,
    cfg: TrainConfig,
    name: str,
) -> tuple[np.ndarray, list[float], int]:
    """Train ``arm`` in epochs, keep its best epoch on validation; returns that epoch's
    per-pair validation hits, the curve and the epoch."""
    opt = torch.optim.AdamW(arm.parameters(), lr=cfg.history_lr, weight_decay=0.01)
    rng = np.random.default_rng(cfg.seed + 2)
    # the softmax's items: those the fit pairs touch (an item nobody touched is never a
    # positive, and a softmax over it would learn to rank cold items down)
    seen = pairs.hist[fit_idx]
    warm = np.unique(np.concatenate([pairs.target[fit_idx], seen[seen >= 0]]))
    full = len(warm) <= FULL_SOFTMAX_MAX_ITEMS
    warm_items = pairs.items[torch.from_numpy(warm)]
    best_hits = pairs.hits(arm, valid_idx)
    curve = [round(float(best_hits.mean()), 4)]
    best_state, best_epoch, stale = copy.deepcopy(arm.state_dict()), 0, 0
    for epoch in progress(range(1, cfg.history_epochs + 1), f"fit user history ({name})"):
        arm.train()
        perm = rng.permutation(fit_idx)
        for start in range(0, len(perm), cfg.history_batch):
            idx = perm[start : start + cfg.history_batch]
            if len(idx) < 2:
                continue
            users = arm(*pairs.inputs(idx))
            target = torch.from_numpy(pairs.target[idx])
            if full:
                logits = users @ warm_items.T / cfg.temperature
                at = torch.from_numpy(np.searchsorted(warm, pairs.target[idx]))
                loss = nn.functional.cross_entropy(logits, at)
            else:
                cands = pairs.items[target]
                logits = users @ cands.T / cfg.temperature - log_q[target][None, :]
                same = target[:, None] == target[None, :]
                logits = logits.masked_fill(same & ~torch.eye(len(idx), dtype=torch.bool), -1e9)
                loss = nn.functional.cross_entropy(logits, torch.arange(len(idx)))
            opt.zero_grad()
            loss.backward()
            opt.step()
        hits = pairs.hits(arm, valid_idx)
        curve.append(round(float(hits.mean()), 4))
        log.info("user history (%s) epoch %d: validation Recall@50 %.4f", name, epoch, curve[-1])
        if hits.mean() > best_hits.mean():
            best_hits, best_epoch, stale = hits, epoch, 0
            best_state = copy.deepcopy(arm.state_dict())
        else:
            stale += 1
            if stale >= PATIENCE:
                break
    arm.load_state_dict(best_state)
    return best_hits, curve, best_epoch


def _mean_norm(path: HistoryPath, pairs: PairTensors, idx: np.ndarray) -> float:
    path.eval()
    with torch.no_grad():
        return float(path.raw(*pairs.inputs(idx)).norm(dim=-1).mean())


def fit_user_history(
    user_tower: UserTower,
    histories: HistoryPairs,
    item_vecs: np.ndarray,
    cfg: TrainConfig,
) -> dict[str, object]:
    """Fit ``user_tower``'s history path on the frozen ``item_vecs`` (``[N, dim]``, rows as
    the pairs' positions) and set the chosen form in place (see the module docstring).
    Returns the report: the choice, each arm's validation Recall@50 and curve."""
    n = len(histories.target_pos)
    if n < MIN_PAIRS or cfg.history_epochs == 0:
        log.info("user history: %d pairs, %d epochs: kept as fine-tuned", n, cfg.history_epochs)
        return {"chosen": "fine-tuned", "n_pairs": int(n)}
    t0 = time.perf_counter()
    items = torch.from_numpy(np.ascontiguousarray(item_vecs, dtype=np.float32))
    pairs = PairTensors(histories, items, cfg.recency_tau_s)
    order = np.argsort(histories.target_ts, kind="stable")
    n_valid = max(1, int(round(n * cfg.id_valid_frac)))
    fit_idx, valid_idx = order[: n - n_valid], order[n - n_valid :]
    counts = np.ones(len(items))
    np.add.at(counts, histories.target_pos[fit_idx], 1.0)
    log_q = torch.from_numpy(np.log(counts / counts.sum())).float()

    tuned = HistoryPath(user_tower, sequence=False)
    tuned_hits = pairs.hits(tuned, valid_idx)
    report: dict[str, object] = {"n_pairs": int(n), "n_valid_pairs": int(n_valid)}
    recall = {"fine-tuned": round(float(tuned_hits.mean()), 4)}
    arms = {"mean": False} | ({} if cfg.user_sequence == "off" else {"sequence": True})
    fitted: dict[str, tuple[HistoryPath, np.ndarray]] = {}
    for name, sequence in arms.items():
        arm = HistoryPath(user_tower, sequence)
        hits, curve, epoch = train_arm(arm, pairs, fit_idx, valid_idx, log_q, cfg, name)
        fitted[name] = (arm, hits)
        recall[name] = round(float(hits.mean()), 4)
        report[f"{name}_curve"] = curve
        report[f"{name}_epochs"] = epoch
    mean_arm, mean_hits = fitted["mean"]
    _, mean_lo, _ = paired_gain(mean_hits, tuned_hits)
    base, base_hits, chosen = tuned, tuned_hits, "fine-tuned"
    if mean_lo > 0:
        base, base_hits, chosen = mean_arm, mean_hits, "mean"
    report["mean_gain_lo"] = round(mean_lo, 4)
    if "sequence" in fitted:
        seq_arm, seq_hits = fitted["sequence"]
        _, seq_lo, _ = paired_gain(seq_hits, base_hits)
        report["sequence_gain_lo"] = round(seq_lo, 4)
        if seq_lo > 0 or cfg.user_sequence == "on":
            base, chosen = seq_arm, "sequence"
    if chosen != "fine-tuned":
        sample = fit_idx[: min(len(fit_idx), 4096)]
        ratio = _mean_norm(tuned, pairs, sample) / max(_mean_norm(base, pairs, sample), 1e-9)
        with torch.no_grad():
            user_tower.history.weight.copy_(base.history.weight)
            user_tower.history_scale.copy_(base.scale * ratio)
            if base.sequence is not None:
                base.sequence.out.weight.mul_(ratio)
            user_tower.sequence = base.sequence
    report |= {
        "chosen": chosen,
        "valid_recall@50": recall,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    log.info("user history: %s kept (validation Recall@50 %s)", chosen, recall)
    return report
