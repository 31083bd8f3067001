"""Item tower serving: item text -> item vector, for batch re-embedding of the catalog.

Triton's dynamic batcher hands one ``execute`` several requests (each ``ITEM_TEXT`` BYTES
``[b, 1]``, at most ``max_batch_size`` rows in all). They are decoded one request at a time, so
a request with non-UTF-8 text gets its own error while the others go on, then every valid text
is tokenized in one call, the rows are run in batches of ``batch_size`` rows of like token
count (serving/token_batches.py: less padding than batches in request order), and the vectors
are put back in order and split back per request.

Each text keeps ``MAX_ITEM_TOKENS`` tokens plus [CLS]/[SEP] (longer texts are truncated, as at
index-build time); only its first ``MAX_ITEM_CHARS`` characters are tokenized.

Item identity: a request may also send ``ITEM_ID`` INT64 ``[b, 1]`` (optional), one id per
text. Where the bundle's id table (``towers.bundle_contract.ItemIdTable``) has a learned
vector for the id, the text vector is combined with it (the same arithmetic export used for
the index, so a re-embedding job gets the exported vector); an unknown id, ``-1`` or no
``ITEM_ID`` at all gives the text vector alone (a new item).

Each answer also carries ``MODEL_VERSION`` (BYTES ``[b, 1]``: the model version of the
bundle that embedded the rows), so a re-embedding client notices when ``towerserve publish``
or ``rollback`` moved the item tower to another model in the middle of its job, instead of
writing vectors of two models under one manifest (client/embed/engines.py ``TritonEngine``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from serving.bundle import check_model_version, load_manifest
from serving.errors import RequestError
from serving.graphs import Runtime, open_graph
from serving.stage_metrics import graph_backend
from serving.tensors import require
from serving.token_batches import MAX_ITEM_CHARS, restore_order, tokenize_shard
from towers.bundle_contract import TOKENIZER_FILE, ItemIdTable
from towers.text import encode_items, load_tokenizer

log = logging.getLogger(__name__)

__all__ = [
    "MAX_ITEM_CHARS",
    "MODEL_VERSION_OUTPUT",
    "ItemEncoder",
    "decode_item_ids",
    "decode_texts",
]

#: The output naming the model version that embedded a request's rows.
MODEL_VERSION_OUTPUT = "MODEL_VERSION"

ITEM_TOWER_INPUTS = ("input_ids", "attention_mask")

#: ``encode_fn(input_ids=..., attention_mask=...) -> float32 [B, D]``.
EncodeFn = Callable[..., np.ndarray]

#: Warm-up texts: a short item title and a longer description.
WARM_UP_TEXTS = (
    "red cotton shirt",
    "lightweight waterproof hiking jacket with a hood, two zip pockets and taped seams, "
    "packs into its own pocket",
)


def decode_texts(arr: np.ndarray, name: str = "ITEM_TEXT") -> list[str]:
    """The UTF-8 strings of a BYTES tensor ``[b, 1]`` or ``[b]``; a :class:`RequestError`
    naming the first row that is not UTF-8 text."""
    arr = np.asarray(arr, dtype=object)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise RequestError(f"{name} must have shape [batch, 1] (one text per row), got {arr.shape}")
    texts = []
    for row, value in enumerate(arr):
        if isinstance(value, str):
            texts.append(value)
            continue
        try:
            texts.append(bytes(value).decode("utf-8"))
        except (TypeError, UnicodeDecodeError):
            raise RequestError(f"{name} row {row} is not UTF-8 text") from None
    return texts


def decode_item_ids(arr: np.ndarray | None, n_texts: int) -> np.ndarray:
    """The ``ITEM_ID`` tensor (INT64 ``[b, 1]`` or ``[b]``, optional) as int64 ``[n_texts]``;
    ``-1`` everywhere when absent. A :class:`RequestError` when it has another row count."""
    if arr is None:
        return np.full(n_texts, -1, np.int64)
    arr = np.asarray(arr)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1 or len(arr) != n_texts:
        raise RequestError(
            f"ITEM_ID must have shape [batch, 1] with one id per ITEM_TEXT row ({n_texts}), "
            f"got {arr.shape}"
        )
    if not np.issubdtype(arr.dtype, np.integer):
        raise RequestError(f"ITEM_ID must be INT64, got {arr.dtype}")
    return arr.astype(np.int64)


class ItemEncoder:
    """The item tower over raw text: ``encode_fn`` is the ONNX session (or a stand-in);
    ``batch_size`` the most rows per tower run."""

    #: What runs the tower (serving.stage_metrics.graph_backend).
    backend = "onnxruntime-cpu"
    #: Tokenize the next batch on a second thread while the tower runs (GPU towers).
    prefetch = False

    def __init__(
        self,
        tokenizer: Tokenizer,
        encode_fn: EncodeFn,
        *,
        batch_size: int = 64,
        id_table: ItemIdTable | None = None,
        model_version: str = "",
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.tokenizer = tokenizer
        self.encode_fn = encode_fn
        self.batch_size = batch_size
        #: Learned id vectors by item id (None: text only, a bundle without item ids).
        self.id_table = id_table
        #: The bundle's model version, answered as ``MODEL_VERSION`` ("" for a stand-in).
        self.model_version = model_version

    @classmethod
    def from_dir(
        cls,
        folder: Path,
        *,
        model_version: str | None = None,
        intra_op_threads: int = 1,
        batch_size: int = 64,
        runtime: Runtime | None = None,
    ) -> ItemEncoder:
        """Load the item tower (``item_tower.onnx``, or its GPU form for a ``cuda``
        ``runtime``: serving.graphs) and ``tokenizer.json``; refuse another ``model_version``.
        ``runtime`` defaults to the CPU with ``intra_op_threads`` threads."""
        folder = Path(folder)
        manifest = load_manifest(folder)
        check_model_version(manifest, model_version, f"{folder}")
        runtime = runtime or Runtime(intra_op_threads=intra_op_threads)
        session = open_graph(folder, "item_tower", runtime, expected_inputs=ITEM_TOWER_INPUTS)
        encoder = cls(
            load_tokenizer(folder / TOKENIZER_FILE),
            session,
            batch_size=batch_size,
            id_table=ItemIdTable.load(folder),
            model_version=manifest.model_version,
        )
        encoder.backend = graph_backend(session)
        encoder.prefetch = "cuda" in encoder.backend or encoder.backend == "tensorrt"
        return encoder

    def embed(
        self, texts: Sequence[str], item_ids: Sequence[int] | np.ndarray | None = None
    ) -> np.ndarray:
        """Vectors of ``texts``, float32 ``[len(texts), D]`` (L2-normalised by the tower).

        ``item_ids`` (one per text, ``-1`` for none): where the id table has a vector for the
        id, it is combined with the text vector (the vector export put in the index); other
        rows, and every row without ``item_ids``, are the text vector alone.

        The texts are tokenized in one call and run in batches of like token count, then put
        back in order. With :attr:`prefetch` (on when the tower runs on a GPU), batches are
        taken in order instead and the next one is tokenized on a second thread while the
        tower runs on this one: on a GPU, tokenizing is the slower half, so the tower's time
        is hidden."""
        ids = None if item_ids is None else np.asarray(item_ids, np.int64).reshape(-1)
        if ids is not None and len(ids) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(ids)} item ids: give one id per text")
        return self.combine_ids(self._embed_texts(texts), ids)

    def combine_ids(
        self, text_vectors: np.ndarray, item_ids: Sequence[int] | np.ndarray | None
    ) -> np.ndarray:
        """The served item vectors of text vectors ``[n, D]`` (from :meth:`embed_tokens`)
        with ``item_ids`` ``[n]`` (``-1`` for none): each row combined with its id's learned
        vector where the bundle's id table has one, the text vector elsewhere. ``item_ids``
        ``None``, or a bundle without an id table, returns ``text_vectors`` as they are."""
        if item_ids is None or self.id_table is None or not len(text_vectors):
            return text_vectors
        ids = np.asarray(item_ids, np.int64).reshape(-1)
        if len(ids) != len(text_vectors):
            raise ValueError(f"{len(text_vectors)} vectors but {len(ids)} item ids")
        return self.id_table.combine(text_vectors, ids)

    def _embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Text-only vectors of ``texts`` (see :meth:`embed`)."""
        if not self.prefetch:
            tokens = tokenize_shard(self.tokenizer, texts, self.batch_size)
            parts = [self._run(ids, mask, len(ids)) for ids, mask in tokens.batches]
            if not parts:
                return np.zeros((0, 0), dtype=np.float32)
            return restore_order(np.concatenate(parts), tokens.order)
        chunks = [
            [t[:MAX_ITEM_CHARS] for t in texts[start : start + self.batch_size]]
            for start in range(0, len(texts), self.batch_size)
        ]
        out = []
        if len(chunks) > 1:
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tokenize") as pool:
                pending = pool.submit(encode_items, self.tokenizer, chunks[0])
                for i, chunk in enumerate(chunks):
                    ids, mask = pending.result()
                    if i + 1 < len(chunks):
                        pending = pool.submit(encode_items, self.tokenizer, chunks[i + 1])
                    out.append(self._run(ids, mask, len(chunk)))
        else:
            for chunk in chunks:
                ids, mask = encode_items(self.tokenizer, chunk)
                out.append(self._run(ids, mask, len(chunk)))
        if not out:
            return np.zeros((0, 0), dtype=np.float32)
        return np.concatenate(out)

    def embed_tokens(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """Text vectors, float32 ``[b, D]``, of rows already tokenized as
        towers.text.encode_items tokenizes them (int64 ``[b, L]`` each, at most
        :attr:`batch_size` rows: one tower run). For callers that tokenize ahead of the tower
        (the re-embedding job: client/embed/pipeline.py)."""
        return self._run(input_ids, attention_mask, len(input_ids))

    def _run(self, ids: np.ndarray, mask: np.ndarray, n: int) -> np.ndarray:
        vecs = np.asarray(self.encode_fn(input_ids=ids, attention_mask=mask), np.float32)
        if vecs.ndim != 2 or len(vecs) != n:
            raise RuntimeError(f"item tower returned {vecs.shape} for {n} texts")
        return vecs

    def embed_requests(
        self, requests: Sequence[Mapping[str, np.ndarray]]
    ) -> list[dict[str, np.ndarray] | Exception]:
        """One result per request (its ``ITEM_TEXT`` tensor and optional ``ITEM_ID``):
        ``{"ITEM_VECTOR": [b, D], "MODEL_VERSION": [b, 1]}`` (the model version as UTF-8
        bytes), or the exception to answer it with. Valid requests share one tower run."""
        results: list[dict[str, np.ndarray] | Exception] = []
        texts: list[str] = []
        ids: list[np.ndarray] = []
        spans: list[tuple[int, int]] = []
        for tensors in requests:
            try:
                got = decode_texts(require(tensors, "ITEM_TEXT"))
                got_ids = decode_item_ids(tensors.get("ITEM_ID"), len(got))
            except RequestError as exc:
                results.append(exc)
                spans.append((-1, -1))
                continue
            spans.append((len(texts), len(texts) + len(got)))
            texts.extend(got)
            ids.append(got_ids)
            results.append({})
        try:
            item_ids = np.concatenate(ids) if ids else np.zeros(0, np.int64)
            vectors = self.embed(texts, item_ids)
        except Exception as exc:  # the shared run failed: every valid request reports it
            log.exception("item tower failed on %d texts", len(texts))
            return [r if isinstance(r, Exception) else exc for r in results]
        label = self.model_version.encode("utf-8")
        for i, (lo, hi) in enumerate(spans):
            if lo >= 0:
                results[i] = {
                    "ITEM_VECTOR": vectors[lo:hi],
                    MODEL_VERSION_OUTPUT: np.full((hi - lo, 1), label, dtype=np.object_),
                }
        return results

    def warm_up(self) -> None:
        """Embed ``WARM_UP_TEXTS`` (a short title and a longer description, one batch) through
        :meth:`embed`, so the tower's first-run work is not paid by a real request. One small
        tower run: well under a second. Raises what :meth:`embed` raises."""
        self.embed(list(WARM_UP_TEXTS))
