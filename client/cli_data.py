"""``towerserve data``: generate the synthetic data set, or convert a public one."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

data_app = typer.Typer(help="Generate or load data sets.", no_args_is_help=True)
console = Console()

__all__ = ["data_app"]


class Structure(StrEnum):
    """Presets of ``data generate --structure`` (towers.data.generate.STRUCTURE_PRESETS)."""

    text = "text"
    identity = "identity"


class Layout(StrEnum):
    """What ``data generate --layout`` writes besides the Parquet tables (parquet: nothing)."""

    parquet = "parquet"
    movielens = "movielens"


@data_app.command("generate")
def data_generate(
    out: Annotated[Path, typer.Option(help="Folder for the Parquet files.")] = Path("runs/data"),
    items: Annotated[int, typer.Option(help="Number of items.")] = 5000,
    users: Annotated[int, typer.Option(help="Number of users.")] = 2000,
    queries: Annotated[int, typer.Option(help="Number of search queries.")] = 1500,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same data).")] = 7,
    structure: Annotated[
        Structure,
        typer.Option(
            help="text: the default data, where a shopper's next item follows from item text. "
            "identity: half the views follow hidden bundles of unrelated product types, a "
            "steeper popularity curve and 40 % of items with vague text, so co-occurrence "
            "(item identity) predicts the next item and text barely does. The four options "
            "below override single settings of the preset."
        ),
    ] = Structure.text,
    bundle_strength: Annotated[
        float | None,
        typer.Option(help="Share of views redrawn from hidden cross-type bundles, 0 to 1."),
    ] = None,
    bundle_size: Annotated[
        int | None, typer.Option(help="Items per hidden bundle, 2 to 10000.")
    ] = None,
    item_zipf: Annotated[
        float | None,
        typer.Option(help="Exponent of item popularity, 0 to 4 (1 = default, 2 = steep)."),
    ] = None,
    vague_item_share: Annotated[
        float | None,
        typer.Option(help="Share of items whose title and description say little, 0 to 1."),
    ] = None,
    layout: Annotated[
        Layout,
        typer.Option(
            help="movielens: also write OUT/ml-100k/u.data and u.item in the MovieLens 100k "
            "layout (ratings 3 view, 4 click, 5 cart or purchase), readable by "
            "`towerserve data convert --format movielens`."
        ),
    ] = Layout.parquet,
) -> None:
    """Generate the synthetic e-commerce data set (items, users, events, queries, labels).

    `towerserve data stats --data OUT` then measures whether the data rewards text or item
    identity.
    """
    from pydantic import ValidationError
    from rich.markup import escape

    from towers.data import GenerateConfig, generate
    from towers.data.generate import STRUCTURE_PRESETS

    settings: dict[str, float | int] = dict(STRUCTURE_PRESETS[structure.value])
    given = {
        "bundle_strength": bundle_strength,
        "bundle_size": bundle_size,
        "item_zipf": item_zipf,
        "vague_item_share": vague_item_share,
    }
    settings.update({k: v for k, v in given.items() if v is not None})
    try:
        cfg = GenerateConfig(n_items=items, n_users=users, n_queries=queries, seed=seed, **settings)
    except ValidationError as exc:
        for err in exc.errors():
            name = "--" + "-".join(str(p) for p in err["loc"]).replace("_", "-")
            console.print(f"[red]{escape(name)}: {escape(err['msg'])}[/red]")
        raise typer.Exit(1) from exc
    paths = generate(cfg, out, progress=True)
    console.print(f"[green]data written to {out}[/green]")
    if layout is Layout.movielens:
        from towers.data import load_dataset
        from towers.data.movielens_layout import write_movielens_100k

        ds = load_dataset(paths.root)
        ml = write_movielens_100k(ds.items, ds.events, Path(out) / "ml-100k")
        console.print(f"[green]MovieLens 100k layout written to {ml}[/green]")


@data_app.command("stats")
def data_stats(
    data: Annotated[Path, typer.Option(help="The data set to measure (a folder of tables).")],
    cut: Annotated[
        float, typer.Option(help="Time split, strictly between 0 and 1 of the events' range.")
    ] = 0.8,
    k: Annotated[int, typer.Option(help="List length of HitRate@k, 1 or more.")] = 10,
    max_users: Annotated[
        int, typer.Option(help="Score at most this many users (a seeded sample), 1 or more.")
    ] = 5000,
) -> None:
    """Measure what structure a data set has: does the next item follow from text or identity?

    Cuts the events at a time, takes each user's last item before the cut and their next
    (different) item after it, and reports the next-item HitRate@k (95 % Wilson interval) of
    popularity, of item co-occurrence (item-kNN over the training events) and of text
    nearest neighbours (BM25 over the item text the towers embed), plus users, items, events
    and the Gini coefficient of item popularity.
    """
    from rich.markup import escape

    from towers.data import load_dataset
    from towers.data.stats import structure_stats

    problems = []
    if not 0.0 < cut < 1.0:
        problems.append(
            f"--cut must be strictly between 0 and 1 (a fraction of the events' time range), "
            f"got {cut:g}"
        )
    if k < 1:
        problems.append(f"--k must be 1 or more, got {k}")
    if max_users < 1:
        problems.append(f"--max-users must be 1 or more, got {max_users}")
    if problems:
        console.print("[red]" + escape("; ".join(problems)) + "[/red]")
        raise typer.Exit(1)
    try:
        with console.status(f"loading {escape(str(data))}"):
            ds = load_dataset(data)
        with console.status("measuring popularity, co-occurrence and text neighbours"):
            stats = structure_stats(ds, cut_frac=cut, k=k, max_users=max_users)
    except ValueError as exc:  # DataError included: a bad folder or option, not a bug
        console.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(1) from exc
    summary = Table(title=escape(f"data set {data}"))
    summary.add_column("measure")
    summary.add_column("value", justify="right")
    summary.add_row("users with events", f"{stats.n_users:,}")
    summary.add_row("items", f"{stats.n_items:,}")
    summary.add_row("events", f"{stats.n_events:,}")
    summary.add_row("Gini of item event counts", f"{stats.gini_items:.3f}")
    summary.add_row("event share of the top 1 % items", f"{stats.top1pct_event_share:.3f}")
    summary.add_row("users scored (next item after the cut)", f"{stats.n_eval_users:,}")
    console.print(summary)
    hits = Table(title=f"next-item HitRate@{stats.k}, time split at {cut:g}")
    hits.add_column("predictor")
    hits.add_column(f"HitRate@{stats.k}", justify="right")
    hits.add_column("95 % interval", justify="right")
    for name, hr in stats.hit_rates.items():
        lo, hi = hr.interval
        hits.add_row(name, f"{hr.rate:.3f}", f"{lo:.3f} - {hi:.3f}")
    console.print(hits)
    console.print(escape(stats.verdict()))


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
