"""The ``towerserve`` command line: one subcommand per stage, and ``demo`` for all of them."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer
from rich.console import Console
from rich.table import Table

from client.cli_bench import bench_cmd
from client.cli_data import data_app
from client.cli_embed import embed_cmd
from client.cli_events import events_app
from client.cli_index import index_app
from client.cli_items import items_app
from client.cli_publish import publish_cmd, rollback_cmd

if TYPE_CHECKING:
    from client.grpc_client import Recommendation

app = typer.Typer(
    help="Two-tower retrieval plus cross-encoder reranking, served by NVIDIA Triton.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
console = Console()
app.add_typer(data_app, name="data")
app.command("bench")(bench_cmd)
app.command("embed")(embed_cmd)
app.add_typer(index_app, name="index")
app.add_typer(events_app, name="events")
app.add_typer(items_app, name="items")
app.command("publish")(publish_cmd)
app.command("rollback")(rollback_cmd)

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
    if not verbose:
        # faiss logs its failed probes for CPU-specific builds (avx512, avx2) as
        # ModuleNotFoundError tracebacks at INFO, on every machine that lacks them.
        logging.getLogger("faiss.loader").setLevel(logging.WARNING)


def parse_time(value: str, option: str) -> int:
    """Unix seconds from ``value``: an integer, or an ISO 8601 date/time (UTC if no zone)."""
    text = value.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        when = datetime.fromisoformat(text)
    except ValueError as exc:
        raise typer.BadParameter(
            f"{value!r} is neither unix seconds nor an ISO date/time (e.g. 2026-01-22T06:00)",
            param_hint=option,
        ) from exc
    return int((when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp())


@app.command()
def train(
    data: Annotated[
        Path | None,
        typer.Option(
            help="Data set folder (Parquet or CSV) [default: runs/data; with --from: the data "
            "set the parent model was trained on]."
        ),
    ] = None,
    out: Annotated[Path, typer.Option(help="Artifacts folder.")] = Path("runs/artifacts"),
    preset: Annotated[str, typer.Option(help="tiny, demo or full.")] = "demo",
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    dim: Annotated[int | None, typer.Option(help="Embedding dimension.")] = None,
    student_layers: Annotated[int | None, typer.Option(help="Layers per tower (1-6).")] = None,
    until: Annotated[
        str | None,
        typer.Option(
            help="Train on events before this time (unix s or ISO, UTC); hold the rest out."
        ),
    ] = None,
    until_frac: Annotated[
        float | None,
        typer.Option(
            help="Train on events before this fraction of their time range (tiny and demo "
            "presets: 0.75, so `towerserve eval` has later events to test on)."
        ),
    ] = None,
    all_events: Annotated[
        bool, typer.Option("--all-events", help="Train on every event (production).")
    ] = False,
    from_: Annotated[
        Path | None,
        typer.Option(
            "--from",
            help="Incremental update: fine-tune the history path of these artifacts' user tower "
            "on the newest events only (needs --since); the item tower, index and reranker "
            "stay as they are.",
        ),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(help="With --from: learn from events at or after this time (unix s or ISO)."),
    ] = None,
    update_epochs: Annotated[
        float, typer.Option(help="With --from: passes over the newest events' pairs.")
    ] = 2.0,
    reranker_only: Annotated[
        bool,
        typer.Option(
            "--reranker-only",
            help="With --from: train only a new reranker and blend over the parent's towers, "
            "on its data and training window (e.g. a smaller one: --reranker-layers 1); the "
            "parent's index stays valid. Export the new artifacts folder to serve it.",
        ),
    ] = False,
    item_ids: Annotated[
        bool | None,
        typer.Option(
            "--item-ids/--no-item-ids",
            help="Learn an id vector per item with interactions, added to its text vector "
            "(new items keep text alone). Default: off (the preset's; it overfitted on the "
            "demo data, README 'Item identity').",
        ),
    ] = None,
    user_sequence: Annotated[
        str | None,
        typer.Option(
            help="Self-attention over the history in the user tower: auto (default) keeps it "
            "when surely better on the newest 10% of next-item pairs, on always, off never.",
            case_sensitive=False,
        ),
    ] = None,
    fit_towers: Annotated[
        str | None,
        typer.Option(
            help="Towers the prior, co-visitation and no-query blend fits rank with: holdout "
            "(trained again without the events those fits validate on; twice the fine-tuning "
            "time), shared (the final towers, which saw them: the fits then trust them too "
            "much) or auto (default: holdout; the tiny preset: shared).",
            case_sensitive=False,
        ),
    ] = None,
    reranker_layers: Annotated[
        int | None,
        typer.Option(
            help="Layers of the cross-encoder (1-6; default 1: twice the candidates of 2 "
            "within a 25 ms budget; 2 rank better at 50 ms and up)."
        ),
    ] = None,
    rerank_steps: Annotated[
        int | None, typer.Option(help="Optimiser steps of the reranker (default 1000).")
    ] = None,
    rerank_item_tokens: Annotated[
        int | None,
        typer.Option(
            help="Item-text tokens the reranker trains on (4-48; default all): the export's "
            "--rerank-item-tokens trains on exactly what is served."
        ),
    ] = None,
    rerank_distil_weight: Annotated[
        float | None,
        typer.Option(
            help="With --reranker-only: distil from the parent's reranker; the share (0-1) of "
            "the loss that is the squared error to its logits (default 0: no teacher).",
            min=0.0,
            max=1.0,
        ),
    ] = None,
) -> None:
    """Distil the towers from the teacher, fine-tune them, train the reranker and blend.

    With --from and --since: an incremental update of an existing model on the newest events.
    With --from and --reranker-only: a new reranker over an existing model's towers.
    """
    from pydantic import ValidationError

    until_ts = parse_time(until, "--until") if until else None
    rerank_overrides = {
        k: v
        for k, v in {
            "reranker_layers": reranker_layers,
            "rerank_steps": rerank_steps,
            "rerank_item_tokens": rerank_item_tokens,
            "rerank_distil_weight": rerank_distil_weight,
        }.items()
        if v is not None
    }
    try:
        if rerank_distil_weight and not reranker_only:
            raise typer.BadParameter(
                "--rerank-distil-weight distils from a parent's reranker: add --from ARTIFACTS "
                "--reranker-only"
            )
        if reranker_only:
            if from_ is None:
                raise typer.BadParameter("--reranker-only needs --from ARTIFACTS (the parent)")
            if since is not None or data is not None:
                raise typer.BadParameter(
                    "--reranker-only trains on the parent's data and window: drop --since/--data"
                )
            from towers.rerank_retrain import retrain_reranker

            report = retrain_reranker(from_, out, rerank_overrides)
            console.print(
                f"[green]model {report['model_version']} (reranker of "
                f"{report['parent_version']} retrained) written to {out}[/green]"
            )
            console.print_json(json.dumps(report["seconds"]))
            return
        if from_ is not None and (
            user_sequence is not None or item_ids is not None or fit_towers is not None
        ):
            raise typer.BadParameter(
                "--user-sequence, --item-ids and --fit-towers are settings of a full training: "
                "drop --from"
            )
        if from_ is not None:
            if rerank_overrides:
                raise typer.BadParameter(
                    "an update keeps the parent's reranker: the reranker settings need "
                    "--reranker-only"
                )
            if since is None:
                raise typer.BadParameter("--from needs --since (the start of the newest events)")
            from towers.update import UpdateConfig, update

            ucfg = UpdateConfig(
                since_ts=parse_time(since, "--since"),
                until_ts=until_ts,
                epochs=update_epochs,
            )
            report = update(from_, data, out, ucfg)
            console.print(
                f"[green]updated model {report['model_version']} (from "
                f"{report['parent_version']}) written to {out} in "
                f"{report['update']['seconds']} s[/green]"  # type: ignore[index]
            )
            return
        if since is not None:
            raise typer.BadParameter("--since is only for an update: add --from ARTIFACTS")
        if user_sequence is not None and user_sequence.lower() not in ("auto", "on", "off"):
            raise typer.BadParameter(
                f"--user-sequence must be auto, on or off, got {user_sequence!r}"
            )
        if fit_towers is not None and fit_towers.lower() not in ("auto", "holdout", "shared"):
            raise typer.BadParameter(
                f"--fit-towers must be auto, holdout or shared, got {fit_towers!r}"
            )
        from towers.config import preset_config
        from towers.train import train as run_train

        cfg = preset_config(
            preset,  # type: ignore[arg-type]
            seed=seed,
            dim=dim,
            student_layers=student_layers,
            until_ts=until_ts,
            until_frac=until_frac,
            user_sequence=user_sequence.lower() if user_sequence else None,
            item_ids=item_ids,
            fit_towers=fit_towers.lower() if fit_towers else None,
            **rerank_overrides,
        )
        if all_events:
            cfg = cfg.model_copy(update={"until_ts": None, "until_frac": None})
        report = run_train(data or Path("runs/data"), out, cfg)
    except (ValueError, FileNotFoundError, ValidationError) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    console.print(f"[green]model {report['model_version']} written to {out}[/green]")
    console.print_json(json.dumps(report["seconds"]))


def replay_section(repository: Path, out: Path, max_users: int | None) -> Any:
    """``eval --replay``: the replay through ``repository``'s served path, with a progress
    bar (client/served_replay.py)."""
    import pandas as pd
    from rich.progress import Progress

    from client.served_replay import served_replay

    def run(events: pd.DataFrame, cut_ts: int) -> dict[str, object]:
        with Progress(console=console, transient=True) as bar:
            job = bar.add_task("replay (4 variants per query event)", total=None)
            return served_replay(
                repository,
                events,
                cut_ts,
                out / "replay",
                max_users=max_users,
                progress=lambda done, total: bar.update(job, completed=done, total=total),
            )

    return run


@app.command("eval")
def eval_cmd(
    artifacts: Annotated[Path, typer.Option(help="Artifacts from `train`.")] = Path(
        "runs/artifacts"
    ),
    data: Annotated[
        Path | None, typer.Option(help="Data set (default: the one the model was trained on).")
    ] = None,
    out: Annotated[Path, typer.Option(help="Report folder.")] = Path("runs/report"),
    sections: Annotated[
        str, typer.Option(help="Comma-separated: search, recommendation, distillation, drift.")
    ] = "search,recommendation,distillation,drift",
    systems: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated systems to compare (default all). Search: popularity, bm25, "
            "teacher_exact, student_exact, student_faiss, student_faiss_rerank. "
            "Recommendation: popularity, popularity_all, item_knn, rp3beta, ease, als, "
            "teacher_exact, student_exact, student_faiss, student_faiss_covisit."
        ),
    ] = None,
    layers: Annotated[
        str, typer.Option(help="Student depths for the distillation trade-off.")
    ] = "1,2,3,4",
    windows: Annotated[int, typer.Option(help="Time windows after the training cut.")] = 3,
    max_users: Annotated[int, typer.Option(help="Users sampled per recommendation task.")] = 2000,
    retrain: Annotated[
        bool,
        typer.Option(help="Also retrain fully at the update point as the reference (slow)."),
    ] = True,
    repository: Annotated[
        Path | None,
        typer.Option(
            help="A repository written by `towerserve export` for these artifacts: adds the "
            "served path (its stages, graphs, runtimes and settings, in process) as systems "
            "served (budget 0) and served_rerank (--budget-ms)."
        ),
    ] = None,
    url: Annotated[
        str | None,
        typer.Option(
            help="Instead of --repository: the gRPC address (host:port) of a running server "
            "(`towerserve serve`) serving these artifacts; the systems served and "
            "served_rerank then ask it over gRPC, one request per query or user."
        ),
    ] = None,
    budget_ms: Annotated[
        float, typer.Option(help="Budget of served_rerank per request, ms.", min=0)
    ] = 25.0,
    replay: Annotated[
        bool,
        typer.Option(
            help="With --repository: replay the held-out events in time order through the "
            "served path with a real event store and compare Recall@50 of live vs frozen "
            "history and moving vs frozen prior (README, Live user events)."
        ),
    ] = False,
    replay_users: Annotated[
        int | None,
        typer.Option(help="Users whose events the replay asks about (default: all).", min=1),
    ] = None,
    protocol: Annotated[
        str,
        typer.Option(
            help="Recommendation protocol: time (each user's new items after the training "
            "cut) or random (the held-out random 20% of a data set written by `towerserve "
            "data split`; train on it with --all-events). Figures of the two never compare."
        ),
    ] = "time",
) -> None:
    """Evaluate a trained model against baselines; write OUT/report.md, plots and results.json.

    Measures, side by side in one run: search quality on held-out queries (popularity, BM25,
    teacher, student exact and through FAISS, retrieve+rerank), next-item recommendation after
    the training cut (or on a random split, --protocol random) beside popularity, item-kNN,
    EASE and ALS, with 95% intervals, the distillation trade-off (1-4 layer students vs the
    teacher: quality and encoding speed), and quality by time window before and after an
    incremental update.
    """
    from pydantic import ValidationError

    from client.grpc_client import TowerServeError
    from towers.evaluation.harness import SECTIONS, EvalConfig, ExtraSystems, run_eval

    def split(text: str) -> tuple[str, ...]:
        return tuple(x.strip() for x in text.split(",") if x.strip())

    chosen = split(sections)
    unknown = [x for x in chosen if x not in SECTIONS]
    if unknown or not chosen:
        console.print(
            f"[red]unknown section(s) {', '.join(unknown) or '(none given)'}: choose from "
            f"{', '.join(SECTIONS)}[/red]"
        )
        raise typer.Exit(1)
    try:
        cfg = EvalConfig(
            artifacts=artifacts,
            data_dir=data,
            out_dir=out,
            sections=chosen,
            systems=split(systems) if systems else None,
            layers=tuple(int(x) for x in split(layers)),
            windows=windows,
            max_users=max_users,
            retrain=retrain,
            protocol=protocol,
        )
        extra = None
        if replay and repository is None:
            raise typer.BadParameter(
                "--replay runs the served path in process over a fresh event store: give the "
                "repository with --repository (not --url)",
                param_hint="--replay",
            )
        if repository is not None and url is not None:
            raise typer.BadParameter(
                "give --repository (the served path in process) or --url (a running server), "
                "not both",
                param_hint="--url",
            )
        if repository is not None or url is not None:
            from client.served_eval import (
                connect_served,
                exclusion_advice,
                load_served,
                served_recommendation_systems,
                served_search_systems,
            )

            try:
                served = load_served(repository) if repository else connect_served(str(url))
            except TowerServeError as exc:
                console.print(f"[red]{exc}[/red]")
                raise typer.Exit(1) from exc
            console.print(f"served path: {served.where}")
            advice = exclusion_advice(served.exclude_recent, protocol)
            if advice and "recommendation" in chosen:
                console.print(f"[yellow]note: {advice}[/yellow]")
            extra = ExtraSystems(
                search=served_search_systems(served, budget_ms),
                recommendation=served_recommendation_systems(served, budget_ms),
                served_path=served.where,
                replay=replay_section(repository, out, replay_users)
                if replay and repository
                else None,
            )
        results = run_eval(cfg, extra)
    except TowerServeError as exc:
        console.print(f"[red]the server stopped answering: {exc}[/red]")
        raise typer.Exit(1) from exc
    except (ValueError, FileNotFoundError, ValidationError) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    table = Table(title=f"checks ({out / 'report.md'})")
    for col in ("check", "value", "threshold", ""):
        table.add_column(col)
    marks = {"passed": "[green]pass[/green]", "failed": "[red]FAIL[/red]"}
    for c in cast(list[dict[str, Any]], results["checks"]):
        mark = marks.get(c["status"], "[yellow]inconclusive[/yellow]")
        ci = c.get("ci95")
        interval = f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""
        n = f" (n={c['n']})" if c.get("n") is not None else ""
        table.add_row(c["name"], f"{c['value']:.3f}{interval}{n}", f"{c['threshold']:g}", mark)
    console.print(table)
    console.print(f"[green]report written to {out / 'report.md'}[/green]")


@app.command("export")
def export_cmd(
    artifacts: Annotated[Path, typer.Option(help="Artifacts from `train`.")] = Path(
        "runs/artifacts"
    ),
    repository: Annotated[Path, typer.Option(help="Triton model repository to write.")] = Path(
        "runs/repository"
    ),
    data: Annotated[Path | None, typer.Option(help="Catalog (default: the training data).")] = None,
    index: Annotated[
        str,
        typer.Option(
            help="auto, flat, ivf, hnsw or ivfpq (IVF-PQ refined exactly); auto picks by "
            "catalog size (towers/index.py, from benchmarks/faiss_sweep.py)."
        ),
    ] = "auto",
    nprobe: Annotated[
        int | None,
        typer.Option(help="IVF lists searched per query (ivf, ivfpq); default: per kind."),
    ] = None,
    warmup: Annotated[
        bool,
        typer.Option(
            help="Give each served model a Triton model_warmup sample, so the first request "
            "is as fast as later ones (costs a second or two at load)."
        ),
    ] = True,
    device: Annotated[
        str,
        typer.Option(
            help="cpu: ONNX Runtime and faiss-cpu (the default). cuda: the towers and the "
            "reranker as torch.export programs (or TensorRT engines) on GPU 0, the index on "
            "the GPU (FAISS-GPU if installed, else exact torch top-k); needs torch with CUDA "
            "at serve time."
        ),
    ] = "cpu",
    precision: Annotated[
        str, typer.Option(help="GPU compute precision: fp16, bf16 or fp32 (device cuda).")
    ] = "fp16",
    engine: Annotated[
        str,
        typer.Option(
            help="GPU runtime of the graphs: torch (torch.export programs) or tensorrt (FP16 "
            "engines built here from the ONNX graphs; needs the tensorrt package and a GPU)."
        ),
    ] = "torch",
    cuda_graphs: Annotated[
        bool,
        typer.Option(
            help="Replay captured CUDA graphs in the torch runtime (device cuda): on an H200 "
            "2.4x faster for the reranker's 100 candidates."
        ),
    ] = True,
    cpu_engine: Annotated[
        str,
        typer.Option(
            help="CPU runtime of the towers and the reranker (device cpu): openvino (the "
            "exported ONNX graphs compiled by OpenVINO; fastest measured here) or onnxruntime."
        ),
    ] = "openvino",
    cpu_precision: Annotated[
        str,
        typer.Option(
            help="CPU precision (device cpu): bf16 (AMX / AVX512-BF16 where the CPU has them, "
            "fp32 elsewhere; openvino only) or fp32."
        ),
    ] = "bf16",
    user_engine: Annotated[
        str,
        typer.Option(
            help="CPU runtime of the user tower (device cpu): onnxruntime (fp32; for its one "
            "short query a request 1.10-1.55x faster than OpenVINO bf16 in-process here, a tie "
            "through the server) or openvino (at --cpu-precision)."
        ),
    ] = "onnxruntime",
    rerank_threads: Annotated[
        int, typer.Option(help="CPU threads of the cross-encoder (the towers take 1).", min=1)
    ] = 2,
    rerank_precision: Annotated[
        str,
        typer.Option(
            help="Precision of the cross-encoder on the CPU: bf16 or fp32; int8 quantizes it "
            "(NNCF, calibrated on real pairs; about 20 s) and serves the int8 OpenVINO graph "
            "(measured no faster than bf16 on these machines: README, Fast path); auto (the "
            "default): --cpu-precision.",
        ),
    ] = "auto",
    rerank_max_call: Annotated[
        int,
        typer.Option(
            help="Most candidates the cross-encoder scores in one call; each request scores as "
            "many as its budget allows in as few calls as possible.",
            min=1,
        ),
    ] = 64,
    reserve_ms: Annotated[
        float,
        typer.Option(
            help="Milliseconds of each request's budget the reranker keeps for answering: it "
            "starts no cross-encoder call predicted to end later than the budget minus this.",
            min=0.0,
            max=999.0,
        ),
    ] = 1.0,
    rerank_item_tokens: Annotated[
        int,
        typer.Option(
            help="Item-text tokens the cross-encoder reads per candidate (1-48): shorter pairs "
            "score faster; 24 kept NDCG@10 within 0.002 of the full text at 1.5x the pairs/s "
            "on the demo data (benchmarks/rerank_levers.py measures yours).",
            min=1,
            max=48,
        ),
    ] = 24,
    rerank_instances: Annotated[
        int,
        typer.Option(
            help="Triton instances of the cross-encoder (processes, each with --rerank-threads "
            "threads): more serve more requests at once, each on fewer cores.",
            min=1,
        ),
    ] = 1,
    rerank_depth: Annotated[
        int,
        typer.Option(
            help="Most candidates the cross-encoder scores per request, best retrieved first "
            "(0: as many as the budget allows). A cap ends requests early where scoring "
            "deeper adds little (benchmarks/reranker_depth.py measures NDCG@10 by depth).",
            min=0,
        ),
    ] = 0,
    item_instances: Annotated[
        int,
        typer.Option(
            help="Triton instances of the item tower on the CPU (processes of one thread "
            "each by default): one per core for a server that re-embeds catalogs "
            "(`towerserve embed --engine triton`).",
            min=1,
        ),
    ] = 1,
    exclude_recent: Annotated[
        int,
        typer.Option(
            help="Recommendations (requests without a query) leave out the newest N items "
            "of the history the request carries, or of the user's stored history (1000: all "
            "of it). 0 by default: items a user met earlier are often what they take next "
            "(on the demo data, leaving out the whole history cut Recall@50 from 0.246 to "
            "0.185). Set it for a surface that must not re-show recent items, or to match a "
            "protocol that excludes them (eval: 20 for --protocol time, 1000 for random).",
            min=0,
            max=1000,
        ),
    ] = 0,
) -> None:
    """Export ONNX graphs (parity-checked), embed the catalog, build the index and repository."""
    from export.bundle import build_bundle
    from export.repository import write_repository
    from towers.data import DataError

    if device not in ("cpu", "cuda"):
        raise typer.BadParameter(f"--device must be cpu or cuda, got {device!r}")
    if engine not in ("torch", "tensorrt"):
        raise typer.BadParameter(f"--engine must be torch or tensorrt, got {engine!r}")
    from export.repository_settings import RepositoryError, RepositorySettings

    if rerank_precision == "auto":
        rerank_precision = ""

    try:  # the repository settings, checked before the (slow) bundle is built
        RepositorySettings(
            max_k=1,
            n_candidates=1,
            device=device,
            precision=precision,
            cpu_engine=cpu_engine,
            cpu_precision=cpu_precision,
            rerank_threads=rerank_threads,
            rerank_max_call=rerank_max_call,
            reserve_ms=reserve_ms,
            rerank_precision=rerank_precision,
            rerank_item_tokens=rerank_item_tokens,
            rerank_instances=rerank_instances,
            rerank_depth=rerank_depth,
            item_instances=item_instances,
            user_engine=user_engine,
        )
    except RepositoryError as exc:
        raise typer.BadParameter(str(exc)) from None
    if engine == "tensorrt":
        from export.tensorrt import TensorRTUnavailable, require_tensorrt

        try:
            require_tensorrt()
        except TensorRTUnavailable as exc:
            console.print(f"[red]--engine tensorrt: {exc}[/red]")
            raise typer.Exit(2) from None
    bundle = artifacts / "bundle"
    try:
        manifest = build_bundle(
            artifacts,
            data,
            bundle,
            index_kind=index,
            nprobe=nprobe,
            torch_programs=device == "cuda" or engine == "tensorrt",
        )
    except (FileNotFoundError, DataError) as exc:  # no training there, or its data gone
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    if engine == "tensorrt":
        from client.gpu_export import add_tensorrt_engines

        add_tensorrt_engines(bundle)
    if device == "cpu" and rerank_precision == "int8":
        from client.int8_export import add_int8_reranker, training_contexts

        with console.status("quantizing the reranker to int8 (NNCF)"):
            diff = add_int8_reranker(bundle, training_contexts(artifacts, data))
        console.print(f"reranker int8: max abs logit difference from fp32 {diff:.3f}")
    write_repository(
        bundle,
        repository,
        warmup=warmup,
        device="cuda" if engine == "tensorrt" else device,
        precision=precision,
        cuda_graphs=cuda_graphs,
        cpu_engine=cpu_engine,
        cpu_precision=cpu_precision,
        rerank_threads=rerank_threads,
        rerank_max_call=rerank_max_call,
        reserve_ms=reserve_ms,
        rerank_precision=rerank_precision,
        rerank_item_tokens=rerank_item_tokens,
        rerank_instances=rerank_instances,
        rerank_depth=rerank_depth,
        item_instances=item_instances,
        user_engine=user_engine,
        exclude_recent=exclude_recent,
    )
    console.print(
        f"[green]repository {repository}: model {manifest.model_version}, "
        f"{manifest.n_items} items, index {manifest.index['type']}, device "
        f"{'cuda' if engine == 'tensorrt' else device}[/green]"
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
    events: Annotated[
        str | None,
        typer.Option(
            help="Live user event store: sqlite (a file beside the repository, or "
            "--events-path), redis (--redis-url) or off [default: as the repository says; "
            "sqlite after export]."
        ),
    ] = None,
    events_path: Annotated[Path | None, typer.Option(help="SQLite event file.")] = None,
    redis_url: Annotated[
        str | None, typer.Option(help="Redis of the event store, redis://host:port/db.")
    ] = None,
    control_key: Annotated[
        str | None,
        typer.Option(
            help="Key the model control API (load/unload: `towerserve publish`, `rollback`), "
            "shared memory, trace and logging APIs require in the towerserve-control-key "
            "header; needed when --host is not loopback (default $TOWERSERVE_CONTROL_KEY).",
        ),
    ] = None,
    prior: Annotated[
        str | None,
        typer.Option(
            help="The retriever's popularity prior: moving (follows the event store's events, "
            "decayed on event time) or frozen (as trained) [default: moving while an event "
            "store is on]."
        ),
    ] = None,
    prior_refresh_s: Annotated[
        float,
        typer.Option(help="Seconds between the moving prior's refreshes (0: never).", min=0),
    ] = 2.0,
) -> None:
    """Run the real tritonserver on the repository until Ctrl-C.

    Every model is loaded at start in explicit model-control mode, so `towerserve publish`
    can load a new version beside the served one and `towerserve rollback` can switch back.
    """
    from client.cli_events import configure_events
    from serving.launcher.control import ControlKeyError, resolve_control_key
    from serving.triton import run_foreground

    try:
        key = resolve_control_key(host, control_key)
    except ControlKeyError as exc:
        raise typer.BadParameter(str(exc), param_hint="--control-key") from None
    if events is not None or events_path is not None or redis_url is not None or prior is not None:
        configure_events(
            repository, events, events_path, redis_url, prior or "moving", prior_refresh_s
        )

    run_foreground(
        repository,
        grpc_port=grpc_port,
        http_port=http_port,
        metrics_port=metrics_port,
        host=host,
        binary=tritonserver,
        model_control_mode="explicit",
        load_models=["*"],
        control_key=key,
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


def print_recommendation(query: str, rec: Recommendation) -> None:
    """A rich table of one answer (``client/display.py``) on this command line's console."""
    from client.display import print_recommendation as show

    show(query, rec, console)


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
