"""GPU export on the CPU: torch programs in the bundle, a ``device="cuda"`` repository's
configs, and the TensorRT path's refusal where the package is not installed."""

from __future__ import annotations

import importlib.util
import json
import shutil

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2
from typer.testing import CliRunner

from export.repository import GPU_MODELS, RepositoryError, write_repository


def _config(repo, model):
    config = model_config_pb2.ModelConfig()
    text_format.Parse((repo / model / "config.pbtxt").read_text(), config)
    return config


def test_bundle_carries_parity_checked_torch_programs(untrained_bundle):
    manifest = json.loads((untrained_bundle / "manifest.json").read_text())
    for graph in ("item_tower", "user_tower", "reranker"):
        assert f"{graph}.pt2" in manifest["checksums"]
        assert manifest["onnx_parity_max_abs_diff"][f"{graph}.pt2"] <= 1e-4


def test_cuda_repository_puts_the_stages_on_the_gpu(untrained_bundle, tmp_path):
    repo = write_repository(
        untrained_bundle, tmp_path / "repo", device="cuda", precision="bf16", warmup=False
    )
    for model in GPU_MODELS:
        config = _config(repo, model)
        kinds = [g.kind for g in config.instance_group]
        assert kinds == [model_config_pb2.ModelInstanceGroup.KIND_GPU], model
        assert config.parameters["device"].string_value == "cuda"
    assert _config(repo, "reranker").parameters["precision"].string_value == "bf16"
    assert (repo / "reranker" / "1" / "reranker.pt2").is_file()
    cpu_only = _config(repo, "tokenizer")
    assert [g.kind for g in cpu_only.instance_group] != [
        model_config_pb2.ModelInstanceGroup.KIND_GPU
    ]


def test_cpu_repository_is_unchanged_by_the_gpu_options(untrained_bundle, tmp_path):
    repo = write_repository(untrained_bundle, tmp_path / "repo", warmup=False)
    config = _config(repo, "reranker")
    assert "device" not in config.parameters
    assert [g.kind for g in config.instance_group] == [model_config_pb2.ModelInstanceGroup.KIND_CPU]


def test_cuda_repository_without_torch_programs_is_refused(untrained_bundle, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(untrained_bundle, bundle)
    (bundle / "user_tower.pt2").unlink()
    with pytest.raises(RepositoryError, match="user_tower.pt2.*towerserve export --device cuda"):
        write_repository(bundle, tmp_path / "repo", device="cuda")
    with pytest.raises(RepositoryError, match="device must be cpu or cuda"):
        write_repository(bundle, tmp_path / "repo", device="gpu")


@pytest.mark.skipif(
    importlib.util.find_spec("tensorrt") is not None, reason="checks the message without it"
)
def test_export_with_tensorrt_engine_says_what_is_missing(tmp_path):
    from client.cli import app

    result = CliRunner().invoke(
        app, ["export", "--artifacts", str(tmp_path), "--engine", "tensorrt"]
    )
    assert result.exit_code == 2
    assert "tensorrt package is not installed" in " ".join(result.output.split())
