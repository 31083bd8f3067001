"""``towerserve train --from A --reranker-only``: a new reranker over an existing model's towers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from client.cli import app

runner = CliRunner()


def test_refuses_a_folder_that_is_not_trained(tmp_path: Path) -> None:
    from towers.rerank_retrain import retrain_reranker

    with pytest.raises(FileNotFoundError, match="not a trained artifacts folder"):
        retrain_reranker(tmp_path / "nope", tmp_path / "out", {})


def test_cli_needs_from() -> None:
    result = runner.invoke(app, ["train", "--reranker-only"])
    assert result.exit_code == 2
    assert "--reranker-only needs --from" in result.output


def test_cli_distillation_needs_a_parent() -> None:
    result = runner.invoke(app, ["train", "--rerank-distil-weight", "0.5"])
    assert result.exit_code == 2
    assert "--reranker-only" in result.output


def test_cli_reranker_settings_are_not_for_an_update(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["train", "--from", str(tmp_path), "--since", "0", "--reranker-layers", "1"]
    )
    assert result.exit_code == 2
    assert "--reranker-only" in result.output


@pytest.mark.slow
def test_retrains_a_one_layer_reranker_over_the_same_towers(tiny_model, tmp_path: Path) -> None:
    import shutil

    from towers.models import load_module
    from towers.rerank_retrain import retrain_reranker

    parent = tmp_path / "parent"  # a copy: the session's model is shared with other tests
    shutil.copytree(tiny_model["artifacts"], parent)
    with pytest.raises(ValueError, match="--out must differ"):
        retrain_reranker(parent, parent, {})
    (parent / "bundle").mkdir()  # an export of the parent: must not be copied
    out = tmp_path / "rr1"
    overrides = {"reranker_layers": 1, "rerank_steps": 5, "rerank_distil_weight": 0.5}
    report = retrain_reranker(parent, out, overrides)  # distilled from the parent's reranker
    reranker = load_module("reranker", out / "reranker")
    assert reranker.bert.config.num_hidden_layers == 1
    for kept in ("item_tower/model.safetensors", "user_tower/model.safetensors"):
        assert (out / kept).read_bytes() == (parent / kept).read_bytes()
    assert (out / "item_embeddings.npy").read_bytes() == (
        parent / "item_embeddings.npy"
    ).read_bytes()
    assert not (out / "bundle").exists()
    from towers.bundle_contract import Blend

    kept = Blend.no_query_from_json(out / "blend.json")  # the parent's, kept
    parent_no_query = Blend.no_query_from_json(parent / "blend.json")
    assert kept is not None and parent_no_query is not None
    assert kept.weights.tolist() == parent_no_query.weights.tolist()
    parent_report = json.loads((parent / "train_report.json").read_text())
    assert report["parent_version"] == parent_report["model_version"]
    assert report["model_version"] != parent_report["model_version"]
    assert report["config"]["reranker_layers"] == 1  # type: ignore[index]
    assert (
        json.loads((out / "train_report.json").read_text())["model_version"]
        == (report["model_version"])
    )
