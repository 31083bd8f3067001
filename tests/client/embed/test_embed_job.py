"""The re-embedding job on the real (untrained) exported item tower: vectors match the
exported table, a SIGKILLed job resumes with no item lost and none written twice, deltas merge
into a new index version, bad rows are reported by the command line."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from client.cli import app
from client.embed import EmbedJobError, LocalEngine, read_job_vectors, run_embed
from client.embed.catalog import read_catalog
from client.embed.engines import PARITY_MIN_COSINE
from towers.bundle_contract import (
    BAD_ROWS_FILE,
    EMBED_MANIFEST_FILE,
    ITEM_EMBEDDINGS_FILE,
    ITEM_IDS_FILE,
    ItemIdTable,
    embed_shard_file,
)
from towers.index_version import check_index_version, load_index_version

runner = CliRunner()


def flat(output: str) -> str:
    """Command output with rich's line wrapping and panel borders taken out."""
    return re.sub(r"[\s│╭╮╰╯─]+", " ", output)


def _fp32(bundle: Path) -> LocalEngine:
    """ONNX Runtime fp32, one thread: nothing to measure, and slow enough to be killed."""
    return LocalEngine(bundle, runtime="onnxruntime", precision="fp32", threads=1)


def test_local_job_matches_the_exported_table_and_builds_an_index(untrained_id_bundle, tmp_path):
    items = untrained_id_bundle.parent / "data" / "items.parquet"
    engine = LocalEngine(untrained_id_bundle)  # runtime and precision chosen by measurement
    result = run_embed(items, tmp_path / "emb", engine, shard_size=150)
    manifest, ids, vecs, deleted = read_job_vectors(tmp_path / "emb")
    assert result.shards_embedded == len(manifest.shards) == 3
    assert manifest.model_version == engine.model_version and manifest.mode == "full"
    assert manifest.engine["runtime"] in ("openvino", "onnxruntime")
    assert set(manifest.engine["measured_items_per_s"]) >= {"onnxruntime/fp32"}
    assert np.array_equal(ids, np.load(untrained_id_bundle / ITEM_IDS_FILE)) and len(deleted) == 0
    table = np.load(untrained_id_bundle / ITEM_EMBEDDINGS_FILE)
    cosine = (vecs * table).sum(1)
    assert cosine.min() >= PARITY_MIN_COSINE, cosine.min()
    # half the items have a learned id vector: the job sent their ids (text alone is not it)
    id_table = ItemIdTable.load(untrained_id_bundle)
    assert id_table is not None
    _, known = id_table.lookup(ids)
    assert 0 < known.sum() < len(ids)
    engine.prepare([])
    assert engine.encoder is not None
    text_only = engine.encoder.embed(read_catalog(items).texts)
    assert (text_only[known] * table[known]).sum(1).max() < 0.99

    got = runner.invoke(
        app, ["index", "build", "--shards", str(tmp_path / "emb"), "--out", str(tmp_path / "idx")]
    )
    assert got.exit_code == 0, got.output
    index, version = load_index_version(tmp_path / "idx", model_version=engine.model_version)
    assert version.n_items == len(ids) and version.dim == vecs.shape[1]
    got = runner.invoke(
        app, ["index", "check", str(tmp_path / "idx"), "--bundle", str(untrained_id_bundle)]
    )
    assert got.exit_code == 0 and "ok" in got.output
    got = runner.invoke(app, ["index", "check", str(tmp_path / "idx"), "--model-version", "v0"])
    assert got.exit_code == 1 and "model_version" in flat(got.output)


def test_sigkill_then_resume_loses_and_duplicates_nothing(
    untrained_bundle, tmp_path, make_catalog, texts_for
):
    n, shard_size = 3000, 50
    ids = list(range(100_000, 100_000 + n))
    catalog = make_catalog(tmp_path / "catalog.parquet", ids, texts_for(n))
    out = tmp_path / "emb"
    command = [
        sys.executable,
        "-c",
        "from client.cli import app; app()",
        "embed",
        str(catalog),
        "--bundle",
        str(untrained_bundle),
        "--out",
        str(out),
        "--shard-size",
        str(shard_size),
        "--runtime",
        "onnxruntime",
        "--precision",
        "fp32",
        "--threads",
        "1",
    ]
    env = {**os.environ, "PYTHONPATH": str(Path.cwd())}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while len(list(out.glob("shard-*.parquet"))) < 3:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "the job wrote no shards in 120 s"
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    written = sorted(out.glob("shard-*.parquet"))
    assert 3 <= len(written) < n // shard_size, "killed too late to test a resume"
    assert not (out / EMBED_MANIFEST_FILE).exists()

    result = run_embed(catalog, out, _fp32(untrained_bundle), shard_size=shard_size)
    assert result.shards_resumed == len(written)
    assert result.items_embedded == n - shard_size * len(written)
    assert not list(out.glob("*.tmp"))
    manifest, got_ids, vecs, _ = read_job_vectors(out)
    assert manifest.n_items == n and len(got_ids) == n
    assert len(np.unique(got_ids)) == n, "an item was written twice"
    assert np.array_equal(np.sort(got_ids), np.array(ids)), "an item was lost"
    fresh = _fp32(untrained_bundle)
    fresh.prepare([])
    assert fresh.encoder is not None
    check = fresh.encoder.embed(texts_for(n)[::97])
    np.testing.assert_allclose(vecs[::97], check, atol=1e-5)


