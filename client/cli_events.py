"""``towerserve events``: record live user events on a running server, one by one or replayed
from a data set (the ``events`` model; serving/events)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from client.grpc_client import TowerServeError

EVENT_TYPES_HELP = "view, click, add_to_cart or purchase"

events_app = typer.Typer(
    help="Record live user events: the user tower reads a user's newest events by USER_ID "
    "when a recommend request carries no history.",
    no_args_is_help=True,
)
console = Console()

Url = Annotated[str, typer.Option("-u", "--url", help="Triton gRPC endpoint host:port.")]


def parse_speed(value: str) -> float | None:
    """``60x`` or ``60`` -> 60.0 (times real time); ``max`` -> None (as fast as possible)."""
    text = value.strip().lower()
    if text == "max":
        return None
    try:
        speed = float(text.removesuffix("x"))
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not a speed: give a factor of real time such as 60x, 1x or 0.5x, "
            "or max (as fast as the server takes them)",
            param_hint="--speed",
        ) from None
    if not speed > 0 or speed == float("inf"):
        raise typer.BadParameter(f"speed must be > 0, got {value!r}", param_hint="--speed")
    return speed


def parse_ts(value: str) -> int:
    """Unix seconds from ``value``: an integer, or an ISO 8601 date/time (UTC if no zone)."""
    text = value.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is neither unix seconds nor an ISO date/time (e.g. 2026-01-22T06:00)",
            param_hint="--ts",
        ) from None
    return int((when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp())


def configure_events(
    repository: Path,
    store: str | None,
    path: Path | None,
    redis_url: str | None,
    prior: str = "moving",
    prior_refresh_s: float = 2.0,
) -> None:
    """``serve --events/--prior``: check the chosen store opens (Redis answers), then write it
    (and how the retriever's prior follows it) into the repository's user_tower, events and
    retriever configs. Exits with a clear message otherwise."""
    from serving.events.redis_store import RedisEventStore
    from serving.events.settings import (
        DEFAULT_REDIS_URL,
        PRIOR_MODES,
        STORES,
        EventSettings,
        configure_repository,
        open_store,
    )
    from serving.events.store import EventStoreError

    if store is None:
        store = "redis" if redis_url is not None else "sqlite"
    if store not in STORES:
        raise typer.BadParameter(
            f"{store!r} is not an event store: use {', '.join(STORES)}", param_hint="--events"
        )
    if prior not in PRIOR_MODES:
        raise typer.BadParameter(
            f"{prior!r} is not a prior mode: use {', '.join(PRIOR_MODES)}", param_hint="--prior"
        )
    try:
        settings = EventSettings(
            store,
            path,
            redis_url or DEFAULT_REDIS_URL,
            prior=prior,
            prior_refresh_s=prior_refresh_s,
        )
        opened = open_store(settings)
        if isinstance(opened, RedisEventStore):
            opened.ping()
        if opened is not None:
            opened.close()
        configure_repository(repository, settings)
    except (EventStoreError, FileNotFoundError, ValueError) as exc:
        console.print(f"[red]--events {store}: {exc}[/red]")
        raise typer.Exit(2) from None
    where = {"sqlite": str(path or "beside the repository"), "redis": settings.redis_url}
    console.print(f"live events: {store} {where.get(store, '')}".rstrip())
    moves = store != "off" and prior == "moving"
    console.print(
        f"retriever prior: moving, refreshed every {prior_refresh_s:g} s"
        if moves
        else "retriever prior: frozen (as trained)"
    )


@events_app.command("add")
def add_cmd(
    user: Annotated[int, typer.Option(help="User id (>= 0).", min=0)],
    item: Annotated[
        list[int], typer.Option(help="Item id (repeat for several events of this user).")
    ],
    event_type: Annotated[
        str, typer.Option("--type", help=f"Event type: {EVENT_TYPES_HELP}.")
    ] = "view",
    ts: Annotated[
        str | None,
        typer.Option(help="When (unix s or ISO date/time, UTC if no zone) [default: now]."),
    ] = None,
    url: Url = "localhost:8001",
    timeout_s: Annotated[float, typer.Option("-t", "--client-timeout", help="Seconds.")] = 10.0,
) -> None:
    """Record events of one user; all are recorded or, if one is bad, none (the error says
    which and why)."""
    from client.events import EventsClient

    when = parse_ts(ts) if ts is not None else int(time.time())
    with EventsClient(url, timeout_s=timeout_s) as client:
        try:
            n = client.record(user, item, event_types=event_type, ts=when)
        except TowerServeError as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(1) from None
    console.print(f"[green]recorded {n} event(s) of user {user} at {when}[/green]")


@events_app.command("replay")
def replay_cmd(
    source: Annotated[
        Path,
        typer.Option(
            "--from",
            help="events.parquet (or .csv) with user_id, item_id, ts (unix s) and optionally "
            "event_type, or a data set folder holding one.",
        ),
    ],
    speed: Annotated[
        str,
        typer.Option(
            help="Times real time: 60x sends an hour of events in a minute; max sends them "
            "as fast as the server takes them."
        ),
    ] = "60x",
    limit: Annotated[
        int | None, typer.Option(help="Replay only the first N events in time.", min=1)
    ] = None,
    batch_size: Annotated[
        int, typer.Option(help="Most events per request.", min=1, max=10_000)
    ] = 500,
    url: Url = "localhost:8001",
    timeout_s: Annotated[float, typer.Option("-t", "--client-timeout", help="Seconds.")] = 10.0,
) -> None:
    """Replay a data set's events in time order as a live stream, with their own times; bad
    events (e.g. items not in the served catalog) are counted and skipped."""
    import pandas as pd

    from client.events import EVENT_COLUMNS, EventsClient, replay

    pace = parse_speed(speed)
    path = source / "events.parquet" if source.is_dir() else source
    if source.is_dir() and not path.is_file() and (source / "events.csv").is_file():
        path = source / "events.csv"
    if not path.is_file():
        raise typer.BadParameter(
            f"{source} is neither an events file nor a folder with events.parquet/.csv",
            param_hint="--from",
        )
    try:
        table = pd.read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path)
    except Exception as exc:  # pyarrow/pandas raise many kinds for a bad file
        raise typer.BadParameter(f"cannot read {path}: {exc}", param_hint="--from") from None
    missing = [c for c in EVENT_COLUMNS if c not in table.columns]
    if missing:
        raise typer.BadParameter(
            f"{path} lacks columns {missing}: needs {', '.join(EVENT_COLUMNS)} (event_type "
            f"optional: {EVENT_TYPES_HELP})",
            param_hint="--from",
        )
    table = table.sort_values("ts", kind="stable")
    if limit is not None:
        table = table.head(limit)
    span_s = float(table["ts"].max() - table["ts"].min()) if len(table) else 0.0
    console.print(
        f"replaying {len(table)} events spanning {span_s / 3600:.1f} h from {path}"
        + (f" at {pace:g}x: about {span_s / pace:.0f} s" if pace else " as fast as possible")
    )
    progress = Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:.0f}/{task.total:.0f} events"),
        TimeElapsedColumn(),
        console=console,
    )
    with EventsClient(url, timeout_s=timeout_s) as client, progress:
        task = progress.add_task("replay", total=len(table))
        try:
            report = replay(
                client,
                table,
                speed=pace,
                batch_size=batch_size,
                on_sent=lambda n: progress.advance(task, n),
            )
        except TowerServeError as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(1) from None
    console.print(
        f"[green]recorded {report.recorded} of {report.sent} events in {report.requests} "
        f"requests, {report.wall_s:.1f} s[/green]"
    )
    if report.refused:
        console.print(f"[yellow]refused {report.refused}:[/yellow]")
        for reason, count in report.reasons.most_common(5):
            console.print(f"  {count} x {reason}")
