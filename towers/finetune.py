"""Stage 2: fine-tune both towers on labelled queries and next-item histories.

Loss: sampled softmax over in-batch negatives with logQ correction (Yi et al., RecSys 2019):
each logit ``u·v / T`` has ``log q(item)`` subtracted, ``q`` being how often the item is a
target in the training examples, so popular items are not over-penalised as negatives.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from tokenizers import Tokenizer

from towers.config import TrainConfig
from towers.examples import HistoryPairs, QueryPositives
from towers.features import recency_weights
from towers.models import ItemTower, UserTower
from towers.progress import progress
from towers.text import encode_items, encode_queries

log = logging.getLogger(__name__)


@torch.inference_mode()
def embed_items(
    tower: ItemTower, tok: Tokenizer, texts: Sequence[str], *, batch_size: int = 256, bf16: bool
) -> np.ndarray:
    """Item-tower vectors of ``texts``, float32 ``[len(texts), dim]``."""
    was_training = tower.training
    tower.eval()
    order = np.argsort([len(t) for t in texts])
    dim = tower.text.proj.out_features
    out = np.zeros((len(texts), dim), dtype=np.float32)
    for start in progress(range(0, len(texts), batch_size), "embed items"):
        idx = order[start : start + batch_size]
        ids, mask = encode_items(tok, [texts[i] for i in idx])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            vec = tower(torch.from_numpy(ids), torch.from_numpy(mask))
        out[idx] = torch.nn.functional.normalize(vec.float(), dim=-1).numpy()
    tower.train(was_training)
    return out


def history_inputs(
    hist_pos: np.ndarray, hist_ts: np.ndarray, table: np.ndarray, tau_s: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """History vectors ``[B, H, dim]`` and recency weights ``[B, H]`` from padded positions."""
    vecs = table[np.maximum(hist_pos, 0)] * (hist_pos >= 0)[..., None]
    weights = np.zeros(hist_pos.shape, dtype=np.float32)
    for row in range(len(hist_pos)):
        ok = hist_pos[row] >= 0
        if ok.any():
            weights[row, ok] = recency_weights(hist_ts[row, ok], tau_s)
    return torch.from_numpy(vecs.astype(np.float32)), torch.from_numpy(weights)


def in_batch_loss(
    users: torch.Tensor, items: torch.Tensor, target_pos: np.ndarray, log_q: np.ndarray, temp: float
) -> torch.Tensor:
    """Sampled softmax with logQ correction; duplicates of the target are not negatives."""
    logits = users @ items.T / temp - torch.from_numpy(log_q[target_pos]).float()[None, :]
    same = torch.from_numpy(target_pos[:, None] == target_pos[None, :])
    same.fill_diagonal_(False)
    logits = logits.masked_fill(same, float("-inf"))
    return torch.nn.functional.cross_entropy(logits, torch.arange(len(users)))


def finetune_towers(
    item_tower: ItemTower,
    user_tower: UserTower,
    tok: Tokenizer,
    item_texts: Sequence[str],
    queries: QueryPositives,
    histories: HistoryPairs,
    cfg: TrainConfig,
) -> list[float]:
    """Train both towers for ``cfg.finetune_steps`` steps; returns the loss of every step."""
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    counts = np.ones(len(item_texts))
    for pos in queries.positives:
        np.add.at(counts, pos, 1.0 / len(pos))
    np.add.at(counts, histories.target_pos, 1.0)
    log_q = np.log(counts / counts.sum())
    bert_params = list(item_tower.text.bert.parameters()) + list(user_tower.text.bert.parameters())
    bert_ids = {id(p) for p in bert_params}
    heads = [p for m in (item_tower, user_tower) for p in m.parameters() if id(p) not in bert_ids]
    opt = torch.optim.AdamW(
        [{"params": bert_params, "lr": cfg.finetune_lr}, {"params": heads, "lr": cfg.head_lr}],
        weight_decay=0.01,
    )
    item_tower.train()
    user_tower.train()
    refresh_every = max(cfg.finetune_steps // 2, 1)
    table = embed_items(item_tower, tok, item_texts, bf16=cfg.bf16)
    use_hist = len(histories.target_pos) > 0
    n_q = len(queries.texts)
    losses: list[float] = []
    for step in progress(range(cfg.finetune_steps), "fine-tune towers"):
        if step and step % refresh_every == 0:
            table = embed_items(item_tower, tok, item_texts, bf16=cfg.bf16)
        b = cfg.finetune_batch
        qi = rng.integers(0, n_q, size=b) if n_q else np.zeros(0, dtype=np.int64)
        q_target = np.array([rng.choice(queries.positives[i]) for i in qi], dtype=np.int64)
        hi = rng.integers(0, len(histories.target_pos), size=b) if use_hist else np.zeros(0, int)
        h_target = histories.target_pos[hi]
        targets = np.concatenate([q_target, h_target])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
            ids, mask = encode_items(tok, [item_texts[i] for i in targets])
            item_vecs = item_tower(torch.from_numpy(ids), torch.from_numpy(mask))
            parts = []
            if len(qi):
                qids, qmask = encode_queries(tok, [queries.texts[i] for i in qi])
                dim = table.shape[1]
                parts.append(
                    user_tower(
                        torch.from_numpy(qids),
                        torch.from_numpy(qmask),
                        torch.ones(len(qi), 1),
                        torch.zeros(len(qi), 1, dim),
                        torch.zeros(len(qi), 1),
                    )
                )
            if len(hi):
                vecs, weights = history_inputs(
                    histories.hist_pos[hi], histories.hist_ts[hi], table, cfg.recency_tau_s
                )
                eids, emask = encode_queries(tok, [""] * len(hi))
                parts.append(
                    user_tower(
                        torch.from_numpy(eids),
                        torch.from_numpy(emask),
                        torch.zeros(len(hi), 1),
                        vecs,
                        weights,
                    )
                )
            user_vecs = torch.cat(parts)
        loss = in_batch_loss(user_vecs.float(), item_vecs.float(), targets, log_q, cfg.temperature)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(
            list(item_tower.parameters()) + list(user_tower.parameters()), 1.0
        )
        opt.step()
        losses.append(loss.item())
        if step % 50 == 0:
            log.info("fine-tune step %d: loss %.3f", step, losses[-1])
    item_tower.eval()
    user_tower.eval()
    return losses


@torch.inference_mode()
def embed_queries(
    tower: UserTower, tok: Tokenizer, texts: Sequence[str], *, batch_size: int = 256, bf16: bool
) -> np.ndarray:
    """User-tower vectors of queries with no history, float32 ``[len(texts), dim]``."""
    tower.eval()
    dim = tower.text.proj.out_features
    out = np.zeros((len(texts), dim), dtype=np.float32)
    for start in range(0, len(texts), batch_size):
        chunk = list(texts[start : start + batch_size])
        ids, mask = encode_queries(tok, chunk)
        has_query = torch.tensor([[1.0 if t.strip() else 0.0] for t in chunk])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            vec = tower(
                torch.from_numpy(ids),
                torch.from_numpy(mask),
                has_query,
                torch.zeros(len(chunk), 1, dim),
                torch.zeros(len(chunk), 1),
            )
        out[start : start + len(chunk)] = torch.nn.functional.normalize(vec.float(), dim=-1).numpy()
    return out


@torch.inference_mode()
def embed_histories(
    tower: UserTower,
    tok: Tokenizer,
    hist_pos: np.ndarray,
    hist_weights: np.ndarray,
    table: np.ndarray,
    *,
    batch_size: int = 512,
    bf16: bool,
) -> np.ndarray:
    """User-tower vectors for an empty query plus histories, float32 ``[U, dim]``.

    ``hist_pos`` ``[U, H]`` are item row positions in ``table`` (``-1`` = padding) and
    ``hist_weights`` ``[U, H]`` their recency weights (zeros for padding).
    """
    tower.eval()
    dim = tower.text.proj.out_features
    out = np.zeros((len(hist_pos), dim), dtype=np.float32)
    for start in range(0, len(hist_pos), batch_size):
        rows = hist_pos[start : start + batch_size]
        vecs = table[np.maximum(rows, 0)] * (rows >= 0)[..., None]
        ids, mask = encode_queries(tok, [""] * len(rows))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            vec = tower(
                torch.from_numpy(ids),
                torch.from_numpy(mask),
                torch.zeros(len(rows), 1),
                torch.from_numpy(vecs.astype(np.float32)),
                torch.from_numpy(hist_weights[start : start + batch_size].astype(np.float32)),
            )
        out[start : start + len(rows)] = torch.nn.functional.normalize(vec.float(), dim=-1).numpy()
    return out
