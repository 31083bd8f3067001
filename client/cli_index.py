"""``towerserve index``: build a FAISS index version from re-embedding shards, or check one."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

index_app = typer.Typer(
    help="Index versions: build a FAISS index from `towerserve embed` shards, check one.",
    no_args_is_help=True,
)
console = Console()
log = logging.getLogger(__name__)

__all__ = ["index_app", "merge_jobs"]


def merge_jobs(folders: list[Path]) -> tuple[str, np.ndarray, np.ndarray, list[str]]:
    """The item vectors of finished embed jobs applied in order: each job's deleted ids are
    dropped and its vectors replace those of the same ids (a full catalog, then deltas).
    Returns ``(model_version, item_ids, vectors, sources)``; refuses jobs of two model
    versions (their vectors live in different spaces) with a ``ValueError``."""
    from client.embed import read_job_vectors

    version = ""
    ids = np.zeros(0, np.int64)
    vectors: np.ndarray | None = None
    sources = []
    for folder in folders:
        manifest, job_ids, job_vecs, deleted = read_job_vectors(folder)
        if version and manifest.model_version != version:
            raise ValueError(
                f"{folder} was embedded by model version {manifest.model_version!r}, the shards "
                f"before it by {version!r}: one index holds one model version's vectors"
            )
        version = manifest.model_version
        if vectors is None:
            vectors = np.zeros((0, job_vecs.shape[1]), np.float32)
        if len(job_vecs) and job_vecs.shape[1] != vectors.shape[1]:
            raise ValueError(f"{folder} has dim {job_vecs.shape[1]}, before it {vectors.shape[1]}")
        keep = ~np.isin(ids, np.concatenate([job_ids, deleted]))
        ids = np.concatenate([ids[keep], job_ids])
        vectors = np.concatenate([vectors[keep], job_vecs])
        sources.append(f"{folder} ({manifest.mode}, {manifest.n_items} items)")
    assert vectors is not None
    return version, ids, vectors, sources


@index_app.command("build")
def index_build(
    shards: Annotated[
        list[Path],
        typer.Option(
            help="A finished `towerserve embed` output folder; repeat it to apply deltas "
            "after the full catalog, in order."
        ),
    ],
    out: Annotated[Path, typer.Option(help="The index version folder to write.")],
    kind: Annotated[
        str, typer.Option(help="auto (flat below 2,000 items, else IVF), flat, ivf, hnsw, ivfpq.")
    ] = "auto",
    nprobe: Annotated[int | None, typer.Option(min=1, help="IVF lists searched per query.")] = None,
) -> None:
    """Build the FAISS index (towers/index.py) of the shards' vectors, with a manifest that
    records the model version, dimension, item count and the index file's sha256."""
    from towers.bundle_contract import BundleError
    from towers.index import KINDS
    from towers.index_version import build_index_version

    if kind not in KINDS:
        raise typer.BadParameter(f"{kind!r}: allowed {', '.join(KINDS)}", param_hint="--kind")
    try:
        version, ids, vectors, sources = merge_jobs(shards)
        if len(ids) == 0:
            raise ValueError("the shards hold no vectors: nothing to index")
        built = build_index_version(
            vectors, ids, out, model_version=version, kind=kind, nprobe=nprobe, source=sources
        )
    except (BundleError, ValueError) as exc:
        console.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(1) from exc
    console.print(
        f"[green]index {out}: {built.index.get('type')}, {built.n_items:,} items, dim "
        f"{built.dim}, model {built.model_version}[/green]"
    )


@index_app.command("check")
def index_check(
    folder: Annotated[
        Path, typer.Argument(help="An index version folder (towerserve index build).")
    ],
    bundle: Annotated[
        Path | None,
        typer.Option(
            help="Check against this bundle's (or version folder's) model version and dim."
        ),
    ] = None,
    model_version: Annotated[
        str | None, typer.Option(help="Check against this model version.")
    ] = None,
) -> None:
    """Check an index version: its file against its manifest (size: truncated; sha256, what
    FAISS reads: corrupt) and, given --bundle or --model-version, against the served model
    (model version, dimension). Exits 1 with the failed check's name."""
    from towers.bundle_contract import BundleError, load_manifest
    from towers.index_version import IndexVersionError, load_index_version

    dim = None
    try:
        if bundle is not None:
            served = load_manifest(bundle)
            if model_version and model_version != served.model_version:
                raise typer.BadParameter(
                    f"--model-version {model_version} contradicts {bundle}'s "
                    f"{served.model_version}: give one of them"
                )
            model_version, dim = served.model_version, served.dim
        _, version = load_index_version(folder, model_version=model_version, dim=dim)
    except IndexVersionError as exc:
        console.print(f"[red]refused, {escape(str(exc))}[/red]")
        raise typer.Exit(1) from exc
    except BundleError as exc:
        console.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(1) from exc
    table = Table(title=f"{folder}: ok")
    table.add_column("field")
    table.add_column("value")
    for key in ("model_version", "dim", "n_items", "index_bytes", "created_at"):
        table.add_row(key, str(getattr(version, key)))
    table.add_row("index", str(version.index))
    table.add_row("checked against", f"model {model_version}" if model_version else "itself only")
    console.print(table)
