"""``towerserve publish`` and ``towerserve rollback``: hot swap of model and index versions
into a running server (client/publish.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

console = Console()

__all__ = ["publish_cmd", "rollback_cmd"]

Repository = Annotated[
    Path,
    typer.Option(
        "--repository",
        help="The repository the server serves (`towerserve export`, `towerserve serve`): the "
        "new version is written beside the served one in it.",
    ),
]
Url = Annotated[str, typer.Option("-u", "--url", help="The server's gRPC endpoint host:port.")]
ControlKey = Annotated[
    str | None,
    typer.Option(
        help="The key the server was started with (`towerserve serve --control-key`); "
        "default $TOWERSERVE_CONTROL_KEY, or none for a loopback server started without one.",
    ),
]
Timeout = Annotated[
    float, typer.Option("-t", "--load-timeout", help="Seconds each model load may take.", min=1)
]


def _key(control_key: str | None) -> str | None:
    import os

    from serving.launcher.control import CONTROL_KEY_ENV

    return control_key if control_key is not None else os.environ.get(CONTROL_KEY_ENV) or None


def publish_cmd(
    bundle: Annotated[
        Path,
        typer.Option(
            help="The new version's bundle folder (`towerserve export` writes it to "
            "<artifacts>/bundle): every file is checked against its manifest checksum.",
        ),
    ],
    repository: Repository = Path("runs/repository"),
    url: Url = "localhost:8001",
    index: Annotated[
        Path | None,
        typer.Option(
            help="An index version folder (`towerserve index build`) to serve instead of the "
            "bundle's index: checked for model version, dimension, item count and checksum.",
        ),
    ] = None,
    control_key: ControlKey = None,
    load_timeout_s: Timeout = 300.0,
) -> None:
    """Publish a new model (and index) version to a running server without stopping it.

    The new version is checked, loaded beside the served one and only then takes traffic:
    every request runs wholly on one version. The previous version stays loaded for
    `towerserve rollback`; older ones are removed.
    """
    from client.publish import PublishError, publish

    if not bundle.is_dir():
        raise typer.BadParameter(f"{bundle} is not a folder", param_hint="--bundle")
    if index is not None and not index.is_dir():
        raise typer.BadParameter(f"{index} is not a folder", param_hint="--index")
    try:
        with console.status("publishing") as status:
            result = publish(
                repository,
                bundle,
                url=url,
                index=index,
                control_key=_key(control_key),
                timeout_s=load_timeout_s,
                progress=lambda line: status.update(escape(line)),
            )
    except PublishError as exc:
        console.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(1) from None
    console.print(
        f"[green]serving version {result.version} (model {escape(result.model_version)}) "
        f"after {result.seconds:.1f} s; version {result.previous} stays loaded for "
        "`towerserve rollback`[/green]"
    )


def rollback_cmd(
    repository: Repository = Path("runs/repository"),
    url: Url = "localhost:8001",
    control_key: ControlKey = None,
    load_timeout_s: Timeout = 300.0,
) -> None:
    """Switch a running server back to the version served before the last publish (run it
    again to switch forward)."""
    from client.publish import PublishError, rollback

    try:
        with console.status("rolling back"):
            result = rollback(
                repository, url=url, control_key=_key(control_key), timeout_s=load_timeout_s
            )
    except PublishError as exc:
        console.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(1) from None
    console.print(
        f"[green]serving version {result.version} (model {escape(result.model_version)}) "
        f"again; version {result.previous} stays loaded[/green]"
    )
