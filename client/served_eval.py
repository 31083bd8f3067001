"""Evaluation systems that are the served path: the stages a written Triton repository runs.

``towerserve eval --repository R`` adds these beside the training-side systems
(``student_faiss`` and ``student_faiss_rerank`` run the trained PyTorch towers in process:
the model as trained, not what the server runs). They build
:class:`serving.pipeline.InProcessRecommend` from ``R``'s ``config.pbtxt`` parameters with the
code the ``model.py`` files run (serving.stage_params): the exported graphs in the runtime and
precision the repository serves (OpenVINO bf16 on the CPU by default), the FAISS index with
its search parameters, the prior, the reranker's budget rule and blend. A test checks that the
real server's top 10 equals this path's.

``towerserve eval --url HOST:PORT`` asks a running server instead, one gRPC request per query
or user (:func:`connect_served`): the same systems, measured on what that server serves
(its repository, its settings, its live state), so a deployment is evaluated as it stands.

* ``served``: budget 0 (retrieval only: tokenizer, user tower, retriever; the reranker passes
  candidates through in retrieval order);
* ``served_rerank``: the same requests with ``budget_ms`` (default 25 ms), so the cross-encoder
  scores as many candidates as fit, one request at a time on this machine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from towers.evaluation.recommend import RecSystem
from towers.evaluation.search import SearchSystem
from towers.features import LONG_HISTORY, MAX_HISTORY
from towers.next_item import NextItemTask

__all__ = [
    "SERVED_SYSTEMS",
    "ServedPath",
    "connect_served",
    "exclusion_advice",
    "load_served",
    "served_recommendation_systems",
    "served_search_systems",
]

#: Names of the served systems (module docstring).
SERVED_SYSTEMS = ("served", "served_rerank")


def _budgets(budget_ms: float) -> dict[str, float]:
    return {"served": 0.0, "served_rerank": float(budget_ms)}


#: ``ask(query, history_ids, history_ts, k, budget_ms)`` -> item ids, best first.
Ask = Callable[[str, np.ndarray, np.ndarray, int, float], list[int]]

_NO_IDS = np.zeros(0, np.int64)


@dataclass(frozen=True)
class ServedPath:
    """One way to reach the served path.

    ``ask`` sends one ``recommend`` request (history ids and their unix times in seconds,
    oldest first; ``budget_ms`` the reranking budget, 0 for retrieval only) and returns the
    item ids, best first; ``max_k`` is the longest list it returns (the reranker's
    ``max_k``), ``exclude_recent`` the retriever's setting, ``where`` what was asked (for
    messages and the report); ``close`` releases what it holds (a gRPC channel).
    """

    ask: Ask
    max_k: int
    exclude_recent: int
    where: str
    close: Callable[[], None] = lambda: None


def served_search_systems(path: ServedPath, budget_ms: float = 25.0) -> dict[str, SearchSystem]:
    """Search systems: the query alone (no user, no history), ``k`` capped at the served
    ``max_k`` (deeper cut-offs count only what the server can return)."""
    max_k = path.max_k
    systems: dict[str, SearchSystem] = {}
    for name, budget in _budgets(budget_ms).items():

        def search(query: str, k: int, budget: float = budget) -> list[int]:
            return path.ask(query, _NO_IDS, _NO_IDS, min(k, max_k), budget)

        systems[name] = search
    return systems


def served_recommendation_systems(
    path: ServedPath, budget_ms: float = 25.0
) -> dict[str, RecSystem]:
    """Next-item systems: an empty query with the user's history before the window (ids and
    times, up to ``LONG_HISTORY``, as a frontend sends them), ``k`` plus the history asked
    for (capped at the served ``max_k``) and the history removed from the answer, as the
    other systems do."""
    max_k = path.max_k
    systems: dict[str, RecSystem] = {}
    for name, budget in _budgets(budget_ms).items():

        def rec(task: NextItemTask, k: int, budget: float = budget) -> list[list[int]]:
            ranked = []
            # the longer history, as a frontend with the user's events sends it: the user tower
            # encodes its newest MAX_HISTORY and hands the rest on to co-visitation
            histories = zip(task.long_histories, task.long_times, task.excluded, strict=True)
            for hist, ts, skip in histories:
                seen = set(map(int, skip))
                ids = path.ask(
                    "",
                    np.asarray(hist, np.int64),
                    np.asarray(ts, np.int64),
                    min(max_k, k + len(seen)),
                    budget,
                )
                ranked.append([i for i in ids if i not in seen][:k])
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


def load_served(repository: Path) -> ServedPath:
    """The served path of ``repository``, run in this process
    (serving.pipeline.InProcessRecommend: the stages as the repository configures them)."""
    from serving.pipeline import InProcessRecommend

    served = InProcessRecommend.from_repository(Path(repository))

    def ask(query: str, hist: np.ndarray, ts: np.ndarray, k: int, budget_ms: float) -> list[int]:
        out = served(query, history_ids=hist, history_ts=ts, k=k, budget_ms=budget_ms)
        return [int(i) for i in out.item_ids]

    return ServedPath(
        ask=ask,
        max_k=int(served.reranker.max_k),
        exclude_recent=int(served.retriever.exclude_recent),
        where=f"repository {repository}, in process",
    )


def connect_served(url: str, timeout_s: float = 30.0) -> ServedPath:
    """The served path of the running server at ``url`` (``host:port`` of Triton's gRPC
    endpoint), one ``recommend`` request per call, each bounded by ``timeout_s``. ``max_k``
    and ``exclude_recent`` are read from the server's reranker and retriever configs. Raises
    :class:`client.grpc_client.TowerServeError` when the server cannot be reached, is not
    ready, or does not serve a towerserve repository."""
    from client.grpc_client import TowerServeClient, TowerServeError

    client = TowerServeClient(url, timeout_s=timeout_s)
    if not client.ready():
        client.close()
        raise TowerServeError(
            f"no ready server at {url}: start one with `towerserve serve` and give its gRPC "
            "address (host:port, default port 8001)"
        )
    try:
        max_k = int(client.model_parameters("reranker")["max_k"])
        exclude_recent = int(client.model_parameters("retriever").get("exclude_recent", "0"))
    except (KeyError, ValueError) as exc:
        client.close()
        raise TowerServeError(
            f"the server at {url} does not serve a towerserve repository: {exc}"
        ) from exc

    def ask(query: str, hist: np.ndarray, ts: np.ndarray, k: int, budget_ms: float) -> list[int]:
        rec = client.recommend(
            query, history=hist.tolist(), history_ts=ts.tolist(), k=k, budget_ms=budget_ms
        )
        return rec.item_ids

    return ServedPath(
        ask=ask,
        max_k=max_k,
        exclude_recent=exclude_recent,
        where=f"server {url}, gRPC",
        close=client.close,
    )
