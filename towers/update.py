"""``towerserve train --from ARTIFACTS --since T``: an incremental update on the newest events.

Intent drifts by the hour, a full training run takes minutes to hours: between full runs the
user tower is brought up to date on the newest window of behaviour only. The item tower is
frozen, so the item vectors, the FAISS index and the reranker's item text all stay valid and
nothing has to be re-embedded; only the user tower's weights change.

What is trained: the user tower's history projection and its fusion scale (``dim * dim +
1`` parameters); everything else is frozen. The update learns from behaviour only, and
behaviour reaches the user vector through that path alone, so training more of the tower
would change nothing but the query path, which stays as trained (search with an empty
history answers exactly as before the update). Steps default to ``epochs`` passes over the
window's pairs, so a small window is not over-fitted.

The retriever's popularity prior (:mod:`towers.prior`) is recomputed as of the end of the
window with the parent's weight, so the update also knows what is trending now; this is
counting, no training.

The loss is the fine-tuning loss (sampled softmax over in-batch negatives with logQ
correction), with the item side read from the saved item table instead of re-encoded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, Field

from towers.bundle_contract import (
    BLEND_FILE,
    COVISIT_FILE,
    ITEM_EMBEDDINGS_FILE,
    TEACHER_ITEM_EMBEDDINGS_FILE,
    TRAIN_REPORT_FILE,
)
from towers.covisit import CovisitTable, build_covisit
from towers.data import load_dataset
from towers.examples import HistoryPairs, history_pairs, positions
from towers.finetune import history_inputs, in_batch_loss
from towers.models import UserTower, load_module, save_module
from towers.prior import PRIOR_HALF_LIFE_S, compute_prior, load_prior, save_prior
from towers.progress import progress
from towers.teacher import tokenizer_path
from towers.text import encode_queries, load_tokenizer

log = logging.getLogger(__name__)

#: Files of an artifacts folder that an update copies unchanged.
COPIED = ("item_tower", "reranker", BLEND_FILE, TEACHER_ITEM_EMBEDDINGS_FILE)


class UpdateConfig(BaseModel):
    """Settings of one incremental update. Times are unix seconds."""

    since_ts: int = Field(description="fine-tune on positive events at or after this time")
    until_ts: int | None = Field(None, description="... and before this time (None: all)")
    epochs: float = Field(2.0, gt=0, description="passes over the window's pairs")
    steps: int | None = Field(None, ge=1, description="optimiser steps (default: from epochs)")
    batch: int = Field(256, ge=2, description="history pairs per step")
    lr: float = Field(3e-3, gt=0)
    seed: int = 7
    max_pairs: int = Field(200_000, ge=1)


def trainable_parameters(tower: UserTower) -> list[torch.nn.Parameter]:
    """Freeze ``tower`` except its history path (the projection, its scale and the sequence
    block where the tower has one), and return that path's parameters."""
    for p in tower.parameters():
        p.requires_grad_(False)
    chosen = [tower.history.weight, tower.history_scale]
    if tower.sequence is not None:
        chosen += list(tower.sequence.parameters())
    for p in chosen:
        p.requires_grad_(True)
    return chosen


def parent_report(artifacts: Path, out_dir: Path) -> dict[str, Any]:
    """The train report of the parent ``artifacts`` of a run that writes ``out_dir``.

    Raises:
        FileNotFoundError: ``artifacts`` is not a trained artifacts folder.
        ValueError: ``out_dir`` is ``artifacts`` (a run never overwrites its parent).
    """
    report_path = artifacts / TRAIN_REPORT_FILE
    if not report_path.is_file() or not (artifacts / ITEM_EMBEDDINGS_FILE).is_file():
        raise FileNotFoundError(
            f"{artifacts} is not a trained artifacts folder (needs train_report.json and "
            "item_embeddings.npy from `towerserve train`)"
        )
    if out_dir.resolve() == artifacts.resolve():
        raise ValueError("--out must differ from --from: a run never overwrites its parent")
    return dict(json.loads(report_path.read_text()))


