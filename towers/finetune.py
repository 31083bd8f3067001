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
from towers.features import padded_recency_weights
from towers.models import ItemTower, UserTower, combine
from towers.progress import progress
from towers.text import encode_items, encode_queries

log = logging.getLogger(__name__)


@torch.inference_mode()
def embed_items(
    tower: ItemTower,
    tok: Tokenizer,
    texts: Sequence[str],
    *,
    item_ids: np.ndarray | Sequence[int] | None = None,
    batch_size: int = 256,
    bf16: bool,
) -> np.ndarray:
    """Item-tower vectors of ``texts``, float32 ``[len(texts), dim]``.

    With ``item_ids`` (one per text), each vector carries the item's learned id vector where
    the tower has one (the served item vectors); without, text alone."""
    was_training = tower.training
    tower.eval()
    order = np.argsort([len(t) for t in texts])
    dim = tower.text.proj.out_features
    out = np.zeros((len(texts), dim), dtype=np.float32)
    rows = None if item_ids is None else tower.id_rows(np.asarray(item_ids, np.int64))
    if rows is not None and len(rows) != len(texts):
        raise ValueError(f"{len(texts)} item texts but {len(rows)} item ids")
    for start in progress(range(0, len(texts), batch_size), "embed items"):
        idx = order[start : start + batch_size]
        ids, mask = encode_items(tok, [texts[i] for i in idx])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            vec = tower(torch.from_numpy(ids), torch.from_numpy(mask))
        vec = torch.nn.functional.normalize(vec.float(), dim=-1)
        if rows is not None:
            vec = combine(vec, tower.ids(torch.from_numpy(rows[idx])))
        out[idx] = vec.numpy()
    tower.train(was_training)
    return out


def history_inputs(
    hist_pos: np.ndarray,
    hist_ts: np.ndarray,
    table: np.ndarray,
    tau_s: float,
    *,
    item_tower: ItemTower | None = None,
    id_rows: np.ndarray | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """History vectors ``[B, H, dim]`` and recency weights ``[B, H]`` from padded positions.

    With ``item_tower`` and ``id_rows`` (the id row of every table position), ``table`` holds
    text vectors and each history vector is combined with its item's id vector, with
    gradient, so the id vectors also learn from the histories they appear in."""
    vecs = torch.from_numpy((table[np.maximum(hist_pos, 0)]).astype(np.float32))
    if item_tower is not None and id_rows is not None:
        rows = torch.from_numpy(id_rows[np.maximum(hist_pos, 0)])
        vecs = combine(vecs, item_tower.ids(rows))
    vecs = vecs * torch.from_numpy(hist_pos >= 0).unsqueeze(-1).float()
    return vecs, torch.from_numpy(padded_recency_weights(hist_pos, hist_ts, tau_s))


def target_log_q(n_items: int, queries: QueryPositives, histories: HistoryPairs) -> np.ndarray:
    """``log q(item)`` ``[n_items]``: how often each item is a training target (add-one)."""
    counts = np.ones(n_items)
    for pos in queries.positives:
        np.add.at(counts, pos, 1.0 / len(pos))
    np.add.at(counts, histories.target_pos, 1.0)
    return np.log(counts / counts.sum())


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
    item_ids: np.ndarray | None = None,
) -> list[float]:
    """Train both towers for ``cfg.finetune_steps`` steps; returns the loss of every step.

    ``item_ids`` (one per text, items-table order) map the catalog onto the item tower's id
    table (see :class:`towers.models.ItemTower`); without them, or with an empty id table,
    the towers see item text only. Each target item is trained on its text alone with
    probability ``cfg.id_dropout``, so text alone stays a good vector for new items; history
    items always carry their id vector."""
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    log_q = target_log_q(len(item_texts), queries, histories)
    bert_params = list(item_tower.text.bert.parameters()) + list(user_tower.text.bert.parameters())
    id_params = list(item_tower.ids.parameters())
    skip = {id(p) for p in bert_params + id_params}
    heads = [p for m in (item_tower, user_tower) for p in m.parameters() if id(p) not in skip]
    groups = [{"params": bert_params, "lr": cfg.finetune_lr}, {"params": heads, "lr": cfg.head_lr}]
    use_ids = item_ids is not None and item_tower.n_ids > 0
    id_rows = item_tower.id_rows(item_ids) if use_ids and item_ids is not None else None
    if id_rows is not None:
        groups.append({"params": id_params, "lr": cfg.id_lr, "weight_decay": cfg.id_weight_decay})
        log.info(
            "item ids: %d of %d items have an id vector (dropout %.2f)",
            int((id_rows > 0).sum()),
            len(id_rows),
            cfg.id_dropout,
        )
    opt = torch.optim.AdamW(groups, weight_decay=0.01)
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
        target_rows = None
        if id_rows is not None:
            kept = rng.random(len(targets)) >= cfg.id_dropout
            target_rows = torch.from_numpy(id_rows[targets] * kept)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
            ids, mask = encode_items(tok, [item_texts[i] for i in targets])
            item_vecs = item_tower(torch.from_numpy(ids), torch.from_numpy(mask), target_rows)
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
                    histories.hist_pos[hi],
                    histories.hist_ts[hi],
                    table,
                    cfg.recency_tau_s,
                    item_tower=item_tower if id_rows is not None else None,
                    id_rows=id_rows,
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


