"""The ``ray`` engine of a re-embedding job: Ray Data ``map_batches`` over a pool of actors,
each holding the item tower (serving.item_tower.ItemEncoder) in the runtime the driver chose
by measurement (client/embed/engines.py), so every actor computes what ``local`` computes.

Needs the ``ray`` extra (``pip install 'towerserve[ray]'``). ``address`` ``None`` starts a
local Ray instance in this process (``ray.init()``); ``auto`` or ``ray://host:10001`` joins a
cluster, whose workers must have towerserve installed and the bundle at the same path.
Results come back in order (``preserve_order``), so shards are written, and checkpointed, as
they complete.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from client.embed.engines import (
    EngineError,
    RuntimeChoice,
    Shards,
    _open,
    choose_runtime,
)
from towers.bundle_contract import load_manifest

log = logging.getLogger(__name__)

__all__ = ["RayEngine", "ray_available"]


def ray_available() -> bool:
    """True when the ``ray`` package can be found (not imported here)."""
    import importlib.util

    return importlib.util.find_spec("ray") is not None


class _Encoder:
    """One Ray actor: the item tower, opened once, applied to each batch of ids and texts."""

    def __init__(self, bundle: str, engine: str, precision: str, threads: int, batch: int):
        self.encoder = _open(Path(bundle), engine, precision, threads, batch)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        item_ids = np.asarray(batch["item_id"], np.int64)
        # the served encoder: tokenized whole, batches of like token count, ids combined
        vectors = self.encoder.embed([str(t) for t in batch["text"]], item_ids)
        return {"shard": batch["shard"], "vector": vectors}


class RayEngine:
    """Re-embedding on Ray Data: ``actors`` actors of ``threads`` runtime threads each
    (defaults: one actor per core of this machine, one thread each: 2 actors of 1 thread ran
    at 104-108% of ``local``'s one tower on 2 threads, 1 actor of 2 threads at 75-76%,
    benchmarks/results/embed_engines_2026-11-29.md), ``batch_size`` texts per ``map_batches`` call;
    ``runtime``/``precision`` as for ``local``.

    An actor sorts the rows of each call by token count and runs them 64 at a time, so a
    call of 4,096 rows (the default, the job's shard size) pads as little as ``local``; calls
    of 256 rows padded more and ran at 60-70% of ``local``
    (benchmarks/results/embed_engines_2026-11-29.md)."""

    name = "ray"

    def __init__(
        self,
        bundle: Path,
        *,
        address: str | None = None,
        actors: int | None = None,
        threads: int | None = None,
        batch_size: int = 4096,
        runtime: str = "auto",
        precision: str = "auto",
    ) -> None:
        if not ray_available():
            raise EngineError(
                "engine ray needs Ray Data: pip install 'towerserve[ray]' (or 'ray[data]')"
            )
        actors = actors or os.cpu_count() or 1
        if actors < 1 or batch_size < 1:
            raise ValueError("actors and batch_size must be >= 1")
        self.bundle = Path(bundle).resolve()
        self.model_version = load_manifest(self.bundle).model_version
        self.address, self.actors, self.batch_size = address, actors, batch_size
        self.threads = threads or max(1, (os.cpu_count() or 1) // actors)
        self.runtime, self.precision = runtime, precision
        self.choice: RuntimeChoice | None = None
        self._started = False

    def prepare(self, sample: list[str]) -> None:
        self.choice, _ = choose_runtime(
            self.bundle,
            sample,
            runtime=self.runtime,
            precision=self.precision,
            threads=self.threads,
            batch_size=min(self.batch_size, 64),
        )
        import ray

        if not ray.is_initialized():
            ray.init(
                address=self.address,
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
            )
            self._started = True
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False

    def embed_shards(self, shards: Shards) -> Iterator[tuple[int, np.ndarray]]:
        import pandas as pd
        import ray

        if self.choice is None:
            self.prepare([])
        assert self.choice is not None
        rows: list[tuple[int, int, str]] = []
        sizes: dict[int, int] = {}
        order: list[int] = []
        for shard, item_ids, texts in shards:
            rows.extend(zip([shard] * len(texts), np.asarray(item_ids).tolist(), texts))
            sizes[shard] = len(texts)
            order.append(shard)
        if not rows:
            return
        frame = pd.DataFrame(rows, columns=["shard", "item_id", "text"])
        # Blocks made here, in the driver: no Ray task needs a CPU beside the actors (a
        # repartition would, and wait forever for one when the actors hold every CPU).
        n_blocks = max(1, min(len(order), 4 * self.actors))
        step = -(-len(frame) // n_blocks)
        blocks = [frame.iloc[i : i + step] for i in range(0, len(frame), step)]
        dataset = ray.data.from_pandas(blocks).map_batches(
            _Encoder,
            fn_constructor_kwargs={
                "bundle": str(self.bundle),
                "engine": self.choice.engine,
                "precision": self.choice.precision,
                "threads": self.threads,
                "batch": min(self.batch_size, 64),
            },
            batch_size=self.batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=self.actors),
            num_cpus=min(self.threads, os.cpu_count() or 1),
        )
        pending: list[np.ndarray] = []
        have = 0
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            shard_col, vectors = batch["shard"], np.asarray(batch["vector"], np.float32)
            start = 0
            while start < len(shard_col):
                shard = order[0]
                if int(shard_col[start]) != shard:
                    raise EngineError(f"ray returned shard {shard_col[start]}, expected {shard}")
                take = min(sizes[shard] - have, len(shard_col) - start)
                pending.append(vectors[start : start + take])
                have += take
                start += take
                if have == sizes[shard]:
                    yield shard, np.concatenate(pending)
                    order.pop(0)
                    pending, have = [], 0
        if order:
            raise EngineError(f"ray returned too few rows: shards {order[:5]}... unfinished")

    def describe(self) -> dict[str, Any]:
        c = self.choice
        return {
            "name": self.name,
            "address": self.address or "local",
            "actors": self.actors,
            "threads_per_actor": self.threads,
            "runtime": c.engine if c else self.runtime,
            "precision": c.precision if c else self.precision,
        }

    def close(self) -> None:
        if self._started:
            import ray

            ray.shutdown()
            self._started = False
