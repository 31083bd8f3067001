"""``towerserve items``: argument checks that need no server (the real server path is
tests/serving/items/test_items_server.py)."""

from __future__ import annotations

from typer.testing import CliRunner

from client.cli import app

runner = CliRunner()

#: A port nothing listens on: a check that reached the network would fail differently.
NOWHERE = "127.0.0.1:9"


def test_bad_arguments_say_what_is_wrong_and_what_is_allowed() -> None:
    cases = [
        (["add", "--id", "1", "--id", "2", "--text", "a"], "one --text per --id"),
        (["add", "--id", "1", "--id", "1", "--text", "a", "--text", "b"], "more than once"),
        (["update", "--id", "1", "--text", "  "], "is empty"),
        (["delete", "--id", "3", "--id", "3"], "more than once"),
        (["delete", "--id", "-4"], "greater than or equal to 0"),
    ]
    for args, message in cases:
        result = runner.invoke(app, ["items", *args, "-u", NOWHERE])
        assert result.exit_code == 2, result.output
        assert message in " ".join(result.output.split()), result.output


def test_help_explains_each_command() -> None:
    result = runner.invoke(app, ["items", "--help"])
    assert result.exit_code == 0
    for command in ("add", "update", "delete"):
        assert command in result.output
