"""The served networks: item tower, user tower and cross-encoder reranker.

Their ``forward`` signatures are the ONNX signatures the Triton models call; see
``export/onnx.py`` and the README for the tensor names and shapes.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import BertConfig, BertModel

from towers.encoder import TextEncoder


class ItemTower(nn.Module):
    """Item text -> L2-normalised vector ``[B, dim]``."""

    def __init__(self, bert: BertModel, dim: int) -> None:
        super().__init__()
        self.text = TextEncoder(bert, dim)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.text(input_ids, attention_mask)


class UserTower(nn.Module):
    """Query text plus recency-weighted recent items -> L2-normalised user vector ``[B, dim]``.

    ``has_query`` ``[B, 1]`` is 1.0 for a non-empty query, 0.0 otherwise; ``history_vectors``
    ``[B, H, dim]`` are the item-tower vectors of the user's recent items and
    ``history_weights`` ``[B, H]`` their recency weights (sum 1, zeros for padding or no
    history). The two signals are projected into the item space and added.
    """

    def __init__(self, bert: BertModel, dim: int) -> None:
        super().__init__()
        self.text = TextEncoder(bert, dim)
        self.history = nn.Linear(dim, dim, bias=False)
        nn.init.eye_(self.history.weight)
        self.query_scale = nn.Parameter(torch.tensor(1.0))
        self.history_scale = nn.Parameter(torch.tensor(0.5))

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        has_query: torch.Tensor,
        history_vectors: torch.Tensor,
        history_weights: torch.Tensor,
    ) -> torch.Tensor:
        query = self.text(input_ids, attention_mask) * has_query * self.query_scale
        pooled = (history_vectors * history_weights.unsqueeze(-1)).sum(1)
        hist = self.history(pooled) * self.history_scale
        return nn.functional.normalize(query + hist, dim=-1, eps=1e-6)


class CrossEncoder(nn.Module):
    """``[CLS] query [SEP] item [SEP]`` -> relevance logit ``[B]``."""

    def __init__(self, bert: BertModel) -> None:
        super().__init__()
        self.bert = bert
        self.head = nn.Sequential(nn.Dropout(0.1), nn.Linear(bert.config.hidden_size, 1))

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor,
    ) -> torch.Tensor:
        out = self.bert(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state
        return self.head(out[:, 0]).squeeze(-1)


def save_module(module: nn.Module, bert_config: BertConfig, folder: Path, **meta: object) -> None:
    """Weights as ``model.safetensors`` plus ``config.json`` (BERT config and ``meta``)."""
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in module.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"))
    doc = {"bert": bert_config.to_dict(), "meta": meta}
    (folder / "config.json").write_text(json.dumps(doc, indent=2))


def load_module(kind: str, folder: Path) -> nn.Module:
    """Rebuild a saved ``item_tower``, ``user_tower`` or ``reranker`` in eval mode."""
    if not (folder / "model.safetensors").is_file():
        raise FileNotFoundError(f"no trained {kind} in {folder}: run `towerserve train` first")
    doc = json.loads((folder / "config.json").read_text())
    bert = BertModel(BertConfig.from_dict(doc["bert"]), add_pooling_layer=False)
    dim = int(doc["meta"].get("dim", 0))
    if kind == "item_tower":
        module: nn.Module = ItemTower(bert, dim)
    elif kind == "user_tower":
        module = UserTower(bert, dim)
    elif kind == "reranker":
        module = CrossEncoder(bert)
    else:
        raise ValueError(f"unknown module kind {kind!r}: item_tower, user_tower or reranker")
    module.load_state_dict(load_file(str(folder / "model.safetensors")))
    module.eval()
    return module
