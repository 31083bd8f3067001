"""``towerserve events``: argument checks and the replay's pacing and error handling.

The pacing is tested with a stand-in client and a simulated clock (the real server path is
tests/serving/events/test_events_server.py)."""

from __future__ import annotations

import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from client.cli import app
from client.cli_events import parse_speed, parse_ts
from client.events import replay
from client.grpc_client import TowerServeError

runner = CliRunner()


def flat(output: str) -> str:
    """The output with rich's panel borders and line wrapping taken out."""
    return " ".join(output.replace("│", " ").split())


def test_speed_and_time_parsing() -> None:
    assert parse_speed("60x") == 60 and parse_speed("0.5") == 0.5 and parse_speed("MAX") is None
    for bad in ("fast", "0x", "-2x", "inf"):
        with pytest.raises(typer.BadParameter):
            parse_speed(bad)
    assert parse_ts("1700000000") == 1_700_000_000
    assert parse_ts("2023-11-14T22:13:20") == 1_700_000_000
    with pytest.raises(typer.BadParameter, match="neither unix seconds nor an ISO"):
        parse_ts("yesterday")


class SimClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s


class StandInClient:
    """Records what would be sent at the simulated time; refuses item 13 and rejects whole
    batches that hold it, as the server does."""

    def __init__(self, clock: SimClock) -> None:
        self.clock = clock
        self.calls: list[tuple[float, list[int]]] = []

    def record(self, user_id, item_ids, *, event_types="view", ts=None) -> int:
        items = [int(i) for i in item_ids]
        self.calls.append((self.clock.t, items))
        if 13 in items:
            raise TowerServeError(
                "events: refused all 1 events of this request (none recorded): "
                "event 0 (user 1): item id 13 is not in the catalog"
            )
        return len(items)


def table(ts: list[int]) -> pd.DataFrame:
    return pd.DataFrame({"user_id": 1, "item_id": range(10, 10 + len(ts)), "ts": ts})


def test_replay_sends_in_time_order_at_the_given_speed() -> None:
    clock = SimClock()
    client = StandInClient(clock)
    events = table([0, 60, 60, 600])[::-1]  # out of order in the file
    report = replay(client, events, speed=60, sleep=clock.sleep, clock=clock)  # type: ignore[arg-type]
    # one minute of data per second; equal times go together, in file order
    assert client.calls == [(0.0, [10]), (1.0, [12, 11]), (10.0, [13])]
    assert report.sent == 4 and report.recorded == 3 and report.refused == 1
    assert report.reasons == {"item id N is not in the catalog": 1}


def test_replay_retries_a_refused_batch_one_by_one() -> None:
    clock = SimClock()
    client = StandInClient(clock)
    report = replay(client, table([0, 0, 0, 0, 0]), speed=None, batch_size=10, clock=clock)  # type: ignore[arg-type]
    assert report.recorded == 4 and report.refused == 1 and report.requests == 6
    assert client.calls[0][1] == [10, 11, 12, 13, 14]


def test_replay_stops_when_the_server_is_unusable() -> None:
    class Down:
        def record(self, *a, **k) -> int:
            raise TowerServeError("events: failed to connect to all addresses")

    with pytest.raises(TowerServeError, match="failed to connect"):
        replay(Down(), table([0, 1]), speed=None)  # type: ignore[arg-type]


def test_cli_refuses_bad_input_with_what_is_allowed(tmp_path) -> None:
    result = runner.invoke(app, ["events", "replay", "--from", str(tmp_path / "nope.parquet")])
    assert result.exit_code == 2 and "neither an events file nor a folder" in flat(result.output)
    table(["x"]).drop(columns=["ts"]).to_parquet(tmp_path / "events.parquet")
    result = runner.invoke(app, ["events", "replay", "--from", str(tmp_path)])
    assert result.exit_code == 2 and "lacks columns ['ts']" in flat(result.output)
    result = runner.invoke(app, ["events", "replay", "--from", str(tmp_path), "--speed", "fast"])
    assert result.exit_code == 2 and "is not a speed" in flat(result.output)
    result = runner.invoke(app, ["events", "add", "--user", "-3", "--item", "5"])
    assert result.exit_code == 2
    assert runner.invoke(app, ["events", "--help"]).exit_code == 0


def test_serve_events_options_check_the_store_and_write_the_configs(tmp_path) -> None:
    import shutil
    from pathlib import Path

    from client.cli_events import configure_events
    from serving.stage_params import repository_params
    from serving.triton import free_port

    root = Path(__file__).resolve().parents[2]
    repo = tmp_path / "repo"
    for model in ("user_tower", "events", "retriever"):
        (repo / model).mkdir(parents=True)
        shutil.copy(root / "model_repository" / model / "config.pbtxt", repo / model)
    result = runner.invoke(app, ["serve", "--repository", str(repo), "--events", "mysql"])
    assert result.exit_code == 2 and "use sqlite, redis, off" in flat(result.output)
    down = f"redis://127.0.0.1:{free_port()}/0"
    result = runner.invoke(app, ["serve", "--repository", str(repo), "--redis-url", down])
    assert result.exit_code == 2 and "is not reachable" in flat(result.output)
    assert repository_params(repo, "events")[1]["events_store"] == "sqlite"  # untouched
    configure_events(repo, None, tmp_path / "ev.sqlite", None)
    params = repository_params(repo, "user_tower")[1]
    assert params["events_store"] == "sqlite"
    assert params["events_path"] == str((tmp_path / "ev.sqlite").resolve())
    assert (tmp_path / "ev.sqlite").is_file()
    result = runner.invoke(app, ["serve", "--repository", str(repo), "--prior", "stale"])
    assert result.exit_code == 2 and "use moving, frozen" in flat(result.output)
    configure_events(repo, None, tmp_path / "ev.sqlite", None, "frozen", 5.0)
    params = repository_params(repo, "retriever")[1]
    assert params["prior"] == "frozen" and params["prior_refresh_s"] == "5.0"
