"""Evaluation systems that are the served path: the stages a written Triton repository runs.

``towerserve eval --repository R`` adds these beside the training-side systems
(``student_faiss`` and ``student_faiss_rerank`` run the trained PyTorch towers in process:
the model as trained, not what the server runs). They build
:class:`serving.pipeline.InProcessRecommend` from ``R``'s ``config.pbtxt`` parameters with the
code the ``model.py`` files run (serving.stage_params): the exported graphs in the runtime and
precision the repository serves (OpenVINO bf16 on the CPU by default), the FAISS index with
its search parameters, the prior, the reranker's budget rule and blend. A test checks that the
real server's top 10 equals this path's.

* ``served``: budget 0 (retrieval only: tokenizer, user tower, retriever; the reranker passes
  candidates through in retrieval order);
* ``served_rerank``: the same requests with ``budget_ms`` (default 25 ms), so the cross-encoder
  scores as many candidates as fit, one request at a time on this machine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from serving.pipeline import InProcessRecommend
from towers.evaluation.recommend import RecSystem
from towers.evaluation.search import SearchSystem
from towers.features import LONG_HISTORY, MAX_HISTORY
from towers.next_item import NextItemTask

__all__ = [
    "SERVED_SYSTEMS",
    "exclusion_advice",
    "served_recommendation_systems",
    "served_search_systems",
]

#: Names of the served systems (module docstring).
SERVED_SYSTEMS = ("served", "served_rerank")


def _budgets(budget_ms: float) -> dict[str, float]:
    return {"served": 0.0, "served_rerank": float(budget_ms)}


def served_search_systems(
    recommend: InProcessRecommend, budget_ms: float = 25.0
) -> dict[str, SearchSystem]:
    """Search systems: the query alone (no user, no history), ``k`` capped at the served
    ``max_k`` (deeper cut-offs count only what the server can return)."""
    max_k = recommend.reranker.max_k
    systems: dict[str, SearchSystem] = {}
    for name, budget in _budgets(budget_ms).items():

        def search(query: str, k: int, budget: float = budget) -> list[int]:
            out = recommend(query, k=min(k, max_k), budget_ms=budget)
            return [int(i) for i in out.item_ids]

        systems[name] = search
    return systems


def served_recommendation_systems(
    recommend: InProcessRecommend, budget_ms: float = 25.0
) -> dict[str, RecSystem]:
    """Next-item systems: an empty query with the user's history before the window (ids and
    times, up to ``LONG_HISTORY``, as a frontend sends them), ``k`` plus the history asked
    for (capped at the served ``max_k``) and the history removed from the answer, as the
    other systems do."""
    max_k = recommend.reranker.max_k
    systems: dict[str, RecSystem] = {}
    for name, budget in _budgets(budget_ms).items():

        def rec(task: NextItemTask, k: int, budget: float = budget) -> list[list[int]]:
            ranked = []
            # the longer history, as a frontend with the user's events sends it: the user tower
            # encodes its newest MAX_HISTORY and hands the rest on to co-visitation
            histories = zip(task.long_histories, task.long_times, task.excluded, strict=True)
            for hist, ts, skip in histories:
                seen = set(map(int, skip))
                out = recommend(
                    "",
                    history_ids=np.asarray(hist, np.int64),
                    history_ts=np.asarray(ts, np.int64),
                    k=min(max_k, k + len(seen)),
                    budget_ms=budget,
                )
                ranked.append([int(i) for i in out.item_ids if int(i) not in seen][:k])
            return ranked

        systems[name] = rec
    return systems


#: The newest history items each recommendation protocol leaves out of a user's list
#: (towers.next_item: the time protocol's history is the newest 20 events; the random
#: protocol excludes every training item, at most what a request hands on).
PROTOCOL_EXCLUDES = {"time": MAX_HISTORY, "random": LONG_HISTORY}


def exclusion_advice(exclude_recent: int, protocol: str) -> str | None:
    """A warning when a repository's ``exclude_recent`` leaves in history items that
    ``protocol`` removes from the served lists afterwards (they come back short of ``K``
    and the served top-100 accuracy is understated against the baselines); ``None`` when
    it covers them."""
    wanted = PROTOCOL_EXCLUDES.get(protocol)
    if wanted is None or exclude_recent >= wanted:
        return None
    return (
        f"the repository excludes the newest {exclude_recent} history items, the {protocol} "
        f"protocol removes up to {wanted} from each served list afterwards: the served lists "
        f"come back short of 100 and their top-100 accuracy is understated; export with "
        f"`--exclude-recent {wanted}` to compare it with the baselines"
    )


def load_served(repository: Path) -> InProcessRecommend:
    """The served path of ``repository`` (serving.pipeline.InProcessRecommend)."""
    return InProcessRecommend.from_repository(Path(repository))
