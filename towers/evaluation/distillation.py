"""The distillation trade-off: students of 1..4 layers against the teacher, in one run.

Each student is made the way ``towerserve train`` makes the towers (distilled from the
teacher, then fine-tuned with the same settings; the reranker is not part of this), except
the layer count; the artifacts' own student is reused, not retrained. Quality is search
Recall@100 and NDCG@10 of the user tower with exact search on the test queries; speed is
item-text encoding throughput (texts per second, batch 128, bf16 autocast as trained), timed
for every model in interleaved rounds so that machine noise hits all alike, median of the
rounds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from towers.config import TrainConfig
from towers.evaluation.search import SearchTask, run_search
from towers.evaluation.systems import Loaded, exact_index
from towers.finetune import embed_items, embed_queries
from towers.models import ItemTower, UserTower, load_module
from towers.teacher import embed_texts
from towers.train import cut_events, train_towers

log = logging.getLogger(__name__)

#: Item texts encoded per timing round, and rounds.
SPEED_TEXTS = 1024
SPEED_ROUNDS = 3


def _params_m(module: torch.nn.Module) -> float:
    return sum(p.numel() for p in module.parameters()) / 1e6


def distillation_section(
    m: Loaded,
    artifacts: Path,
    task: SearchTask,
    layers: Sequence[int] = (1, 2, 3, 4),
    *,
    teacher_quality: dict[str, float] | None = None,
) -> dict[str, object]:
    """One row per student layer count plus the teacher (see the module doc)."""
    cfg = TrainConfig(**m.report["config"])
    own = cfg.student_layers
    ds = cut_events(m.ds, m.cut_ts)
    towers: dict[int, tuple[ItemTower, UserTower]] = {}
    for n_layers in layers:
        if n_layers == own:
            item_tower = load_module("item_tower", artifacts / "item_tower")
            towers[n_layers] = (item_tower, m.user_tower)  # type: ignore[assignment]
            continue
        log.info("distillation trade-off: training a %d-layer student", n_layers)
        trained = train_towers(
            ds, cfg.model_copy(update={"student_layers": n_layers}), m.teacher, m.teacher_items
        )
        towers[n_layers] = (trained.item_tower, trained.user_tower)

    rows = []
    for n_layers, (item_tower, user_tower) in towers.items():
        table = (
            m.table
            if n_layers == own
            else embed_items(item_tower, m.tok, m.texts, item_ids=m.item_ids, bf16=m.bf16)
        )
        index = exact_index(table)

        def system(q: str, k: int, tower=user_tower, index=index) -> list[int]:  # type: ignore[no-untyped-def]
            _, top = index.search(embed_queries(tower, m.tok, [q], bf16=m.bf16), k)
            return [int(m.item_ids[p]) for p in top[0] if p >= 0]

        name = f"student-{n_layers}L"
        res, _ = run_search(task, {name: system})
        rows.append(
            {
                "name": name,
                "layers": n_layers,
                "params_m": _params_m(item_tower),
                "recall@100": res[name]["recall@100"],
                "ndcg@10": res[name]["ndcg@10"],
            }
        )
    if teacher_quality is None:
        from towers.evaluation.systems import search_systems

        res, _ = run_search(task, search_systems(m, ("teacher_exact",)))
        teacher_quality = res["teacher_exact"]
    rows.append(
        {
            "name": "teacher",
            "layers": int(m.teacher.config.num_hidden_layers),
            "params_m": _params_m(m.teacher),
            "recall@100": teacher_quality["recall@100"],
            "ndcg@10": teacher_quality["ndcg@10"],
        }
    )
    speeds = _throughput(m, [towers[n][0] for n in towers])
    for row, speed in zip(rows, speeds):
        row["texts_per_s"] = speed
        row["speedup_vs_teacher"] = speed / speeds[-1]
    return {"rows": rows, "chosen": f"student-{own}L", "speed_texts": SPEED_TEXTS}


def _throughput(m: Loaded, item_towers: list[ItemTower]) -> list[float]:
    """Texts per second of each item tower, then of the teacher (last)."""
    rng = np.random.default_rng(0)
    n = min(SPEED_TEXTS, len(m.texts))
    sample = [m.texts[i] for i in rng.choice(len(m.texts), n, replace=False)]
    runs: list[list[float]] = [[] for _ in range(len(item_towers) + 1)]
    for _ in range(SPEED_ROUNDS):
        for i, tower in enumerate(item_towers):
            start = time.perf_counter()
            embed_items(tower, m.tok, sample, batch_size=128, bf16=m.bf16)
            runs[i].append(time.perf_counter() - start)
        start = time.perf_counter()
        embed_texts(m.teacher, sample, batch_size=128, bf16=m.bf16)
        runs[-1].append(time.perf_counter() - start)
    return [n / float(np.median(r)) for r in runs]
