"""The retriever's popularity prior, moving with the live event stream (issue 12 item 3).

The bundle's prior (towers/prior.py) is the standardised ``log1p`` of each item's interaction
count decayed by age (half-life ``half_life_s``) as of the training cut ``at_ts``. Frozen, it
cannot see what starts selling after the cut. :class:`MovingPrior` keeps the raw decayed counts
and, every ``refresh_s`` seconds, reads the events recorded since its cursor from the event
store (:meth:`serving.events.store.EventStore.since`), decays every count to the new "now" and
adds the new events, then recomputes the values with the bundle's *own* ``mean`` and ``std``,
so the weight fitted at training keeps its meaning. No model update is involved.

The clock of the decay is *event time*, not wall time: "now" is the newest event time seen
(at least ``at_ts``). Events replayed from a data set carry its (possibly years old) times; a
wall clock would decay every count to zero, while event time decays them exactly as the same
events arriving live would. Events older than ``at_ts`` are skipped (the bundle's counts
already hold every event before the cut), and so are events of items the prior does not know
(items added after export keep the ``default`` value).

Refreshes never block a request on I/O: a request that finds the prior older than
``refresh_s`` starts one background refresh (one at a time) and is answered with the values
as they are; the next requests see the new ones. An idle server therefore refreshes on its
first request after the gap. A refresh reads at most ``max_events`` events (the rest wait for
the next one). A store that fails leaves the prior as it was (logged at most every
``log_every_s``, counted in ``failures``).

Limits: a reader restarted later recounts only what the store still keeps (each user's newest
``events_per_user``; Redis's stream its newest ``stream_cap``), so old events trimmed by then
are missing from a restarted instance's counts; each retriever instance keeps its own counts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from serving.bundle import load_manifest
from serving.events.settings import DEFAULT_REFRESH_S, EventSettings, open_store
from serving.events.store import EventStore, EventStoreError
from serving.retriever import Retriever
from towers.bundle_contract import PRIOR_BUNDLE_FILE
from towers.features import PriorLookup

log = logging.getLogger(__name__)

__all__ = ["MovingPrior", "attach_moving_prior"]

#: Events one :meth:`MovingPrior.refresh` reads at most (in reads of ``READ_BATCH``).
MAX_EVENTS_PER_REFRESH = 200_000
READ_BATCH = 20_000


class MovingPrior(PriorLookup):
    """A :class:`PriorLookup` whose values follow the events in ``store``.

    ``item_ids`` and ``counts`` (float64, raw decayed counts as of ``at_ts`` unix s) come
    from the bundle, as do ``half_life_s`` and the standardisation ``mean``/``std``.
    ``refresh_s`` is the least wall time between two automatic refreshes (``<= 0``: only
    explicit :meth:`refresh` calls); ``clock`` the wall clock in seconds.
    """

    def __init__(
        self,
        item_ids: np.ndarray,
        counts: np.ndarray,
        *,
        at_ts: int,
        half_life_s: float,
        mean: float,
        std: float,
        store: EventStore,
        refresh_s: float = DEFAULT_REFRESH_S,
        max_events: int = MAX_EVENTS_PER_REFRESH,
        log_every_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not half_life_s > 0 or not std > 0:
            raise ValueError(f"half_life_s and std must be > 0, got {half_life_s} and {std}")
        if max_events < 1:
            raise ValueError(f"max_events must be >= 1, got {max_events}")
        raw = np.asarray(counts, np.float64)
        self.mean, self.std = float(mean), float(std)
        super().__init__(item_ids, self._standardise(raw), -self.mean / self.std)
        order = np.argsort(np.asarray(item_ids, np.int64), kind="stable")  # as PriorLookup's
        self.counts = raw[order]
        self.half_life_s = float(half_life_s)
        self.at_ts = int(at_ts)
        #: The event time (unix s) the counts are decayed to: the newest event seen.
        self.now_ts = int(at_ts)
        self.store = store
        self.refresh_s = float(refresh_s)
        self.max_events = int(max_events)
        self.clock = clock
        #: Store position of the last event read (0: from the first event kept).
        self.cursor = 0
        #: Refreshes done, events counted, events skipped (before ``at_ts`` or unknown item),
        #: failed refreshes.
        self.refreshes = self.counted = self.skipped = self.failures = 0
        self.log_every_s = log_every_s
        self._logged_at = -float("inf")
        self._lock = threading.Lock()  # one refresh at a time
        self._state = threading.Lock()  # guards the scheduling fields below
        self._running = False
        self._tried_at = -float("inf")

    def _standardise(self, counts: np.ndarray) -> np.ndarray:
        return ((np.log1p(counts) - self.mean) / self.std).astype(np.float32)

    def __call__(self, item_ids: np.ndarray) -> np.ndarray:
        """Prior values (float32, the shape of ``item_ids``); may start a background refresh."""
        self._maybe_refresh()
        return super().__call__(item_ids)

    def _maybe_refresh(self) -> None:
        if self.refresh_s <= 0:
            return
        now = self.clock()
        with self._state:
            if self._running or now - self._tried_at < self.refresh_s:
                return
            self._running, self._tried_at = True, now
        threading.Thread(target=self._background, name="prior-refresh", daemon=True).start()

    def _background(self) -> None:
        try:
            self.refresh()
        except Exception:  # a bug must not kill the serving process: log it, keep the prior
            log.exception("moving prior: refresh failed; the prior stays as it was")
        finally:
            with self._state:
                self._running = False

    def refresh(self) -> int:
        """Read the events recorded since the cursor, decay the counts to the newest event
        time and add the new events, then swap in the new values. Returns the events counted;
        0 when the store failed (the prior unchanged, the failure logged and counted)."""
        with self._lock:
            item_parts: list[np.ndarray] = []
            ts_parts: list[np.ndarray] = []
            cursor, read = self.cursor, 0
            try:
                while read < self.max_events:
                    limit = min(READ_BATCH, self.max_events - read)
                    cursor, items, ts = self.store.since(cursor, limit)
                    item_parts.append(items)
                    ts_parts.append(ts)
                    read += len(items)
                    if len(items) < limit:
                        break
            except EventStoreError as exc:
                self._failed(exc)
                return 0
            self.cursor = cursor
            added = self._add(np.concatenate(item_parts), np.concatenate(ts_parts)) if read else 0
            self.refreshes += 1
            return added

    def _add(self, item_ids: np.ndarray, ts: np.ndarray) -> int:
        pos = np.minimum(np.searchsorted(self.ids, item_ids), max(len(self.ids) - 1, 0))
        known = (self.ids[pos] == item_ids) if len(self.ids) else np.zeros(len(ts), bool)
        keep = known & (ts >= self.at_ts)
        self.skipped += int(len(ts) - keep.sum())
        if not keep.any():
            return 0
        pos, ts = pos[keep], ts[keep]
        now = max(self.now_ts, int(ts.max()))
        counts = self.counts * np.exp2(-(now - self.now_ts) / self.half_life_s)
        np.add.at(counts, pos, np.exp2(-(now - ts) / self.half_life_s))
        self.counts, self.now_ts = counts, now
        self.values = self._standardise(counts)  # one reference swap: readers see old or new
        self.counted += len(ts)
        return len(ts)

    def _failed(self, exc: Exception) -> None:
        self.failures += 1
        now = self.clock()
        if now - self._logged_at >= self.log_every_s:
            self._logged_at = now
            log.warning(
                "moving prior: event store unavailable, the prior stays as it was "
                "(%d failures): %s",
                self.failures,
                exc,
            )

    def stats(self) -> dict[str, int | float]:
        """Counters for logs and tests: refreshes, counted, skipped, failures, cursor, now_ts."""
        return {
            "refreshes": self.refreshes,
            "counted": self.counted,
            "skipped": self.skipped,
            "failures": self.failures,
            "cursor": self.cursor,
            "now_ts": self.now_ts,
        }


def attach_moving_prior(
    retriever: Retriever, folder: Path, params: Mapping[str, str]
) -> MovingPrior | None:
    """Give ``retriever`` (a :class:`serving.retriever.Retriever`) a :class:`MovingPrior`
    over the event store its ``params`` name (serving.events.settings; the repository is
    ``folder``'s grandparent), and return it; ``None`` (the prior stays frozen, logged) when
    ``prior`` is ``frozen``, events are ``off``, the retriever has no prior, the bundle
    predates the moving prior (no raw counts, or no ``mean``/``std`` in the manifest), or the
    store cannot be opened."""
    folder = Path(folder)
    settings = EventSettings.from_params(params, folder.resolve().parent.parent)
    if settings.prior == "frozen" or retriever.prior is None:
        why = "configured" if retriever.prior is not None else "the model has no prior"
        log.info("retriever prior: frozen (%s)", why)
        return None
    if settings.store == "off":
        log.info("retriever prior: frozen (live events are off)")
        return None
    meta = load_manifest(folder).prior
    try:
        with np.load(folder / PRIOR_BUNDLE_FILE) as doc:
            item_ids, counts = doc["item_ids"], doc["counts"] if "counts" in doc else None
    except (OSError, ValueError, KeyError) as exc:
        log.warning("retriever prior: frozen (%s unreadable: %s)", folder / PRIOR_BUNDLE_FILE, exc)
        return None
    if counts is None or "mean" not in meta or "std" not in meta:
        log.warning(
            "retriever prior: frozen (the bundle in %s predates the moving prior: no raw counts; "
            "export it again to let the prior move with live events)",
            folder,
        )
        return None
    try:
        store = open_store(settings)
    except EventStoreError as exc:
        log.error("retriever prior: frozen (event store: %s)", exc)
        return None
    assert store is not None  # "off" returned above
    moving = MovingPrior(
        item_ids,
        counts,
        at_ts=int(meta["at_ts"]),
        half_life_s=float(meta["half_life_s"]),
        mean=float(meta["mean"]),
        std=float(meta["std"]),
        store=store,
        refresh_s=settings.prior_refresh_s,
    )
    retriever.prior = moving
    log.info(
        "retriever prior: moving with %s events, refreshed every %.1f s, from event time %d",
        settings.store,
        settings.prior_refresh_s,
        moving.at_ts,
    )
    return moving
