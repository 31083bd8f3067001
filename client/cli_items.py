"""``towerserve items``: add, update and delete items in a running server without a rebuild
(the ``catalog`` model; serving/item_changes.py)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from client.grpc_client import TowerServeError

items_app = typer.Typer(
    help="Change items while serving: adds and updates are embedded and searched beside the "
    "main index, deletes are never returned (within 0.5 s); a rebuild folds them in.",
    no_args_is_help=True,
)
console = Console()

Url = Annotated[str, typer.Option("-u", "--url", help="Triton gRPC endpoint host:port.")]
Timeout = Annotated[float, typer.Option("-t", "--client-timeout", help="Seconds.", min=0.1)]


def _pairs(ids: list[int], texts: list[str], verb: str) -> dict[int, str]:
    """``{id: text}``; a clear error for unequal lists, duplicate ids or empty texts."""
    if len(ids) != len(texts):
        raise typer.BadParameter(
            f"{verb} needs one --text per --id; got {len(ids)} ids and {len(texts)} texts",
            param_hint="--text",
        )
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise typer.BadParameter(
            f"item id(s) {', '.join(map(str, dup))} given more than once", param_hint="--id"
        )
    empty = [i for i, t in zip(ids, texts) if not t.strip()]
    if empty:
        raise typer.BadParameter(
            f"the text of item(s) {', '.join(map(str, empty))} is empty; an item needs a text",
            param_hint="--text",
        )
    return dict(zip(ids, texts))


def _send(url: str, timeout_s: float, call: str, arg: object, what: str) -> None:
    from client.items import ItemsClient

    with ItemsClient(url, timeout_s=timeout_s) as client:
        try:
            version = getattr(client, call)(arg)
        except TowerServeError as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(1) from None
    console.print(f"[green]{what} (change log version {version})[/green]")


Ids = Annotated[list[int], typer.Option("--id", help="Item id, >= 0 (repeat for several).", min=0)]
Texts = Annotated[
    list[str], typer.Option("--text", help="The item's text (one per --id, in order).")
]


@items_app.command("add")
def add_cmd(ids: Ids, texts: Texts, url: Url = "localhost:8001", timeout_s: Timeout = 30.0) -> None:
    """Add new items (ids not served yet); all are added or, if one is bad, none."""
    items = _pairs(ids, texts, "add")
    _send(url, timeout_s, "add", items, f"added {len(items)} item(s)")


@items_app.command("update")
def update_cmd(
    ids: Ids, texts: Texts, url: Url = "localhost:8001", timeout_s: Timeout = 30.0
) -> None:
    """Replace the text (and so the vector) of served items."""
    items = _pairs(ids, texts, "update")
    _send(url, timeout_s, "update", items, f"updated {len(items)} item(s)")


@items_app.command("delete")
def delete_cmd(ids: Ids, url: Url = "localhost:8001", timeout_s: Timeout = 30.0) -> None:
    """Delete served items: never returned from now on, also after a restart."""
    _pairs(ids, ["-"] * len(ids), "delete")
    _send(url, timeout_s, "delete", ids, f"deleted {len(ids)} item(s)")
