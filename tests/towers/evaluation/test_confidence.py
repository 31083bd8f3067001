"""Bootstrap intervals, verdicts, and the checks that use them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from towers.evaluation.confidence import MIN_COUNT, bootstrap_ci, paired_ci, verdict
from towers.evaluation.harness import checks
from towers.evaluation.report import write_report


def test_interval_holds_the_mean_and_narrows_with_more_users() -> None:
    rng = np.random.default_rng(1)
    small, large = rng.random(50), rng.random(5000)
    lo_s, hi_s = bootstrap_ci(small)
    lo_l, hi_l = bootstrap_ci(large)
    assert lo_s < small.mean() < hi_s and lo_l < large.mean() < hi_l
    assert (hi_l - lo_l) < (hi_s - lo_s) / 5
    assert bootstrap_ci(small, seed=3) == bootstrap_ci(small, seed=3)
    assert all(np.isnan(bootstrap_ci([])))


def test_paired_interval_is_tighter_than_the_users_spread() -> None:
    rng = np.random.default_rng(2)
    hardness = rng.random(400)  # the same users are hard or easy for both systems
    a, b = hardness + 0.02, hardness
    value, lo, hi = paired_ci(a, b, "diff")
    assert value == pytest.approx(0.02) and lo == pytest.approx(0.02) and hi == pytest.approx(0.02)
    ratio, lo, hi = paired_ci(2 * hardness, hardness, "ratio")
    assert ratio == pytest.approx(2.0) and lo == pytest.approx(2.0)
    with pytest.raises(ValueError, match="differ in length"):
        paired_ci([1.0], [1.0, 2.0], "diff")
    with pytest.raises(ValueError, match="diff or ratio"):
        paired_ci([1.0], [1.0], "sum")  # type: ignore[arg-type]


def test_verdicts() -> None:
    assert verdict(0.9, 0.5) == "passed"
    assert verdict(0.1, 0.5) == "failed"
    assert verdict(0.9, 0.5, n=MIN_COUNT - 1) == "inconclusive"
    assert verdict(0.9, 0.5, n=MIN_COUNT, ci=(0.4, 1.2)) == "inconclusive"
    assert verdict(0.9, 0.5, n=MIN_COUNT, ci=(0.6, 1.2)) == "passed"
    assert verdict(0.05, 0.1, higher_is_better=False) == "passed"


def _rec(per_user: dict[str, np.ndarray]) -> dict[str, object]:
    systems = {
        name: {"recall@50": float(v.mean()), "n_users": len(v)} for name, v in per_user.items()
    }
    return {"recommendation": {"systems": systems}}


def test_a_check_on_too_few_users_is_inconclusive_and_says_so(tmp_path) -> None:
    rng = np.random.default_rng(3)
    few = {"popularity": rng.random(19) * 0.1, "student_faiss": rng.random(19) * 0.5}
    per_query = {"recommendation": {n: {"recall@50": v} for n, v in few.items()}}
    results = _rec(few)
    results["checks"] = checks(results, per_query)
    by = {c["name"]: c for c in results["checks"]}
    c = by["two-tower Recall@50 vs popularity"]
    assert c["status"] == "inconclusive" and c["passed"] is None and c["n"] == 19
    assert c["ci95"][0] < c["value"] < c["ci95"][1]
    text = write_report(results, tmp_path).read_text()
    assert "❔ inconclusive | two-tower Recall@50 vs popularity" in text
    assert "0 of 2 checks passed, 2 inconclusive" in text


def test_the_served_path_is_held_to_the_strongest_baseline() -> None:
    rng = np.random.default_rng(4)
    base = rng.random(500)
    users = {
        "popularity": base * 0.2,
        "ease": base * 0.9,
        "item_knn": base * 0.5,
        "student_faiss": base * 0.6,
    }
    per_query = {"recommendation": {n: {"recall@50": v} for n, v in users.items()}}
    results = _rec(users)
    by = {c["name"]: c for c in checks(results, per_query)}
    c = by["recommendation beats the best baseline Recall@50"]
    assert c["status"] == "failed" and "student_faiss / ease" in c["detail"]
    assert c["value"] == pytest.approx(0.6 / 0.9) and c["n"] == 500
    assert "recommendation beats the best baseline top-100 accuracy" not in by  # no accuracy
    # top-100 accuracy: held against the baseline with the best accuracy, paired over the
    # users' hits (run_systems' hits@100), here item_knn, whose hits ease does not lead
    hits = {n: np.round(v * 4) for n, v in users.items()}
    hits["item_knn"] = np.round(base * 5)
    for name, system in results["recommendation"]["systems"].items():
        system["accuracy@100"] = float(hits[name].sum() / (5 * len(base)))
        per_query["recommendation"][name]["hits@100"] = hits[name]
    by = {c["name"]: c for c in checks(results, per_query)}
    c = by["recommendation beats the best baseline top-100 accuracy"]
    assert "student_faiss / item_knn" in c["detail"] and c["n"] == 500
    assert c["value"] == pytest.approx(hits["student_faiss"].sum() / hits["item_knn"].sum())
    assert c["status"] == "failed" and c["ci95"][1] < 1.0


def test_the_served_path_is_also_set_beside_every_baseline(tmp_path: Path) -> None:
    """Not only the strongest: a paired ratio against each baseline, in the report too."""
    from towers.evaluation.harness import baseline_ratios

    rng = np.random.default_rng(6)
    base = rng.random(400)
    users = {"ease": base * 0.9, "item_knn": base * 0.5, "served": base * 0.6, "bm25": base}
    per_user = {n: {"recall@50": v, "hits@100": np.round(v * 4)} for n, v in users.items()}
    del per_user["item_knn"]["hits@100"]
    results = _rec(users)
    vs = baseline_ratios(results["recommendation"]["systems"], per_user)
    assert vs["system"] == "served" and set(vs["rows"]) == {"ease", "item_knn"}  # not bm25
    value, lo, hi = vs["rows"]["item_knn"]["recall@50"]
    assert value == pytest.approx(0.6 / 0.5) and lo < value < hi
    assert "accuracy@100" not in vs["rows"]["item_knn"]  # no per-user hits: no ratio
    assert vs["rows"]["ease"]["accuracy@100"][0] < 1.0
    results["recommendation"]["vs_baselines"] = vs
    text = write_report(results, tmp_path).read_text()
    assert "`served` against each baseline" in text
    assert f"| item_knn | {value:.3f} [{lo:.3f}, {hi:.3f}] | – |" in text
    assert baseline_ratios(results["recommendation"]["systems"], {}) == {
        "system": "served",
        "rows": {},
    }


def test_cold_items_are_held_to_the_towers_alone_over_the_users_with_a_cold_target() -> None:
    rng = np.random.default_rng(5)
    users = {"ease": rng.random(600), "student_faiss": rng.random(600), "served": rng.random(600)}
    results = _rec(users)
    rec = results["recommendation"]["systems"]
    towers_cold = rng.random(250)
    cold = {"ease": np.zeros(250), "student_faiss": towers_cold, "served": towers_cold * 0.5}
    per_query = {"recommendation": {n: {"recall@50": v} for n, v in users.items()}}
    for name, values in cold.items():
        rec[name].update({"cold_recall@50": float(values.mean()), "n_cold_users": 250})
        per_query["recommendation"][name]["cold_recall@50"] = values
    by = {c["name"]: c for c in checks(results, per_query)}
    c = by["cold items keep the towers' Recall@50"]
    assert "served - student_faiss" in c["detail"] and c["n"] == 250
    assert c["value"] == pytest.approx(-0.5 * towers_cold.mean()) and c["status"] == "failed"
    per_query["recommendation"]["served"]["cold_recall@50"] = towers_cold.copy()
    c = {c["name"]: c for c in checks(results, per_query)}["cold items keep the towers' Recall@50"]
    assert c["value"] == 0.0 and c["status"] == "passed"  # the same lists: nothing lost
    # without per-user arrays the count is still the cold users'
    c = {c["name"]: c for c in checks(results)}["cold items keep the towers' Recall@50"]
    assert c["n"] == 250 and c["ci95"] is None
    # no user with a cold target (or no cold figure): no check
    for row in rec.values():
        row["n_cold_users"] = 0
    assert "cold items keep the towers' Recall@50" not in {c["name"] for c in checks(results)}
