"""``towerserve embed``: a catalog (or a delta) in Parquet -> vector shards and a manifest.

The valid rows of the catalog (client/embed/catalog.py), in catalog order, are cut into shards
of ``shard_size`` rows; shard ``i`` holds rows ``[i * shard_size, (i + 1) * shard_size)``. Each
shard is written atomically when its vectors are done (client/embed/shards.py): that is the
checkpoint. The output folder's ``embed_job.json`` records the catalog's fingerprint, the model
version and the shard size; a job started again on the same folder with the same three
(after a crash, a SIGKILL, a reboot) checks the shards already there (row count and ids),
embeds only the missing ones and writes each item exactly once: no item lost, none written
twice (the rows of the shard in progress when the job died are embedded again, never written
twice). The same folder with another catalog, model or shard size is refused unless
``restart`` is given.

When every shard is there, the job writes ``deleted_ids.npy`` (a delta's deleted ids),
``bad_rows.parquet`` (skipped rows and why) and ``embed_manifest.json`` (written last: its
presence means the job finished).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from client.embed.catalog import Catalog, read_catalog
from client.embed.engines import Engine, Shard
from client.embed.shards import EmbedManifest, ShardInfo, read_shard, write_shard
from towers.bundle_contract import (
    BAD_ROWS_FILE,
    DELETED_IDS_FILE,
    EMBED_MANIFEST_FILE,
    EMBED_STATE_FILE,
    embed_shard_file,
    sha256,
)

log = logging.getLogger(__name__)

__all__ = ["EmbedJobError", "JobResult", "run_embed"]

#: Catalog texts the ``local`` engine times its candidate runtimes on.
SAMPLE_TEXTS = 256


class EmbedJobError(RuntimeError):
    """The job cannot run as asked (the output folder holds another job's shards, ...)."""


@dataclass
class JobResult:
    """What a finished job did: its manifest, and how many shards and items this run
    embedded (the rest were already there from an earlier run)."""

    manifest: EmbedManifest
    shards_embedded: int
    items_embedded: int
    shards_resumed: int


def _prepare_out(out: Path, state: dict[str, object], restart: bool) -> None:
    path = out / EMBED_STATE_FILE
    if out.exists() and restart:
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    if path.is_file():
        old = json.loads(path.read_text())
        if old != state:
            differs = [k for k in state if old.get(k) != state[k]]
            raise EmbedJobError(
                f"{out} holds another job's shards ({', '.join(differs)} differ): use another "
                "--out, or --restart to delete them and start over"
            )
    elif any(out.iterdir()):
        raise EmbedJobError(f"{out} is not empty and not a re-embedding job's folder")
    else:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        os.replace(tmp, path)
    for leftover in out.glob("*.tmp"):  # a write cut short by the kill
        leftover.unlink()


def _complete(path: Path, expected_ids: np.ndarray) -> bool:
    """Whether the shard at ``path`` holds exactly ``expected_ids`` (a shard is written whole
    or not at all, so this only fails for a file changed by hand)."""
    try:
        ids, _ = read_shard(path)
    except (OSError, pa.ArrowException, KeyError) as exc:
        log.warning("shard %s unreadable (%s): embedding it again", path, exc)
        return False
    return len(ids) == len(expected_ids) and bool(np.array_equal(ids, expected_ids))


def run_embed(
    catalog_path: Path,
    out: Path,
    engine: Engine,
    *,
    shard_size: int = 4096,
    restart: bool = False,
    on_start: Callable[[int, int], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
    id_column: str = "item_id",
    text_column: str = "text",
    catalog: Catalog | None = None,
) -> JobResult:
    """Embed the catalog at ``catalog_path`` into ``out`` with ``engine`` (module docstring).

    ``on_start(total_items, items_already_done)`` is called once before embedding and
    ``on_progress(items)`` after each shard written (for a progress bar).
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    out = Path(out)
    catalog = catalog or read_catalog(catalog_path, id_column=id_column, text_column=text_column)
    n = len(catalog.item_ids)
    state: dict[str, object] = {
        "catalog_sha256": catalog.fingerprint,
        "model_version": engine.model_version,
        "shard_size": shard_size,
        "n_items": n,
    }
    _prepare_out(out, state, restart)
    bounds = [(s, min(s + shard_size, n)) for s in range(0, n, shard_size)]
    done = {
        i
        for i, (lo, hi) in enumerate(bounds)
        if (out / embed_shard_file(i)).is_file()
        and _complete(out / embed_shard_file(i), catalog.item_ids[lo:hi])
    }
    pending = [i for i in range(len(bounds)) if i not in done]
    already = sum(bounds[i][1] - bounds[i][0] for i in done)
    if done:
        log.info("resuming %s: %d of %d shards already there", out, len(done), len(bounds))
    if pending:
        engine.prepare(catalog.texts[:SAMPLE_TEXTS])
    if on_start:
        on_start(n, already)
    embedded = 0
    dim = 0
    if pending:

        def work() -> Iterator[Shard]:
            for i in pending:
                lo, hi = bounds[i]
                yield Shard(i, catalog.item_ids[lo:hi], catalog.texts[lo:hi])

        for i, vectors in engine.embed_shards(work()):
            lo, hi = bounds[i]
            if len(vectors) != hi - lo:
                raise EmbedJobError(f"engine returned {len(vectors)} vectors for {hi - lo} texts")
            dim = int(vectors.shape[1])
            write_shard(out / embed_shard_file(i), catalog.item_ids[lo:hi], vectors)
            embedded += hi - lo
            if on_progress:
                on_progress(hi - lo)
    shards = []
    for i, (lo, hi) in enumerate(bounds):
        path = out / embed_shard_file(i)
        shards.append(ShardInfo(path.name, hi - lo, sha256(path)))
        if not dim:
            dim = int(read_shard(path)[1].shape[1])
    np.save(out / DELETED_IDS_FILE, catalog.deleted_ids)
    pq.write_table(
        pa.table(
            {
                "row": pa.array([b.row for b in catalog.bad_rows], pa.int64()),
                "item_id": pa.array([b.item_id for b in catalog.bad_rows], pa.int64()),
                "reason": pa.array([b.reason for b in catalog.bad_rows], pa.string()),
            }
        ),
        out / BAD_ROWS_FILE,
    )
    manifest = EmbedManifest(
        model_version=engine.model_version,
        dim=dim,
        mode=catalog.mode,
        n_items=n,
        n_deleted=int(len(catalog.deleted_ids)),
        shards=shards,
        bad_rows=catalog.bad_counts(),
        engine=engine.describe(),
        catalog={"path": str(catalog_path), "sha256": catalog.fingerprint},
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    manifest.write(out)
    log.info(
        "embedded %d items (%d this run) into %s; %s",
        n,
        embedded,
        out / EMBED_MANIFEST_FILE,
        f"{len(catalog.bad_rows)} bad rows skipped" if catalog.bad_rows else "no bad rows",
    )
    return JobResult(manifest, len(pending), embedded, len(done))
