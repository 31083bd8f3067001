"""towers.index_sweep and benchmarks/faiss_sweep.py at a tiny size (no timing asserted)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np

from towers.index_sweep import Grid, Point, choose, clustered_vectors, held_out_queries, run_sweep

ROOT = Path(__file__).resolve().parents[2]

TINY = Grid(
    flat_queries=20,
    ivf_nlist=(32,),
    ivf_nprobe=(4, 32),
    hnsw_m=(16,),
    hnsw_ef_search=(64,),
    ivfpq_nlist=(32,),
    ivfpq_nprobe=(32,),
    ivfpq_sub_dims=(2,),
    ivfpq_k_factor=(8.0,),
)


def test_generated_vectors_are_unit_and_skewed() -> None:
    items, queries, desc = clustered_vectors(3000, 50, 32, seed=3)
    assert items.shape == (3000, 32) and queries.shape == (50, 32)
    np.testing.assert_allclose(np.linalg.norm(items, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(queries, axis=1), 1, atol=1e-5)
    assert desc["source"] == "generated" and desc["largest_cluster_share"] > 0.1
    again, _, _ = clustered_vectors(3000, 50, 32, seed=3)
    np.testing.assert_array_equal(items, again)
    # queries are never catalog vectors
    assert (queries @ items.T).max() < 0.9999


def test_held_out_queries_leave_the_catalog() -> None:
    x = np.eye(40, 8, dtype=np.float32)[np.arange(40) % 8] + 0.01 * np.arange(40)[:, None]
    items, queries = held_out_queries(x, 5, seed=1)
    assert items.shape == (35, 8) and queries.shape == (5, 8)


def test_choose_takes_the_fastest_point_over_the_floor() -> None:
    def pt(recall: float, p50: float, p99: float) -> Point:
        return Point("ivf", "IVF", {}, {}, recall, p50, p99, p50, 0.0, 0, 10)

    points = [pt(0.99, 0.5, 0.9), pt(0.96, 0.2, 0.4), pt(0.90, 0.1, 0.2), pt(0.99, 0.1, 2.0)]
    best = choose(points, floor=0.95, p99_max_ms=1.0)
    assert best is points[1] and best.chosen and points[0].meets and not points[2].meets
    assert choose(points[2:], floor=0.95, p99_max_ms=1.0) is None


def test_sweep_writes_json_markdown_and_plot(tmp_path: Path) -> None:
    from towers.index_sweep import write_report

    items, queries, desc = clustered_vectors(3000, 50, 32, seed=0)
    doc = run_sweep(items, queries, TINY, k=20, floor=0.9, p99_max_ms=1e4, progress=False)
    kinds = [p["kind"] for p in doc["points"]]
    assert kinds == ["flat", "ivf", "ivf", "hnsw", "ivfpq"]
    flat = doc["points"][0]
    assert flat["recall"] == 1.0 and flat["queries"] == 20
    chosen = doc["chosen"]
    assert chosen is not None and chosen["recall"] >= 0.9 and chosen["p99_ms"] <= 1e4
    paths = write_report({"vectors": desc, **doc}, tmp_path)
    assert json.loads(paths["json"].read_text())["chosen"]["type"] == chosen["type"]
    md = paths["md"].read_text()
    assert "Recall@20" in md and "**chosen**" in md and "generated" in md
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"


def test_the_script_runs_quick(tmp_path: Path, capsys) -> None:
    spec = importlib.util.spec_from_file_location("faiss_sweep", ROOT / "benchmarks/faiss_sweep.py")
    assert spec and spec.loader
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    vectors = clustered_vectors(2500, 1, 16, seed=2)[0]
    np.save(tmp_path / "item_embeddings.npy", vectors)  # what an exported bundle holds
    argv = ["--bundle", str(tmp_path), "--queries", "40", "--quick"]
    out = tmp_path / "out"
    doc = script.main([*argv, "--p99-max-ms", "10000", "--floor", "0.5", "--out", str(out)])
    assert doc["vectors"]["source"] == "file" and doc["n_items"] == 2460
    assert doc["chosen"] and doc["chosen"]["recall"] >= 0.5
    assert doc["vectors"]["path"].endswith("item_embeddings.npy")
    assert {p.name for p in out.iterdir()} == {
        "faiss_sweep.json",
        "faiss_sweep.md",
        "faiss_sweep.png",
    }
    assert "FAISS sweep" in capsys.readouterr().out
