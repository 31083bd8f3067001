"""``towerserve data``: generate the synthetic data set, or convert a public one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

data_app = typer.Typer(help="Generate or load data sets.", no_args_is_help=True)
console = Console()

__all__ = ["data_app"]


@data_app.command("generate")
def data_generate(
    out: Annotated[Path, typer.Option(help="Folder for the Parquet files.")] = Path("runs/data"),
    items: Annotated[int, typer.Option(help="Number of items.")] = 5000,
    users: Annotated[int, typer.Option(help="Number of users.")] = 2000,
    queries: Annotated[int, typer.Option(help="Number of search queries.")] = 1500,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same data).")] = 7,
) -> None:
    """Generate the synthetic e-commerce data set (items, users, events, queries, labels)."""
    from towers.data import GenerateConfig, generate

    cfg = GenerateConfig(n_items=items, n_users=users, n_queries=queries, seed=seed)
    generate(cfg, out, progress=True)
    console.print(f"[green]data written to {out}[/green]")


@data_app.command("convert")
def data_convert(
    fmt: Annotated[str, typer.Option("--format", help="movielens, esci or wands.")],
    src: Annotated[Path, typer.Option("--input", help="Folder with the unpacked source files.")],
    out: Annotated[Path, typer.Option(help="Folder for the converted data set (Parquet).")],
    layout: Annotated[
        str | None, typer.Option(help="movielens: auto, 100k, 1m or latest (default auto).")
    ] = None,
    rating_threshold: Annotated[
        float | None, typer.Option(help="movielens: ratings >= this are clicks (default 4.0).")
    ] = None,
    session_gap_s: Annotated[
        int | None, typer.Option(help="movielens: a longer gap starts a session (default 1800).")
    ] = None,
    locale: Annotated[str | None, typer.Option(help="esci: us, es or jp (default us).")] = None,
    small_version: Annotated[
        bool | None,
        typer.Option(
            "--small-version/--all-examples", help="esci: Task 1 subset only (default small)."
        ),
    ] = None,
    valid_frac: Annotated[
        float | None, typer.Option(help="esci, wands: share of query texts to valid (default 0.1).")
    ] = None,
    test_frac: Annotated[
        float | None, typer.Option(help="wands: share of query texts to test (default 0.1).")
    ] = None,
) -> None:
    """Convert MovieLens, Amazon ESCI or Wayfair WANDS files on disk (no download)."""
    from rich.markup import escape

    from towers.data.converters import convert

    given = {
        "layout": layout,
        "rating_threshold": rating_threshold,
        "session_gap_s": session_gap_s,
        "locale": locale,
        "small_version": small_version,
        "valid_frac": valid_frac,
        "test_frac": test_frac,
    }
    try:
        report = convert(fmt, src, out, **{k: v for k, v in given.items() if v is not None})
    except ValueError as exc:  # DataError included: a bad file or option, not a bug
        console.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(1) from exc
    table = Table(title=escape(f"{report.format}: {report.source} -> {report.out}"))
    table.add_column("table")
    table.add_column("rows", justify="right")
    for name, n in report.rows.items():
        table.add_row(name, str(n))
    console.print(table)
    for reason, n in report.dropped.items():
        if n:
            console.print(f"[yellow]dropped {n} {escape(reason)}[/yellow]")
    console.print(f"[green]data set written to {escape(str(out))}[/green]")


@data_app.command("split")
def data_split(
    data: Annotated[Path, typer.Option(help="The data set to split (a folder of tables).")],
    out: Annotated[Path, typer.Option(help="Folder for the split copy (must differ).")],
    test_frac: Annotated[
        float, typer.Option(help="Share of events held out, strictly between 0 and 1.")
    ] = 0.2,
    seed: Annotated[int, typer.Option(help="Random seed of the shuffle.")] = 7,
) -> None:
    """Split a data set's events at random for `towerserve eval --protocol random`.

    Writes a copy of the data set whose events are the training share, and
    OUT/heldout_events.parquet with the held-out share (the TensorFlow Recommenders
    tutorial's 80/20 protocol). Then: `towerserve train --data OUT --all-events` and
    `towerserve eval --data OUT --protocol random`.
    """
    from rich.markup import escape

    from towers.data.split import write_random_split

    try:
        record = write_random_split(data, out, test_frac=test_frac, seed=seed)
    except ValueError as exc:  # DataError included
        console.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(1) from exc
    console.print(
        f"[green]{record['n_train_events']:,} training and {record['n_heldout_events']:,} "
        f"held-out events written to {out}[/green]"
    )
