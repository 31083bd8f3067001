from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from towers.evaluation.report import format_value, metric_columns, write_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PLOTS = ["search_recall_at_k", "quality_vs_latency", "recommendation", "distillation", "drift"]
HEADINGS = [
    "# towerserve evaluation",
    "## Checks",
    "## Search",
    "## Recommendation",
    "## Distillation trade-off",
    "## Time drift and incremental update",
]


def _search_system(r10: float, ndcg: float, qps: float, p50: float) -> dict[str, float]:
    return {
        "recall@10": r10,
        "recall@50": min(1.0, r10 * 1.8),
        "recall@100": min(1.0, r10 * 2.2),
        "recall@200": min(1.0, r10 * 2.5),
        "ndcg@10": ndcg,
        "mrr@10": ndcg * 0.9,
        "queries_per_s": qps,
        "latency_ms_p50": p50,
    }


def full_results() -> dict:
    students = [
        {
            "name": f"student-{n}L",
            "layers": n,
            "params_m": 4.0 + 3.5 * n,
            "recall@100": 0.50 + 0.05 * n,
            "ndcg@10": 0.30 + 0.03 * n,
            "texts_per_s": 9000.0 / n,
            "speedup_vs_teacher": 6.0 / n,
        }
        for n in range(1, 5)
    ]
    teacher = {
        "name": "teacher",
        "layers": 6,
        "params_m": 22.7,
        "recall@100": 0.74,
        "ndcg@10": 0.45,
        "texts_per_s": 1500.0,
        "speedup_vs_teacher": 1.0,
    }
    return {
        "meta": {
            "data_dir": "runs/eval/data",
            "model_version": "3",
            "created": "2025-01-02T03:04:05+00:00",
            "n_items": 50000,
            "cut_ts": 1_700_000_000,
        },
        "search": {
            "n_queries": 1500,
            "systems": {
                "popularity": _search_system(0.02, 0.01, 250000.0, 0.01),
                "bm25": _search_system(0.21, 0.25, 900.0, 1.2),
                "teacher_exact": _search_system(0.30, 0.36, 300.0, 8.5),
                "student_exact": _search_system(0.27, 0.33, 1800.0, 2.1),
                "student_faiss": _search_system(0.26, 0.32, 5200.0, 0.8),
                "student_faiss_rerank": _search_system(0.26, 0.41, 120.0, 24.0),
            },
        },
        "recommendation": {
            "n_users": 800,
            "cut_ts": 1_700_000_000,
            "window_s": 7 * 86_400,
            "systems": {
                "popularity": {
                    "recall@10": 0.04,
                    "recall@50": 0.11,
                    "ndcg@10": 0.02,
                    "coverage@10": 0.001,
                    "users_per_s": 90000.0,
                },
                "item_knn": {
                    "recall@10": 0.09,
                    "recall@50": 0.21,
                    "ndcg@10": 0.05,
                    "coverage@10": 0.12,
                    "users_per_s": 4000.0,
                },
                "two_tower": {
                    "recall@10": 0.12,
                    "recall@50": 0.28,
                    "ndcg@10": 0.07,
                    "coverage@10": 0.31,
                    "users_per_s": 2500.0,
                },
            },
        },  # fmt: skip
        "distillation": {"rows": [*students, teacher], "chosen": "student-2L"},
        "drift": {
            "metric": "recall@50",
            "windows": [
                {
                    "label": f"days {2 * i}-{2 * i + 2}",
                    "start_ts": 1_700_000_000 + i * 172_800,
                    "end_ts": 1_700_172_800 + i * 172_800,
                    "n_users": 300 - 20 * i,
                    "stale": 0.28 - 0.03 * i,
                    "updated": None if i == 0 else 0.27 - 0.01 * i,
                    "retrained": 0.29 - 0.005 * i,
                }
                for i in range(5)
            ],  # fmt: skip
            "update": {
                "since_ts": 1_700_000_000,
                "seconds": 41.5,
                "full_train_seconds": 900.0,
                "time_fraction": 41.5 / 900.0,
                "lost": 0.06,
                "recovered": 0.045,
                "recovered_fraction": 0.75,
                "trainable_params_m": 0.4,
                "mode": "user tower + item embeddings",
            },
        },
        "checks": [
            {
                "name": "student_faiss recall@100 vs teacher",
                "value": 0.93,
                "threshold": 0.9,
                "passed": True,
                "detail": "ratio of recall@100",
            },
            {
                "name": "rerank p50 latency ms",
                "value": 24.0,
                "threshold": 20.0,
                "passed": False,
                "detail": "too slow | check batching",
            },
        ],  # fmt: skip
    }


def _assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, path
    assert len(data) > 5_000, f"{path} is only {len(data)} bytes"


