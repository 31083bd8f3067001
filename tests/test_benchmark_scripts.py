"""Benchmark scripts run at a tiny size (no timing is asserted: they must run and write
their results)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_script(cmd: list[str], timeout_s: int) -> None:
    """Run a benchmark script's command line from the repository root; fail with its
    stderr's tail when it exits non-zero."""
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]


def test_item_tower_ab_compares_graphs_and_writes_results(untrained_bundle, tmp_path) -> None:
    pytest.importorskip("openvino")
    graph = untrained_bundle / "item_tower.onnx"
    catalog = untrained_bundle.parent / "data" / "items.parquet"
    out = tmp_path / "ab"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "item_tower_ab.py")]
    cmd += ["--graph", str(graph), "--graph", str(graph), "--catalog", str(catalog)]
    cmd += ["--items", "40", "--rounds", "2", "--batch", "16", "--out", str(out)]
    run_script(cmd, timeout_s=300)
    result = json.loads((out / "results.json").read_text())
    assert [len(g["items_per_s_runs"]) for g in result["graphs"]] == [2, 2]
    assert result["graphs"][1]["min_cosine_to_first"] > 0.9999  # the same graph twice
    assert "median ratio to the first" in (out / "results.md").read_text()
    bad = subprocess.run(
        [*cmd[:2], "--graph", str(tmp_path / "nope.onnx"), "--catalog", str(catalog)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert bad.returncode == 2 and "no such graph" in bad.stderr


def test_user_tower_engines_compares_runtimes_and_writes_results(untrained_bundle, tmp_path):
    pytest.importorskip("openvino")
    out = tmp_path / "ue"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "user_tower_engines.py")]
    cmd += [
        "--folder",
        str(untrained_bundle),
        "--requests",
        "6",
        "--rounds",
        "1",
        "--flush-mb",
        "1",
    ]
    done = subprocess.run([*cmd, "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [r["runtime"] for r in rows] == ["onnxruntime-fp32", "openvino-bf16", "openvino-fp32"]
    assert rows[2]["min_cosine_to_onnxruntime"] > 0.999  # the same graph in fp32
    bad = subprocess.run(
        [*cmd[:2], "--folder", str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert bad.returncode == 2 and "no user_tower.onnx" in bad.stderr


def test_reranker_forms_compares_the_two_graph_forms(untrained_bundle, tmp_path) -> None:
    """The same untrained cross-encoder served as pairs and in its context-once form: both
    rerank, score alike, and the script writes its tables."""
    import shutil

    from export.repository import write_repository

    pytest.importorskip("openvino")
    pairs_bundle = tmp_path / "pairs_bundle"
    shutil.copytree(untrained_bundle, pairs_bundle)
    (pairs_bundle / "reranker.context_once.onnx").unlink()  # an export made before
    once = write_repository(untrained_bundle, tmp_path / "once", warmup=False)
    pairs = write_repository(pairs_bundle, tmp_path / "pairs", warmup=False)
    out = tmp_path / "forms"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "reranker_forms.py")]
    cmd += ["--repository", f"{once}:23", "--repository", str(pairs)]
    cmd += ["--rounds", "2", "--max-call", "16", "--out", str(out)]
    run_script(cmd, timeout_s=300)
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [(r["kind"], r["form"]) for r in rows] == [
        ("search", "context-once"),
        ("search", "pairs"),
        ("homepage", "context-once"),
        ("homepage", "pairs"),
    ]
    assert all(r["max_logit_diff_to_first"] < 0.05 for r in rows)  # bf16, same model
    assert "stage x first" in (out / "results.md").read_text()


@pytest.mark.slow
def test_user_sequence_ab_fits_both_arms_and_writes_results(tiny_model, tmp_path) -> None:
    out = tmp_path / "seq.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "user_sequence_ab.py")]
    cmd += ["--artifacts", str(tiny_model["artifacts"]), "--out", str(out)]
    run_script(cmd, timeout_s=600)
    result = json.loads(out.read_text())
    assert result["n_test_pairs"] > 0
    for arm in ("mean (as trained)", "mean", "sequence"):
        assert 0.0 <= result[f"test recall@50 {arm}"] <= 1.0
    lo, hi = result["sequence - mean"]["95% interval"]
    assert lo <= result["sequence - mean"]["gain"] <= hi


def test_replay_compare_pairs_the_users_of_two_replays(tmp_path) -> None:
    users = list(range(300))
    rng = np.random.default_rng(0)
    old = rng.random(300)

    def doc(values) -> dict:
        row = {"recall@50": float(np.mean(values)), "per_user": list(map(float, values))}
        return {"k": 50, "user_ids": users, "variants": {"live history, moving prior": row}}

    (tmp_path / "old.json").write_text(json.dumps(doc(old)))
    (tmp_path / "new.json").write_text(json.dumps(doc(np.minimum(old + 0.05, 1.0))))
    (tmp_path / "bare.json").write_text(json.dumps({"variants": {}}))
    script = str(ROOT / "benchmarks" / "replay_compare.py")
    done = subprocess.run(
        [sys.executable, script, str(tmp_path / "old.json"), str(tmp_path / "new.json")],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "| live history, moving prior |" in done.stdout and "new better" in done.stdout
    bad = subprocess.run(
        [sys.executable, script, str(tmp_path / "bare.json"), str(tmp_path / "new.json")],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert bad.returncode != 0 and "no per-user figures" in bad.stderr


def test_model_bench_measures_graphs_against_each_runtimes_ceiling(untrained_bundle, tmp_path):
    """The OpenVINO rows are measured against OpenVINO's own dense-layer ceiling, the others
    against torch's GEMM, both measured in the same run; the user tower (a search request's
    graph: query and history) is measured beside the item tower."""
    pytest.importorskip("openvino")
    out = tmp_path / "mb"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "model_bench.py"), "--bundle"]
    cmd += [str(untrained_bundle), "--out", str(out), "--graphs", "item_tower,user_tower"]
    cmd += ["--lengths", "16", "--threads", "1", "--repeats", "2", "--gemm-size", "128"]
    cmd += ["--quality-rows", "16", "--batch", "8"]
    run_script(cmd, timeout_s=600)
    result = json.loads((out / "results.json").read_text())
    ceiling = result["ceiling_gflops"]
    assert {"bf16@1", "openvino_bf16@1", "openvino_fp32@1"} <= set(ceiling)
    rows = {r["runtime"]: r for r in result["graphs"]["item_tower"]["rows"]}
    ov = rows["openvino bf16"]
    assert ov["ceiling_share"] == pytest.approx(ov["gflops"] / ceiling["openvino_bf16@1"])
    ort = rows["onnxruntime fp32"]
    assert ort["ceiling_share"] == pytest.approx(ort["gflops"] / ceiling["fp32@1"])
    user = {r["runtime"]: r for r in result["graphs"]["user_tower"]["rows"]}
    assert user["onnxruntime fp32"]["mean_cosine"] == pytest.approx(1.0)
    assert user["openvino fp32"]["min_cosine"] > 0.999
    assert user["openvino bf16"]["ceiling_share"] > 0
    text = (out / "results.md").read_text()
    assert "OpenVINO's dense layer" in text and "## user_tower (batch 8)" in text


@pytest.mark.slow
def test_fusion_ceiling_ranks_every_fusion_against_ease(tiny_model, tmp_path) -> None:
    out = tmp_path / "fusion"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "fusion_ceiling.py")]
    cmd += ["--artifacts", str(tiny_model["artifacts"]), "--data", str(tiny_model["data"])]
    cmd += ["--out", str(out), "--max-users", "60"]
    run_script(cmd, timeout_s=600)
    doc = json.loads((out / "fusion_ceiling.json").read_text())
    rows = {r["system"]: r for r in doc["rows"]}
    assert rows["ease@500"]["vs_ease500"][0] == pytest.approx(1.0)
    for name in ("towers", "als", "ease@500, 100 positive neighbours", "rrf a=0.2"):
        assert 0.0 <= rows[name]["recall@50"] <= 1.0
    assert set(doc["best_by_family"]) == {"towers", "als"}
    assert "| z(ease) + 1 z(towers) |" in (out / "fusion_ceiling.md").read_text()