def test_delta_job_merges_into_a_new_index_version(
    untrained_bundle, tmp_path, make_catalog, texts_for
):
    full = make_catalog(tmp_path / "full.parquet", list(range(200)), texts_for(200))
    run_embed(full, tmp_path / "full", _fp32(untrained_bundle), shard_size=64)
    delta = make_catalog(
        tmp_path / "delta.parquet",
        [5, 7, 900],
        ["a brand new text for item five", None, "a new item"],
        op=["upsert", "delete", "upsert"],
    )
    result = run_embed(delta, tmp_path / "delta", _fp32(untrained_bundle), shard_size=64)
    assert result.manifest.mode == "delta" and result.manifest.n_deleted == 1
    got = runner.invoke(
        app,
        [
            "index",
            "build",
            "--shards",
            str(tmp_path / "full"),
            "--shards",
            str(tmp_path / "delta"),
            "--out",
            str(tmp_path / "idx"),
        ],
    )
    assert got.exit_code == 0, got.output
    index, version = load_index_version(tmp_path / "idx")
    assert version.n_items == 200 - 1 + 1
    _, d_ids, d_vecs, _ = read_job_vectors(tmp_path / "delta")
    _, hits = index.search(d_vecs, 1)
    assert hits[:, 0].tolist() == d_ids.tolist() == [5, 900]
    assert index.id_map.size() == 200  # 7 gone, 900 in
    assert 7 not in {int(index.id_map.at(i)) for i in range(index.id_map.size())}
    assert check_index_version(tmp_path / "idx").source[1].startswith(str(tmp_path / "delta"))


def test_a_folder_of_another_job_is_refused_unless_restart(
    untrained_bundle, tmp_path, make_catalog, texts_for
):
    a = make_catalog(tmp_path / "a.parquet", [1, 2, 3], texts_for(3))
    b = make_catalog(tmp_path / "b.parquet", [1, 2, 4], texts_for(3))
    run_embed(a, tmp_path / "emb", _fp32(untrained_bundle), shard_size=2)
    with pytest.raises(EmbedJobError, match="catalog_sha256"):
        run_embed(b, tmp_path / "emb", _fp32(untrained_bundle), shard_size=2)
    run_embed(b, tmp_path / "emb", _fp32(untrained_bundle), shard_size=2, restart=True)
    assert read_job_vectors(tmp_path / "emb")[1].tolist() == [1, 2, 4]
    assert not (tmp_path / "emb" / embed_shard_file(2)).exists()


def test_command_line_reports_bad_rows_and_refuses_bad_options(
    untrained_bundle, tmp_path, make_catalog
):
    catalog = make_catalog(
        tmp_path / "c.parquet",
        [1, 2, 2, 3, None, 5],
        [b"red shirt", b"blue hat", b"dup", b"", b"no id", b"\xc3\x28 broken"],
    )
    base = [
        "embed",
        str(catalog),
        "--bundle",
        str(untrained_bundle),
        "--out",
        str(tmp_path / "emb"),
        "--runtime",
        "onnxruntime",
        "--precision",
        "fp32",
    ]
    got = runner.invoke(app, base)
    assert got.exit_code == 0, got.output
    for reason in ("duplicate_id", "empty_text", "missing_id", "not_utf8"):
        assert f"skipped: {reason}" in got.output
    bad = pq.read_table(tmp_path / "emb" / BAD_ROWS_FILE).to_pylist()
    assert [r["reason"] for r in bad] == ["duplicate_id", "empty_text", "missing_id", "not_utf8"]
    assert read_job_vectors(tmp_path / "emb")[1].tolist() == [1, 2]

    got = runner.invoke(app, [*base, "--engine", "spark"])
    assert got.exit_code == 2 and "allowed local, triton, ray" in flat(got.output)
    got = runner.invoke(app, [*base[:3], str(tmp_path), "--out", str(tmp_path / "e2")])
    assert got.exit_code == 2 and "is not a bundle" in flat(got.output)
    got = runner.invoke(
        app,
        [
            "embed",
            str(tmp_path / "none.parquet"),
            "--bundle",
            str(untrained_bundle),
            "--out",
            str(tmp_path / "e3"),
        ],
    )
    assert got.exit_code == 1 and "does not exist" in flat(got.output)