def test_full_report_has_every_section_plot_and_json(tmp_path: Path) -> None:
    results = full_results()
    report = write_report(results, tmp_path / "out")

    assert report == tmp_path / "out" / "report.md"
    text = report.read_text(encoding="utf-8")
    positions = [text.index(h) for h in HEADINGS]
    assert positions == sorted(positions), "sections out of order"
    for name in PLOTS:
        assert f"](plots/{name}.png)" in text
        _assert_png(tmp_path / "out" / "plots" / f"{name}.png")
    assert json.loads((tmp_path / "out" / "results.json").read_text(encoding="utf-8")) == results
    assert not list((tmp_path / "out").rglob("*.tmp")), "temporary files left behind"
    assert report.stat().st_mode & 0o044 == 0o044, "report not readable by others"

    # table contents: formats, column order, chosen row, checks, update sentence
    assert "| ✅ | student_faiss recall@100 vs teacher | 0.930 | – | – | 0.900 |" in text
    assert "too slow \\| check batching" in text and "1 of 2 checks passed, 0 inconclusive" in text
    header = next(line for line in text.splitlines() if line.startswith("| system | recall@10"))
    assert header.split(" | ")[1:5] == ["recall@10", "recall@50", "recall@100", "recall@200"]
    assert header.rstrip(" |").endswith("queries/s | latency p50 (ms)")
    assert "| popularity | 0.020 |" in text and "| 250,000.0 | 0.0 |" in text
    assert "| **student-2L** |" in text and "✓" in text
    assert "| 6.0× |" in text
    assert "trained 0.40 M parameters in 41.5 s (4.6% of the 900.0 s full training)" in text
    assert "recovered 75.0% of the recall@50 lost to drift (0.045 of 0.060)." in text
    assert "2023-11-14 22:13 UTC" in text  # cut_ts rendered as a time


def test_minimal_report_meta_only(tmp_path: Path) -> None:
    results = {"meta": {"model_version": 1, "data_dir": "d"}}
    report = write_report(results, tmp_path)

    text = report.read_text(encoding="utf-8")
    assert text.startswith("# towerserve evaluation\n")
    assert "| model_version | 1 |" in text
    assert "##" not in text and "![" not in text
    assert not (tmp_path / "plots").exists()
    assert json.loads((tmp_path / "results.json").read_text()) == results


def test_empty_sections_are_skipped(tmp_path: Path) -> None:
    results = {
        "meta": {},
        "search": {"n_queries": 0, "systems": {}},
        "recommendation": {},
        "distillation": {"rows": []},
        "drift": {"windows": []},
        "checks": [],
        "extra": {"ignored": True},
    }
    text = write_report(results, tmp_path).read_text(encoding="utf-8")
    assert text.strip() == "# towerserve evaluation"
    assert not (tmp_path / "plots").exists()


def test_malformed_sections_are_skipped(tmp_path: Path) -> None:
    results = {
        "search": [1, 2],
        "recommendation": {"systems": {"a": "not a dict"}},
        "distillation": {"rows": "student-1L"},
        "drift": {"windows": [None, 3], "update": "fast"},
        "checks": {"name": "x"},
    }
    text = write_report(results, tmp_path).read_text(encoding="utf-8")
    assert text.strip() == "# towerserve evaluation"
    assert not (tmp_path / "plots").exists()


def test_missing_values_render_as_dash_and_are_skipped_in_plots(tmp_path: Path) -> None:
    results = {
        "search": {
            "systems": {
                "a": {"recall@10": float("nan"), "recall@50": 0.4, "ndcg@10": None,
                      "queries_per_s": 100.0},
                "b": {"recall@10": 0.2, "recall@50": None, "ndcg@10": 0.3,
                      "queries_per_s": 50.0},
            }
        },
        "drift": {"metric": "recall@50", "windows": [
            {"label": "w0", "stale": 0.3, "updated": None, "retrained": float("nan")},
            {"label": "w1", "stale": 0.25, "updated": 0.28, "retrained": None},
        ]},
    }  # fmt: skip
    text = write_report(results, tmp_path).read_text(encoding="utf-8")
    assert "| a | – | 0.400 | – | 100.0 |" in text
    assert "| b | 0.200 | – | 0.300 | 50.0 |" in text
    assert "| w0 | 0.300 | – | – |" in text
    # quality vs latency falls back to 1000 / queries_per_s; only "b" has an NDCG to plot
    for name in ["search_recall_at_k", "quality_vs_latency", "drift"]:
        _assert_png(tmp_path / "plots" / f"{name}.png")
    assert (
        json.loads((tmp_path / "results.json").read_text())["search"]["systems"]["b"]
        == (results["search"]["systems"]["b"])
    )


