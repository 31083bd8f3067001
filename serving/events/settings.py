"""Which event store the served models use, carried as Triton config parameters.

The ``user_tower`` and ``events`` models read the same parameters from their ``config.pbtxt``
(as every stage reads its settings, serving.stage_params):

* ``events_store``: ``sqlite`` (default), ``redis`` or ``off``;
* ``events_path``: the SQLite file; empty means ``<repository>.events.sqlite`` beside the
  repository folder;
* ``redis_url``: ``redis://host:port/db`` for ``redis``;
* ``events_per_user``: events kept per user (default 100);
* ``prior`` (``retriever`` only): ``moving`` (default: the popularity prior follows the event
  stream, serving/prior_stream.py) or ``frozen``; ``prior_refresh_s`` the seconds between its
  refreshes (default 2; 0: never on its own).

``towerserve serve --events ...`` writes them into a repository with
:func:`configure_repository` before it starts the server.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from serving.backend import float_parameter, int_parameter
from serving.events.store import DEFAULT_MAX_PER_USER, EventStore, EventStoreError

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_REFRESH_S",
    "EVENT_MODELS",
    "PRIOR_MODES",
    "STORES",
    "EventSettings",
    "LiveHistory",
    "configure_repository",
    "default_path",
    "live_history",
    "open_store",
]

STORES = ("sqlite", "redis", "off")
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
#: The models that open the store (their config.pbtxt carries the parameters).
EVENT_MODELS = ("user_tower", "events", "retriever")
#: The retriever's popularity prior: ``moving`` with the event stream or ``frozen``.
PRIOR_MODES = ("moving", "frozen")
#: Seconds between refreshes of the moving prior.
DEFAULT_REFRESH_S = 2.0


def default_path(repository: Path) -> Path:
    """The SQLite file of a repository: ``<repository>.events.sqlite`` beside it (outside the
    folder, which ``towerserve export`` replaces whole)."""
    repository = Path(repository).resolve()
    return repository.parent / f"{repository.name}.events.sqlite"


@dataclass(frozen=True)
class EventSettings:
    """``store`` one of :data:`STORES`; ``path`` the SQLite file; ``redis_url``;
    ``max_per_user`` events kept per user; ``prior`` one of :data:`PRIOR_MODES` and
    ``prior_refresh_s`` the seconds between the moving prior's refreshes (0: only when
    asked)."""

    store: str = "sqlite"
    path: Path | None = None
    redis_url: str = DEFAULT_REDIS_URL
    max_per_user: int = DEFAULT_MAX_PER_USER
    prior: str = "moving"
    prior_refresh_s: float = DEFAULT_REFRESH_S

    def __post_init__(self) -> None:
        if self.store not in STORES:
            raise ValueError(f"event store must be one of {', '.join(STORES)}, got {self.store!r}")
        if self.max_per_user < 1:
            raise ValueError(f"events per user must be >= 1, got {self.max_per_user}")
        if self.prior not in PRIOR_MODES:
            raise ValueError(f"prior must be one of {', '.join(PRIOR_MODES)}, got {self.prior!r}")
        if not np.isfinite(self.prior_refresh_s) or self.prior_refresh_s < 0:
            raise ValueError(f"prior refresh must be >= 0 seconds, got {self.prior_refresh_s}")

    @classmethod
    def from_params(cls, params: Mapping[str, str], repository: Path) -> EventSettings:
        """The settings in a model's ``params``; the SQLite path defaults to
        :func:`default_path` of ``repository``."""
        per_user = int_parameter(params, "events_per_user", DEFAULT_MAX_PER_USER)
        refresh_s = float_parameter(params, "prior_refresh_s", DEFAULT_REFRESH_S)
        path = params.get("events_path", "").strip()
        return cls(
            store=params.get("events_store", "").strip() or "sqlite",
            path=Path(path) if path else default_path(repository),
            redis_url=params.get("redis_url", "").strip() or DEFAULT_REDIS_URL,
            max_per_user=per_user,
            prior=params.get("prior", "").strip() or "moving",
            prior_refresh_s=refresh_s,
        )

    def to_params(self) -> dict[str, str]:
        return {
            "events_store": self.store,
            "events_path": str(Path(self.path).resolve()) if self.path else "",
            "redis_url": self.redis_url,
            "events_per_user": str(self.max_per_user),
            "prior": self.prior,
            "prior_refresh_s": str(self.prior_refresh_s),
        }


def open_store(settings: EventSettings) -> EventStore | None:
    """The store ``settings`` name (``None`` for ``off``). Raises :class:`EventStoreError`
    when it cannot be opened."""
    if settings.store == "off":
        return None
    if settings.store == "redis":
        from serving.events.redis_store import RedisEventStore

        return RedisEventStore(settings.redis_url, max_per_user=settings.max_per_user)
    from serving.events.sqlite_store import SqliteEventStore

    if settings.path is None:
        raise EventStoreError("the sqlite event store needs a path")
    return SqliteEventStore(settings.path, max_per_user=settings.max_per_user)


class LiveHistory:
    """What the user tower reads: the newest ``n`` events of a user from ``store``. A store
    that fails (Redis down, disk error) costs the request its live events, not the request:
    :meth:`lookup` then returns nothing, counts the failure and logs it at most once every
    ``log_every_s`` seconds."""

    def __init__(self, store: EventStore, *, log_every_s: float = 10.0) -> None:
        self.store = store
        self.failures = 0
        self.log_every_s = log_every_s
        self._logged_at = -float("inf")

    def lookup(self, user_id: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``(item_ids, ts)`` oldest first; empty for an anonymous user (< 0) or on failure."""
        if user_id < 0:
            z = np.zeros(0, dtype=np.int64)
            return z, z.copy()
        try:
            return self.store.recent(user_id, n)
        except EventStoreError as exc:
            self.failures += 1
            now = time.monotonic()
            if now - self._logged_at >= self.log_every_s:
                self._logged_at = now
                log.warning(
                    "live events unavailable, serving without them (%d failures): %s",
                    self.failures,
                    exc,
                )
            z = np.zeros(0, dtype=np.int64)
            return z, z.copy()