def save_child_module(
    module: torch.nn.Module, kind: str, artifacts: Path, out_dir: Path, *, tag: str
) -> str:
    """Save the retrained ``kind`` (``user_tower`` or ``reranker``) of a run descending from
    ``artifacts`` into ``out_dir`` with the parent's saved meta, and return the child's model
    version: the time and ``tag`` + the first digits of the new weights' sha256."""
    bert = module.text.bert if kind == "user_tower" else module.bert
    meta = json.loads((artifacts / kind / "config.json").read_text())["meta"]
    save_module(module, bert.config, out_dir / kind, **meta)
    digest = hashlib.sha256((out_dir / kind / "model.safetensors").read_bytes())
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + tag + digest.hexdigest()[:7]


def child_report(parent: dict[str, Any], version: str) -> dict[str, Any]:
    """The parent's train report with the lineage fields of a child model ``version``: its
    parent, the item tower it shares (so indexes stay valid) and the stages of the full run
    it descends from."""
    return {
        **parent,
        "model_version": version,
        "parent_version": parent["model_version"],
        "item_tower_version": parent.get("item_tower_version", parent["model_version"]),
        "full_train_seconds": parent.get("full_train_seconds", parent.get("seconds", {})),
    }


def update(
    artifacts: Path, data_dir: Path | None, out_dir: Path, cfg: UpdateConfig
) -> dict[str, object]:
    """Fine-tune the user tower of ``artifacts`` on the events of ``[since, until)`` and write
    a complete artifacts folder to ``out_dir`` (the other models copied unchanged).

    Raises:
        FileNotFoundError: ``artifacts`` is not a trained artifacts folder.
        ValueError: the window holds no positive event with a history to learn from, or
            ``out_dir`` is ``artifacts`` itself.
    """
    started = time.perf_counter()
    parent = parent_report(artifacts, out_dir)
    data_dir = data_dir or Path(parent["data_dir"])
    ds = load_dataset(data_dir)
    items = ds.items.reset_index(drop=True)
    events = ds.events
    if cfg.until_ts is not None:
        events = events[events["ts"] < cfg.until_ts]
    pairs = history_pairs(events, positions(items), len(events), np.random.default_rng(cfg.seed))
    pairs = pairs.since(cfg.since_ts)
    pairs = _with_history(pairs)
    if len(pairs.target_pos) == 0:
        raise ValueError(
            f"no positive events with a history in [{cfg.since_ts}, {cfg.until_ts}) in "
            f"{data_dir}: nothing to update on"
        )
    if len(pairs.target_pos) > cfg.max_pairs:
        keep = np.random.default_rng(cfg.seed).choice(len(pairs.target_pos), cfg.max_pairs, False)
        pairs = HistoryPairs(*(a[np.sort(keep)] for a in vars(pairs).values()))
    table = np.load(artifacts / ITEM_EMBEDDINGS_FILE)
    if len(table) != len(items):
        raise ValueError(
            f"{artifacts}/item_embeddings.npy has {len(table)} rows but {data_dir} has "
            f"{len(items)} items: update on the catalog the model was trained on"
        )
    user_tower = load_module("user_tower", artifacts / "user_tower")
    assert isinstance(user_tower, UserTower)
    losses, n_params = _fit(user_tower, table, pairs, parent, cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        src, dst = artifacts / name, out_dir / name
        if src.is_dir():
            shutil.copytree(src, dst, dirs_exist_ok=True)
        elif src.is_file():
            shutil.copy2(src, dst)
    np.save(out_dir / ITEM_EMBEDDINGS_FILE, table)
    end_ts = cfg.until_ts if cfg.until_ts is not None else int(ds.events["ts"].max()) + 1
    parent_prior = load_prior(artifacts)
    prior = compute_prior(
        events,
        items["item_id"].to_numpy(np.int64),
        end_ts,
        parent_prior.half_life_s if parent_prior else PRIOR_HALF_LIFE_S,
        parent_prior.weight if parent_prior else 0.0,
    )
    save_prior(prior, out_dir)
    if (artifacts / COVISIT_FILE).is_file():
        # the neighbours recounted as of the window's end, with the parent's kind and fit
        parent_covisit = CovisitTable.load(artifacts / COVISIT_FILE)
        build_covisit(
            events,
            items["item_id"].to_numpy(np.int64),
            until_ts=end_ts,
            kind=parent_covisit.kind,
            **parent_covisit.params(),
        ).fitted_like(parent_covisit).save(out_dir / COVISIT_FILE)
    version = save_child_module(user_tower, "user_tower", artifacts, out_dir, tag="u")
    seconds = round(time.perf_counter() - started, 2)
    report = {
        **child_report(parent, version),
        "seconds": {"update": seconds},
        "data_dir": str(data_dir.resolve()),
        "events_until_ts": end_ts,
        "prior": prior.meta(),
        "update": {
            **cfg.model_dump(),
            "trained": "user_tower.history",
            "n_pairs": int(len(pairs.target_pos)),
            "trainable_params": n_params,
            "seconds": seconds,
            "loss_first_last": [
                round(float(np.mean(losses[:10])), 4),
                round(float(np.mean(losses[-10:])), 4),
            ],
        },
    }
    (out_dir / TRAIN_REPORT_FILE).write_text(json.dumps(report, indent=2))
    log.info(
        "updated the user tower's history path (%d params) on %d pairs in %.1f s: version %s",
        n_params,
        len(pairs.target_pos),
        seconds,
        version,
    )
    return report


def _with_history(pairs: HistoryPairs) -> HistoryPairs:
    """Only pairs with at least one history item (nothing to learn from the others)."""
    keep = (pairs.hist_pos >= 0).any(axis=1)
    return HistoryPairs(*(a[keep] for a in vars(pairs).values()))


def _fit(
    tower: UserTower,
    table: np.ndarray,
    pairs: HistoryPairs,
    parent: dict[str, object],
    cfg: UpdateConfig,
) -> tuple[list[float], int]:
    """Train the history path of ``tower``; returns the losses and the parameter count."""
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    train_cfg = parent.get("config", {})
    assert isinstance(train_cfg, dict)
    tau_s = float(train_cfg.get("recency_tau_s", 2 * 86400.0))
    temp = float(train_cfg.get("temperature", 0.05))
    params = trainable_parameters(tower)
    n_params = int(sum(p.numel() for p in params))
    counts = np.ones(len(table))
    np.add.at(counts, pairs.target_pos, 1.0)
    log_q = np.log(counts / counts.sum())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    ids, mask = encode_queries(load_tokenizer(tokenizer_path()), [""])
    items_t = torch.from_numpy(table.astype(np.float32))
    tower.train()
    losses: list[float] = []
    n = len(pairs.target_pos)
    steps = cfg.steps or max(1, math.ceil(cfg.epochs * n / cfg.batch))
    for _ in progress(range(steps), "update user tower"):
        pick = rng.integers(0, n, size=min(cfg.batch, n))
        vecs, weights = history_inputs(pairs.hist_pos[pick], pairs.hist_ts[pick], table, tau_s)
        b = len(pick)
        users = tower(
            torch.from_numpy(ids).expand(b, -1),
            torch.from_numpy(mask).expand(b, -1),
            torch.zeros(b, 1),
            vecs,
            weights,
        )
        targets = pairs.target_pos[pick]
        loss = in_batch_loss(users.float(), items_t[targets], targets, log_q, temp)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(loss.item())
    tower.eval()
    for p in tower.parameters():
        p.requires_grad_(True)
    return losses, n_params
