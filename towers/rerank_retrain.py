"""``towerserve train --from ARTIFACTS --reranker-only``: a new cross-encoder over the same towers.

The reranker's size is a latency lever: a served request scores as many candidates as fit in
its budget, and a 1-layer cross-encoder scores about twice as many pairs per second as a
2-layer one. Choosing a size should not mean retraining the towers (minutes to hours), so this
trains only the reranker and the blend, over the parent's user tower and item table, on the
parent's data and training window, and writes a complete artifacts folder beside the parent.

The item tower, its vectors, the prior and the co-visitation table are copied unchanged, so
the parent's FAISS index and re-embedded shards stay valid (``item_tower_version`` is kept).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from towers.bundle_contract import BLEND_FILE, ITEM_EMBEDDINGS_FILE, TRAIN_REPORT_FILE, Blend
from towers.config import TrainConfig
from towers.data import item_texts, load_dataset
from towers.examples import history_pairs, positions
from towers.models import CrossEncoder, UserTower, load_module
from towers.teacher import load_teacher, tokenizer_path
from towers.text import item_token_lists, load_tokenizer
from towers.update import child_report, parent_report, save_child_module

log = logging.getLogger(__name__)

#: What a reranker-only run writes itself; the parent's other files are copied.
REWRITTEN = ("reranker", TRAIN_REPORT_FILE)
#: The parent's model folders that are copied (others, e.g. an exported ``bundle``, are
#: not: they hold the parent's reranker and are rebuilt by ``towerserve export``).
COPIED_DIRS = ("item_tower", "user_tower")


def retrain_reranker(
    artifacts: Path, out_dir: Path, overrides: Mapping[str, object]
) -> dict[str, object]:
    """Train a new reranker and blend over the towers of ``artifacts``; write ``out_dir``.

    ``overrides`` change the parent's training settings (``reranker_layers``,
    ``rerank_steps``, ``rerank_item_tokens``, ``rerank_distil_weight``: then the parent's
    reranker is the teacher; see ``towers.config.TrainConfig``); the data set and the
    training cut are the parent's.

    Raises:
        FileNotFoundError: ``artifacts`` is not a trained artifacts folder.
        ValueError: ``out_dir`` is ``artifacts``, the catalog changed since the parent was
            trained, or a setting is invalid.
    """
    from towers.train import StageTimer, cut_events, fit_reranker  # heavy: torch, faiss

    started = time.perf_counter()
    parent = parent_report(artifacts, out_dir)
    cfg = TrainConfig(**{**parent["config"], **overrides})
    data_dir = Path(parent["data_dir"])
    ds = cut_events(load_dataset(data_dir), parent.get("events_until_ts"))
    items = ds.items.reset_index(drop=True)
    item_vecs = np.load(artifacts / ITEM_EMBEDDINGS_FILE)
    if len(item_vecs) != len(items):
        raise ValueError(
            f"{artifacts}/{ITEM_EMBEDDINGS_FILE} has {len(item_vecs)} rows but {data_dir} now "
            f"has {len(items)} items: the catalog changed since training; train a new model"
        )
    user_tower = load_module("user_tower", artifacts / "user_tower")
    if not isinstance(user_tower, UserTower):  # load_module's contract; never expected
        raise TypeError(f"{artifacts}/user_tower is not a user tower")
    texts = item_texts(items)
    tok = load_tokenizer(tokenizer_path())
    hist = history_pairs(
        ds.events, positions(items), cfg.max_history_pairs, np.random.default_rng(cfg.seed)
    )
    timer = StageTimer()
    teacher = None
    if cfg.rerank_distil_weight > 0:  # distil from the parent's (e.g. deeper) reranker
        teacher = load_module("reranker", artifacts / "reranker")
        if not isinstance(teacher, CrossEncoder):  # load_module's contract; never expected
            raise TypeError(f"{artifacts}/reranker is not a cross-encoder")
    reranker, losses, blend, n_pairs = fit_reranker(
        ds,
        texts,
        item_token_lists(tok, texts),
        tok,
        load_teacher(),
        user_tower,
        item_vecs,
        hist,
        cfg,
        timer,
        teacher,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    for src in artifacts.iterdir():
        dst = out_dir / src.name
        if src.name in REWRITTEN:
            continue
        if src.is_dir() and src.name in COPIED_DIRS:
            shutil.copytree(src, dst, dirs_exist_ok=True)
        elif src.is_file():
            shutil.copy2(src, dst)
        else:
            log.info("not copied: %s (export the new artifacts again)", src)
    version = save_child_module(reranker, "reranker", artifacts, out_dir, tag="r")
    # the parent's blend without a query is kept (its cross-encoder weight was chosen for the
    # parent's reranker; 0, the retrieval order, when the cross-encoder did not help)
    parent_blend = artifacts / BLEND_FILE
    no_query = Blend.no_query_from_json(parent_blend) if parent_blend.is_file() else None
    blend.write(out_dir, no_query=no_query)
    seconds = round(time.perf_counter() - started, 2)
    report = {
        **child_report(parent, version),
        "config": cfg.model_dump(),
        "n_rerank_pairs": n_pairs,
        "seconds": timer.seconds,
        "losses": {
            **parent.get("losses", {}),
            "reranker_first_last": [
                round(float(np.mean(losses[:20])), 4),
                round(float(np.mean(losses[-20:])), 4),
            ],
        },
        "blend": blend.to_dict(),
        "reranker_only": {"overrides": dict(overrides), "seconds": seconds},
    }
    (out_dir / TRAIN_REPORT_FILE).write_text(json.dumps(report, indent=2))
    log.info(
        "trained a %d-layer reranker over %s in %.0f s: version %s",
        cfg.reranker_layers,
        parent["model_version"],
        seconds,
        version,
    )
    return report