def live_history(params: Mapping[str, str], repository: Path) -> LiveHistory | None:
    """The live event store a model's ``params`` name (for ``repository``), or ``None`` when
    events are off. A store that cannot be opened is logged as an error and the user tower
    serves without live events (``towerserve serve`` checks the store before it starts)."""
    settings = EventSettings.from_params(params, repository)
    try:
        store = open_store(settings)
    except EventStoreError as exc:
        log.error("serving without live events: %s", exc)
        return None
    return LiveHistory(store) if store is not None else None


def configure_repository(repository: Path, settings: EventSettings) -> None:
    """Write ``settings`` into the parameters of :data:`EVENT_MODELS` in ``repository``'s
    ``config.pbtxt`` files (each replaced atomically; leading comment lines kept). Raises
    ``FileNotFoundError`` naming a missing config (a repository exported before live events:
    export it again) and ``ValueError`` for a config that does not parse."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    repository = Path(repository)
    if settings.store == "sqlite" and settings.path is None:
        settings = replace(settings, path=default_path(repository))
    for model in EVENT_MODELS:
        path = repository / model / "config.pbtxt"
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} is missing: {repository} predates live events or is not a towerserve "
                "repository; write it again with `towerserve export`"
            )
        text = path.read_text()
        config = model_config_pb2.ModelConfig()
        try:
            text_format.Parse(text, config)
        except text_format.ParseError as exc:
            raise ValueError(f"{path} is not a valid model config: {exc}") from exc
        for key, value in settings.to_params().items():
            config.parameters[key].string_value = value
        header = []
        for line in text.splitlines():
            if not line.startswith("#"):
                break
            header.append(line)
        body = text_format.MessageToString(config)
        fd, tmp = tempfile.mkstemp(prefix=".config.", dir=path.parent)
        with os.fdopen(fd, "w") as f:
            f.write("\n".join([*header, body]) if header else body)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    log.info("repository %s: live events %s", repository, settings.to_params())
