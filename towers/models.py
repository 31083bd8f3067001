"""The served networks: item tower, user tower and cross-encoder reranker.

Their ``forward`` signatures are the ONNX signatures the Triton models call; see
``export/onnx.py`` and the README for the tensor names and shapes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import BertConfig, BertModel

from towers.encoder import TextEncoder
from towers.features import MAX_HISTORY


class ItemTower(nn.Module):
    """Item text, plus item identity where known -> L2-normalised vector ``[B, dim]``.

    ``id_keys`` are the item ids that get a learned id vector (the items with training
    interactions), sorted; id row ``r + 1`` belongs to ``id_keys[r]`` and row 0 is "no id"
    (zeros, never trained). The id table starts at zero, so an untrained table gives exactly
    the text-only model. An item's vector is ``normalize(normalize(text) + id_vector)``
    (:func:`combine`, the same arithmetic as ``towers.bundle_contract.combine_item_vectors``),
    so serving adds an exported id table to the text graph's output in numpy: the ONNX graph
    (``forward`` with text only) does not change.
    """

    def __init__(self, bert: BertModel, dim: int, id_keys: Sequence[int] | None = None) -> None:
        super().__init__()
        self.text = TextEncoder(bert, dim)
        keys = np.unique(np.asarray(list(id_keys) if id_keys is not None else [], np.int64))
        self.id_keys: torch.Tensor
        if len(keys):
            self.register_buffer("id_keys", torch.from_numpy(keys))
        else:  # not a buffer: torch.export cannot package an empty one
            self.id_keys = torch.zeros(0, dtype=torch.int64)
        self.ids = nn.Embedding(len(keys) + 1, dim, padding_idx=0)
        nn.init.zeros_(self.ids.weight)

    def text_only(self) -> ItemTower:
        """A tower sharing this one's text encoder, without id vectors: the graph export
        writes (serving adds the id vectors from the bundle's id table)."""
        tower = ItemTower(self.text.bert, self.text.proj.out_features)
        tower.text = self.text
        return tower.train(self.training)

    @property
    def n_ids(self) -> int:
        """Items with a learned id vector."""
        return int(self.id_keys.numel())

    def id_rows(self, item_ids: np.ndarray | Sequence[int]) -> np.ndarray:
        """Id-table rows of ``item_ids`` (int64, same shape): 0 for an id without a vector."""
        ids = np.asarray(item_ids, dtype=np.int64)
        keys = self.id_keys.cpu().numpy()
        if not len(keys):
            return np.zeros(ids.shape, np.int64)
        at = np.clip(np.searchsorted(keys, ids), 0, len(keys) - 1)
        return np.where(keys[at] == ids, at + 1, 0).astype(np.int64)

    def id_vectors(self) -> np.ndarray:
        """The learned id vectors, float32 ``[n_ids, dim]``, rows as ``id_keys``."""
        return self.ids.weight.detach()[1:].float().cpu().numpy()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        id_rows: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Text only when ``id_rows`` is ``None`` (the exported graph); otherwise combined
        with the id vectors of ``id_rows`` ``[B]`` (see :meth:`id_rows`)."""
        text = self.text(input_ids, attention_mask)
        if id_rows is None:
            return text
        return combine(text, self.ids(id_rows))


def combine(text_vecs: torch.Tensor, id_vecs: torch.Tensor) -> torch.Tensor:
    """``normalize(text + id)`` over the last axis; ``text_vecs`` are already unit vectors."""
    return nn.functional.normalize(text_vecs.float() + id_vecs.float(), dim=-1, eps=1e-6)


class UserTower(nn.Module):
    """Query text plus recency-weighted recent items -> L2-normalised user vector ``[B, dim]``.

    ``has_query`` ``[B, 1]`` is 1.0 for a non-empty query, 0.0 otherwise; ``history_vectors``
    ``[B, H, dim]`` are the item-tower vectors of the user's recent items and
    ``history_weights`` ``[B, H]`` their recency weights (sum 1, zeros for padding or no
    history). The two signals are projected into the item space and added.
    """

    def __init__(self, bert: BertModel, dim: int, sequence: bool = False) -> None:
        super().__init__()
        self.text = TextEncoder(bert, dim)
        self.history = nn.Linear(dim, dim, bias=False)
        nn.init.eye_(self.history.weight)
        self.query_scale = nn.Parameter(torch.tensor(1.0))
        self.history_scale = nn.Parameter(torch.tensor(0.5))
        self.sequence = HistorySequence(dim, max_len=MAX_HISTORY) if sequence else None

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        has_query: torch.Tensor,
        history_vectors: torch.Tensor,
        history_weights: torch.Tensor,
    ) -> torch.Tensor:
        query = self.text(input_ids, attention_mask) * has_query * self.query_scale
        hist = self.history_part(history_vectors, history_weights)
        return nn.functional.normalize(query + hist, dim=-1, eps=1e-6)

    def history_head(self) -> np.ndarray:
        """float32 ``[dim, dim]`` with ``history_part(v, w) == (w . v) @ head`` (plus the
        sequence block's term where the tower has one: :meth:`sequence_arrays`): the whole
        user tower for an empty query, up to the normalisation (serving skips the graph then)."""
        head = self.history.weight.detach().float().T * self.history_scale.detach().float()
        return head.cpu().numpy().astype(np.float32)

    def history_part(
        self, history_vectors: torch.Tensor, history_weights: torch.Tensor
    ) -> torch.Tensor:
        """The history's share of the user vector (before normalisation), ``[B, dim]``; for an
        empty query the user vector is its normalisation."""
        pooled = (history_vectors * history_weights.unsqueeze(-1)).sum(1)
        out = self.history(pooled) * self.history_scale
        if self.sequence is not None:
            out = out + self.sequence(history_vectors, history_weights)
        return out

    def sequence_arrays(self) -> dict[str, np.ndarray] | None:
        """The sequence block's weights as float32 arrays for serving's numpy form
        (towers.history_sequence.history_sequence), or ``None`` without one."""
        return None if self.sequence is None else self.sequence.arrays()


class HistorySequence(nn.Module):
    """Self-attention over a history's item vectors, read out at the newest item.

    A one-block SASRec-style encoder (Kang and McAuley 2018): each history item vector plus a
    learned embedding of its recency *rank* (0 = newest) attends to the others (pre-norm
    multi-head attention and a feed-forward block), and the newest item's output, through
    ``out``, is the sequence's share of the user vector. ``out`` starts at zero, so an
    untrained block adds nothing and the tower starts as the recency-weighted mean alone.

    Inputs as :class:`UserTower`'s: ``vectors`` ``[B, H, dim]`` and ``weights`` ``[B, H]``,
    where a weight ``> 0`` marks a real item and 0 padding, on either side (training pads on
    the left, serving on the right); the order of the real items is oldest first. At most
    ``max_len`` real items (older ranks share the last embedding). Written with plain
    matmuls so that it exports to ONNX as it is.
    """

    def __init__(self, dim: int, heads: int = 4, max_len: int = 20) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not a multiple of heads {heads}")
        self.heads = heads
        self.max_len = max_len
        self.rank = nn.Embedding(max_len, dim)
        nn.init.normal_(self.rank.weight, std=0.02)
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(
            nn.Linear(dim, 2 * dim), nn.GELU(approximate="tanh"), nn.Linear(2 * dim, dim)
        )
        self.out = nn.Linear(dim, dim, bias=False)
        nn.init.zeros_(self.out.weight)

    def forward(self, vectors: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        real = (weights > 0).to(vectors.dtype)  # [B, H]
        # rank 0 = the newest real item: the number of real items after each position
        after = real.flip(1).cumsum(1).flip(1) - real
        rank = after.clamp(max=self.max_len - 1).long()
        x = vectors + self.rank(rank) * real.unsqueeze(-1)
        batch, length, dim = x.shape
        head_dim = dim // self.heads
        q, k, v = self.qkv(self.norm1(x)).chunk(3, dim=-1)

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(batch, length, self.heads, head_dim).transpose(1, 2)

        scores = torch.matmul(split(q), split(k).transpose(-1, -2)) * (head_dim**-0.5)
        scores = scores + (1.0 - real)[:, None, None, :] * MASKED_SCORE
        mixed = torch.matmul(torch.softmax(scores, dim=-1), split(v))
        x = x + self.proj(mixed.transpose(1, 2).reshape(batch, length, dim))
        x = x + self.ff(self.norm2(x))
        newest = (real * (after == 0).to(real.dtype)).unsqueeze(-1)  # one-hot (or all zero)
        return self.out((x * newest).sum(1))

    def arrays(self) -> dict[str, np.ndarray]:
        """Every weight as float32 numpy, named as towers.history_sequence.history_sequence
        reads them (``heads`` as a 0-d array)."""
        out = {k: v.detach().float().cpu().numpy() for k, v in self.state_dict().items()}
        out["heads"] = np.array(self.heads, dtype=np.int64)
        return out


class CrossEncoder(nn.Module):
    """``[CLS] query [SEP] item [SEP]`` -> relevance logit ``[B]``.

    Only the ``[CLS]`` token's final state feeds the head, so in eval mode (evaluation, export,
    serving) the last BERT layer is computed for ``[CLS]`` alone (:func:`cls_only_forward`):
    its keys and values still come from every token, but the query projection, the attention
    output, the feed-forward block and the layer norms run on one row per pair instead of
    every token. The same logits as the full model (up to float rounding: about 2e-6 on the
    demo model) for a fraction of the work (3.6x faster for the 1-layer demo cross-encoder
    in OpenVINO bf16, README). Training runs the full Hugging Face model (with its dropout).
    """

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
        if not self.training:
            cls = cls_only_forward(self.bert, input_ids, attention_mask, token_type_ids)
            return self.head(cls).squeeze(-1)
        return self.full_forward(input_ids, attention_mask, token_type_ids)

    def full_forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor,
    ) -> torch.Tensor:
        """Every layer on every token (the Hugging Face model): the training path, and the
        reference :func:`cls_only_forward` is checked against."""
        out = self.bert(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state
        return self.head(out[:, 0]).squeeze(-1)


#: Added to the attention scores of padded tokens (their softmax weight underflows to 0; small
#: enough in magnitude to stay finite in bf16 and fp16).
MASKED_SCORE = -10_000.0


def cls_only_forward(
    bert: BertModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    token_type_ids: torch.Tensor,
) -> torch.Tensor:
    """The final hidden state of token 0 (``[CLS]``), ``[B, hidden]``, as ``bert`` computes it
    in eval mode (no dropout), with the last layer evaluated for that token only.

    ``input_ids``, ``attention_mask`` (1 = token, 0 = padding) and ``token_type_ids`` are
    int64 ``[B, T]``. Every layer but the last runs on all tokens; the last one's keys and
    values come from all tokens and everything else from ``[CLS]``'s row alone.
    """
    hidden = bert.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
    bias = (1.0 - attention_mask[:, None, None, :].to(hidden.dtype)) * MASKED_SCORE
    layers = bert.encoder.layer
    for layer in layers[:-1]:
        hidden = _bert_layer(layer, hidden, bias, hidden, bert.config.num_attention_heads)
    last = _bert_layer(layers[-1], hidden, bias, hidden[:, :1], bert.config.num_attention_heads)
    return last[:, 0]


class ContextOnceCrossEncoder(nn.Module):
    """A 1-layer :class:`CrossEncoder` fed one context and many items: the served graph.

    Every pair of a reranker call shares its context (``[CLS] context [SEP]``, positions
    ``0..C-1``, segment 0), and with one BERT layer the context tokens' keys and values do not
    depend on the item: they are computed once per call instead of once per pair, and so is
    ``[CLS]``'s query. Per pair only the item tokens (positions from ``C`` on, segment 1) are
    embedded and projected to keys and values, and ``[CLS]``'s row runs the rest of the layer
    (:func:`cls_only_forward`). The same logits as :meth:`CrossEncoder.forward` on the pairs
    ``[CLS] context [SEP] item [SEP]`` (up to float rounding; tested).

    Inputs, all int64: ``context_ids`` ``[1, C]`` and ``context_mask`` ``[1, C]`` (1 = token;
    the context may be right-padded, the items' positions start after its real tokens),
    ``item_ids`` ``[N, I]`` (each item's tokens then ``[SEP]``, right-padded with 0) and
    ``item_mask`` ``[N, I]``. Output: logits ``[N]``.
    """

    def __init__(self, encoder: CrossEncoder) -> None:
        super().__init__()
        layers = encoder.bert.config.num_hidden_layers
        if layers != 1:
            raise ValueError(
                f"the context-once form needs a 1-layer cross-encoder, this one has {layers}: "
                "with more layers the context's states depend on the item"
            )
        self.bert = encoder.bert
        self.head = encoder.head

    def forward(
        self,
        context_ids: torch.Tensor,
        context_mask: torch.Tensor,
        item_ids: torch.Tensor,
        item_mask: torch.Tensor,
    ) -> torch.Tensor:
        cls = context_once_forward(self.bert, context_ids, context_mask, item_ids, item_mask)
        return self.head(cls).squeeze(-1)


def context_once_forward(
    bert: BertModel,
    context_ids: torch.Tensor,
    context_mask: torch.Tensor,
    item_ids: torch.Tensor,
    item_mask: torch.Tensor,
) -> torch.Tensor:
    """``[CLS]``'s final hidden state ``[N, hidden]`` of a 1-layer ``bert`` for the pairs of one
    context with ``N`` items (shapes in :class:`ContextOnceCrossEncoder`), eval mode."""
    emb = bert.embeddings
    ctx = emb(input_ids=context_ids, token_type_ids=torch.zeros_like(context_ids))
    offset = context_mask.sum(dim=1, keepdim=True)  # [1, 1]: the items' first position
    positions = offset + torch.arange(item_ids.shape[1], device=item_ids.device)[None]
    items = emb(
        input_ids=item_ids, token_type_ids=torch.ones_like(item_ids), position_ids=positions
    )
    layer = bert.encoder.layer[0]
    att = layer.attention
    heads = bert.config.num_attention_heads
    n, width = item_ids.shape[0], ctx.shape[-1]
    head_dim = width // heads

    def split(x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], x.shape[1], heads, head_dim).transpose(1, 2)

    cls = ctx[:, :1]  # [1, 1, H]
    q = split(att.self.query(cls)) * (head_dim**-0.5)  # [1, h, 1, d]
    ctx_bias = (1.0 - context_mask[:, None, None, :].to(ctx.dtype)) * MASKED_SCORE
    item_bias = (1.0 - item_mask[:, None, None, :].to(items.dtype)) * MASKED_SCORE
    ctx_scores = torch.matmul(q, split(att.self.key(ctx)).transpose(-1, -2)) + ctx_bias
    item_scores = torch.matmul(q, split(att.self.key(items)).transpose(-1, -2)) + item_bias
    scores = torch.cat([ctx_scores.expand(n, -1, -1, -1), item_scores], dim=-1)
    weights = torch.softmax(scores, dim=-1)  # [N, h, 1, C + I]
    c = ctx.shape[1]
    mixed = torch.matmul(weights[..., :c], split(att.self.value(ctx))) + torch.matmul(
        weights[..., c:], split(att.self.value(items))
    )  # [N, h, 1, d]
    mixed = mixed.transpose(1, 2).reshape(n, 1, width)
    x = att.output.LayerNorm(att.output.dense(mixed) + cls)
    return layer.output.LayerNorm(layer.output.dense(layer.intermediate(x)) + x)[:, 0]


def _bert_layer(
    layer: nn.Module, hidden: torch.Tensor, bias: torch.Tensor, rows: torch.Tensor, heads: int
) -> torch.Tensor:
    """One BERT encoder layer (post-norm, eval mode) for the token rows ``rows`` ``[B, R, H]``
    attending over ``hidden`` ``[B, T, H]``; ``bias`` ``[B, 1, 1, T]`` is added to the scores."""
    att = layer.attention
    batch, _, width = hidden.shape
    head_dim = width // heads

    def split(x: torch.Tensor) -> torch.Tensor:
        return x.view(batch, x.shape[1], heads, head_dim).transpose(1, 2)

    q = split(att.self.query(rows))
    k, v = split(att.self.key(hidden)), split(att.self.value(hidden))
    scores = torch.matmul(q, k.transpose(-1, -2)) * (head_dim**-0.5) + bias
    mixed = torch.matmul(torch.softmax(scores, dim=-1), v)
    mixed = mixed.transpose(1, 2).reshape(batch, rows.shape[1], width)
    x = att.output.LayerNorm(att.output.dense(mixed) + rows)
    return layer.output.LayerNorm(layer.output.dense(layer.intermediate(x)) + x)


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
    state = load_file(str(folder / "model.safetensors"))
    if kind == "item_tower":
        if "ids.weight" not in state:  # saved before item ids: text only
            state["ids.weight"] = torch.zeros(1, dim)
        keys = state["id_keys"].tolist() if "id_keys" in state else None
        module: nn.Module = ItemTower(bert, dim, keys)
    elif kind == "user_tower":
        module = UserTower(bert, dim, sequence=any(k.startswith("sequence.") for k in state))
    elif kind == "reranker":
        module = CrossEncoder(bert)
    else:
        raise ValueError(f"unknown module kind {kind!r}: item_tower, user_tower or reranker")
    module.load_state_dict(state)
    module.eval()
    return module
