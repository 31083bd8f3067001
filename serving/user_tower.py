"""Stage 2 of the request path: query tokens + the user's recent items -> user vector.

History resolution, in order:

1. the request's ``HISTORY_IDS``/``HISTORY_TS`` (one unix time in seconds per item), when at
   least one of its ids is in the catalog;
2. otherwise the history the server stores for ``USER_ID``: ``user_history.npz`` from the
   bundle merged with the user's live events (serving/events: recorded through the ``events``
   model since, newest by time kept); an unknown user id, or -1 (anonymous), simply has none;
3. otherwise no history.

Ids not in the catalog are dropped (and counted); of the rest the ``MAX_HISTORY`` newest are
the tower's input, oldest first, weighted by ``towers.features.recency_weights``, and the
``LONG_HISTORY`` newest are handed on (``HISTORY_USED``) to the retriever's co-visitation
candidates and the reranker's context. A request with an empty
query and no usable history is a :class:`RequestError`: there is nothing to recommend from.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from serving.bundle import check_model_version, load_manifest
from serving.catalog import ItemRows
from serving.errors import RequestError
from serving.graphs import Runtime, open_graph
from serving.stage_metrics import graph_backend
from serving.tensors import float_scalar, int_matrix, int_scalar, int_vector, require
from towers.bundle_contract import (
    ITEM_EMBEDDINGS_FILE,
    ITEM_IDS_FILE,
    USER_HISTORY_FILE,
    USER_HISTORY_HEAD_FILE,
    USER_HISTORY_SEQUENCE_FILE,
)
from towers.features import (
    CLS_ID,
    LONG_HISTORY,
    MAX_HISTORY,
    MAX_QUERY_TOKENS,
    SEP_ID,
    last_n,
    recency_weights,
)
from towers.history_sequence import check_sequence_arrays, history_sequence

if TYPE_CHECKING:
    from serving.events.settings import LiveHistory

log = logging.getLogger(__name__)

__all__ = ["ResolvedHistory", "StoredHistory", "UserEncoder"]

#: The user tower's ONNX inputs, in the order ``export/onnx.py`` declares them.
USER_TOWER_INPUTS = (
    "input_ids",
    "attention_mask",
    "has_query",
    "history_vectors",
    "history_weights",
)

#: ``encode_fn(**feeds) -> user_vector``: the ONNX session, or a stand-in in tests.
EncodeFn = Callable[..., np.ndarray]

#: Query tokens and history items are padded (mask 0, weight 0: the vector is unchanged, tested)
#: up to a multiple of this many, so the graph sees a few shapes rather than one per request:
#: OpenVINO pays about 0.6 ms for each new input shape (bf16 user tower, 1.4 -> 0.8 ms p50
#: measured here on varied requests).
PAD_TO = 8

#: Warm-up inputs: a query of this many word tokens (plus [CLS]/[SEP]) and this many history
#: items, about the size of a typical request.
WARM_UP_QUERY_TOKENS = 6
WARM_UP_HISTORY = 5


class StoredHistory:
    """Recent events per known user: ``user_ids`` int64 ``[U]``, ``offsets`` int64 ``[U+1]``,
    ``item_ids`` and ``ts`` (unix s) int64 ``[E]``; user ``i`` owns events
    ``offsets[i]:offsets[i+1]``, oldest first."""

    def __init__(
        self, user_ids: np.ndarray, offsets: np.ndarray, item_ids: np.ndarray, ts: np.ndarray
    ) -> None:
        self.users = ItemRows(user_ids)
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.item_ids = np.asarray(item_ids, dtype=np.int64)
        self.ts = np.asarray(ts, dtype=np.int64)
        n_users, n_events = len(self.users), len(self.item_ids)
        if (
            len(self.offsets) != n_users + 1
            or len(self.ts) != n_events
            or self.offsets[0] != 0
            or self.offsets[-1] != n_events
            or np.any(np.diff(self.offsets) < 0)
        ):
            raise ValueError(
                f"inconsistent stored history: {n_users} users, {len(self.offsets)} offsets "
                f"(need users + 1, from 0 to {n_events}, non-decreasing), {n_events} item ids, "
                f"{len(self.ts)} timestamps"
            )

    @classmethod
    def empty(cls) -> StoredHistory:
        z = np.zeros(0, dtype=np.int64)
        return cls(z, np.zeros(1, dtype=np.int64), z, z)

    @classmethod
    def from_npz(cls, path: Path) -> StoredHistory:
        with np.load(path) as f:
            return cls(f["user_ids"], f["offsets"], f["item_ids"], f["ts"])

    def __len__(self) -> int:
        return len(self.users)

    def lookup(self, user_id: int) -> tuple[np.ndarray, np.ndarray]:
        """``(item_ids, ts)`` stored for ``user_id``, oldest first; empty when unknown."""
        rows, known = self.users.lookup(np.array([user_id], dtype=np.int64))
        if not known[0]:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        lo, hi = self.offsets[rows[0]], self.offsets[rows[0] + 1]
        return self.item_ids[lo:hi], self.ts[lo:hi]


@dataclass(frozen=True)
class ResolvedHistory:
    """The history the user tower uses: catalog ``item_ids``, their ``ts`` (unix s) and table
    ``rows``, at most ``MAX_HISTORY``, oldest first. ``source`` is ``"request"``, ``"stored"``,
    ``"live"`` (stored history with live events in it) or ``"none"``; ``n_unknown`` counts
    the ids dropped because the catalog lacks them. ``handed_on``: the known ids up to the
    encoder's ``hand_on`` newest (``LONG_HISTORY``), oldest first, ending with ``item_ids``
    (``None``: just ``item_ids``)."""

    item_ids: np.ndarray
    ts: np.ndarray
    rows: np.ndarray
    source: str
    n_unknown: int
    handed_on: np.ndarray | None = None

    @property
    def long_ids(self) -> np.ndarray:
        """The ids handed on past the tower (``HISTORY_USED``), oldest first."""
        return self.item_ids if self.handed_on is None else self.handed_on


class UserEncoder:
    """Builds the user tower's inputs and runs it.

    ``item_ids`` int64 ``[N]`` and ``item_vectors`` float32 ``[N, D]`` are the catalog's
    item-tower vectors (row ``i`` is ``item_ids[i]``); ``recency_tau_s`` the decay constant of
    the history weights in seconds; ``stored`` the server's histories of known users; ``live``
    the live event store (read by ``USER_ID`` when the request has no usable history);
    ``encode_fn(**feeds)`` runs the tower on the feeds named in ``USER_TOWER_INPUTS`` and
    returns float32 ``[1, D]``; ``max_history`` items are encoded, ``hand_on`` (>=
    ``max_history``) handed on as ``HISTORY_USED``. ``history_head`` (float32 ``[D, D]``, the
    bundle's ``user_history_head.npy``) lets a request with an empty query skip the graph:
    its user vector is ``normalize((weights . vectors) @ history_head)``, the graph's own
    arithmetic for ``has_query`` 0 (towers.models.UserTower), in numpy (tested equal). Half
    of the benchmark's requests are such homepage requests, and the graph's run was most of
    the stage's 3-5 ms in the server. A tower with a sequence block also needs its arrays,
    ``history_sequence`` (the bundle's ``user_history_sequence.npz``, which export writes
    whenever the tower has a block): its term (towers.history_sequence) is added before the
    normalisation. A bundle without the file is served with the head alone (towers without
    a block, bundles exported before it).
    """

    #: What runs the tower (serving.stage_metrics.graph_backend).
    backend = "onnxruntime-cpu"

    def __init__(
        self,
        item_ids: np.ndarray,
        item_vectors: np.ndarray,
        *,
        recency_tau_s: float,
        encode_fn: EncodeFn,
        stored: StoredHistory | None = None,
        max_history: int = MAX_HISTORY,
        live: LiveHistory | None = None,
        hand_on: int = LONG_HISTORY,
        history_head: np.ndarray | None = None,
        history_sequence: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        self.items = ItemRows(item_ids)
        self.item_vectors = np.ascontiguousarray(item_vectors, dtype=np.float32)
        if self.item_vectors.ndim != 2 or len(self.item_vectors) != len(self.items):
            raise ValueError(
                f"item_vectors must be [N, D] with N = {len(self.items)} item ids, "
                f"got {self.item_vectors.shape}"
            )
        if not recency_tau_s > 0:
            raise ValueError(f"recency_tau_s must be > 0, got {recency_tau_s}")
        if max_history < 1 or hand_on < max_history:
            raise ValueError(
                f"need max_history >= 1 and hand_on >= max_history, got {max_history}, {hand_on}"
            )
        self.dim = int(self.item_vectors.shape[1])
        self.history_head = None
        if history_head is not None:
            head = np.ascontiguousarray(history_head, dtype=np.float32)
            if head.shape != (self.dim, self.dim):
                raise ValueError(f"history_head must be [{self.dim}, {self.dim}], got {head.shape}")
            self.history_head = head
        self.history_sequence = None
        if history_sequence is not None:
            check_sequence_arrays(history_sequence, self.dim)
            self.history_sequence = {
                k: np.asarray(v, np.float32 if k != "heads" else np.int64)
                for k, v in history_sequence.items()
            }
        self.recency_tau_s = float(recency_tau_s)
        self.encode_fn = encode_fn
        self.stored = stored if stored is not None else StoredHistory.empty()
        self.max_history = max_history
        self.hand_on = hand_on
        self.live = live

    @classmethod
    def from_dir(
        cls,
        folder: Path,
        *,
        model_version: str | None = None,
        intra_op_threads: int = 1,
        runtime: Runtime | None = None,
    ) -> UserEncoder:
        """Load ``user_tower.onnx`` (or its GPU form for a ``cuda`` ``runtime``:
        serving.graphs), ``item_ids.npy``, ``item_embeddings.npy`` and ``user_history.npz``
        from a version folder; refuse another ``model_version``. ``runtime`` defaults to the
        CPU with ``intra_op_threads`` threads."""
        folder = Path(folder)
        manifest = load_manifest(folder)
        check_model_version(manifest, model_version, f"{folder}")
        vectors = np.load(folder / ITEM_EMBEDDINGS_FILE)
        if vectors.ndim != 2 or vectors.shape[1] != manifest.dim:
            raise ValueError(
                f"{folder / ITEM_EMBEDDINGS_FILE} has shape {vectors.shape}, manifest dim "
                f"{manifest.dim}"
            )
        runtime = runtime or Runtime(intra_op_threads=intra_op_threads)
        session = open_graph(folder, "user_tower", runtime, expected_inputs=USER_TOWER_INPUTS)
        history_path = folder / USER_HISTORY_FILE
        stored = StoredHistory.from_npz(history_path) if history_path.is_file() else None
        head_path = folder / USER_HISTORY_HEAD_FILE
        sequence_path = folder / USER_HISTORY_SEQUENCE_FILE
        sequence = None
        if sequence_path.is_file():
            with np.load(sequence_path) as arrays:
                sequence = {k: arrays[k] for k in arrays.files}
        encoder = cls(
            np.load(folder / ITEM_IDS_FILE),
            vectors,
            recency_tau_s=manifest.recency_tau_s,
            encode_fn=session,
            stored=stored,
            history_head=np.load(head_path) if head_path.is_file() else None,
            history_sequence=sequence,
        )
        encoder.backend = graph_backend(session)
        return encoder

    def resolve_history(
        self, user_id: int, history_ids: np.ndarray, history_ts: np.ndarray
    ) -> ResolvedHistory:
        """The history to use (see the module docstring for the order)."""
        history_ids = np.asarray(history_ids, dtype=np.int64).reshape(-1)
        history_ts = np.asarray(history_ts, dtype=np.int64).reshape(-1)
        if len(history_ids) != len(history_ts):
            raise RequestError(
                f"HISTORY_TS has {len(history_ts)} entries but HISTORY_IDS has "
                f"{len(history_ids)}: send one unix time in seconds per history item"
            )
        n_unknown = 0
        if len(history_ids):
            resolved = self._known(history_ids, history_ts, "request")
            if len(resolved.item_ids):
                return resolved
            n_unknown = resolved.n_unknown
            log.debug("user %d: none of %d request history ids known", user_id, n_unknown)
        stored_ids, stored_ts = self.stored.lookup(user_id)
        source = "stored"
        if self.live is not None and user_id >= 0:
            live_ids, live_ts = self.live.lookup(user_id, self.hand_on)
            if len(live_ids):  # after the stored ones: on equal times the live event is newer
                stored_ids = np.concatenate([stored_ids, live_ids])
                stored_ts = np.concatenate([stored_ts, live_ts])
                source = "live"
        if len(stored_ids):
            resolved = self._known(stored_ids, stored_ts, source)
            if len(resolved.item_ids):
                return ResolvedHistory(
                    resolved.item_ids,
                    resolved.ts,
                    resolved.rows,
                    source,
                    n_unknown + resolved.n_unknown,
                    resolved.handed_on,
                )
        z = np.zeros(0, dtype=np.int64)
        return ResolvedHistory(z, z, z, "none", n_unknown)

    def _known(self, ids: np.ndarray, ts: np.ndarray, source: str) -> ResolvedHistory:
        rows, known = self.items.lookup(ids)
        n_unknown = int((~known).sum())
        long_ids, long_ts = last_n(ids[known], ts[known], self.hand_on)
        ids, ts = long_ids[-self.max_history :], long_ts[-self.max_history :]
        rows, _ = self.items.lookup(ids)
        return ResolvedHistory(ids, ts, rows, source, n_unknown, long_ids)

    def encode(
        self,
        input_ids: np.ndarray,
        attention_mask: np.ndarray,
        has_query: float,
        history: ResolvedHistory,
        user_id: int = -1,
    ) -> np.ndarray:
        """The user vector, float32 ``[1, D]``, for tokenized query inputs (int64 ``[1, L]``)
        and a resolved history. An empty query (``has_query`` 0) needs a non-empty history."""
        query = bool(has_query > 0)
        if not query and len(history.item_ids) == 0:
            who = "anonymous user -1" if user_id == -1 else f"user {user_id}"
            raise RequestError(
                f"empty query and no known history for {who}: send a query or recent item ids"
            )
        h = len(history.item_ids)
        n = max(1, h) + (-max(1, h) % PAD_TO)
        vectors = np.zeros((1, n, self.dim), dtype=np.float32)
        weights = np.zeros((1, n), dtype=np.float32)
        if h:
            vectors[0, :h] = self.item_vectors[history.rows]
            weights[0, :h] = recency_weights(history.ts, self.recency_tau_s)
        if not query and self.history_head is not None:  # the graph's arithmetic, no graph
            pooled = weights[0, :h] @ vectors[0, :h]
            out = (pooled @ self.history_head)[None]
            if self.history_sequence is not None:
                out = out + history_sequence(self.history_sequence, vectors[:, :h], weights[:, :h])
            return (out / max(float(np.linalg.norm(out)), 1e-6)).astype(np.float32)
        pad = -input_ids.shape[1] % PAD_TO
        out = self.encode_fn(
            input_ids=np.pad(np.asarray(input_ids, dtype=np.int64), ((0, 0), (0, pad))),
            attention_mask=np.pad(np.asarray(attention_mask, dtype=np.int64), ((0, 0), (0, pad))),
            has_query=np.array([[1.0 if query else 0.0]], dtype=np.float32),
            history_vectors=vectors,
            history_weights=weights,
        )
        out = np.asarray(out, dtype=np.float32)
        if out.shape != (1, self.dim):
            raise RuntimeError(f"user tower returned shape {out.shape}, expected (1, {self.dim})")
        return out

    def infer(self, tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Triton tensors: ``INPUT_IDS``/``ATTENTION_MASK`` int64 ``[1, L]``, ``HAS_QUERY``
        float32 ``[1, 1]``, ``USER_ID`` int64 ``[1]``, ``HISTORY_IDS``/``HISTORY_TS`` int64
        ``[n]`` -> ``USER_VECTOR`` float32 ``[1, D]`` and ``HISTORY_USED`` int64 ``[h]`` (the
        resolved history ids handed on, up to ``hand_on``, oldest first: the retriever's
        co-visitation reads them, the reranker the newest)."""
        ids = int_matrix(require(tensors, "INPUT_IDS"), "INPUT_IDS", max_cols=MAX_QUERY_TOKENS)
        mask = int_matrix(
            require(tensors, "ATTENTION_MASK"), "ATTENTION_MASK", max_cols=MAX_QUERY_TOKENS
        )
        if mask.shape != ids.shape:
            raise RequestError(
                f"ATTENTION_MASK must have the shape of INPUT_IDS {ids.shape}, got {mask.shape}"
            )
        has_query = float_scalar(require(tensors, "HAS_QUERY"), "HAS_QUERY")
        user_id = int_scalar(require(tensors, "USER_ID"), "USER_ID")
        history = self.resolve_history(
            user_id,
            int_vector(require(tensors, "HISTORY_IDS"), "HISTORY_IDS"),
            int_vector(require(tensors, "HISTORY_TS"), "HISTORY_TS"),
        )
        vector = self.encode(ids, mask, has_query, history, user_id)
        return {"USER_VECTOR": vector, "HISTORY_USED": history.long_ids}

    def warm_up(self) -> None:
        """Run two requests through :meth:`infer` so the tower's first-run work is not paid by a
        real request: a query of ``WARM_UP_QUERY_TOKENS`` tokens with a short history (the
        ``WARM_UP_HISTORY`` first catalog items, one hour apart), then the same history with an
        empty query (skipped when the catalog is empty). Two small tower runs: well under a
        second. Raises what :meth:`infer` raises; nothing is stored."""
        query = np.array(
            [[CLS_ID, *range(2000, 2000 + WARM_UP_QUERY_TOKENS), SEP_ID]], dtype=np.int64
        )
        empty = np.array([[CLS_ID, SEP_ID]], dtype=np.int64)
        n = min(WARM_UP_HISTORY, self.max_history, len(self.items))
        history = self.items.item_ids[:n]
        ts = int(time.time()) - 3600 * np.arange(n, dtype=np.int64)[::-1]
        requests = [(query, 1.0)] + ([(empty, 0.0)] if n else [])
        for ids, has_query in requests:
            self.infer(
                {
                    "INPUT_IDS": ids,
                    "ATTENTION_MASK": np.ones_like(ids),
                    "HAS_QUERY": np.array([[has_query]], dtype=np.float32),
                    "USER_ID": np.array([-1], dtype=np.int64),
                    "HISTORY_IDS": history,
                    "HISTORY_TS": ts,
                }
            )
