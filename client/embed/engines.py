"""What runs the item tower for a re-embedding job: ``local`` (in-process) and ``triton``
(a running server's ``item_tower`` over gRPC); ``ray`` is in client/embed/ray_engine.py.

Every engine takes shards (:class:`Shard`: number, item ids, texts) and yields ``(shard,
vectors float32 [n, D])`` in the order given, so the job writes each shard as soon as it is
done (its checkpoint). Each item's id goes with its text: where the bundle has a learned id
vector for it (towers.bundle_contract.ItemIdTable), the vector is the text vector combined
with it, exactly what ``towerserve export`` put in the index; a new item gets its text vector.

``local`` runs serving.item_tower.ItemEncoder (the served code) on the bundle's
``item_tower.onnx`` in whichever runtime and precision measures fastest on this CPU among
those within the parity gate: OpenVINO bf16 (where the CPU computes bf16), OpenVINO fp32 and
ONNX Runtime fp32 are each timed on a sample of the catalog's own texts, and one whose vectors
are not within :data:`PARITY_MIN_COSINE` of ONNX Runtime fp32's is never chosen. Each shard
is tokenized whole and run in batches of like token count (client/embed/pipeline.py).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np
from tokenizers import Tokenizer

from client.embed.pipeline import (
    StreamedTower,
    TokenBatches,
    prefetch,
    restore_order,
    tokenize_shard,
)
from serving.graphs import Runtime
from serving.item_tower import MODEL_VERSION_OUTPUT, ItemEncoder
from serving.token_batches import MAX_ITEM_CHARS
from towers.bundle_contract import load_manifest, onnx_file
from towers.text import item_token_counts, load_tokenizer

log = logging.getLogger(__name__)

__all__ = [
    "PARITY_MIN_COSINE",
    "Engine",
    "EngineError",
    "LocalEngine",
    "RuntimeChoice",
    "Shard",
    "TritonEngine",
    "choose_runtime",
    "embed_by_length",
]

#: Lowest cosine of any sample vector to the fp32 one for a runtime to be chosen (the same
#: gate as the served item tower's test against the bf16 table: tests/test_end_to_end.py).
PARITY_MIN_COSINE = 0.99
#: Rows per ``triton`` request when not given: a repository exported now takes 256 (the
#: item tower's ``max_batch_size``); an older one 64, which the engine then sends.
DEFAULT_TRITON_BATCH = 256
#: Runtimes ``local`` may choose from, ``(engine, precision)``, fastest first where measured.
LOCAL_RUNTIMES = (("openvino", "bf16"), ("openvino", "fp32"), ("onnxruntime", "fp32"))


class Shard(NamedTuple):
    """One shard of a job: its number ``shard``, its rows' ``item_ids`` (int64 ``[n]``) and
    ``texts`` (``n`` strings), in catalog order."""

    shard: int
    item_ids: np.ndarray
    texts: list[str]


Shards = Iterable[Shard]


def embed_by_length(embed: Callable[[list[str]], np.ndarray], texts: list[str]) -> np.ndarray:
    """``embed(texts)`` with the texts sorted by length first and the vectors put back in
    order: a batch is padded to its longest text, so neighbours of like length waste less of
    the tower's time on padding."""
    order = np.argsort([len(t) for t in texts], kind="stable")
    vectors = embed([texts[i] for i in order])
    out = np.empty_like(vectors)
    out[order] = vectors
    return out


#: gRPC statuses of a request the server could not take now (``TritonEngine`` retries them).
RETRY_STATUSES = (
    "StatusCode.UNAVAILABLE",
    "StatusCode.RESOURCE_EXHAUSTED",
    "StatusCode.DEADLINE_EXCEEDED",
)
#: Longest pause between two tries of one request, seconds.
RETRY_MAX_PAUSE_S = 5.0


def _text(value: object) -> str:
    """A BYTES tensor element as text."""
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class EngineError(RuntimeError):
    """The engine cannot run (server unreachable, wrong model, a failed request)."""


