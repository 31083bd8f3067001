"""The ``recommend`` ensemble in one process: tokenizer -> user tower -> retriever -> reranker.

The stages are wired tensor for tensor as in ``model_repository/recommend/config.pbtxt``, so a
machine without ``tritonserver`` (the lent GPU machine, a notebook) can run the served stages
end to end on the same bundle and device settings. Triton remains what serves traffic; this
adds no logic of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from serving.bundle import load_manifest
from serving.graphs import Runtime
from serving.reranker import Reranker
from serving.retriever import Retriever
from serving.tokenizer import QueryTokenizer
from serving.user_tower import UserEncoder

__all__ = ["InProcessRecommend", "Recommendation"]


@dataclass(frozen=True)
class Recommendation:
    """One answer: ``item_ids`` int64 ``[k]``, ``scores`` float32 ``[k]``, ``n_scored`` how
    many candidates the cross-encoder scored, ``degraded`` whether the budget cut it short."""

    item_ids: np.ndarray
    scores: np.ndarray
    n_scored: int
    degraded: bool


class InProcessRecommend:
    """The four served stages of one bundle or version folder, on one :class:`Runtime`
    (``runtime.device`` also places the index: ``cuda`` searches on the GPU); or, with
    :meth:`from_repository`, exactly as a written Triton repository configures them."""

    def __init__(self, folder: Path, runtime: Runtime | None = None, chunk_size: int = 16):
        folder = Path(folder)
        runtime = runtime or Runtime()
        version = load_manifest(folder).model_version
        self.tokenizer = QueryTokenizer.from_dir(folder)
        self.user_tower = UserEncoder.from_dir(folder, model_version=version, runtime=runtime)
        self.retriever = Retriever.from_dir(
            folder, model_version=version, omp_threads=None, device=runtime.device
        )
        self.reranker = Reranker.from_dir(
            folder, model_version=version, runtime=runtime, chunk_size=chunk_size
        )

    @classmethod
    def from_repository(cls, repository: Path) -> InProcessRecommend:
        """The stages of a repository written by ``towerserve export``, each built from its
        model's ``config.pbtxt`` parameters by the same code the ``model.py`` files run
        (serving.stage_params): same graphs, runtimes, threads and settings as the server."""
        from serving import stage_params

        self = cls.__new__(cls)
        folder, _ = stage_params.repository_params(repository, "tokenizer")
        self.tokenizer = QueryTokenizer.from_dir(folder)
        self.user_tower = stage_params.user_encoder(
            *stage_params.repository_params(repository, "user_tower")
        )
        self.retriever = stage_params.retriever(
            *stage_params.repository_params(repository, "retriever")
        )
        self.reranker = stage_params.reranker(
            *stage_params.repository_params(repository, "reranker")
        )
        return self

    def __call__(
        self,
        query: str = "",
        *,
        user_id: int = -1,
        history_ids: np.ndarray | None = None,
        history_ts: np.ndarray | None = None,
        k: int = 10,
        budget_ms: float = 50.0,
    ) -> Recommendation:
        """Recommend ``k`` items; errors are the stages' (``RequestError`` for bad input)."""
        hist = np.asarray(history_ids if history_ids is not None else [], np.int64)
        ts = np.asarray(history_ts if history_ts is not None else [], np.int64)
        tok = self.tokenizer.infer({"QUERY": np.array([query.encode()], dtype=object)})
        user = self.user_tower.infer(
            {
                "INPUT_IDS": tok["INPUT_IDS"],
                "ATTENTION_MASK": tok["ATTENTION_MASK"],
                "HAS_QUERY": tok["HAS_QUERY"],
                "USER_ID": np.array([user_id], np.int64),
                "HISTORY_IDS": hist,
                "HISTORY_TS": ts,
            }
        )
        cands = self.retriever.infer(
            {
                "USER_VECTOR": user["USER_VECTOR"],
                "K": np.array([k], np.int32),
                "HAS_QUERY": tok["HAS_QUERY"],
                "HISTORY_IDS": user["HISTORY_USED"],
            }
        )
        out = self.reranker.infer(
            {
                "QUERY": np.array([query.encode()], dtype=object),
                "HISTORY_IDS": user["HISTORY_USED"],
                "CANDIDATE_IDS": cands["CANDIDATE_IDS"],
                "CANDIDATE_SCORES": cands["CANDIDATE_SCORES"],
                "K": np.array([k], np.int32),
                "BUDGET_MS": np.array([budget_ms], np.float32),
                "START_NS": tok["START_NS"],
            }
        )
        return Recommendation(
            out["ITEM_IDS"], out["SCORES"], int(out["N_SCORED"][0]), bool(out["DEGRADED"][0])
        )
