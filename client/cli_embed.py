"""``towerserve embed``: re-embed a catalog (or a delta) into vector shards, resumably."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

console = Console()

__all__ = ["ENGINES", "embed_cmd"]

ENGINES = ("local", "triton", "ray")


class ItemsPerSecond(ProgressColumn):
    """Items per second over the last few seconds (rich's own speed estimate)."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} items/s" if speed else "- items/s", style="cyan")


def embed_cmd(
    catalog: Annotated[
        Path,
        typer.Argument(
            help="Catalog Parquet file or folder: item_id plus text (or the items table's "
            "title, ...); a delta adds an op column (upsert or delete)."
        ),
    ],
    out: Annotated[
        Path, typer.Option(help="Output folder for the shards (resumes a killed job there).")
    ] = Path("runs/embeddings"),
    bundle: Annotated[
        Path,
        typer.Option(help="Bundle with the item tower (towerserve export), local and ray engines."),
    ] = Path("runs/artifacts/bundle"),
    engine: Annotated[
        str, typer.Option(help="local (in-process), triton (a running server) or ray.")
    ] = "local",
    shard_size: Annotated[int, typer.Option(min=1, help="Items per shard (checkpoint).")] = 4096,
    runtime: Annotated[
        str, typer.Option(help="local/ray: auto (fastest measured), openvino or onnxruntime.")
    ] = "auto",
    precision: Annotated[
        str, typer.Option(help="local/ray: auto (fastest within parity of fp32), bf16 or fp32.")
    ] = "auto",
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="local: shards embedded at once, each with its own tower (default: one per "
            "core; measured faster than one tower on every core).",
        ),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="local/ray: runtime threads per worker/actor (default: the cores shared out).",
        ),
    ] = None,
    url: Annotated[
        str, typer.Option("-u", "--url", help="triton: the server's gRPC endpoint host:port.")
    ] = "localhost:8001",
    max_in_flight: Annotated[
        int, typer.Option(min=1, help="triton: requests in flight at once.")
    ] = 8,
    timeout_s: Annotated[
        float, typer.Option("-t", "--client-timeout", help="triton: seconds per request.")
    ] = 60.0,
    retry_s: Annotated[
        float,
        typer.Option(
            min=0,
            help="triton: seconds a request the server could not take (restarting, overloaded) "
            "is sent again for, from its first failure; 0: never.",
        ),
    ] = 60.0,
    ray_address: Annotated[
        str | None,
        typer.Option(help="ray: cluster address (auto, ray://host:10001); default: a local Ray."),
    ] = None,
    ray_actors: Annotated[
        int | None,
        typer.Option(min=1, help="ray: item-tower actors (default: one per local core)."),
    ] = None,
    id_column: Annotated[str, typer.Option(help="Column of item ids.")] = "item_id",
    text_column: Annotated[str, typer.Option(help="Column of item texts.")] = "text",
    restart: Annotated[
        bool, typer.Option("--restart", help="Delete the shards in --out and start over.")
    ] = False,
) -> None:
    """Embed every item of a catalog (or a delta of new, changed and deleted items) with the
    item tower into Parquet vector shards plus a manifest (model version, dimension, bad rows).

    Checkpointed per shard: run the same command again after a crash or a kill and it
    resumes, with no item lost and none written twice. Rows with a missing id, missing or
    empty text, non-UTF-8 text or a duplicate id (the first row wins) are skipped, counted
    and listed in bad_rows.parquet. Then: `towerserve index build --shards OUT`.
    """
    from client.embed import CatalogError, EmbedJobError, EngineError, read_catalog, run_embed
    from client.embed.engines import Engine, LocalEngine, TritonEngine
    from towers.bundle_contract import MANIFEST_FILE, BundleError

    if engine not in ENGINES:
        raise typer.BadParameter(f"{engine!r}: allowed {', '.join(ENGINES)}", param_hint="--engine")
    if runtime not in ("auto", "openvino", "onnxruntime"):
        raise typer.BadParameter(
            f"{runtime!r}: allowed auto, openvino, onnxruntime", param_hint="--runtime"
        )
    if precision not in ("auto", "bf16", "fp32"):
        raise typer.BadParameter(
            f"{precision!r}: allowed auto, bf16, fp32", param_hint="--precision"
        )
    if engine != "triton" and not (bundle / MANIFEST_FILE).is_file():
        raise typer.BadParameter(
            f"{bundle} is not a bundle (no {MANIFEST_FILE}): run `towerserve export` or pass "
            "--bundle",
            param_hint="--bundle",
        )
    try:
        cat = read_catalog(catalog, id_column=id_column, text_column=text_column)
        runner: Engine
        if engine == "local":
            runner = LocalEngine(
                bundle, runtime=runtime, precision=precision, threads=threads, workers=workers
            )
        elif engine == "triton":
            runner = TritonEngine(
                url, max_in_flight=max_in_flight, timeout_s=timeout_s, retry_s=retry_s
            )
        else:
            from client.embed.ray_engine import RayEngine

            runner = RayEngine(
                bundle,
                address=ray_address,
                actors=ray_actors,
                threads=threads,
                runtime=runtime,
                precision=precision,
            )
        columns = [
            TextColumn("[bold]embedding"),
            BarColumn(),
            MofNCompleteColumn(),
            ItemsPerSecond(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
        ]
        with Progress(*columns, console=console) as progress:
            task = progress.add_task("embed", total=None)

            def start(total: int, done: int) -> None:
                progress.update(task, total=total, completed=done)
                progress.start_task(task)

            try:
                result = run_embed(
                    catalog,
                    out,
                    runner,
                    shard_size=shard_size,
                    restart=restart,
                    on_start=start,
                    on_progress=lambda n: progress.advance(task, n),
                    catalog=cat,
                )
            finally:
                runner.close()
    except (CatalogError, EmbedJobError, EngineError, BundleError, ValueError) as exc:
        console.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(1) from exc
    m = result.manifest
    table = Table(title=f"{out}: model {m.model_version}, dim {m.dim}, {m.mode} catalog")
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_row("catalog rows", f"{cat.n_rows:,}")
    table.add_row("items in shards", f"{m.n_items:,}")
    table.add_row("  embedded this run", f"{result.items_embedded:,}")
    table.add_row("  resumed (already there)", f"{m.n_items - result.items_embedded:,}")
    table.add_row("deleted ids", f"{m.n_deleted:,}")
    for reason, count in m.bad_rows.items():
        if count:
            table.add_row(f"[yellow]skipped: {reason}[/yellow]", f"{count:,}")
    console.print(table)
    desc = m.engine
    console.print(
        f"engine {desc.get('name')}"
        + (f": {desc.get('runtime')} {desc.get('precision')}" if "runtime" in desc else "")
    )
