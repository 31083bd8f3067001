"""Training settings: one typed object per job, with presets for tiny (tests) and demo sizes."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

Preset = Literal["tiny", "demo", "full"]


class TrainConfig(BaseModel):
    """Everything ``towerserve train`` needs. Steps are optimiser steps; times are seconds."""

    preset: Preset = "demo"
    seed: int = 7
    dim: int = Field(128, ge=8, le=1024, description="shared embedding dimension")
    student_layers: int = Field(2, ge=1, le=6, description="BERT layers of each tower")
    # 1 layer: about twice the pairs/s of 2, so more candidates scored and a better ranking at
    # a 25 ms budget; 2 rank better when the budget lets them score 64+ (README, Fast path)
    reranker_layers: int = Field(1, ge=1, le=6, description="BERT layers of the cross-encoder")
    bf16: bool = Field(True, description="bfloat16 autocast for matmuls (AMX on this CPU)")
    # distillation
    distil_epochs: int = Field(2, ge=0)
    distil_batch: int = Field(64, ge=2)
    distil_lr: float = 2e-4
    # two-tower fine-tuning
    finetune_steps: int = Field(300, ge=0)
    finetune_batch: int = Field(64, ge=2, description="query pairs and history pairs per step")
    finetune_lr: float = 5e-5
    head_lr: float = 2e-3
    temperature: float = Field(0.05, gt=0)
    recency_tau_s: float = Field(2 * 86400.0, gt=0, description="history recency decay, s")
    max_query_positives: int = Field(4, ge=1, description="exact items sampled per query")
    max_history_pairs: int = Field(30000, ge=0)
    # item identity: a learned id vector per item with training interactions, added to the
    # text vector (towers.models.ItemTower); new items keep the text vector alone
    # off by default: measured worse than text only on the demo data so far (README)
    item_ids: bool = Field(False, description="learn an id vector per item with interactions")
    id_dropout: float = Field(
        0.3, ge=0.0, lt=1.0, description="share of target items trained on text alone"
    )
    id_lr: float = Field(1e-2, gt=0, description="learning rate of the id vectors")
    id_weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay of the id vectors")
    id_epochs: int = Field(
        30, ge=0, description="most passes over the history pairs training the id vectors alone"
    )
    id_batch: int = Field(512, ge=2, description="history pairs per step of those passes")
    id_patience: int = Field(2, ge=1, description="epochs without a validation gain, then stop")
    id_valid_frac: float = Field(
        0.1, ge=0.0, lt=1.0, description="newest share of history pairs held out to stop on"
    )
    # the history path refitted on the final item vectors, with a sequence block where it helps
    # (towers/history_fit.py)
    user_sequence: Literal["auto", "on", "off"] = Field(
        "auto",
        description="self-attention over the history in the user tower: auto keeps it when "
        "surely better on validation, on always, off never",
    )
    history_epochs: int = Field(
        30, ge=0, description="most passes fitting the user history path (0: skip the stage)"
    )
    history_batch: int = Field(256, ge=2, description="history pairs per step of those passes")
    history_lr: float = Field(1e-3, gt=0, description="learning rate of those passes")
    # the towers the prior, co-visitation and no-query blend fits rank with (towers/train.py)
    fit_towers: Literal["auto", "holdout", "shared"] = Field(
        "auto",
        description="holdout: the fits rank with towers trained again without the validation "
        "events (honest: the final towers saw them, and id vectors memorise them; twice the "
        "fine-tuning time); shared: with the final towers; auto: holdout (the tiny preset "
        "sets shared to keep small trainings short)",
    )
    # retrieval without a query: collaborative neighbours of the history join the candidates
    covisit: bool = Field(
        True, description="fit a co-visitation table (towers/covisit.py) for the retriever"
    )
    # reranker
    # 1000 steps at 3e-4: NDCG@10 0.969 vs 0.935 at 300 steps at 1e-4 (demo data, see README)
    rerank_steps: int = Field(1000, ge=0)
    rerank_batch: int = Field(64, ge=2)
    rerank_lr: float = 3e-4
    rerank_group: int = Field(8, ge=2, description="items per query in a listwise group")
    rerank_distil_weight: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="with a teacher cross-encoder (train --from A --reranker-only: A's "
        "reranker): the share of the loss that is the squared error to its logits",
    )
    rerank_item_tokens: int | None = Field(
        None,
        ge=4,
        le=48,
        description="item-text tokens the reranker trains on (None: all, up to 48); set it to "
        "the export's --rerank-item-tokens to train on exactly what is served",
    )
    hard_negatives: int = Field(30, ge=0, description="retrieved items mined per query")
    blend_candidates: int = Field(50, ge=10, description="candidates per query to fit the blend")
    # time cut: events at or after it are never trained on (kept for evaluation)
    until_ts: int | None = Field(None, description="train on events before this unix second")
    until_frac: float | None = Field(
        None,
        gt=0.0,
        lt=1.0,
        description="when until_ts is unset: cut this fraction of the way through the events",
    )


PRESETS: dict[str, dict[str, object]] = {
    "tiny": dict(
        distil_epochs=1,
        finetune_steps=120,
        rerank_steps=200,
        finetune_batch=48,
        rerank_batch=48,
        hard_negatives=20,
        blend_candidates=30,
        max_history_pairs=5000,
        until_frac=0.75,
        item_ids=True,  # the tests' model exercises the id path end to end
        user_sequence="on",  # ... and the sequence block's
        history_epochs=3,
        # a second fine-tune per training: the tests' shared model (tests/conftest.py
        # tiny_model) asks for the holdout pass; the other small trainings skip it
        fit_towers="shared",
    ),
    "demo": dict(until_frac=0.75),
    "full": dict(distil_epochs=3, finetune_steps=2000, rerank_steps=1500, max_history_pairs=200000),
}


def preset_config(preset: Preset = "demo", **overrides: object) -> TrainConfig:
    """A ``TrainConfig`` for a preset, with explicit overrides on top."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
    values = {**PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}}
    return TrainConfig(preset=preset, **values)
