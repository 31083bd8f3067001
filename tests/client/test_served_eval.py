"""The served systems of `towerserve eval --repository` / `--url` (client/served_eval.py): what
they ask the served path, and the advice printed when the served path keeps history items that
the recommendation protocol then removes from its lists. The real server's answers through
`connect_served` are compared with the in-process path in tests/test_end_to_end.py."""

from __future__ import annotations

import numpy as np
import pytest

from client.grpc_client import TowerServeError
from client.served_eval import (
    SERVED_SYSTEMS,
    ServedPath,
    connect_served,
    exclusion_advice,
    served_recommendation_systems,
    served_search_systems,
)
from towers.next_item import NextItemTask


def test_advice_names_the_setting_each_protocol_needs() -> None:
    assert exclusion_advice(20, "time") is None and exclusion_advice(1000, "random") is None
    assert exclusion_advice(1000, "time") is None
    time = exclusion_advice(0, "time")
    assert time is not None and "--exclude-recent 20" in time and "newest 0" in time
    random = exclusion_advice(20, "random")
    assert random is not None and "--exclude-recent 1000" in random
    assert exclusion_advice(0, "another") is None


def _fake_path(asked: list[tuple]) -> ServedPath:
    """A served path that ranks items 0, 1, 2, ... and records what it was asked."""

    def ask(query: str, hist: np.ndarray, ts: np.ndarray, k: int, budget_ms: float) -> list[int]:
        asked.append((query, hist.tolist(), ts.tolist(), k, budget_ms))
        return list(range(k))

    return ServedPath(ask=ask, max_k=8, exclude_recent=0, where="fake")


def test_search_systems_send_the_query_alone_capped_at_max_k() -> None:
    asked: list[tuple] = []
    systems = served_search_systems(_fake_path(asked), budget_ms=25)
    assert set(systems) == set(SERVED_SYSTEMS)
    assert systems["served"]("red shoes", 5) == [0, 1, 2, 3, 4]
    assert systems["served_rerank"]("red shoes", 100) == list(range(8))
    assert asked == [("red shoes", [], [], 5, 0.0), ("red shoes", [], [], 8, 25.0)]


def test_recommendation_systems_send_the_long_history_and_drop_it_from_the_list() -> None:
    asked: list[tuple] = []
    task = NextItemTask(
        start_ts=100,
        end_ts=200,
        user_ids=np.array([7, 8]),
        hist_ids=[np.array([1, 3]), np.array([0])],
        hist_ts=[np.array([10, 20]), np.array([30])],
        targets=[{4}, {2}],
        long_ids=[np.array([5, 1, 3]), np.array([0])],
        long_ts=[np.array([5, 10, 20]), np.array([30])],
    )
    systems = served_recommendation_systems(_fake_path(asked), budget_ms=10)
    # user 7: history 1 and 3 excluded (the time protocol's history), k 3 + 2 asked
    assert systems["served"](task, 3) == [[0, 2, 4], [1, 2, 3]]
    assert asked[0] == ("", [5, 1, 3], [5, 10, 20], 5, 0.0)
    assert asked[1] == ("", [0], [30], 4, 0.0)
    # never deeper than max_k (8), so the list comes back short
    assert systems["served_rerank"](task, 8) == [[0, 2, 4, 5, 6, 7], [1, 2, 3, 4, 5, 6, 7]]
    assert asked[2][3] == 8 and asked[2][4] == 10.0


def test_connect_refuses_an_address_with_no_server() -> None:
    from serving.triton import free_ports

    (port,) = free_ports(1)
    with pytest.raises(TowerServeError, match="no ready server"):
        connect_served(f"127.0.0.1:{port}", timeout_s=2)


def test_eval_cli_refuses_url_with_repository_or_replay(tmp_path) -> None:
    from typer.testing import CliRunner

    from client.cli import app

    runner = CliRunner()
    both = ["eval", "--url", "127.0.0.1:1", "--repository", str(tmp_path)]
    result = runner.invoke(app, both)
    assert result.exit_code != 0 and "not both" in result.output
    result = runner.invoke(app, ["eval", "--url", "127.0.0.1:1", "--replay"])
    assert result.exit_code != 0 and "--repository" in result.output
