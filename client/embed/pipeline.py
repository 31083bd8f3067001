"""The ``local`` engine's hot loop: a shard tokenized whole, its rows cut into batches of like
token count (serving/token_batches.py, which the served item tower uses too), and optionally
the next shard tokenized on a background thread while the tower runs.

Tokenizing a whole shard in one call replaces one tokenizer call per batch (64 rows) by one
per shard: the fast tokenizer's and OpenVINO's threads then take turns on the cores 64 times
less often.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from serving.item_tower import ITEM_TOWER_INPUTS
from serving.token_batches import TokenBatches, restore_order, tokenize_shard

log = logging.getLogger(__name__)

__all__ = [
    "StreamedTower",
    "TokenBatches",
    "prefetch",
    "restore_order",
    "tokenize_shard",
]

In = TypeVar("In")
Out = TypeVar("Out")


def prefetch(
    items: Iterable[In],
    fn: Callable[[In], Out],
    *,
    depth: int = 1,
    threads: int = 1,
    thread_name: str = "prefetch",
) -> Iterator[Out]:
    """``fn(item)`` for each of ``items``, in order, computed on ``threads`` background threads
    (named ``thread_name``) up to ``depth`` items ahead of the consumer (``depth``, ``threads``
    >= 1): while the caller works on one result, the next ones are being made. ``items`` is
    read on the caller's thread.

    An exception raised by ``fn`` is raised here, when the consumer reaches that item (results
    before it are yielded first). When the consumer stops early (an exception, ``close()``),
    work not started is cancelled and running calls are waited for: no thread outlives the
    generator.
    """
    if depth < 1 or threads < 1:
        raise ValueError(f"depth and threads must be >= 1, got {depth} and {threads}")
    source = iter(items)
    pending: deque[Future[Out]] = deque()
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix=thread_name) as pool:
        try:
            for item in source:
                pending.append(pool.submit(fn, item))
                if len(pending) > depth:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


class StreamedTower:
    """The item tower's graph compiled by OpenVINO for throughput: ``streams`` streams, each
    running one batch at a time on its share of ``threads``, kept busy by an async queue of
    ``streams`` requests (instead of one request whose ``threads`` threads split every
    operation of one batch between them).

    ``graph``: the ``.onnx`` file; ``precision``: ``bf16`` or ``fp32`` (OpenVINO's hint, as
    serving.openvino_engine compiles it); ``threads`` >= ``streams`` >= 1. The vectors are the
    graph's output, as serving.item_tower.ItemEncoder.embed_tokens returns them.
    """

    def __init__(self, graph: Path, *, precision: str, threads: int, streams: int) -> None:
        import openvino as ov

        from serving.openvino_engine import OPENVINO_PRECISIONS

        if precision not in ("bf16", "fp32"):
            raise ValueError(f"StreamedTower runs bf16 or fp32, got {precision!r}")
        if not 1 <= streams <= threads:
            raise ValueError(f"need 1 <= streams <= threads, got {streams} and {threads}")
        config: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": OPENVINO_PRECISIONS[precision],
            "PERFORMANCE_HINT": "THROUGHPUT",
            "NUM_STREAMS": str(streams),
            "INFERENCE_NUM_THREADS": str(threads),
            "ENABLE_CPU_PINNING": "NO",
        }
        self.compiled = ov.Core().compile_model(str(graph), "CPU", config)
        names = {p.get_any_name() for p in self.compiled.inputs}
        if names != set(ITEM_TOWER_INPUTS):
            raise ValueError(f"{graph} has inputs {sorted(names)}, expected {ITEM_TOWER_INPUTS}")
        self.streams = streams
        self.queue = ov.AsyncInferQueue(self.compiled, streams)
        log.info(
            "item tower %s: OpenVINO %s, %d streams, %d threads", graph, precision, streams, threads
        )

    def run(self, batches: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
        """The vectors of each batch (float32 ``[b, D]``), in batch order."""
        out: list[np.ndarray | None] = [None] * len(batches)

        def done(request: Any, k: int) -> None:
            out[k] = np.array(request.get_output_tensor(0).data, dtype=np.float32, copy=True)

        self.queue.set_callback(done)
        for k, (ids, mask) in enumerate(batches):
            self.queue.start_async({"input_ids": ids, "attention_mask": mask}, k)
        self.queue.wait_all()
        vectors = []
        for k, v in enumerate(out):
            if v is None or v.ndim != 2 or len(v) != len(batches[k][0]):
                got = None if v is None else v.shape
                raise RuntimeError(f"item tower returned {got} for {len(batches[k][0])} texts")
            vectors.append(v)
        return vectors
