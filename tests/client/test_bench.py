"""``towerserve bench`` (client/bench): its parsers, request mix, caches and report as unit
tests, and one tiny end-to-end run against the real ``tritonserver`` with perf_analyzer
(slow; skips when perf_analyzer cannot run here). No timing is asserted."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from client.bench import stats
from client.bench.catalog import prepare_catalog, shadow_artifacts
from client.bench.config import BenchConfig
from client.bench.jitter import measure_jitter
from client.bench.memory import growth_pct, sample_memory
from client.bench.perf import (
    PerfAnalyzerUnavailable,
    perf_library_dirs,
    read_latency_csv,
    read_profile_export,
    scored_summary,
)
from client.bench.report import serving_markdown, soak_markdown, targets, write_outputs
from client.bench.requests import build_requests, perf_input_data
from client.bench.runner import BenchError, reranker_calibration, resolve_sections

CSV = (
    "Concurrency,Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,"
    "Server Compute Input,Server Compute Infer,Server Compute Output,Client Recv,p50 latency,"
    "p90 latency,p95 latency,p99 latency,Avg latency,request/response,response wait\n"
    "1,58.195,8,108,2,105,15870,1034,5,16155,23756,24569,26331,17136,13,17085\n"
)


@pytest.fixture(scope="module")
def small_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from towers.data import GenerateConfig, generate

    folder = tmp_path_factory.mktemp("bench_data") / "data"
    generate(GenerateConfig(n_items=200, n_users=40, n_queries=60, seed=1), folder)
    return folder


def test_latency_csv_is_read_in_ms(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text(CSV)
    row = read_latency_csv(path)
    assert row["throughput_rps"] == pytest.approx(58.195)
    assert row["p50_ms"] == pytest.approx(16.155)
    assert row["p99_ms"] == pytest.approx(26.331)
    assert row["server_compute_ms"] == pytest.approx((105 + 15870 + 1034) / 1000)


def test_profile_export_kinds_scored_and_unanswered(tmp_path: Path) -> None:
    def req(t: int, query: str, scored: int, degraded: bool, answered: bool = True) -> dict:
        return {
            "timestamp": t,
            "request_inputs": {"QUERY": query},
            "response_timestamps": [t + 2_000_000] if answered else [],
            "response_outputs": [{"N_SCORED": scored, "DEGRADED": degraded}] if answered else [],
        }

    doc = {
        "experiments": [
            {
                "requests": [
                    req(1_000_000_000, "red shirt", 16, True),
                    req(1_010_000_000, "", 100, False),
                    req(1_020_000_000, "", 0, True, answered=False),
                ]
            }
        ]
    }
    path = tmp_path / "p.json"
    path.write_text(json.dumps(doc))
    reqs = read_profile_export(path)
    assert reqs.kinds == ["search", "homepage"]
    assert reqs.errors == 1
    np.testing.assert_allclose(reqs.latency_ms, [2.0, 2.0])
    summary = scored_summary(reqs.n_scored, reqs.degraded)
    assert summary["count"] == 2 and summary["median"] == 58 and summary["share_degraded"] == 0.5
    # an answer that needed no cross-encoder (N_SCORED 0, not degraded) is counted apart
    summary = scored_summary(np.array([16, 0, 0, -1]), np.array([True, False, True, False]))
    assert summary["count"] == 2 and summary["unneeded"] == 1 and summary["median"] == 8
    assert scored_summary(np.array([0]), np.array([False])) == {"count": 0, "unneeded": 1}


def test_request_mix_alternates_real_queries_and_histories(small_data: Path) -> None:
    from towers.data import load_dataset

    reqs = build_requests(small_data, 30, seed=0)
    assert len(reqs) == 30
    assert [r.kind for r in reqs[:4]] == ["search", "homepage", "search", "homepage"]
    ds = load_dataset(small_data)
    test_texts = set(ds.queries_in("test")["query_text"])
    for r in reqs:
        if r.kind == "search":
            assert r.query in test_texts and r.user_id == -1 and not r.history_ids
        else:
            assert r.query == "" and r.user_id >= 0
            assert 0 < len(r.history_ids) == len(r.history_ts) <= 20
            assert list(r.history_ts) == sorted(r.history_ts)
    doc = perf_input_data(reqs[:2], budget_ms=25, k=10)
    text = json.dumps(doc)
    assert '"BUDGET_MS": {"content": [25.0]' in text
    home = doc["data"][1]
    assert home["HISTORY_IDS"]["shape"] == [len(reqs[1].history_ids)]
    assert doc["data"][0]["HISTORY_IDS"] == {"content": [], "shape": [0]}


def test_request_mix_follows_the_search_share(small_data: Path) -> None:
    kinds = [r.kind for r in build_requests(small_data, 40, search_share=0.25)]
    assert kinds.count("search") == 10
    assert kinds[:4] == ["search", "homepage", "homepage", "homepage"]
    assert {r.kind for r in build_requests(small_data, 12, search_share=1.0)} == {"search"}
    assert {r.kind for r in build_requests(small_data, 12, search_share=0.0)} == {"homepage"}
    from towers.data import load_dataset

    texts = set(load_dataset(small_data).queries_in("test")["query_text"])
    searches = [r.query for r in build_requests(small_data, 30, search_share=1.0)]
    assert len(set(searches)) == min(30, len(texts))  # every query in turn, none skipped
    with pytest.raises(ValueError, match="search_share"):
        build_requests(small_data, 4, search_share=1.5)


def test_bench_command_refuses_a_share_outside_0_1(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from client.cli import app

    args = ["bench", "--artifacts", str(tmp_path), "--out", str(tmp_path / "o")]
    result = CliRunner().invoke(app, [*args, "--search-share", "1.5"])
    assert result.exit_code == 2 and "search-share" in result.output
    assert not (tmp_path / "o").exists()


def test_catalog_cache_is_reused(tmp_path: Path) -> None:
    first, reused = prepare_catalog(tmp_path, items=200, users=20, queries=30, seed=2)
    assert not reused and (first / "items.parquet").is_file()
    again, reused = prepare_catalog(tmp_path, items=200, users=20, queries=30, seed=2)
    assert reused and again == first
    other, reused = prepare_catalog(tmp_path, items=200, users=20, queries=30, seed=3)
    assert not reused and other != first


def test_shadow_artifacts_recount_a_prior_fitted_on_another_catalog(
    small_data: Path, tmp_path: Path
) -> None:
    from towers.prior import ItemPrior, load_prior, save_prior

    artifacts = tmp_path / "artifacts"
    (artifacts / "item_tower").mkdir(parents=True)
    (artifacts / "train_report.json").write_text("{}")
    save_prior(ItemPrior(np.zeros(7, np.float32), 0.0, 1, 3 * 86400.0, 0.03), artifacts)
    folder, origin = shadow_artifacts(artifacts, small_data, tmp_path / "shadow")
    assert origin == "recounted" and folder == tmp_path / "shadow"
    assert (folder / "item_tower").is_symlink() and (folder / "train_report.json").is_symlink()
    prior = load_prior(folder)
    assert prior is not None and len(prior.values) == 200 and prior.weight == 0.03
    assert len(load_prior(artifacts).values) == 7  # the artifacts themselves untouched


def test_stats_delta_per_request() -> None:
    before = {"reranker": {"success": 10, "fail": 0, "executions": 10, "inferences": 10}}
    before["reranker"].update(
        queue_ns=0, compute_input_ns=0, compute_infer_ns=0, compute_output_ns=0
    )
    after = {
        "reranker": {
            "success": 14,
            "fail": 1,
            "executions": 15,
            "inferences": 15,
            "queue_ns": 5_000_000,
            "compute_input_ns": 0,
            "compute_infer_ns": 50_000_000,
            "compute_output_ns": 0,
        },
        "idle": {"success": 3, "fail": 0, "executions": 3, "inferences": 3, "queue_ns": 0},
    }
    after["idle"].update(compute_input_ns=0, compute_infer_ns=0, compute_output_ns=0)
    d = stats.delta(before, {**after, "idle": dict(after["idle"])})
    assert d["reranker"]["requests"] == 4 and d["reranker"]["failures"] == 1
    assert d["reranker"]["queue_ms"] == pytest.approx(1.0)
    assert d["reranker"]["compute_ms"] == pytest.approx(10.0)


def test_memory_of_this_process() -> None:
    sample = sample_memory(os.getpid())
    assert sample.rss_mb > 0 and sample.processes[0].pid == os.getpid()
    assert sample_memory(None).rss_mb == 0
    assert growth_pct(100.0, 105.0) == pytest.approx(5.0)


def test_config_and_sections_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="catalog size"):
        BenchConfig(catalog_items=None)
    with pytest.raises(ValueError, match="concurrencies"):
        BenchConfig(concurrencies=(0,))
    with pytest.raises(ValueError, match="search_share must be in 0..1"):
        BenchConfig(search_share=-0.1)
    # serving settings fail before any catalog is built or exported
    with pytest.raises(ValueError, match="user_engine must be openvino or onnxruntime"):
        BenchConfig(user_engine="tvm")
    with pytest.raises(ValueError, match="rerank_threads must be >= 1"):
        BenchConfig(rerank_threads=0)
    with pytest.raises(ValueError, match="reserve_ms must be in"):
        BenchConfig(reserve_ms=-1.0)
    with pytest.raises(ValueError, match="jitter_s must be in"):
        BenchConfig(jitter_s=-1.0)
    with pytest.raises(BenchError, match="unknown section"):
        resolve_sections(BenchConfig(sections=("nope",)))
    with pytest.raises(BenchError, match="soak-minutes"):
        resolve_sections(BenchConfig(sections=("soak",)))
    names = [s.name for s in resolve_sections(BenchConfig(soak_minutes=1.0))]
    assert names == ["serving", "soak"]


def test_fallback_libraries_are_linked_from_the_pytriton_wheel(tmp_path: Path) -> None:
    """With no nvidia-cuda-runtime-cu12 in site-packages, libcudart comes from the wheel."""
    try:
        dirs = perf_library_dirs(site_packages=tmp_path / "site", shim=tmp_path / "shim")
    except PerfAnalyzerUnavailable as exc:
        pytest.skip(f"no pytriton wheel libraries here: {exc}")
    assert tmp_path / "shim" in dirs
    link = tmp_path / "shim" / "libcudart.so.12"
    assert link.is_symlink() and link.resolve().is_file()


def test_report_renders_from_results(tmp_path: Path) -> None:
    point = {
        "budget_ms": 25.0,
        "concurrency": 1,
        "stable": False,
        "throughput_rps": 50.0,
        "p50_ms": 10.0,
        "p90_ms": 12.0,
        "p95_ms": 13.0,
        "p99_ms": float("nan"),
        "errors": 0,
        "n_scored": {"median": 16.0, "share_degraded": 1.0, "count": 30, "unneeded": 10},
        "by_kind": {"search": {"p50_ms": 9.0, "p99_ms": 11.0}},
        "stages": {"reranker": {"queue_ms": 0.1, "compute_ms": 8.0, "failures": 0}},
    }
    serving = {"points": [point], "sweeps": [], "settings": {}, "memory": {}}
    lines = serving_markdown(serving)
    assert any(
        "| 25 | 1 | 10.0 | 12.0 | - | 50.0 | 16.0 | 100.0 | 25.0 | 0 | no |" in x for x in lines
    )
    soak_lines = soak_markdown({"windows": [], "errors": {}, "duration_s": 60.0})
    paths = write_outputs(
        {"run": {}, "sections": {"serving": serving}},
        [("serving", "Serving", lines, []), ("soak", "Soak", soak_lines, [])],
        tmp_path,
    )
    doc = json.loads(paths["results"].read_text())  # strict JSON: NaN written as null
    assert doc["sections"]["serving"]["points"][0]["p99_ms"] is None
    assert "## Serving" in paths["report"].read_text()


def test_reranker_calibration_from_the_server_log() -> None:
    log = (
        'I1128 11:27:59.341539 22047 backend.py:99] "serving.reranker: reranker: 9.61 us per '
        'pair-token, 0.308 ms per candidate of 32 tokens (calls of 64)"\n'
    )
    assert reranker_calibration(log) == {
        "us_per_token": 9.61,
        "ms_per_candidate": 0.308,
        "width": 32.0,
        "call_size": 64.0,
    }
    assert reranker_calibration("nothing here") is None


def test_host_jitter_times_one_fixed_workload() -> None:
    jit = measure_jitter(0.3, sample_ms=1.0)
    assert jit["samples"] >= 3
    assert 0 < jit["p50_ms"] <= jit["p90_ms"] <= jit["p99_ms"] <= jit["p999_ms"] <= jit["max_ms"]
    assert jit["p99_over_p50"] == pytest.approx(jit["p99_ms"] / jit["p50_ms"])
    with pytest.raises(ValueError, match="must be > 0"):
        measure_jitter(0.0)


def test_report_states_the_noise_floor_under_the_p99_targets(tmp_path: Path) -> None:
    point = {"budget_ms": 25.0, "concurrency": 1, "p99_ms": 30.0, "n_scored": {"median": 64.0}}
    jitter = {
        "samples": 100,
        "p50_ms": 5.0,
        "p99_ms": 15.0,
        "p999_ms": 20.0,
        "p99_over_p50": 3.0,
    }
    doc = {"run": {"host": {"jitter": jitter}}, "sections": {"serving": {"points": [point]}}}
    doc["targets"] = targets(doc)
    report = write_outputs(doc, [], tmp_path)["report"].read_text()
    assert "**p99/p50 3.00**" in report
    assert "p99 <= 25 ms needs a p50 of at most about 8.3 ms" in report


def test_targets_of_the_issue() -> None:
    point = {"budget_ms": 25.0, "concurrency": 1, "p99_ms": 30.0, "n_scored": {"median": 64.0}}
    soak = {
        "errors": {"failed_requests": 0, "unanswered_requests": 0},
        "memory": {"growth_pct": 1.0},
        "drift": {"p99_change_pct": -25.0},
    }
    rows = targets({"sections": {"serving": {"points": [point]}, "soak": soak}})
    verdict = {r["name"]: r["passed"] for r in rows}
    assert verdict == {
        "concurrency 1, budget 25 ms: p99 ms": False,
        "concurrency 1, budget 25 ms: median N_SCORED": True,
        "soak: failed requests": True,
        "soak: memory growth %": True,
        "soak: p99 drift %, last vs first (absolute)": False,
    }


# ---------------------------------------------------------------------------------------------
# End to end: the real server, perf_analyzer, the client sweep and a short soak
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_bench_end_to_end_tiny(
    untrained_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from client.bench import run_bench
    from client.bench.perf import perf_environment
    from client.bench.runner import prepare

    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(name, "127.0.0.1,localhost,::1")
    try:
        perf_environment()
    except PerfAnalyzerUnavailable as exc:
        pytest.skip(str(exc))
    cfg = BenchConfig(
        artifacts=untrained_bundle.parent / "artifacts",
        out_dir=tmp_path / "out",
        cache_dir=tmp_path / "cache",
        catalog_items=300,
        n_users=50,
        n_queries=60,
        concurrencies=(1,),
        budgets_ms=(0.0, 25.0),
        n_requests=20,
        measurement_interval_ms=300,
        stability_pct=1000.0,
        max_trials=3,
        sweep_requests=10,
        soak_minutes=0.05,
        soak_window_s=3.0,
        soak_concurrency=2,
        jitter_s=0.2,
        reserve_ms=2.0,
    )
    doc = run_bench(cfg)
    out = cfg.out_dir
    for name in ("results.json", "report.md", "latency_vs_budget.png", "soak.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert not (out / "raw").exists()
    assert json.loads((out / "results.json").read_text())["run"]["sections"] == [
        "serving",
        "soak",
    ]
    assert doc["catalog"]["n_items"] == 300 and doc["requests"]["homepage"] == 10
    assert doc["server"]["reranker_calibration"]["ms_per_candidate"] > 0
    assert doc["run"]["host"]["jitter"]["samples"] >= 3
    assert doc["catalog"]["serving"]["reserve_ms"] == "2"
    reranker = Path(doc["catalog"]["bundle"]).parent / "repository" / "reranker" / "config.pbtxt"
    assert re.search(r'key: "reserve_ms"\s+value \{\s+string_value: "2.0"', reranker.read_text())
    serving = doc["sections"]["serving"]
    assert [(p["budget_ms"], p["concurrency"]) for p in serving["points"]] == [(0.0, 1), (25.0, 1)]
    for p in serving["points"]:
        assert p["throughput_rps"] > 0 and p["p99_ms"] >= p["p50_ms"] > 0
        assert p["n_requests"] > 0 and p["errors"] == 0
        assert set(p["by_kind"]) == {"search", "homepage"}
        stages = p["stages"]
        assert {"tokenizer", "user_tower", "retriever", "reranker", "recommend"} <= set(stages)
        assert all(s["failures"] == 0 and s["requests"] > 0 for s in stages.values())
    zero, some = serving["sweeps"]
    assert zero["errors"] == 0 and some["errors"] == 0
    assert zero["n_scored"]["count"] == 10 and zero["n_scored"]["median"] == 0
    assert zero["n_scored"]["share_degraded"] == 1.0
    assert serving["memory"]["after"]["rss_mb"] > 0
    assert {p["name"] for p in serving["memory"]["after"]["processes"]} >= {
        "tritonserver",
        "reranker",
    }
    soak = doc["sections"]["soak"]
    assert soak["requests"] > 0 and soak["windows"]
    assert soak["errors"] == {
        "perf_analyzer_failures": 0,
        "failed_requests": 0,
        "unanswered_requests": 0,
    }
    report = (out / "report.md").read_text()
    assert "## Serving" in report and "## Soak" in report
    again = prepare(cfg)  # the catalog and the export are reused from the cache
    assert again.catalog_reused and again.bundle_reused
