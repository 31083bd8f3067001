"""The ``local`` engine's hot loop: a shard tokenized whole, its rows cut into batches of like
token count, and the next shard tokenized on a background thread while the tower runs.

Why (benchmarks/results/embed_fast_2026-11-29.md): the tower's cost grows with the padded
tokens it is given (a batch pads to its longest row), and character length is a poor proxy for
token count: sorting a shard's rows by their token count pads about 20% less than sorting them
by characters. Tokenizing a whole shard in one call also replaces one tokenizer call per batch
(64 rows) by one per shard: the fast tokenizer's and OpenVINO's threads then take turns on the
cores 64 times less often.

Every row keeps exactly the tokens towers.text.encode_items gives it (the served item tower's
tokenization: its first ``MAX_ITEM_CHARS`` characters, ``[CLS]``, at most ``MAX_ITEM_TOKENS``
tokens, ``[SEP]``); a batch is those rows right-padded to the batch's longest one, as
``encode_items`` pads a batch. Padding is masked, so a row's vector does not depend on its
batch beyond rounding.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from tokenizers import Tokenizer

from serving.item_tower import ITEM_TOWER_INPUTS, MAX_ITEM_CHARS, ItemEncoder
from towers.text import encode_items

log = logging.getLogger(__name__)

__all__ = [
    "StreamedTower",
    "TokenBatches",
    "embed_texts",
    "prefetch",
    "restore_order",
    "tokenize_shard",
]

In = TypeVar("In")
Out = TypeVar("Out")


@dataclass(frozen=True)
class TokenBatches:
    """A shard's rows as tower input.

    ``order`` int64 ``[n]``: the row positions in batch order (ascending token count, ties in
    row order); ``batches``: ``(input_ids, attention_mask)`` int64 ``[b, L]`` each,
    ``b <= batch_size``, together ``order``'s rows in that order; ``padded_tokens``: the
    ``b * L`` of all batches (what the tower computes on); ``tokens``: the rows' real tokens.
    """

    order: np.ndarray
    batches: list[tuple[np.ndarray, np.ndarray]]
    padded_tokens: int
    tokens: int


def tokenize_shard(tokenizer: Tokenizer, texts: Sequence[str], batch_size: int) -> TokenBatches:
    """Tokenize ``texts`` in one call and cut them into batches of ``batch_size`` rows of
    like token count (module docstring). ``batch_size`` >= 1; an empty ``texts`` gives no
    batches."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not texts:
        return TokenBatches(np.zeros(0, np.int64), [], 0, 0)
    ids, mask = encode_items(tokenizer, [t[:MAX_ITEM_CHARS] for t in texts])
    lengths = mask.sum(axis=1)
    order = np.argsort(lengths, kind="stable")
    batches = []
    padded = 0
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        width = int(lengths[rows[-1]])  # sorted ascending: the last row is the longest
        batches.append((ids[rows, :width], mask[rows, :width]))  # fancy indexing: contiguous
        padded += len(rows) * width
    return TokenBatches(order, batches, padded, int(lengths.sum()))


def restore_order(vectors: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Vectors computed in ``order`` (``vectors[k]`` is row ``order[k]``'s) put back in row
    order."""
    if len(vectors) != len(order):
        raise ValueError(f"{len(vectors)} vectors for {len(order)} rows")
    out = np.empty_like(vectors)
    out[order] = vectors
    return out


def embed_texts(
    encoder: ItemEncoder, texts: Sequence[str], item_ids: np.ndarray | None = None
) -> np.ndarray:
    """Item vectors of ``texts``, float32 ``[n, D]`` in their order: tokenized in one call,
    run in batches of ``encoder.batch_size`` rows of like token count (a Ray actor's batch),
    then combined with ``item_ids``' learned vectors where the bundle has them
    (ItemEncoder.combine_ids; ``None``: text vectors)."""
    tokens = tokenize_shard(encoder.tokenizer, texts, encoder.batch_size)
    parts = [encoder.embed_tokens(ids, mask) for ids, mask in tokens.batches]
    if not parts:
        return encoder.embed([])
    return encoder.combine_ids(restore_order(np.concatenate(parts), tokens.order), item_ids)


def prefetch(items: Iterable[In], fn: Callable[[In], Out], *, depth: int = 1) -> Iterator[Out]:
    """``fn(item)`` for each of ``items``, in order, computed on one background thread up to
    ``depth`` items ahead of the consumer (``depth`` >= 1): while the caller works on one
    result, the next ones are being made. ``items`` is read on the caller's thread.

    An exception raised by ``fn`` is raised here, when the consumer reaches that item (results
    before it are yielded first). When the consumer stops early (an exception, ``close()``),
    work not started is cancelled and the running call is waited for: no thread outlives the
    generator.
    """
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    source = iter(items)
    pending: deque[Future[Out]] = deque()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch") as pool:
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