def finetune_ids(
    item_tower: ItemTower,
    user_tower: UserTower,
    text_table: np.ndarray,
    histories: HistoryPairs,
    id_rows: np.ndarray,
    log_q: np.ndarray,
    cfg: TrainConfig,
) -> dict[str, object]:
    """Train the id vectors (and the user tower's history projection) in epochs over the
    history pairs, with the item text vectors frozen, stopping early on validation.

    Cheap: no BERT runs (items are ``text_table`` rows, ``[N, dim]``, plus their id vectors;
    users are the history path of the user tower), so it can pass over every pair many
    times, which the id vectors need to learn what is bought together. The newest
    ``cfg.id_valid_frac`` of the pairs (by target time) are held out; after each epoch their
    Recall@50 over the whole catalog is measured, and training stops after
    ``cfg.id_patience`` epochs without a gain (at most ``cfg.id_epochs``), keeping the best
    epoch's weights. Returns the per-epoch validation recall and the chosen epoch.
    """
    n = len(histories.target_pos)
    if n == 0 or cfg.id_epochs == 0:
        return {"epochs": 0, "valid_recall@50": []}
    order = np.argsort(histories.target_ts, kind="stable")
    n_valid = int(round(n * cfg.id_valid_frac))
    valid, fit = order[n - n_valid :], order[: n - n_valid]
    rng = np.random.default_rng(cfg.seed + 1)
    text = torch.from_numpy(text_table.astype(np.float32))
    rows_all = torch.from_numpy(id_rows)
    params = list(item_tower.ids.parameters())
    user_params = list(user_tower.history.parameters()) + [user_tower.history_scale]
    opt = torch.optim.AdamW(
        [
            {"params": params, "lr": cfg.id_lr, "weight_decay": cfg.id_weight_decay},
            {"params": user_params, "lr": cfg.head_lr, "weight_decay": 0.01},
        ]
    )

    def users(idx: np.ndarray, item_vecs: torch.Tensor) -> torch.Tensor:
        hist = histories.hist_pos[idx]
        vecs = (
            item_vecs[torch.from_numpy(np.maximum(hist, 0))]
            * torch.from_numpy(hist >= 0).unsqueeze(-1).float()
        )
        _, weights = history_inputs(hist, histories.hist_ts[idx], text_table, cfg.recency_tau_s)
        return torch.nn.functional.normalize(user_tower.history_part(vecs, weights), dim=-1)

    def validate() -> float:
        if not len(valid):
            return 0.0
        with torch.no_grad():
            items = combine(text, item_tower.ids(rows_all))
            u = users(valid, items)
            top = torch.topk(u @ items.T, min(50, len(items)), dim=1).indices.numpy()
        return float((top == histories.target_pos[valid][:, None]).any(axis=1).mean())

    best = validate()
    curve = [round(best, 4)]
    best_state = _id_state(item_tower, user_tower)
    best_epoch, stale = 0, 0
    for epoch in progress(range(1, cfg.id_epochs + 1), "fine-tune item ids"):
        perm = rng.permutation(fit)
        for start in range(0, len(perm), cfg.id_batch):
            idx = perm[start : start + cfg.id_batch]
            if len(idx) < 2:
                continue
            # every item's current vector, so history and target ids both get gradient
            items = combine(text, item_tower.ids(rows_all))
            targets = histories.target_pos[idx]
            target_vecs = items[torch.from_numpy(targets)]
            loss = in_batch_loss(users(idx, items), target_vecs, targets, log_q, cfg.temperature)
            opt.zero_grad()
            loss.backward()
            opt.step()
        recall = validate()
        curve.append(round(recall, 4))
        log.info("item ids epoch %d: validation Recall@50 %.4f", epoch, recall)
        if recall > best:
            best, best_epoch, stale = recall, epoch, 0
            best_state = _id_state(item_tower, user_tower)
        else:
            stale += 1
            if stale >= cfg.id_patience:
                break
    _load_id_state(item_tower, user_tower, best_state)
    return {"epochs": best_epoch, "valid_recall@50": curve, "n_valid_pairs": int(len(valid))}


def _id_state(item_tower: ItemTower, user_tower: UserTower) -> list[torch.Tensor]:
    """Copies of what :func:`finetune_ids` trains."""
    return [
        item_tower.ids.weight.detach().clone(),
        user_tower.history.weight.detach().clone(),
        user_tower.history_scale.detach().clone(),
    ]


def _load_id_state(item_tower: ItemTower, user_tower: UserTower, state: list[torch.Tensor]) -> None:
    with torch.no_grad():
        item_tower.ids.weight.copy_(state[0])
        user_tower.history.weight.copy_(state[1])
        user_tower.history_scale.copy_(state[2])
