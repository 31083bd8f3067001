"""Typed gRPC client for a running towerserve Triton server.

```python
from client import TowerServeClient
with TowerServeClient("localhost:8001") as c:
    rec = c.recommend("red cotton t-shirt", user_id=42, k=10, budget_ms=50)
    vecs = c.embed_items(["Veltro red cotton t-shirt, size M"])
```
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

log = logging.getLogger(__name__)

#: Spacing given to history items sent without timestamps (oldest first), seconds.
DEFAULT_HISTORY_SPACING_S = 60


class TowerServeError(RuntimeError):
    """The server rejected a request or could not be reached; the message says why."""


@dataclass(frozen=True)
class Recommendation:
    """One ``recommend`` answer: best first."""

    item_ids: list[int]
    scores: list[float]
    titles: list[str]
    n_scored: int  # candidates the cross-encoder scored within the budget
    degraded: bool  # True when some candidates were left unscored (budget ran out)
    latency_ms: float  # client-side round trip
    #: ``<version folder>:<model version>`` of user_tower, retriever and reranker (one model
    #: version in a well-formed answer); empty from a server exported before versions existed
    served_by: list[str] = field(default_factory=list)


class TowerServeClient:
    """Calls the ``recommend`` ensemble and the ``item_tower`` model over gRPC.

    ``url`` is ``host:port`` of Triton's gRPC endpoint; ``timeout_s`` bounds each call.
    """

    def __init__(
        self,
        url: str = "localhost:8001",
        *,
        timeout_s: float = 10.0,
        recommend_model: str = "recommend",
        item_model: str = "item_tower",
        verbose: bool = False,
    ) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.recommend_model = recommend_model
        self.item_model = item_model
        self._client = grpcclient.InferenceServerClient(url=url, verbose=verbose)
        self._served_by: bool | None = None  # whether recommend answers SERVED_BY (asked once)

    def __enter__(self) -> TowerServeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def ready(self) -> bool:
        """True when the server and the recommend model are ready."""
        try:
            return bool(
                self._client.is_server_ready() and self._client.is_model_ready(self.recommend_model)
            )
        except InferenceServerException:
            return False

    def recommend(
        self,
        query: str = "",
        *,
        user_id: int = -1,
        history: Sequence[int] = (),
        history_ts: Sequence[int] | None = None,
        k: int = 10,
        budget_ms: float = 50.0,
    ) -> Recommendation:
        """Top-``k`` items for a query and/or a user.

        ``history`` are recent item ids, oldest first, with ``history_ts`` their unix times in
        seconds (taken as one minute apart when omitted). ``user_id`` -1 means anonymous; a
        known user with no ``history`` gets the history the server stores. ``budget_ms`` bounds
        the reranking time; 0 skips reranking.
        """
        hist = np.asarray(list(history), dtype=np.int64)
        if history_ts is None:
            now = int(time.time())
            ts = now - DEFAULT_HISTORY_SPACING_S * np.arange(len(hist))[::-1]
        else:
            ts = np.asarray(list(history_ts), dtype=np.int64)
        inputs = [
            _tensor("QUERY", np.array([query.encode("utf-8")], dtype=np.object_), "BYTES"),
            _tensor("USER_ID", np.array([user_id], dtype=np.int64), "INT64"),
            _tensor("HISTORY_IDS", hist, "INT64"),
            _tensor("HISTORY_TS", ts.astype(np.int64), "INT64"),
            _tensor("K", np.array([k], dtype=np.int32), "INT32"),
            _tensor("BUDGET_MS", np.array([budget_ms], dtype=np.float32), "FP32"),
        ]
        names = ["ITEM_IDS", "SCORES", "ITEM_TITLES", "N_SCORED", "DEGRADED"]
        if self._answers_served_by():
            names.append("SERVED_BY")
        start = time.perf_counter()
        result = self._infer(self.recommend_model, inputs, names)
        latency_ms = (time.perf_counter() - start) * 1000
        titles = [t.decode("utf-8", "replace") for t in result.as_numpy("ITEM_TITLES").ravel()]
        served_by = result.as_numpy("SERVED_BY") if "SERVED_BY" in names else None
        return Recommendation(
            item_ids=[int(i) for i in result.as_numpy("ITEM_IDS").ravel()],
            scores=[float(s) for s in result.as_numpy("SCORES").ravel()],
            titles=titles,
            n_scored=int(result.as_numpy("N_SCORED").ravel()[0]),
            degraded=bool(result.as_numpy("DEGRADED").ravel()[0]),
            latency_ms=latency_ms,
            served_by=[]
            if served_by is None
            else [v.decode("utf-8", "replace") for v in served_by.ravel()],
        )

    def _answers_served_by(self) -> bool:
        """Whether the server's ``recommend`` declares ``SERVED_BY`` (read from its config
        once; a server that cannot say is asked again next time)."""
        if self._served_by is None:
            try:
                config = self._client.get_model_config(
                    self.recommend_model, client_timeout=self.timeout_s
                ).config
            except InferenceServerException:
                return False  # the request itself then reports what is wrong
            self._served_by = any(o.name == "SERVED_BY" for o in config.output)
        return self._served_by

    def model_parameters(self, model: str) -> dict[str, str]:
        """The ``parameters`` of ``model``'s config on the server (string values, as in its
        ``config.pbtxt``); raises :class:`TowerServeError` when the model is unknown or the
        server cannot be reached."""
        try:
            config = self._client.get_model_config(model, client_timeout=self.timeout_s).config
        except InferenceServerException as exc:
            raise TowerServeError(f"{model}: {exc.message()}") from exc
        return {key: value.string_value for key, value in config.parameters.items()}

    def embed_items(self, texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
        """Item-tower vectors, float32 ``[len(texts), dim]``, L2-normalised.

        Sends ``batch_size`` texts per request (1 to 256; at most the model's
        ``max_batch_size``: 256 for a repository exported now, 64 before). For whole catalogs
        use ``towerserve embed --engine triton`` (many requests in flight, resumable).
        """
        if not 1 <= batch_size <= 256:
            raise ValueError(f"batch_size must be in 1..256, got {batch_size}")
        out = []
        for start in range(0, len(texts), batch_size):
            chunk = [t.encode("utf-8") for t in texts[start : start + batch_size]]
            data = np.array(chunk, dtype=np.object_).reshape(-1, 1)
            result = self._infer(
                self.item_model, [_tensor("ITEM_TEXT", data, "BYTES")], ["ITEM_VECTOR"]
            )
            out.append(result.as_numpy("ITEM_VECTOR"))
        if not out:
            return np.zeros((0, 0), dtype=np.float32)
        return np.concatenate(out).astype(np.float32)

    def _infer(
        self, model: str, inputs: list[grpcclient.InferInput], outputs: list[str]
    ) -> grpcclient.InferResult:
        try:
            return self._client.infer(
                model,
                inputs,
                outputs=[grpcclient.InferRequestedOutput(n) for n in outputs],
                client_timeout=self.timeout_s,
            )
        except InferenceServerException as exc:
            raise TowerServeError(f"{model}: {exc.message()}") from exc


def _tensor(name: str, data: np.ndarray, dtype: str) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, list(data.shape), dtype)
    tensor.set_data_from_numpy(data)
    return tensor
