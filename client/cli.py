"""The ``towerserve`` command line: one subcommand per stage, and ``demo`` for all of them."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    help="Two-tower retrieval plus cross-encoder reranking, served by NVIDIA Triton.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
data_app = typer.Typer(help="Generate or load data sets.", no_args_is_help=True)
app.add_typer(data_app, name="data")
console = Console()

Url = Annotated[str, typer.Option("-u", "--url", help="Triton gRPC endpoint host:port.")]


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("-v", "--verbose", help="Debug logging.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


@data_app.command("generate")
def data_generate(
    out: Annotated[Path, typer.Option(help="Folder for the Parquet files.")] = Path("runs/data"),
    items: Annotated[int, typer.Option(help="Number of items.")] = 5000,
    users: Annotated[int, typer.Option(help="Number of users.")] = 500,
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


@app.command()
def train(
    data: Annotated[Path, typer.Option(help="Data set folder (Parquet or CSV).")] = Path(
        "runs/data"
    ),
    out: Annotated[Path, typer.Option(help="Artifacts folder.")] = Path("runs/artifacts"),
    preset: Annotated[str, typer.Option(help="tiny, demo or full.")] = "demo",
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    dim: Annotated[int | None, typer.Option(help="Embedding dimension.")] = None,
    student_layers: Annotated[int | None, typer.Option(help="Layers per tower (1-6).")] = None,
) -> None:
    """Distil the towers from the teacher, fine-tune them, train the reranker and blend."""
    from towers.config import preset_config
    from towers.train import train as run_train

    cfg = preset_config(preset, seed=seed, dim=dim, student_layers=student_layers)  # type: ignore[arg-type]
    report = run_train(data, out, cfg)
    console.print(f"[green]model {report['model_version']} written to {out}[/green]")
    console.print_json(json.dumps(report["seconds"]))


@app.command("export")
def export_cmd(
    artifacts: Annotated[Path, typer.Option(help="Artifacts from `train`.")] = Path(
        "runs/artifacts"
    ),
    repository: Annotated[Path, typer.Option(help="Triton model repository to write.")] = Path(
        "runs/repository"
    ),
    data: Annotated[Path | None, typer.Option(help="Catalog (default: the training data).")] = None,
    index: Annotated[str, typer.Option(help="auto, flat or ivf.")] = "auto",
    nprobe: Annotated[int, typer.Option(help="IVF lists searched per query.")] = 16,
) -> None:
    """Export ONNX graphs (parity-checked), embed the catalog, build the index and repository."""
    from export.bundle import build_bundle
    from export.repository import write_repository

    bundle = artifacts / "bundle"
    manifest = build_bundle(artifacts, data, bundle, index_kind=index, nprobe=nprobe)
    write_repository(bundle, repository)
    console.print(
        f"[green]repository {repository}: model {manifest['model_version']}, "
        f"{manifest['n_items']} items, index {manifest['index']['type']}[/green]"
    )


@app.command()
def serve(
    repository: Annotated[Path, typer.Option(help="Model repository from `export`.")] = Path(
        "runs/repository"
    ),
    grpc_port: Annotated[int, typer.Option(help="gRPC port.")] = 8001,
    http_port: Annotated[int, typer.Option(help="HTTP port.")] = 8000,
    metrics_port: Annotated[int, typer.Option(help="Prometheus metrics port.")] = 8002,
    host: Annotated[str, typer.Option(help="Address to bind (loopback by default).")] = "127.0.0.1",
    tritonserver: Annotated[
        Path | None, typer.Option(help="tritonserver binary (default: the pytriton wheel's).")
    ] = None,
) -> None:
    """Run the real tritonserver on the repository until Ctrl-C."""
    from serving.triton import run_foreground

    run_foreground(
        repository,
        grpc_port=grpc_port,
        http_port=http_port,
        metrics_port=metrics_port,
        host=host,
        binary=tritonserver,
    )


@app.command()
def recommend(
    url: Url = "localhost:8001",
    query: Annotated[str, typer.Option("-q", "--query", help="What the user typed.")] = "",
    user: Annotated[int, typer.Option(help="User id (-1: anonymous).")] = -1,
    history: Annotated[
        str, typer.Option(help="Recent item ids, oldest first, comma-separated.")
    ] = "",
    k: Annotated[int, typer.Option("-k", help="How many items.")] = 10,
    budget_ms: Annotated[float, typer.Option(help="Reranking budget in ms (0: none).")] = 50.0,
    timeout_s: Annotated[float, typer.Option("-t", "--client-timeout", help="Seconds.")] = 10.0,
) -> None:
    """Ask a running server for recommendations and print them as a table."""
    from client.grpc_client import TowerServeClient, TowerServeError

    try:
        hist = [int(x) for x in history.split(",") if x.strip()]
    except ValueError as exc:
        raise typer.BadParameter("--history takes comma-separated integer item ids") from exc
    with TowerServeClient(url, timeout_s=timeout_s) as client:
        try:
            rec = client.recommend(query, user_id=user, history=hist, k=k, budget_ms=budget_ms)
        except TowerServeError as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(1) from exc
    print_recommendation(query, rec)


def print_recommendation(query: str, rec) -> None:  # type: ignore[no-untyped-def]
    """A rich table of one answer."""
    title = f"query {query!r}: {rec.n_scored} reranked" + (" (degraded)" if rec.degraded else "")
    table = Table(title=f"{title}, {rec.latency_ms:.1f} ms")
    table.add_column("#", justify="right")
    table.add_column("item id", justify="right")
    table.add_column("score", justify="right")
    table.add_column("title")
    for rank, (i, s, t) in enumerate(zip(rec.item_ids, rec.scores, rec.titles), 1):
        table.add_row(str(rank), str(i), f"{s:.3f}", t)
    console.print(table)


@app.command()
def demo(
    workdir: Annotated[Path, typer.Option(help="Where data, models and repository go.")] = Path(
        "runs/demo"
    ),
    preset: Annotated[str, typer.Option(help="Training preset: tiny or demo.")] = "demo",
    items: Annotated[int, typer.Option(help="Catalog size.")] = 5000,
    keep_serving: Annotated[bool, typer.Option(help="Leave the server running.")] = False,
    grpc_port: Annotated[int, typer.Option(help="gRPC port.")] = 8001,
) -> None:
    """Generate, train, export, serve, query, and print recommendations and offline metrics."""
    from client.demo import DemoConfig, run_demo

    run_demo(
        DemoConfig(
            workdir=workdir,
            preset=preset,
            n_items=items,
            keep_serving=keep_serving,
            grpc_port=grpc_port,
        ),
        console,
    )


if __name__ == "__main__":
    app()
