"""Writing live user events to a running server (the ``events`` model, serving/events).

```python
from client.events import EventsClient
with EventsClient("localhost:8001") as events:
    events.record(user_id=42, item_ids=[1001], event_types="view")   # ts: now
```

A request is recorded whole or not at all: when one event of it is bad (unknown item id, event
type, a time more than the server's skew, 60 s by default, in the future, a user over the rate
limit) the server refuses all of it and :class:`client.grpc_client.TowerServeError` says which
events and why. :func:`replay` streams a data set's events in time order, at a chosen speed.
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from client.grpc_client import TowerServeError

log = logging.getLogger(__name__)

__all__ = ["EVENT_COLUMNS", "EventsClient", "ReplayReport", "replay"]

#: Integers per event: a sequence or an int64 array.
Ints = Sequence[int] | np.ndarray

#: Columns a replayed events table needs (``event_type`` defaults to ``view`` when absent).
EVENT_COLUMNS = ("user_id", "item_id", "ts")


class EventsClient:
    """Calls the ``events`` model over gRPC at ``url`` (``host:port``); ``timeout_s`` bounds
    each call."""

    def __init__(
        self, url: str = "localhost:8001", *, timeout_s: float = 10.0, model: str = "events"
    ) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.model = model
        self._client = grpcclient.InferenceServerClient(url=url)

    def __enter__(self) -> EventsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def record(
        self,
        user_id: int | Ints,
        item_ids: Ints,
        *,
        event_types: str | Sequence[str] = "view",
        ts: int | Ints | None = None,
    ) -> int:
        """Record events ``item_ids`` of ``user_id`` (one id for all, or one per event) with
        ``event_types`` (one for all, or one per event: view, click, add_to_cart, purchase)
        at ``ts`` (unix s; one for all or one per event; default now). Returns the number
        recorded (all of them); raises :class:`TowerServeError` with the server's reason when
        the batch is refused (then none is recorded)."""
        n = len(item_ids)
        items = np.asarray(list(item_ids), dtype=np.int64)

        def per_event(value: object, name: str, dtype: type) -> np.ndarray:
            if isinstance(value, str | int | np.integer):
                return np.full(n, value, dtype=dtype)
            arr: np.ndarray = np.asarray(list(value), dtype=dtype)  # type: ignore[call-overload]
            if len(arr) != n:
                raise ValueError(f"{name} has {len(arr)} entries for {n} events")
            return arr

        users = per_event(user_id, "user_id", np.int64)
        times = per_event(int(time.time()) if ts is None else ts, "ts", np.int64)
        kinds = per_event(event_types, "event_types", object)
        inputs = [
            _tensor("USER_IDS", users, "INT64"),
            _tensor("ITEM_IDS", items, "INT64"),
            _tensor("TS", times, "INT64"),
            _tensor("EVENT_TYPES", np.array([str(k).encode() for k in kinds], object), "BYTES"),
        ]
        try:
            result = self._client.infer(
                self.model,
                inputs,
                outputs=[grpcclient.InferRequestedOutput("N_RECORDED")],
                client_timeout=self.timeout_s,
            )
        except InferenceServerException as exc:
            raise TowerServeError(f"{self.model}: {exc.message()}") from exc
        return int(result.as_numpy("N_RECORDED").ravel()[0])


@dataclass
class ReplayReport:
    """What a replay did: events ``sent``, ``recorded``, ``refused`` (with the first few
    reasons), ``requests`` made and ``wall_s`` taken."""

    sent: int = 0
    recorded: int = 0
    refused: int = 0
    requests: int = 0
    wall_s: float = 0.0
    reasons: Counter[str] = field(default_factory=Counter)


def replay(
    client: EventsClient,
    events: pd.DataFrame,
    *,
    speed: float | None,
    batch_size: int = 500,
    on_sent: Callable[[int], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> ReplayReport:
    """Send ``events`` (columns :data:`EVENT_COLUMNS`, optional ``event_type``) in time order
    as a live stream: an event ``d`` seconds after the first is sent ``d / speed`` seconds
    after the start (``speed`` None: as fast as the server takes them), with the times it
    has in the table. Events due together go in one request of at most ``batch_size``; a
    refused request is retried one event at a time so only the bad events are lost (counted,
    with the server's reason). ``on_sent(n)`` is called after each request."""
    missing = [c for c in EVENT_COLUMNS if c not in events.columns]
    if missing:
        raise ValueError(
            f"the events table lacks columns {missing} (needs {', '.join(EVENT_COLUMNS)}; "
            "event_type optional)"
        )
    if speed is not None and not speed > 0:
        raise ValueError(f"speed must be > 0, got {speed}")
    table = events.sort_values("ts", kind="stable")
    users = table["user_id"].to_numpy(np.int64)
    items = table["item_id"].to_numpy(np.int64)
    ts = table["ts"].to_numpy(np.int64)
    kinds = (
        table["event_type"].astype(str).to_numpy()
        if "event_type" in table.columns
        else np.full(len(table), "view", dtype=object)
    )
    report = ReplayReport()
    start = clock()
    t0 = int(ts[0]) if len(ts) else 0
    i = 0
    while i < len(ts):
        if speed is None:
            j = min(len(ts), i + batch_size)
        else:
            due = start + (ts[i] - t0) / speed
            wait_s = due - clock()
            if wait_s > 0:
                sleep(wait_s)
            now_data = t0 + (clock() - start) * speed
            j = int(np.searchsorted(ts, now_data, side="right"))
            j = min(max(j, i + 1), i + batch_size)
        rows = slice(i, j)
        _send(client, users[rows], items[rows], ts[rows], kinds[rows], report)
        if on_sent is not None:
            on_sent(j - i)
        i = j
    report.wall_s = clock() - start
    return report


def _send(
    client: EventsClient,
    users: np.ndarray,
    items: np.ndarray,
    ts: np.ndarray,
    kinds: np.ndarray,
    report: ReplayReport,
) -> None:
    report.sent += len(items)
    report.requests += 1
    try:
        report.recorded += client.record(users, items, event_types=list(kinds), ts=ts)
        return
    except TowerServeError as exc:
        if "refused" not in str(exc):  # not a verdict on the events: the server is unusable
            raise
        if len(items) == 1:
            report.refused += 1
            report.reasons[_reason(str(exc))] += 1
            return
    for k in range(len(items)):  # the batch was refused: find the bad events one by one
        report.requests += 1
        try:
            report.recorded += client.record(
                int(users[k]), [int(items[k])], event_types=str(kinds[k]), ts=int(ts[k])
            )
        except TowerServeError as exc:
            if "refused" not in str(exc):
                raise
            report.refused += 1
            report.reasons[_reason(str(exc))] += 1


def _reason(message: str) -> str:
    """The part of a refusal after the event it names, numbers masked so that reasons group
    (``item id N is not in the catalog``)."""
    return re.sub(r"\d+(\.\d+)?", "N", message.rsplit("): ", 1)[-1])[:120]


def _tensor(name: str, data: np.ndarray, dtype: str) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, list(data.shape), dtype)
    tensor.set_data_from_numpy(data)
    return tensor