def test_drift_update_without_windows(tmp_path: Path) -> None:
    results = {"drift": {"metric": "recall@50", "windows": [],
                         "update": {"seconds": 12.0, "full_train_seconds": 120.0, "lost": 0.04,
                                    "recovered": 0.01}}}  # fmt: skip
    text = write_report(results, tmp_path).read_text(encoding="utf-8")
    assert "## Time drift and incremental update" in text
    assert "took 12.0 s (10.0% of the 120.0 s full training)" in text
    assert "recovered 25.0% of the recall@50 lost to drift" in text
    assert "![" not in text


def test_numpy_values_are_serialised(tmp_path: Path) -> None:
    results = {
        "meta": {"n_items": np.int64(5000)},
        "search": {
            "n_queries": np.int32(12),
            "systems": {
                "s": {"recall@10": np.float32(0.5), "ndcg@10": np.float64(0.25),
                      "queries_per_s": np.float16(1000.0), "latency_ms_p50": np.float32(3.5)},
            },
        },
        "checks": [{"name": "c", "value": np.float32(0.5), "threshold": 0.4,
                    "passed": np.bool_(True), "detail": ""}],
        "curve": np.arange(3),
    }  # fmt: skip
    report = write_report(results, tmp_path)

    stored = json.loads((tmp_path / "results.json").read_text())
    assert stored["meta"]["n_items"] == 5000
    assert stored["search"]["systems"]["s"]["recall@10"] == pytest.approx(0.5)
    assert stored["checks"][0]["passed"] is True
    assert stored["curve"] == [0, 1, 2]
    text = report.read_text(encoding="utf-8")
    assert "| n_items | 5,000 |" in text and "| s | 0.500 | 0.250 | 1,000.0 | 3.5 |" in text
    assert "| ✅ | c |" in text


def test_not_json_serialisable_is_a_type_error(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="object"):
        write_report({"meta": {"x": object()}}, tmp_path)
    with pytest.raises(TypeError, match="dict"):
        write_report([], tmp_path)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("recall@10", 0.12345, "0.123"),
        ("ndcg@10", np.float32(1.0), "1.000"),
        ("queries_per_s", 12345.678, "12,345.7"),
        ("latency_ms_p50", 3.14159, "3.1"),
        ("seconds", 41.56, "41.6"),
        ("speedup_vs_teacher", 3.26, "3.3×"),
        ("params_m", 22.713, "22.71"),
        ("n_items", 50000, "50,000"),
        ("cut_ts", 0, "1970-01-01 00:00 UTC"),
        ("data_dir", "runs/x", "runs/x"),
        ("recall@10", None, "–"),
        ("recall@10", float("nan"), "–"),
        ("recall@10", np.float64("nan"), "–"),
        ("value", float("inf"), "–"),
        ("value", 24.0, "24.00"),
        ("value", 1234.5, "1,234.5"),
    ],
)
def test_format_value(name: str, value: object, expected: str) -> None:
    assert format_value(name, value) == expected


def test_metric_columns_stable_order() -> None:
    rows = [
        {"latency_ms_p50": 1.0, "recall@100": 0.1, "mrr@10": 0.2, "note": "x", "hits@5": 0.1},
        {"queries_per_s": 3.0, "recall@20": 0.2, "ndcg@10": 0.3, "coverage@10": 0.4, "z": None},
    ]
    assert metric_columns(rows) == [
        "recall@20",
        "recall@100",
        "ndcg@10",
        "mrr@10",
        "hits@5",
        "coverage@10",
        "queries_per_s",
        "latency_ms_p50",
    ]
    assert metric_columns([]) == []


class _CapturePlots:
    """Stands in for the report's plot writer: keeps each figure's y label and title."""

    def __init__(self) -> None:
        self.labels: dict[str, tuple[str, str]] = {}

    def save(self, fig, name: str) -> str:
        ax = fig.axes[0]
        self.labels[name] = (ax.get_ylabel(), ax.get_title())
        return f"plots/{name}.png"


@pytest.mark.parametrize(
    "drop,metric",
    [((), "ndcg@10"), (("ndcg@10",), "recall@100"), (("ndcg@10", "recall@100"), "recall@10")],
)
def test_distillation_plot_prefers_ndcg_at_10(drop: tuple[str, ...], metric: str) -> None:
    from towers.evaluation.report.plots import _plot_distillation

    rows = [
        {k: v for k, v in row.items() if k not in drop}
        for row in full_results()["distillation"]["rows"]
    ]
    if metric == "recall@10":
        for row in rows:
            row["recall@10"] = 0.2
    plots = _CapturePlots()
    assert _plot_distillation(rows, "student-2L", plots) == "plots/distillation.png"
    ylabel, title = plots.labels["distillation"]
    assert ylabel == metric and title == f"Distillation trade-off: {metric} vs throughput"
