"""BERT students: a shallow copy of the teacher, mean-pooled and projected to the shared space."""

from __future__ import annotations

import copy

import torch
from torch import nn
from transformers import BertConfig, BertModel


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of token vectors over the attention mask: ``[B, L, H] -> [B, H]``."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)


def student_layers(n_teacher: int, n_student: int) -> list[int]:
    """Teacher layers a student of ``n_student`` layers starts from: spread out, last included."""
    if not 1 <= n_student <= n_teacher:
        raise ValueError(f"a student needs 1..{n_teacher} layers, got {n_student}")
    if n_student == 1:
        return [n_teacher - 1]
    step = (n_teacher - 1) / (n_student - 1)
    return [round(i * step) for i in range(n_student)]


def make_student(teacher: BertModel, n_layers: int) -> BertModel:
    """A BERT with ``n_layers`` layers, embeddings and layers copied from the teacher."""
    layers = student_layers(teacher.config.num_hidden_layers, n_layers)
    cfg = copy.deepcopy(teacher.config)
    cfg.num_hidden_layers = n_layers
    student = BertModel(cfg, add_pooling_layer=False)
    student.embeddings.load_state_dict(teacher.embeddings.state_dict())
    for dst, src in enumerate(layers):
        student.encoder.layer[dst].load_state_dict(teacher.encoder.layer[src].state_dict())
    return student


def tiny_bert(n_layers: int = 1, hidden: int = 32, vocab: int = 30522) -> BertModel:
    """A small randomly initialised BERT for fast tests."""
    cfg = BertConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=n_layers,
        num_attention_heads=2,
        intermediate_size=hidden * 2,
        max_position_embeddings=128,
    )
    return BertModel(cfg, add_pooling_layer=False)


class TextEncoder(nn.Module):
    """BERT -> mean pool (``hidden``) -> linear projection (``dim``) -> L2 normalisation."""

    def __init__(self, bert: BertModel, dim: int) -> None:
        super().__init__()
        self.bert = bert
        self.proj = nn.Linear(bert.config.hidden_size, dim, bias=False)

    @property
    def hidden_size(self) -> int:
        return int(self.bert.config.hidden_size)

    def pooled(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Mean-pooled BERT output before projection, ``[B, hidden]`` (distillation target)."""
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return mean_pool(hidden, attention_mask)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.proj(self.pooled(input_ids, attention_mask)), dim=-1)
