"""Stage 4 of the request path: cross-encoder reranking within a latency budget, and the blend.

Deadline rule. A request carries ``BUDGET_MS`` (milliseconds, measured from ``START_NS``, the
wall-clock time the tokenizer received it, so time spent in earlier stages counts). Candidates
are cross-scored in retrieval order, in whole chunks of ``chunk_size``. Before each call the
reranker predicts what the call costs, and scores in one call as many whole chunks as fit the
time left (minus ``reserve_ms`` kept for answering), at most ``max_call`` candidates: as few
calls as the budget allows, since each call has a fixed cost and bigger batches use the matrix
units better. It never starts a call predicted to overrun. So a request never waits past its
budget because of the reranker, up to the error of the prediction on the one call that was
started.

Cost model. A call of ``n`` pairs padded to ``w`` tokens is predicted to cost
``n * w * cost_ns`` (``cost_ns``: ns per pair-token, an exponential moving average (EMA) of
measured calls). Per token, not per candidate: a homepage pair (two history titles as its
context) is about half again as long as a search pair, and a per-candidate estimate learnt on
one kind overran on the other. ``w`` is the padded width of the next call's pairs (context
plus the longest of its items), known before the call.

Shapes. A call's pairs are right-padded to a multiple of ``PAD_TOKENS_TO`` tokens and its rows
to a whole number of chunks (the padding rows repeat the last pair; their scores are dropped),
and :meth:`warm_up` runs every shape a request can produce once at load: OpenVINO compiles
kernels for each input shape the first time it sees it (measured here: about 10 ms more on
that call), which put a compile into the tail of requests long after load.

Graph forms. The bundle of a 1-layer cross-encoder also holds its context-once form
(``reranker.context_once.onnx``, towers.models.ContextOnceCrossEncoder: one call takes the
context once and the items apart, ``context_ids``/``context_mask`` ``[1, C]`` and
``item_ids``/``item_mask`` ``[n, I]``), which computes the context's keys and values once per
call instead of once per pair; the CPU runtimes run it (serving/graphs.py). The GPU programs,
a deeper cross-encoder and bundles exported before take pairs (``input_ids``,
``attention_mask``, ``token_type_ids`` ``[n, w]``). The form is read from the graph's
inputs. For the
context-once form a call's ``w`` is its items' padded width (the context's cost, once per
call, is folded into the per-token estimate), and the context is padded to a multiple of
``PAD_TOKENS_TO`` too.

Pair length. Each item's text is cut to ``max_item_tokens`` and the context to
``max_context_tokens`` (settings of the served model, ``towerserve export
--rerank-item-tokens``): the cost of a pair grows with its length, and the demo catalog's item
texts repeat the title's words in their attribute list (benchmarks/rerank_levers.py measures
the trade).

Answer order: cross-scored candidates by blended score (``bias + w . [rerank logit, retrieval
score, popularity, lexical]``, ``blend.json``, the :class:`towers.bundle_contract.Blend` that
training fitted and evaluation measures; lexical is the BM25 score of the query against
the item text, 0 for an empty query; a request without a query uses the file's
``no_query`` blend when it has one, fitted on next-item contexts), then the unscored ones in
retrieval order. A request whose blend gives the cross-encoder no weight (a ``no_query``
blend that kept the retrieval order) is not cross-scored at all: retrieval order, ``N_SCORED``
0 and ``DEGRADED`` false, in the time retrieval takes. ``SCORES``
holds the blended score of the cross-scored items and the retrieval inner product of the others
(``DEGRADED`` says when there are others). ``budget_ms <= 0`` skips the cross-encoder.

Context segment of the pairs: the query's tokens; for an empty query the title tokens of the
user's two most recent history items (most recent first); with neither, an empty segment.

The cost EMA lives in the model instance and carries over between requests; it starts from a
calibration run at load (``calibrate``). Within a request the prediction uses the larger of
the EMA and the cost just measured on this request's previous call, so a sudden slowdown
(another stage busy on the same cores) stops the loop at once instead of after several chunks.
A cost estimate inflated by a slow spell would stop every later request from scoring anything,
and so from measuring again: each request that could not start its first chunk although some
budget was left lowers the estimate by the EMA factor, never below ``FLOOR_SHARE`` of the
calibrated cost (not the calibrated cost itself: in a server, calibration runs while the other
models load and warm up, and was measured at several times the steady cost; a floor at that
figure kept every budget under about 60 ms from scoring anything).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from serving.bundle import check_model_version, load_manifest
from serving.catalog import ItemTexts
from serving.errors import RequestError
from serving.graphs import GraphRuntimeError, Runtime, open_graph
from serving.stage_metrics import graph_backend
from serving.tensors import float_scalar, int_scalar, int_vector, require, text_scalar
from serving.tokenizer import QueryTokenizer
from towers.bundle_contract import BLEND_FEATURES, BLEND_FILE, LEXICAL_FILES, Blend
from towers.features import (
    CLS_ID,
    CONTEXT_ITEMS,
    CONTEXT_ONCE_INPUTS,
    MAX_ITEM_TOKENS,
    MAX_QUERY_TOKENS,
    PAIR_INPUTS,
    SEP_ID,
    build_context_once,
    build_pairs,
)
from towers.lexical import LexicalIndex

log = logging.getLogger(__name__)

__all__ = [
    "BLEND_FEATURES",
    "MAX_BUDGET_MS",
    "Blend",
    "ItemTexts",
    "RerankResult",
    "Reranker",
]

#: Largest budget a request may ask for, in milliseconds.
MAX_BUDGET_MS = 10_000.0
#: The cost estimate never decays below this share of the calibrated (or initial) cost.
FLOOR_SHARE = 0.25
#: Pairs are right-padded (masked) to a multiple of this many tokens.
PAD_TOKENS_TO = 8
#: Cross-encoder inputs of the pair form (built from the context tokens and ``[n]`` lists of
#: item tokens); CONTEXT_ONCE_INPUTS those of the context-once form (module docstring).
RERANKER_INPUTS = PAIR_INPUTS

#: Pair form: ``score_fn(input_ids, attention_mask, token_type_ids) -> logits float32 [n]``;
#: context-once form: ``score_fn(context_ids=, context_mask=, item_ids=, item_mask=)``.
ScoreFn = Callable[..., np.ndarray]


@dataclass(frozen=True)
class RerankResult:
    """One answer, best first: ``item_ids`` int64 ``[k]``, ``scores`` float32 ``[k]``,
    ``titles`` (UTF-8 bytes, object ``[k]``); ``n_scored`` candidates were cross-scored of
    ``n_candidates``; ``degraded`` when some were not."""

    item_ids: np.ndarray
    scores: np.ndarray
    titles: np.ndarray
    n_scored: int
    n_candidates: int
    #: The request's blend gives the cross-encoder no weight (a request without a query whose
    #: ``no_query`` blend is the retrieval order): nothing was scored, nothing was left out.
    unneeded: bool = False

    @property
    def degraded(self) -> bool:
        return not self.unneeded and self.n_scored < self.n_candidates


class Reranker:
    """Cross-scores candidates within each request's budget and blends the signals.

    ``score_fn`` scores a batch of pairs (see :data:`ScoreFn`); candidates are scored in whole
    chunks of ``chunk_size``, up to ``max_call`` per call (default: ``chunk_size``, one chunk a
    call; module docstring); ``max_k`` is the largest ``K``; ``clock_ns`` the wall clock in ns
    (the same clock as ``START_NS``); ``initial_cost_us`` the cost of one pair-token (us)
    assumed before any measurement; ``ema_alpha`` the weight of a new measurement;
    ``reserve_ms`` the part of the budget kept for answering; ``max_item_tokens`` (1 to
    ``MAX_ITEM_TOKENS``) and ``max_context_tokens`` (0 to ``MAX_QUERY_TOKENS - 2``) cut the
    pair's segments; ``tokenizer`` is needed only by :meth:`infer` and :meth:`context_tokens`
    (text in); ``lexical`` (rows as in ``items``) gives the blend's lexical feature for
    requests with a query (without one, or without an index, it is 0). ``max_scored`` caps
    the candidates cross-scored per request (``None``: all the budget allows): past a depth the
    reranker adds little quality and only spends the budget, so a cap ends requests early.
    ``context_once``: ``score_fn`` takes the context-once form's inputs (module docstring).
    ``blend`` orders the cross-scored candidates of requests with a query, ``no_query_blend``
    (when given; else ``blend``) those without one (recommendations: fitted on next-item
    contexts, towers/no_query_blend.py).
    """

    #: What runs the cross-encoder (serving.stage_metrics.graph_backend).
    backend = "onnxruntime-cpu"

    def __init__(
        self,
        items: ItemTexts,
        blend: Blend,
        score_fn: ScoreFn,
        *,
        chunk_size: int = 16,
        max_call: int | None = None,
        max_k: int = 100,
        clock_ns: Callable[[], int] = time.time_ns,
        initial_cost_us: float = 10.0,
        ema_alpha: float = 0.2,
        reserve_ms: float = 0.0,
        max_item_tokens: int = MAX_ITEM_TOKENS,
        max_context_tokens: int = MAX_QUERY_TOKENS - 2,
        tokenizer: QueryTokenizer | None = None,
        lexical: LexicalIndex | None = None,
        max_scored: int | None = None,
        context_once: bool = False,
        no_query_blend: Blend | None = None,
    ) -> None:
        if max_scored is not None and max_scored < 1:
            raise ValueError(f"max_scored must be >= 1 or None (all), got {max_scored}")
        if chunk_size < 1 or max_k < 1:
            raise ValueError(f"chunk_size and max_k must be >= 1, got {chunk_size}, {max_k}")
        if not initial_cost_us > 0 or not 0 < ema_alpha <= 1 or reserve_ms < 0:
            raise ValueError(
                "need initial_cost_us > 0, 0 < ema_alpha <= 1, reserve_ms >= 0; got "
                f"{initial_cost_us}, {ema_alpha}, {reserve_ms}"
            )
        if not 1 <= max_item_tokens <= MAX_ITEM_TOKENS:
            raise ValueError(
                f"max_item_tokens must be in 1..{MAX_ITEM_TOKENS}, got {max_item_tokens}"
            )
        if not 0 <= max_context_tokens <= MAX_QUERY_TOKENS - 2:
            raise ValueError(
                f"max_context_tokens must be in 0..{MAX_QUERY_TOKENS - 2}, got {max_context_tokens}"
            )
        self.max_item_tokens = max_item_tokens
        self.max_context_tokens = max_context_tokens
        self.max_scored = max_scored
        self.context_once = context_once
        self.items = items
        self.blend = blend
        self.no_query_blend = no_query_blend
        self.score_fn = score_fn
        self.chunk_size = chunk_size
        self.max_call = max(chunk_size, max_call or chunk_size)
        self.max_k = max_k
        self.clock_ns = clock_ns
        self.ema_alpha = ema_alpha
        self.reserve_ns = int(reserve_ms * 1e6)
        self.tokenizer = tokenizer
        self.lexical = lexical
        if lexical is not None and lexical.n_items != len(items.rows):
            raise ValueError(
                f"the lexical index has {lexical.n_items} items, the item tables {len(items.rows)}"
            )
        #: Estimated cost of one pair-token, ns (EMA of measurements; module docstring).
        self.cost_ns = float(initial_cost_us) * 1e3
        #: The estimate never decays below this without a measurement.
        self.floor_ns = self.cost_ns * FLOOR_SHARE

    @classmethod
    def from_dir(
        cls,
        folder: Path,
        *,
        model_version: str | None = None,
        chunk_size: int = 16,
        max_call: int | None = None,
        max_k: int | None = None,
        intra_op_threads: int = 1,
        reserve_ms: float = 0.0,
        max_item_tokens: int = MAX_ITEM_TOKENS,
        max_context_tokens: int = MAX_QUERY_TOKENS - 2,
        max_scored: int | None = None,
        calibrate: bool = True,
        runtime: Runtime | None = None,
    ) -> Reranker:
        """Load ``reranker.onnx`` (or its GPU form for a ``cuda`` ``runtime``:
        serving.graphs), ``tokenizer.json``, ``blend.json``, the item tables and (if there) the
        lexical index from a version folder, refuse another ``model_version``, and calibrate
        the cost estimate. ``runtime`` defaults to the CPU with ``intra_op_threads``
        threads."""
        folder = Path(folder)
        manifest = load_manifest(folder)
        check_model_version(manifest, model_version, f"{folder}")
        runtime = runtime or Runtime(intra_op_threads=intra_op_threads)
        session = open_graph(folder, "reranker", runtime, expected_inputs=None)
        form = set(getattr(session, "input_names", ()))
        if form not in (set(PAIR_INPUTS), set(CONTEXT_ONCE_INPUTS)):
            raise GraphRuntimeError(
                f"{folder}: the reranker graph has inputs {sorted(form)}, expected "
                f"{list(PAIR_INPUTS)} or {list(CONTEXT_ONCE_INPUTS)}: re-export the bundle"
            )
        context_once = form == set(CONTEXT_ONCE_INPUTS)

        def score_fn(ids: np.ndarray, mask: np.ndarray, types: np.ndarray) -> np.ndarray:
            return session(input_ids=ids, attention_mask=mask, token_type_ids=types)

        reranker = cls(
            ItemTexts.from_dir(folder),
            Blend.from_json(folder / BLEND_FILE),
            session if context_once else score_fn,
            chunk_size=chunk_size,
            max_call=max_call,
            max_k=max_k or manifest.max_k,
            reserve_ms=reserve_ms,
            max_item_tokens=max_item_tokens,
            max_context_tokens=max_context_tokens,
            max_scored=max_scored,
            tokenizer=QueryTokenizer.from_dir(folder),
            lexical=LexicalIndex.load(folder) if (folder / LEXICAL_FILES[0]).is_file() else None,
            context_once=context_once,
            no_query_blend=Blend.no_query_from_json(folder / BLEND_FILE),
        )
        reranker.backend = graph_backend(session)
        if calibrate:
            reranker.calibrate()
        return reranker

    # -- cost model --------------------------------------------------------------------------

    def calibrate(self, rounds: int = 3) -> float:
        """Measure one full call (``max_call`` real items, a context of half the longest query)
        ``rounds`` times (the first also warms the session up) and start the estimate from the
        fastest (its floor at ``FLOOR_SHARE`` of it); returns microseconds per pair-token."""
        n = min(self.max_call, len(self.items.rows))
        if n == 0:
            return self.cost_ns / 1e3
        query = np.full(min(MAX_QUERY_TOKENS // 2, self.max_context_tokens), 2000, np.int64)
        rows = np.arange(n)
        width = self._width(query, rows)
        best = math.inf
        for _ in range(max(1, rounds)):
            start = self.clock_ns()
            self._score_rows(query, rows)
            best = min(best, (self.clock_ns() - start) / (self._padded_rows(n) * width))
        self.cost_ns = max(best, 1e-3)
        self.floor_ns = self.cost_ns * FLOOR_SHARE
        log.info(
            "reranker: %.2f us per pair-token, %.3f ms per candidate of %d tokens (calls of %d)",
            self.cost_ns / 1e3,
            self.cost_ns * width / 1e6,
            width,
            n,
        )
        return self.cost_ns / 1e3

    def _measured(self, ns_per_token: float) -> None:
        sample = max(ns_per_token, 1e-3)
        self.cost_ns = (1 - self.ema_alpha) * self.cost_ns + self.ema_alpha * sample

    def _starved(self) -> None:
        self.cost_ns = max(self.floor_ns, (1 - self.ema_alpha) * self.cost_ns)

    # -- scoring -----------------------------------------------------------------------------

    def _item_tokens(self, row: int) -> np.ndarray:
        return self.items.item_tokens(row)[: self.max_item_tokens]

    def _width(self, context: np.ndarray, rows: np.ndarray) -> int:
        """Padded token width of the pairs of ``context`` with ``rows`` (``[CLS] c [SEP] i
        [SEP]``; context-once form: the items' ``i [SEP]`` alone), rounded up to
        ``PAD_TOKENS_TO``."""
        offsets = self.items.offsets
        longest = int(np.max(offsets[rows + 1] - offsets[rows])) if len(rows) else 0
        raw = min(longest, self.max_item_tokens) + 1
        if not self.context_once:
            raw += min(len(context), self.max_context_tokens) + 2
        return -(-raw // PAD_TOKENS_TO) * PAD_TOKENS_TO

    def _padded_rows(self, n: int) -> int:
        return -(-n // self.chunk_size) * self.chunk_size

    def _score_rows(self, context: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Logits of the pairs of ``context`` with ``rows``: one call, its rows padded to whole
        chunks and its width to ``PAD_TOKENS_TO`` (module docstring: shapes)."""
        n = len(rows)
        padded = np.concatenate([rows, np.full(self._padded_rows(n) - n, rows[-1])]) if n else rows
        item_tokens = [self._item_tokens(r) for r in padded]
        if self.context_once:
            feeds = build_context_once(
                context[: self.max_context_tokens], item_tokens, pad_to=PAD_TOKENS_TO
            )
            out = self.score_fn(**feeds)
        else:
            ids, mask, types = build_pairs(context[: self.max_context_tokens], item_tokens)
            pad = -ids.shape[1] % PAD_TOKENS_TO
            if pad:  # fewer distinct shapes: a runtime compiles kernels per shape it first sees
                ids, mask, types = (np.pad(a, ((0, 0), (0, pad))) for a in (ids, mask, types))
            out = self.score_fn(ids, mask, types)
        logits = np.asarray(out, dtype=np.float32).reshape(-1)
        if len(logits) != len(padded):
            raise RuntimeError(f"reranker returned {len(logits)} scores for {len(padded)} pairs")
        return logits[:n]

    def score_within(self, context: np.ndarray, rows: np.ndarray, deadline_ns: int) -> np.ndarray:
        """Cross-encoder logits of the first ``n_scored`` of ``rows`` (retrieval order), float32
        ``[n_scored]``: calls of whole chunks (the last may be short when the rows run out), each
        started only when predicted to end by ``deadline_ns - reserve_ms`` (all times
        wall-clock ns; the cost model is in the module docstring)."""
        logits: list[np.ndarray] = []
        done = 0
        last_ns = 0.0  # per-token cost of this request's previous call
        while done < len(rows):
            start = self.clock_ns()
            width = self._width(context, rows[done : done + self.max_call])
            per_ns = max(self.cost_ns, last_ns) * width
            left_ns = deadline_ns - self.reserve_ns - start
            fit = int(left_ns // per_ns) if left_ns > 0 else 0
            remaining = len(rows) - done
            size = min(remaining, self.max_call, fit - fit % self.chunk_size)
            if remaining <= self.max_call and fit >= self._padded_rows(remaining):
                size = remaining
            if size < 1:
                if done == 0 and left_ns > 0:
                    self._starved()
                break
            call = rows[done : done + size]
            logits.append(self._score_rows(context, call))
            last_ns = (self.clock_ns() - start) / (
                self._padded_rows(size) * self._width(context, call)
            )
            self._measured(last_ns)
            done += size
        return np.concatenate(logits) if logits else np.zeros(0, dtype=np.float32)

    def rerank(
        self,
        context: np.ndarray,
        candidate_ids: np.ndarray,
        candidate_scores: np.ndarray,
        *,
        k: int,
        budget_ms: float,
        start_ns: int | None = None,
        query: str = "",
    ) -> RerankResult:
        """The top ``k`` of the candidates (retrieval order, best first).

        ``context`` are the pair's first-segment token ids (no special tokens); ``budget_ms``
        in ``(-inf, MAX_BUDGET_MS]`` counted from ``start_ns`` (wall-clock ns; ``None``, 0 or
        a time in the future mean now); ``query`` the request's text, for the lexical feature.
        Candidates the catalog lacks are dropped.
        """
        if not 1 <= k <= self.max_k:
            raise RequestError(f"K must be in 1..{self.max_k}, got {k}")
        if not math.isfinite(budget_ms) or budget_ms > MAX_BUDGET_MS:
            raise RequestError(
                f"BUDGET_MS must be a finite number of milliseconds <= {MAX_BUDGET_MS:g} "
                f"(0 or less skips reranking), got {budget_ms}"
            )
        cand = np.asarray(candidate_ids, dtype=np.int64).reshape(-1)
        retrieval = np.asarray(candidate_scores, dtype=np.float32).reshape(-1)
        if len(cand) != len(retrieval):
            raise RequestError(
                f"CANDIDATE_SCORES has {len(retrieval)} values but CANDIDATE_IDS has "
                f"{len(cand)}: send one retrieval score per candidate"
            )
        rows, known = self.items.rows.lookup(cand)
        if not known.all():
            log.debug("dropping %d candidates not in the catalog", int((~known).sum()))
            cand, retrieval, rows = cand[known], retrieval[known], rows[known]

        now = self.clock_ns()
        start = now if not start_ns or start_ns > now else int(start_ns)
        blend = self.blend if query.strip() or self.no_query_blend is None else self.no_query_blend
        # a request without a query whose blend is the retrieval order needs no scoring
        unneeded = blend is self.no_query_blend and not blend.uses_rerank
        if budget_ms > 0 and len(cand) and not unneeded:
            deadline = start + int(budget_ms * 1e6)
            logits = self.score_within(
                np.asarray(context, dtype=np.int64), rows[: self.max_scored], deadline
            )
        else:
            logits = np.zeros(0, dtype=np.float32)
        n_scored = len(logits)

        lexical = None
        if self.lexical is not None and query.strip() and n_scored:
            lexical = self.lexical.scores(query, rows[:n_scored])
        blended = blend.score(
            logits, retrieval[:n_scored], self.items.popularity[rows[:n_scored]], lexical
        )
        order = np.concatenate(
            [np.argsort(-blended, kind="stable"), np.arange(n_scored, len(cand))]
        )[:k]
        scores = np.concatenate([blended, retrieval[n_scored:]])[order].astype(np.float32)
        return RerankResult(
            item_ids=cand[order],
            scores=scores,
            titles=self.items.title_bytes[rows[order]],
            n_scored=n_scored,
            n_candidates=len(cand),
            unneeded=unneeded,
        )

    # -- Triton ------------------------------------------------------------------------------

    def context_tokens(self, query: str, history_ids: np.ndarray) -> np.ndarray:
        """First pair segment: the query's tokens; for an empty query the titles of the two
        most recent known ``history_ids`` (oldest first in the input), most recent first."""
        if self.tokenizer is None:
            raise RuntimeError("this reranker was built without a tokenizer")
        tokens = self.tokenizer.query_tokens(query)
        if len(tokens):
            return tokens
        rows, known = self.items.rows.lookup(history_ids)
        recent = rows[known][::-1][:CONTEXT_ITEMS]
        text = " ".join(self.items.titles[r] for r in recent)
        return self.tokenizer.text_tokens(text, MAX_QUERY_TOKENS - 2)

    def infer(self, tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Triton tensors: ``QUERY`` BYTES ``[1]``, ``HISTORY_IDS`` int64 ``[h]``,
        ``CANDIDATE_IDS`` int64 ``[n]``, ``CANDIDATE_SCORES`` float32 ``[n]``, ``K`` int32
        ``[1]``, ``BUDGET_MS`` float32 ``[1]``, ``START_NS`` int64 ``[1]`` -> ``ITEM_IDS``
        int64 ``[k]``, ``SCORES`` float32 ``[k]``, ``ITEM_TITLES`` BYTES ``[k]``, ``N_SCORED``
        int32 ``[1]``, ``DEGRADED`` bool ``[1]``."""
        query = text_scalar(require(tensors, "QUERY"), "QUERY")
        k = int_scalar(require(tensors, "K"), "K")
        budget_ms = float_scalar(require(tensors, "BUDGET_MS"), "BUDGET_MS")
        start_ns = int_scalar(require(tensors, "START_NS"), "START_NS")
        history = int_vector(require(tensors, "HISTORY_IDS"), "HISTORY_IDS")
        cand = int_vector(require(tensors, "CANDIDATE_IDS"), "CANDIDATE_IDS")
        scores = np.asarray(require(tensors, "CANDIDATE_SCORES"), dtype=np.float32).reshape(-1)
        # the pairs' context only when there is a budget to score them in
        context = self.context_tokens(query, history) if budget_ms > 0 else np.zeros(0, np.int64)
        result = self.rerank(
            context,
            cand,
            scores,
            k=k,
            budget_ms=budget_ms,
            start_ns=start_ns,
            query=query,
        )
        return {
            "ITEM_IDS": result.item_ids,
            "SCORES": result.scores,
            "ITEM_TITLES": result.titles,
            "N_SCORED": np.array([result.n_scored], dtype=np.int32),
            "DEGRADED": np.array([result.degraded], dtype=np.bool_),
        }

    # -- warm-up -----------------------------------------------------------------------------

    def shapes(self) -> list[tuple[int, ...]]:
        """Every ``(rows, width)`` a call can have with this catalog: rows in whole chunks up to
        ``max_call``, widths in steps of ``PAD_TOKENS_TO`` from the shortest item with an empty
        context to the longest with the longest context. Context-once form: every ``(rows,
        item width, context width)``, each width in steps of ``PAD_TOKENS_TO``."""
        if not len(self.items.rows):
            return []

        def steps(low: int, high: int) -> range:
            up = PAD_TOKENS_TO
            return range(-(-low // up) * up, -(-high // up) * up + 1, up)

        lengths = np.minimum(np.diff(self.items.offsets), self.max_item_tokens)
        sizes = range(self.chunk_size, self._padded_rows(self.max_call) + 1, self.chunk_size)
        if self.context_once:
            items = steps(int(lengths.min()) + 1, int(lengths.max()) + 1)
            contexts = steps(2, self.max_context_tokens + 2)
            return [(n, w, c) for n in sizes for w in items for c in contexts]
        widths = steps(int(lengths.min()) + 3, int(lengths.max()) + 3 + self.max_context_tokens)
        return [(n, w) for n in sizes for w in widths]

    def warm_shapes(self) -> int:
        """Run the cross-encoder once at every shape of :meth:`shapes` (dummy pairs), so no
        request pays for a kernel compile; returns the number of shapes."""
        shapes = self.shapes()
        for shape in shapes:
            n, width = shape[0], shape[1]
            if self.context_once:
                context = np.full((1, shape[2]), 2000, dtype=np.int64)
                context[0, 0], context[0, -1] = CLS_ID, SEP_ID
                items = np.full((n, width), 2000, dtype=np.int64)
                items[:, -1] = SEP_ID
                self.score_fn(
                    context_ids=context,
                    context_mask=np.ones_like(context),
                    item_ids=items,
                    item_mask=np.ones_like(items),
                )
                continue
            ids = np.full((n, width), 2000, dtype=np.int64)
            ids[:, 0] = CLS_ID
            types = np.zeros_like(ids)
            types[:, width // 2 :] = 1
            self.score_fn(ids, np.ones_like(ids), types)
        return len(shapes)

    def warm_up(self) -> None:
        """Run every call shape once (:meth:`warm_shapes`), then two requests through
        :meth:`infer` (or :meth:`rerank` without a tokenizer) with the largest budget, so every
        candidate is cross-scored: a query over one chunk of catalog items, then an empty query
        whose context is the titles of two history items. The cost estimate and its floor are
        restored afterwards: warm-up timings are not request timings. About two seconds for
        the demo model (80 shapes). Raises what :meth:`infer` raises; does nothing for an
        empty catalog."""
        n = min(self.max_call, len(self.items.rows))
        if n == 0:
            return
        started = time.perf_counter()
        count = self.warm_shapes()
        log.info("reranker: %d call shapes warmed in %.1f s", count, time.perf_counter() - started)
        cand = self.items.rows.item_ids[:n]
        scores = np.linspace(1.0, 0.0, n, dtype=np.float32)
        history = cand[: min(CONTEXT_ITEMS, n)]
        k = min(10, self.max_k, n)
        saved = self.cost_ns, self.floor_ns
        try:
            for query in (b"red cotton shirt", b""):
                if self.tokenizer is None:
                    context = np.full(4 if query else 0, 2000, dtype=np.int64)
                    self.rerank(context, cand, scores, k=k, budget_ms=MAX_BUDGET_MS)
                    continue
                self.infer(
                    {
                        "QUERY": np.array([query], dtype=object),
                        "HISTORY_IDS": history,
                        "CANDIDATE_IDS": cand,
                        "CANDIDATE_SCORES": scores,
                        "K": np.array([k], dtype=np.int32),
                        "BUDGET_MS": np.array([MAX_BUDGET_MS], dtype=np.float32),
                        "START_NS": np.array([0], dtype=np.int64),
                    }
                )
        finally:
            self.cost_ns, self.floor_ns = saved
