"""``towerserve eval`` and ``towerserve train --from`` on a real (tiny) trained model."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import load_file
from typer.testing import CliRunner

from client.cli import app

pytestmark = pytest.mark.slow
runner = CliRunner()


def test_eval_writes_every_section(tiny_model, tmp_path) -> None:
    from towers.evaluation.harness import EvalConfig, run_eval

    out = tmp_path / "report"
    results = run_eval(
        # retrain=False: the full retrain at the update point trains the tiny model a second
        # time (about 2 minutes of CI); its code path is `train`, which the fixture runs
        EvalConfig(
            artifacts=tiny_model["artifacts"],
            out_dir=out,
            layers=(1, 2),
            max_users=300,
            retrain=False,
        )
    )
    search = results["search"]["systems"]
    assert list(search) == [
        "popularity",
        "bm25",
        "teacher_exact",
        "student_exact",
        "student_faiss",
        "student_faiss_rerank",
    ]
    for row in search.values():
        assert 0.0 <= row["recall@10"] <= row["recall@50"] <= row["recall@200"] <= 1.0
        assert row["latency_ms_p50"] > 0
    # learned retrieval is far better than a popularity list for search
    assert search["student_exact"]["recall@100"] > 3 * search["popularity"]["recall@100"]
    rec = results["recommendation"]
    assert rec["n_users"] > 0
    assert set(rec["systems"]) == {
        "popularity",
        "popularity_all",
        "item_knn",
        "rp3beta",
        "ease",
        "als",
        "teacher_exact",
        "student_exact",
        "student_faiss",
        "student_faiss_covisit",
    }
    assert rec["protocol"] == "time"
    for row in rec["systems"].values():
        lo, hi = row["ci95"]["recall@50"]
        assert lo <= row["recall@50"] <= hi and row["n_users"] == rec["n_users"]
        assert 0.0 <= row["recall@50"] <= row["recall@100"] <= 1.0
    rows = {r["name"]: r for r in results["distillation"]["rows"]}
    assert set(rows) == {"student-1L", "student-2L", "teacher"}
    assert (
        rows["student-1L"]["params_m"]
        < rows["student-2L"]["params_m"]
        < rows["teacher"]["params_m"]
    )
    drift = results["drift"]
    assert len(drift["windows"]) == 3
    assert all(w["stale"] is not None for w in drift["windows"] if w["n_users"])
    assert drift["windows"][0]["updated"] is None and drift["windows"][-1]["updated"] is not None
    assert drift["update"]["full_train_measured"] is False
    assert drift["update"]["seconds"] < drift["update"]["full_train_seconds"]
    assert {c["name"] for c in results["checks"]} >= {
        "student keeps teacher Recall@100",
        "rerank NDCG@10 gain",
        "two-tower Recall@50 vs popularity",
        "recommendation beats the best baseline Recall@50",
        "update recovers lost quality",
    }
    for check in results["checks"]:
        assert check["status"] in ("passed", "failed", "inconclusive")
    report = (out / "report.md").read_text()
    for heading in ("Search", "Recommendation", "Distillation", "drift"):
        assert heading in report
    assert json.loads((out / "results.json").read_text())["meta"]["n_items"] == 1500
    assert (out / "plots" / "search_recall_at_k.png").stat().st_size > 1000


def test_eval_cli_rejects_bad_input(tiny_model, tmp_path) -> None:
    res = runner.invoke(app, ["eval", "--artifacts", str(tmp_path / "nope")])
    assert res.exit_code == 1 and "train_report.json" in res.output
    res = runner.invoke(
        app,
        ["eval", "--artifacts", str(tiny_model["artifacts"]), "--sections", "search,bogus"],
    )
    assert res.exit_code == 1 and "bogus" in res.output


def test_incremental_update_changes_only_the_user_tower(tiny_model, tmp_path) -> None:
    parent = tiny_model["artifacts"]
    report = json.loads((parent / "train_report.json").read_text())
    cut = report["events_until_ts"]
    out = tmp_path / "updated"
    res = runner.invoke(
        app,
        [
            "train",
            "--from",
            str(parent),
            "--since",
            str(cut - 3 * 86400),
            "--until",
            str(cut),
            "--out",
            str(out),
            "--update-epochs",
            "1",
        ],
    )
    assert res.exit_code == 0, res.output
    child = json.loads((out / "train_report.json").read_text())
    assert child["parent_version"] == report["model_version"]
    assert set(child["seconds"]) == {"update"}
    assert child["full_train_seconds"] == report["seconds"]
    assert child["model_version"] != report["model_version"]
    assert child["update"]["trained"] == "user_tower.history" and child["update"]["n_pairs"] > 0
    same = load_file(str(out / "item_tower" / "model.safetensors"))
    orig = load_file(str(parent / "item_tower" / "model.safetensors"))
    assert all(np.array_equal(same[k], orig[k]) for k in orig)
    new_user = load_file(str(out / "user_tower" / "model.safetensors"))
    old_user = load_file(str(parent / "user_tower" / "model.safetensors"))
    assert not np.array_equal(new_user["history.weight"], old_user["history.weight"])
    frozen = [k for k in old_user if k.startswith("text.bert.")]
    assert frozen and all(np.array_equal(new_user[k], old_user[k]) for k in frozen)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "0"], "--from"),
        (["--from", "X"], "--since"),
        (["--from", "X", "--since", "yesterday"], "ISO"),
    ],
)
def test_update_cli_errors(args, message, tmp_path) -> None:
    res = runner.invoke(app, ["train", "--out", str(tmp_path / "o"), *args])
    assert res.exit_code != 0
    assert message in res.output


def test_update_refuses_an_empty_window(tiny_model, tmp_path) -> None:
    res = runner.invoke(
        app,
        [
            "train",
            "--from",
            str(tiny_model["artifacts"]),
            "--since",
            "1",
            "--until",
            "2",
            "--out",
            str(tmp_path / "u"),
        ],
    )
    assert res.exit_code == 1 and "nothing to update on" in res.output


def test_random_protocol_trains_on_the_split_and_scores_the_held_out_share(
    tiny_model, tmp_path
) -> None:
    from towers.config import preset_config
    from towers.data.split import write_random_split
    from towers.evaluation.harness import EvalConfig, run_eval
    from towers.train import train

    split = tmp_path / "split"
    write_random_split(tiny_model["data"], split, test_frac=0.2, seed=1)
    # the protocol is under test, not the model: a cut-down tiny training (no distillation,
    # few steps; about 1.5 s a fine-tune step) keeps this test short
    cfg = preset_config(
        "tiny",
        seed=3,
        distil_epochs=0,
        finetune_steps=10,
        rerank_steps=10,
        item_ids=False,
    ).model_copy(update={"until_ts": None, "until_frac": None})
    train(split, tmp_path / "artifacts", cfg)
    out = tmp_path / "report"
    results = run_eval(
        EvalConfig(
            artifacts=tmp_path / "artifacts",
            out_dir=out,
            sections=("recommendation",),
            systems=("popularity_all", "ease", "student_faiss"),
            protocol="random",
        )
    )
    rec = results["recommendation"]
    assert rec["protocol"] == "random" and rec["split"]["test_frac"] == 0.2
    assert set(rec["systems"]) == {"popularity_all", "ease", "student_faiss"}
    for row in rec["systems"].values():
        lo, hi = row["ci95"]["accuracy@100"]
        assert 0.0 <= lo <= row["accuracy@100"] <= hi <= 1.0
    assert "Protocol: **random split**" in (out / "report.md").read_text()
    # the EASE baseline chose its ridge on a random share of the training events, as the
    # served table does for a random-split model
    from towers.covisit import EASE_L2S

    (ease,) = rec["baseline_settings"]["ease"].values()
    assert ease["validation"] == "random" and ease["l2"] in EASE_L2S
    # the time-split model is refused: it never saw the events after its cut
    with pytest.raises(ValueError, match="--all-events"):
        run_eval(
            EvalConfig(
                artifacts=tiny_model["artifacts"],
                data_dir=split,
                out_dir=tmp_path / "r2",
                sections=("recommendation",),
                protocol="random",
            )
        )