class Engine(Protocol):
    """What the job needs from an engine."""

    name: str
    model_version: str

    def prepare(self, sample: list[str]) -> None: ...

    def embed_shards(self, shards: Shards) -> Iterator[tuple[int, np.ndarray]]: ...

    def describe(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


@dataclass
class RuntimeChoice:
    """The runtime ``local`` chose and what it measured: items/s and lowest cosine to
    fp32 per ``engine/precision`` on the sample."""

    engine: str
    precision: str
    items_per_s: dict[str, float] = field(default_factory=dict)
    min_cosine: dict[str, float] = field(default_factory=dict)


def _candidates(runtime: str, precision: str) -> list[tuple[str, str]]:
    from serving.openvino_engine import cpu_has_bf16, openvino_available

    found = []
    for eng, prec in LOCAL_RUNTIMES:
        if eng == "openvino" and not openvino_available():
            continue
        if prec == "bf16" and not cpu_has_bf16():
            continue
        if runtime in ("auto", eng) and precision in ("auto", prec):
            found.append((eng, prec))
    if not found:
        raise EngineError(
            f"no local runtime matches runtime {runtime!r} and precision {precision!r} here: "
            f"allowed {', '.join(f'{e} {p}' for e, p in LOCAL_RUNTIMES)} (bf16 needs a CPU with "
            "AVX512-BF16 or AMX)"
        )
    return found


def _open(bundle: Path, engine: str, precision: str, threads: int, batch_size: int) -> ItemEncoder:
    runtime = Runtime(device="cpu", engine=engine, precision=precision, intra_op_threads=threads)
    return ItemEncoder.from_dir(bundle, runtime=runtime, batch_size=batch_size)


def choose_runtime(
    bundle: Path,
    sample: list[str],
    *,
    runtime: str = "auto",
    precision: str = "auto",
    threads: int = 1,
    batch_size: int = 64,
) -> tuple[RuntimeChoice, ItemEncoder]:
    """Time each candidate runtime on ``sample`` (one warm-up pass, then the best of two) and
    return the fastest within the parity gate, opened. With one candidate, nothing is timed."""
    found = _candidates(runtime, precision)
    if len(found) == 1 or not sample:
        eng, prec = found[0]
        return RuntimeChoice(eng, prec), _open(bundle, eng, prec, threads, batch_size)
    reference = _open(bundle, "onnxruntime", "fp32", threads, batch_size).embed(sample)
    choice = RuntimeChoice("", "")
    best: tuple[float, str, str, ItemEncoder] | None = None
    for eng, prec in found:
        encoder = _open(bundle, eng, prec, threads, batch_size)
        vectors = encoder.embed(sample)  # warm-up: compiles kernels for these shapes
        elapsed = []
        for _ in range(2):
            start = time.perf_counter()
            encoder.embed(sample)
            elapsed.append(time.perf_counter() - start)
        key = f"{eng}/{prec}"
        rate = len(sample) / min(elapsed)
        cos = float(np.min(np.sum(vectors * reference, axis=1)))
        choice.items_per_s[key] = round(rate, 1)
        choice.min_cosine[key] = round(cos, 5)
        log.info("local runtime %s: %.0f items/s, min cosine to fp32 %.5f", key, rate, cos)
        if cos >= PARITY_MIN_COSINE and (best is None or rate > best[0]):
            best = (rate, eng, prec, encoder)
    if best is None:
        raise EngineError(
            f"no local runtime is within cosine {PARITY_MIN_COSINE} of fp32: {choice.min_cosine}"
        )
    choice.engine, choice.precision = best[1], best[2]
    return choice, best[3]


class LocalEngine:
    """The item tower in this process (the default engine).

    ``runtime`` ``auto`` | ``openvino`` | ``onnxruntime``, ``precision`` ``auto`` | ``bf16`` |
    ``fp32`` (``auto``: measured, module docstring); ``threads`` the runtime's threads
    (default: every core); ``batch_size`` texts per tower run; ``prefetch`` tokenize the next
    shard on a background thread while the tower runs; ``streams`` > 1 runs an OpenVINO
    runtime with its throughput hint, that many streams fed by an async queue (ignored for
    ONNX Runtime). Both are off by default: when the tower's threads already use every core,
    neither was faster (benchmarks/results/embed_fast_2026-11-29.md); try them on a machine
    with cores to spare.

    ``workers`` (default: one per core) shards are embedded at once, each on its own thread
    with its own copy of the tower (``threads`` each; default: the cores shared out),
    tokenizing included, so one worker's tokenizing overlaps another's tower run; shards still
    come out in order. On 2 cores, 2 workers of 1 thread ran 1.04-1.20x one tower on 2 threads
    (benchmarks/results/embed_engines_2026-11-29.md): a small model keeps one core busier
    than two threads keep two. ``prefetch`` and ``streams`` apply with one worker only.
    """

    name = "local"

    def __init__(
        self,
        bundle: Path,
        *,
        runtime: str = "auto",
        precision: str = "auto",
        threads: int | None = None,
        batch_size: int = 64,
        prefetch: bool = False,
        streams: int = 1,
        workers: int | None = None,
    ) -> None:
        if workers is None:  # one per core, or one when asked to prefetch or stream
            workers = 1 if prefetch or streams > 1 else os.cpu_count() or 1
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if workers > 1 and (prefetch or streams > 1):
            raise ValueError("prefetch and streams work with one worker: pass workers=1")
        self.bundle = Path(bundle)
        self.model_version = load_manifest(self.bundle).model_version
        self.runtime, self.precision = runtime, precision
        self.workers = workers
        self.threads = threads or max(1, (os.cpu_count() or 1) // workers)
        self.batch_size = batch_size
        self.prefetch = prefetch
        if streams < 1:
            raise ValueError(f"streams must be >= 1, got {streams}")
        self.streams = streams
        self.tower: StreamedTower | None = None
        self.choice: RuntimeChoice | None = None
        self.encoder: ItemEncoder | None = None
        #: One tower per worker (the first is :attr:`encoder`).
        self.encoders: list[ItemEncoder] = []

    def prepare(self, sample: list[str]) -> None:
        choice, self.encoder = choose_runtime(
            self.bundle,
            sample,
            runtime=self.runtime,
            precision=self.precision,
            threads=self.threads,
            batch_size=self.batch_size,
        )
        self.choice = choice
        self.tower = None
        assert self.encoder is not None
        self.encoders = [self.encoder] + [
            _open(self.bundle, choice.engine, choice.precision, self.threads, self.batch_size)
            for _ in range(self.workers - 1)
        ]
        if self.streams > 1 and choice.engine == "openvino" and choice.precision != "int8":
            self.tower = StreamedTower(
                self.bundle / onnx_file("item_tower"),
                precision=choice.precision,
                threads=max(self.threads, self.streams),
                streams=self.streams,
            )

    def embed_shards(self, shards: Shards) -> Iterator[tuple[int, np.ndarray]]:
        """Each shard tokenized whole and run in batches of like token count
        (client/embed/pipeline.py); with :attr:`prefetch`, the next shard is tokenized on a
        background thread while the tower runs this one."""
        if self.encoder is None:
            self.prepare([])
        encoder = self.encoder
        assert encoder is not None
        if len(self.encoders) > 1:
            yield from self._embed_parallel(shards)
            return

        def tokenize(item: Shard) -> tuple[Shard, TokenBatches]:
            return item, tokenize_shard(encoder.tokenizer, item.texts, self.batch_size)

        source = prefetch(shards, tokenize) if self.prefetch else map(tokenize, shards)
        for shard, tokens in source:
            if self.tower is not None:
                parts = self.tower.run(tokens.batches)
            else:
                parts = [encoder.embed_tokens(ids, mask) for ids, mask in tokens.batches]
            vectors = np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)
            vectors = restore_order(vectors, tokens.order)
            yield shard.shard, encoder.combine_ids(vectors, shard.item_ids)

    def _embed_one(self, encoder: ItemEncoder, shard: Shard) -> tuple[int, np.ndarray]:
        """One shard's vectors on ``encoder``: the served ``ItemEncoder.embed`` (tokenized
        whole, run in batches of like token count, put back in order, ids combined)."""
        return shard.shard, encoder.embed(shard.texts, shard.item_ids)

    def _embed_parallel(self, shards: Shards) -> Iterator[tuple[int, np.ndarray]]:
        """Shards on :attr:`workers` threads, one tower each, yielded in order; at most one
        shard waits beyond those running. When the consumer stops early, shards not started
        are cancelled and running ones waited for."""
        free: queue.SimpleQueue[ItemEncoder] = queue.SimpleQueue()
        for encoder in self.encoders:
            free.put(encoder)

        def run(shard: Shard) -> tuple[int, np.ndarray]:
            encoder = free.get()
            try:
                return self._embed_one(encoder, shard)
            finally:
                free.put(encoder)

        workers = len(self.encoders)
        yield from prefetch(shards, run, depth=workers, threads=workers, thread_name="embed")

    def describe(self) -> dict[str, Any]:
        c = self.choice
        return {
            "name": self.name,
            "runtime": c.engine if c else self.runtime,
            "precision": c.precision if c else self.precision,
            "workers": self.workers,
            "threads": self.threads,
            "batch_size": self.batch_size,
            "prefetch": self.prefetch,
            "streams": self.streams if self.tower is not None else 1,
            "measured_items_per_s": c.items_per_s if c else {},
            "min_cosine_to_fp32": c.min_cosine if c else {},
        }

    def close(self) -> None:
        self.encoder = None
        self.encoders = []
        self.tower = None


class TritonEngine:
    """A client of a running server's ``item_tower``: texts (``ITEM_TEXT``) and their ids
    (``ITEM_ID``: the server combines them with the bundle's id vectors) go in requests of
    ``batch_size`` rows (default: the model's ``max_batch_size``, at most 256),
    ``max_in_flight`` of them at once over gRPC, so the server's dynamic batcher and every
    model instance stay busy.
    ``timeout_s`` bounds each request.

    A shard's rows are sent in order of token count (the project's tokenizer, the one every
    exported bundle carries: towers.teacher), so each request of ``batch_size`` rows is padded
    little on the server; ``sort_by_tokens=False`` sorts by characters instead (no client-side
    tokenizing: about 10% of one core at 2,000 items/s). Vectors come back in catalog order
    either way.

    The model version is the server's (its config's ``model_version`` parameter, or for a
    published repository, whose configs leave it empty, the ``MODEL_VERSION`` of a one-row
    request). Every answer's ``MODEL_VERSION`` must be that one: a ``towerserve publish`` or
    ``rollback`` in the middle of a job is an :class:`EngineError`, not shards of two models
    under one manifest (the shards already written stay; the job resumes only with the
    same model, so re-run it with ``--restart``). A server exported before ``MODEL_VERSION``
    existed is trusted on its config alone.

    A request the server could not take (gRPC ``UNAVAILABLE``, ``RESOURCE_EXHAUSTED`` or
    ``DEADLINE_EXCEEDED``: a restart, an overload) is sent again after 0.5, 1, 2, 4, 5, 5 ...
    seconds, for up to ``retry_s`` seconds from its first failure; any other error, or one
    that outlasts ``retry_s``, stops the job (it resumes when run again)."""

    name = "triton"

    def __init__(
        self,
        url: str = "localhost:8001",
        *,
        model: str = "item_tower",
        batch_size: int | None = None,
        max_in_flight: int = 8,
        timeout_s: float = 60.0,
        sort_by_tokens: bool = True,
        retry_s: float = 60.0,
    ) -> None:
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import InferenceServerException

        if max_in_flight < 1 or (batch_size is not None and batch_size < 1):
            raise ValueError("max_in_flight and batch_size must be >= 1")
        if retry_s < 0:
            raise ValueError(f"retry_s must be >= 0, got {retry_s}")
        self.url, self.model = url, model
        self.max_in_flight, self.timeout_s, self.retry_s = max_in_flight, timeout_s, retry_s
        self._grpc = grpcclient
        self.tokenizer: Tokenizer | None = None
        if sort_by_tokens:
            from towers.teacher import tokenizer_path  # imports torch: only when asked

            self.tokenizer = load_tokenizer(tokenizer_path())
        self.client = grpcclient.InferenceServerClient(url)
        try:
            ready = self.client.is_model_ready(model)
            config = self.client.get_model_config(model).config
        except InferenceServerException as exc:
            raise EngineError(f"no Triton server answers at {url}: {exc.message()}") from exc
        if not ready:
            raise EngineError(f"model {model!r} is not ready on the server at {url}")
        limit = int(config.max_batch_size)
        if batch_size is None:  # the server's most rows per request, up to 256
            batch_size = min(limit, DEFAULT_TRITON_BATCH) if limit else DEFAULT_TRITON_BATCH
        if limit and batch_size > limit:
            raise EngineError(f"batch_size {batch_size} exceeds {model}'s max_batch_size {limit}")
        self.batch_size = batch_size
        self.checks_version = MODEL_VERSION_OUTPUT in {o.name for o in config.output}
        param = config.parameters.get("model_version")
        self.model_version = param.string_value if param is not None else ""
        if not self.model_version and self.checks_version:
            self.model_version = self._served_version()
        if not self.model_version:
            raise EngineError(
                f"{model} at {url} does not say its model_version: serve a repository written "
                "by `towerserve export`"
            )

    def _outputs(self) -> list[Any]:
        names = ["ITEM_VECTOR", MODEL_VERSION_OUTPUT] if self.checks_version else ["ITEM_VECTOR"]
        return [self._grpc.InferRequestedOutput(name) for name in names]

    def _served_version(self) -> str:
        """The model version the server's item tower answers with (one row)."""
        from tritonclient.utils import InferenceServerException

        tensor = self._grpc.InferInput("ITEM_TEXT", [1, 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[b"model version probe"]], dtype=np.object_))
        try:
            result = self.client.infer(
                self.model, [tensor], outputs=self._outputs(), client_timeout=self.timeout_s
            )
        except InferenceServerException as exc:
            raise EngineError(f"{self.model} at {self.url}: {exc.message()}") from exc
        return self._answered_version(result)

    def _answered_version(self, result: Any) -> str:
        labels = {_text(v) for v in np.ravel(result.as_numpy(MODEL_VERSION_OUTPUT))}
        if len(labels) != 1:
            raise EngineError(f"{self.model} at {self.url} answered model versions {labels}")
        return labels.pop()

    def prepare(self, sample: list[str]) -> None:
        return None

    def embed_shards(self, shards: Shards) -> Iterator[tuple[int, np.ndarray]]:
        slots = threading.BoundedSemaphore(self.max_in_flight)
        done: queue.Queue[tuple[int, int, Any, Any]] = queue.Queue()
        parts: dict[int, list[np.ndarray | None]] = {}
        order: list[int] = []
        sent: dict[tuple[int, int], list[Any]] = {}  # the inputs of requests not answered yet
        failing: dict[tuple[int, int], tuple[float, int]] = {}  # first failure, attempts

        def callback(shard: int, part: int, result: Any, error: Any) -> None:
            slots.release()
            done.put((shard, part, result, error))

        def submit(shard: int, part: int) -> None:
            self.client.async_infer(
                self.model,
                sent[shard, part],
                callback=lambda result, error, s=shard, p=part: callback(s, p, result, error),
                outputs=self._outputs(),
                client_timeout=self.timeout_s,
            )

        def retried(shard: int, part: int, error: Any) -> bool:
            """Send a request that failed on a transient error again (after a pause)."""
            status = error.status() if hasattr(error, "status") else None
            if status not in RETRY_STATUSES or self.retry_s <= 0:
                return False
            first, attempts = failing.get((shard, part), (time.monotonic(), 0))
            if time.monotonic() - first > self.retry_s:
                return False
            failing[shard, part] = (first, attempts + 1)
            pause_s = min(RETRY_MAX_PAUSE_S, 0.5 * 2**attempts)
            log.warning(
                "%s at %s: %s (%s); sending shard %d part %d again in %.1f s",
                self.model,
                self.url,
                status,
                error.message() if hasattr(error, "message") else error,
                shard,
                part,
                pause_s,
            )
            time.sleep(pause_s)
            slots.acquire()  # released by the callbacks of requests in flight
            submit(shard, part)
            return True

        def collect(block: bool) -> Iterator[tuple[int, np.ndarray]]:
            while True:
                try:
                    shard, part, result, error = done.get(block=block, timeout=self.timeout_s)
                except queue.Empty:
                    if block:
                        raise EngineError(
                            f"no answer from {self.url} in {self.timeout_s} s"
                        ) from None
                    break
                if error is not None:
                    if retried(shard, part, error):
                        continue
                    raise EngineError(f"{self.model} at {self.url}: {error}")
                del sent[shard, part]
                failing.pop((shard, part), None)
                if self.checks_version and (served := self._answered_version(result)) != (
                    self.model_version
                ):
                    raise EngineError(
                        f"{self.model} at {self.url} now serves model version {served!r}; this "
                        f"job began on {self.model_version!r} (a publish or rollback during "
                        "the job?). The shards written so far hold the old model's vectors: "
                        "run the job again with --restart to embed everything with the new one"
                    )
                parts[shard][part] = result.as_numpy("ITEM_VECTOR")
                block = False
                while order and all(p is not None for p in parts[order[0]]):
                    first = order.pop(0)
                    got = np.concatenate(parts.pop(first)).astype(np.float32)  # type: ignore[arg-type]
                    out = np.empty_like(got)
                    out[orders.pop(first)] = got
                    yield first, out

        orders: dict[int, np.ndarray] = {}
        for shard, item_ids, texts in shards:
            # sorted by length (module docstring); put back in order when done
            orders[shard] = self._order(texts)
            texts = [texts[i] for i in orders[shard]]
            item_ids = np.asarray(item_ids, np.int64)[orders[shard]]
            starts = range(0, len(texts), self.batch_size)
            parts[shard] = [None] * len(starts)
            order.append(shard)
            for part, lo in enumerate(starts):
                chunk = texts[lo : lo + self.batch_size]
                data = np.array([t.encode("utf-8") for t in chunk], dtype=np.object_)
                tensor = self._grpc.InferInput("ITEM_TEXT", [len(chunk), 1], "BYTES")
                tensor.set_data_from_numpy(data.reshape(-1, 1))
                id_tensor = self._grpc.InferInput("ITEM_ID", [len(chunk), 1], "INT64")
                id_tensor.set_data_from_numpy(item_ids[lo : lo + len(chunk)].reshape(-1, 1))
                while not slots.acquire(timeout=0.05):
                    yield from collect(block=False)
                sent[shard, part] = [tensor, id_tensor]
                submit(shard, part)
            yield from collect(block=False)
        while order:
            yield from collect(block=True)

    def _order(self, texts: list[str]) -> np.ndarray:
        """Row positions by ascending token count (characters without a tokenizer)."""
        if self.tokenizer is None:
            return np.argsort([len(t) for t in texts], kind="stable")
        counts = item_token_counts(self.tokenizer, [t[:MAX_ITEM_CHARS] for t in texts])
        return np.argsort(counts, kind="stable")

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "url": self.url,
            "model": self.model,
            "batch_size": self.batch_size,
            "max_in_flight": self.max_in_flight,
            "retry_s": self.retry_s,
            "sort_by": "tokens" if self.tokenizer is not None else "characters",
        }

    def close(self) -> None:
        self.client.close()
