"""Untrained model versions of a chosen architecture, for device checks and benchmarks.

Speed and the parity of one runtime with another depend on the architecture and the inputs,
not on what the weights learned, so a GPU check can run on a machine without the teacher
wheel (it cannot distil) and without days of training: :func:`write_untrained_artifacts`
writes randomly initialised towers and reranker in the layout ``towerserve train`` writes,
and ``export.bundle.build_bundle`` turns them into a real bundle (ONNX graphs, torch programs,
FAISS index, item tables). Never serve one: its recommendations are noise.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
from transformers import BertConfig, BertModel

from towers.bundle_contract import BLEND_FEATURES, TRAIN_REPORT_FILE, Blend
from towers.data import load_dataset
from towers.models import CrossEncoder, ItemTower, UserTower, save_module

log = logging.getLogger(__name__)

__all__ = ["write_untrained_artifacts"]

#: The demo students' architecture (2 of the teacher's 6 layers, hidden 384, 12 heads).
DEMO_LAYERS, DEMO_HIDDEN, DEMO_HEADS = 2, 384, 12


def _bert(layers: int, hidden: int, heads: int) -> BertModel:
    cfg = BertConfig(
        vocab_size=30522,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
        max_position_embeddings=512,
    )
    return BertModel(cfg, add_pooling_layer=False)


def write_untrained_artifacts(
    data_dir: Path,
    out_dir: Path,
    *,
    dim: int = 128,
    layers: int = DEMO_LAYERS,
    hidden: int = DEMO_HIDDEN,
    heads: int = DEMO_HEADS,
    seed: int = 0,
    id_share: float = 0.0,
) -> Path:
    """Write untrained ``item_tower``, ``user_tower`` and ``reranker`` (``layers`` BERT layers
    of width ``hidden``, ``dim``-dimensional vectors), a neutral blend (cross-encoder logit
    only) and a train report pointing at ``data_dir`` to ``out_dir``; return ``out_dir``.

    ``id_share`` (0 to 1): that share of the catalog's items, drawn at random, get a random
    id vector of norm about 1 (the item-identity path, towers.models.ItemTower), so a check
    of that path sees vectors that differ from the text vectors; 0 (the default): none."""
    if not 0.0 <= id_share <= 1.0:
        raise ValueError(f"id_share must be in [0, 1], got {id_share}")
    torch.manual_seed(seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    version = f"untrained-l{layers}-h{hidden}-d{dim}-s{seed}" + (
        f"-ids{id_share:g}" if id_share else ""
    )
    meta = {"dim": dim, "model_version": version}
    id_keys = None
    if id_share:
        all_ids = load_dataset(data_dir).items["item_id"].to_numpy(np.int64)
        rng = np.random.default_rng(seed)
        id_keys = rng.choice(all_ids, size=round(id_share * len(all_ids)), replace=False)
    item = ItemTower(_bert(layers, hidden, heads), dim, id_keys=id_keys).eval()
    if item.n_ids:
        with torch.no_grad():
            item.ids.weight[1:] = torch.randn(item.n_ids, dim) / dim**0.5
    user = UserTower(_bert(layers, hidden, heads), dim, sequence=True).eval()
    assert user.sequence is not None
    with torch.no_grad():  # a sequence block that changes the vector (its trained start is 0)
        user.sequence.out.weight.copy_(torch.randn(dim, dim) / dim)
    reranker = CrossEncoder(_bert(layers, hidden, heads)).eval()
    save_module(item, item.text.bert.config, out_dir / "item_tower", **meta)
    save_module(user, user.text.bert.config, out_dir / "user_tower", **meta)
    save_module(reranker, reranker.bert.config, out_dir / "reranker", **meta)
    weights = np.array([1.0] + [0.0] * (len(BLEND_FEATURES) - 1), np.float32)
    Blend(weights, 0.0).write(out_dir)
    report = {
        "model_version": version,
        "data_dir": str(Path(data_dir).resolve()),
        "config": {"recency_tau_s": 2 * 86400.0},
        "untrained": True,
    }
    (out_dir / TRAIN_REPORT_FILE).write_text(json.dumps(report, indent=2))
    log.info("untrained artifacts %s: version %s", out_dir, version)
    return out_dir