@pytest.mark.slow
def test_blend_fit_compares_fits_on_the_test_queries(tiny_model, tmp_path) -> None:
    out = tmp_path / "blend"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "blend_fit.py")]
    cmd += ["--artifacts", str(tiny_model["artifacts"]), "--out", str(out)]
    run_script(cmd, timeout_s=600)
    doc = json.loads((out / "results.json").read_text())
    rows = {r["blend"]: r for r in doc["rows"]}
    assert set(rows) == {
        "trained",
        "least_squares_50",
        "least_squares_all",
        "pairwise",
        "ndcg_search",
        "rerank_only",
        "retrieval",
    }
    assert doc["n_test"] > 0 and doc["n_valid"] > 0
    # the trained blend is the least-squares fit on validation top 50, refitted here
    trained = rows["trained"]["test_ndcg@10_per_query"]
    assert len(trained) == doc["n_test"]
    assert rows["retrieval"]["gain_over_retrieval"][0] == pytest.approx(0.0)
    for r in rows.values():
        value, lo, hi = r["test_ndcg@10"]
        assert 0.0 <= lo <= value <= hi <= 1.0
    assert "| ndcg_search |" in (out / "results.md").read_text()


@pytest.mark.slow
def test_collab_screen_ranks_every_scorer_on_validation_and_test(tiny_model, tmp_path) -> None:
    out = tmp_path / "screen"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "collab_screen.py")]
    cmd += ["--data", str(tiny_model["data"]), "--max-users", "150", "--out", str(out)]
    run_script(cmd, timeout_s=600)
    record = json.loads((out / "screen.json").read_text())
    rows = record["rows"]
    assert rows["ease@500"]["vs_ease500"][0] == pytest.approx(1.0)
    for name in ("item_knn", "rp3beta a=0.5 b=0.3", "z(ease@100) + 0.5 z(item_knn)"):
        assert 0.0 <= rows[name]["test"] <= 1.0 and len(rows[name]["vs_ease500"]) == 3
    # one validation choice per family: ease, item_knn, rp3beta, mix
    assert sum(r["chosen"] for r in rows.values()) == 4
    assert "| scorer | validation | test |" in (out / "screen.md").read_text()
    bad = subprocess.run(
        [*cmd[:2], "--data", str(tiny_model["data"]), "--protocol", "random", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert bad.returncode == 2 and "towerserve data split" in bad.stderr
