"""The repository writer on a tiny synthetic bundle (fake ONNX bytes: nothing loads them)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from export.repository import (
    MODEL_FILES,
    MODELS,
    TEMPLATES,
    RepositoryError,
    is_repository,
    write_repository,
)
from export.warmup import WARMUP_QUERY_IDS
from serving.backend import parameters
from serving.bundle import BundleError

BUNDLE_FILES = {
    "tokenizer.json": b'{"fake": "tokenizer"}',
    "item_tower.onnx": b"fake item tower",
    "user_tower.onnx": b"fake user tower",
    "user_tower.onnx.data": b"fake user tower weights",
    "reranker.onnx": b"fake reranker",
    "index.faiss": b"fake index",
    "item_titles.json": b'["a", "b", "c"]',
    "blend.json": b'{"features": ["rerank", "retrieval", "popularity"], "weights": [1, 1, 1], '
    b'"bias": 0}',
}


def make_bundle(folder: Path, version: str = "v-test") -> Path:
    folder.mkdir(parents=True)
    for name, data in BUNDLE_FILES.items():
        (folder / name).write_bytes(data)
    ids = np.array([5, 6, 7], np.int64)
    np.save(folder / "item_ids.npy", ids)
    np.save(folder / "item_embeddings.npy", np.eye(3, 4, dtype=np.float32))
    np.save(folder / "popularity.npy", np.zeros(3, np.float32))
    np.savez(
        folder / "item_tokens.npz",
        item_ids=ids,
        offsets=np.array([0, 1, 2, 3]),
        tokens=np.array([10, 11, 12], np.int32),
    )
    np.savez(
        folder / "user_history.npz",
        user_ids=np.array([1]),
        offsets=np.array([0, 1]),
        item_ids=np.array([5]),
        ts=np.array([100]),
    )
    checksums = {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())
    }
    manifest = {
        "model_version": version,
        "dim": 4,
        "n_items": 3,
        "created_at": "2024-01-01T00:00:00+00:00",
        "index": {"type": "Flat", "nlist": 0, "nprobe": 0},
        "recency_tau_s": 3600.0,
        "max_k": 100,
        "n_candidates": 100,
        "checksums": checksums,
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def parse(path: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def test_layout_and_configs(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "bundle")
    repo = write_repository(
        bundle, tmp_path / "repo", max_k=50, chunk_size=8, item_batch=32, item_instances=2
    )
    assert repo == tmp_path / "repo"
    assert sorted(p.name for p in repo.iterdir()) == sorted(MODELS)
    for model in MODELS:
        version = repo / model / "1"
        expected = {"manifest.json", *MODEL_FILES[model]}
        if model != "recommend":
            expected.add("model.py")
        if model == "user_tower":
            expected.add("user_tower.onnx.data")  # the side file travels with its graph
        assert {p.name for p in version.iterdir()} == expected, model
        for name in expected - {"model.py"}:
            assert (version / name).read_bytes() == (bundle / name).read_bytes()
        config = parse(repo / model / "config.pbtxt")
        assert config.name == model
        if model != "recommend":
            assert config.backend == "python"
            assert parameters({"parameters": _params(config)})["model_version"] == "v-test"
    retriever = _params(parse(repo / "retriever" / "config.pbtxt"))
    assert retriever["max_k"]["string_value"] == "50"
    assert retriever["exclude_recent"]["string_value"] == "0"  # the default
    excl = write_repository(bundle, tmp_path / "excl", exclude_recent=20)
    assert _params(parse(excl / "retriever" / "config.pbtxt"))["exclude_recent"] == {
        "string_value": "20"
    }
    reranker = _params(parse(repo / "reranker" / "config.pbtxt"))
    assert reranker["chunk_size"]["string_value"] == "8"
    assert reranker["max_item_tokens"]["string_value"] == "23"  # RERANK_ITEM_TOKENS
    assert [g.count for g in parse(repo / "reranker" / "config.pbtxt").instance_group] == [1]
    item = parse(repo / "item_tower" / "config.pbtxt")
    assert item.max_batch_size == 32 and item.dynamic_batching.max_queue_delay_microseconds > 0
    assert [g.count for g in item.instance_group] == [2]
    assert parse(repo / "recommend" / "config.pbtxt").platform == "ensemble"
    # the template's comments are kept at the top of the generated config
    assert (repo / "reranker" / "config.pbtxt").read_text().startswith("# Stage 4")
    assert is_repository(repo)
    assert oct(repo.stat().st_mode & 0o777) == oct(0o755)


def _params(config: model_config_pb2.ModelConfig) -> dict:
    return {k: {"string_value": v.string_value} for k, v in config.parameters.items()}


def test_files_are_hard_linked_when_possible(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "bundle")
    repo = write_repository(bundle, tmp_path / "repo")
    assert os.path.samefile(repo / "retriever" / "1" / "index.faiss", bundle / "index.faiss")


def test_every_committed_template_parses() -> None:
    for model in MODELS:
        config = parse(TEMPLATES / model / "config.pbtxt")
        assert config.name == model
        if model != "recommend":
            assert (TEMPLATES / model / "1" / "model.py").is_file()


def test_rewrite_replaces_the_old_repository(tmp_path: Path) -> None:
    repo = write_repository(make_bundle(tmp_path / "b1", "v1"), tmp_path / "repo")
    (repo / "retriever" / "1" / "stale.txt").write_text("old")
    write_repository(make_bundle(tmp_path / "b2", "v2"), repo)
    assert not (repo / "retriever" / "1" / "stale.txt").exists()
    manifest = json.loads((repo / "retriever" / "1" / "manifest.json").read_text())
    assert manifest["model_version"] == "v2"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_missing_file_is_named(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "bundle")
    (bundle / "item_tokens.npz").unlink()
    with pytest.raises(BundleError, match="item_tokens.npz is missing"):
        write_repository(bundle, tmp_path / "repo")
    assert not (tmp_path / "repo").exists()


def test_missing_manifest(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "bundle")
    (bundle / "manifest.json").unlink()
    with pytest.raises(BundleError, match="manifest.json is missing"):
        write_repository(bundle, tmp_path / "repo")


def test_checksum_mismatch_is_named(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "bundle")
    (bundle / "reranker.onnx").write_bytes(b"tampered")
    with pytest.raises(BundleError, match=r"reranker\.onnx does not match its checksum"):
        write_repository(bundle, tmp_path / "repo")


def test_side_file_is_checked_too(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "bundle")
    (bundle / "user_tower.onnx.data").write_bytes(b"tampered")
    with pytest.raises(BundleError, match=r"user_tower\.onnx\.data does not match"):
        write_repository(bundle, tmp_path / "repo")


def test_optional_removed_ids_go_to_the_retriever(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "bundle")
    np.save(bundle / "removed_ids.npy", np.array([6], np.int64))  # added after export
    repo = write_repository(bundle, tmp_path / "repo")
    assert (repo / "retriever" / "1" / "removed_ids.npy").is_file()
    assert not (repo / "reranker" / "1" / "removed_ids.npy").exists()


def test_refuses_to_overwrite_a_folder_that_is_not_a_repository(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "bundle")
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("do not delete")
    with pytest.raises(RepositoryError, match="not a model repository"):
        write_repository(bundle, precious)
    assert (precious / "thesis.tex").read_text() == "do not delete"
    with pytest.raises(RepositoryError, match="not a model repository"):
        write_repository(bundle, bundle)  # the bundle itself


def test_refuses_to_overwrite_the_templates(tmp_path: Path) -> None:
    with pytest.raises(RepositoryError, match="committed template folder"):
        write_repository(make_bundle(tmp_path / "bundle"), TEMPLATES)


def test_empty_target_folder_is_fine(tmp_path: Path) -> None:
    (tmp_path / "repo").mkdir()
    write_repository(make_bundle(tmp_path / "bundle"), tmp_path / "repo")
    assert is_repository(tmp_path / "repo")


def test_cpu_runtime_settings_reach_the_graph_models(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "bundle")
    repo = write_repository(bundle, tmp_path / "repo", rerank_threads=2, rerank_max_call=48)
    expected = {
        "user_tower": ("onnxruntime", "fp32"),  # the default user_engine
        "reranker": ("openvino", "bf16"),
        "item_tower": ("openvino", "bf16"),
    }
    for model, runtime in expected.items():
        params = {
            k: v["string_value"] for k, v in _params(parse(repo / model / "config.pbtxt")).items()
        }
        assert (params["engine"], params["precision"]) == runtime, model
        assert params["intra_op_threads"] == ("2" if model == "reranker" else "1")
    assert _params(parse(repo / "reranker" / "config.pbtxt"))["max_call"]["string_value"] == "48"
    assert "engine" not in _params(parse(repo / "retriever" / "config.pbtxt"))
    repo = write_repository(
        bundle, tmp_path / "repo", cpu_engine="onnxruntime", cpu_precision="fp32"
    )
    params = _params(parse(repo / "reranker" / "config.pbtxt"))
    assert params["engine"]["string_value"] == "onnxruntime"
    repo = write_repository(bundle, tmp_path / "repo", user_engine="openvino")
    params = _params(parse(repo / "user_tower" / "config.pbtxt"))
    assert (params["engine"]["string_value"], params["precision"]["string_value"]) == (
        "openvino",
        "bf16",
    )


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"cpu_engine": "tvm"}, "cpu_engine must be openvino or onnxruntime"),
        ({"user_engine": "tvm"}, "user_engine must be openvino or onnxruntime"),
        ({"cpu_precision": "fp16"}, "cpu_precision must be bf16 or fp32"),
        ({"cpu_engine": "onnxruntime", "cpu_precision": "bf16"}, "runs fp32 only"),
        ({"rerank_threads": 0}, "rerank_threads must be >= 1"),
        ({"rerank_max_call": 0}, "rerank_max_call must be >= 1"),
    ],
)
def test_bad_cpu_runtime_settings(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(RepositoryError, match=message):
        write_repository(make_bundle(tmp_path / "bundle"), tmp_path / "repo", **kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"chunk_size": 0},
        {"item_batch": 0},
        {"max_k": 0},
        {"n_candidates": 0},
        {"item_instances": 0},
    ],
)
def test_bad_settings(tmp_path: Path, kwargs: dict) -> None:
    with pytest.raises(RepositoryError, match="must be >= 1"):
        write_repository(make_bundle(tmp_path / "bundle"), tmp_path / "repo", **kwargs)


def test_warmup_samples_without_a_usable_tokenizer(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # this bundle's tokenizer.json is fake: the user tower's sample falls back to fixed ids
    # (the tokenizer model itself would not load); every other value still comes from it
    repo = write_repository(make_bundle(tmp_path / "bundle"), tmp_path / "repo", chunk_size=8)
    assert "tokenizer.json unusable" in caplog.text
    user = parse(repo / "user_tower" / "config.pbtxt").model_warmup[0].inputs
    assert list(user["INPUT_IDS"].dims) == [1, len(WARMUP_QUERY_IDS)]
    ids = np.frombuffer((repo / "user_tower" / "warmup" / "INPUT_IDS").read_bytes(), "<i8")
    assert ids.tolist() == list(WARMUP_QUERY_IDS)
    rr = parse(repo / "reranker" / "config.pbtxt").model_warmup[0].inputs
    assert list(rr["CANDIDATE_IDS"].dims) == [3]  # every item: fewer than one chunk
    cand = np.frombuffer((repo / "reranker" / "warmup" / "CANDIDATE_IDS").read_bytes(), "<i8")
    assert cand.tolist() == [5, 6, 7]
    vec = parse(repo / "retriever" / "config.pbtxt").model_warmup[0].inputs["USER_VECTOR"]
    assert list(vec.dims) == [1, 4]  # the manifest's dim


def test_reranker_pair_length_and_instances_are_settings(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "bundle")
    repo = write_repository(
        bundle, tmp_path / "repo", rerank_item_tokens=12, rerank_instances=2, rerank_depth=48
    )
    config = parse(repo / "reranker" / "config.pbtxt")
    assert _params(config)["max_item_tokens"]["string_value"] == "12"
    assert _params(config)["max_scored"]["string_value"] == "48"
    assert [g.count for g in config.instance_group] == [2]
    for bad in (
        {"rerank_item_tokens": 0},
        {"rerank_item_tokens": 49},
        {"rerank_instances": 0},
        {"rerank_depth": -1},
    ):
        with pytest.raises(RepositoryError, match="rerank_"):
            write_repository(bundle, tmp_path / "bad", **bad)
    for bad_recent in (-1, 1001):
        with pytest.raises(RepositoryError, match="exclude_recent must be in 0..1000"):
            write_repository(bundle, tmp_path / "bad", exclude_recent=bad_recent)


def test_export_says_what_to_do_when_the_trained_on_data_is_gone(tmp_path: Path) -> None:
    """The train report names the data set; moved or deleted, export asks for --data (exit 1,
    no traceback) instead of failing inside the data loader."""
    from typer.testing import CliRunner

    from client.cli import app

    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    (artifacts / "train_report.json").write_text(json.dumps({"data_dir": str(tmp_path / "gone")}))
    args = ["export", "--artifacts", str(artifacts), "--repository", str(tmp_path / "repo")]
    result = CliRunner().invoke(app, args)
    said = " ".join(result.output.split())
    assert result.exit_code == 1, result.output
    assert "not there any more: give the catalog with --data" in said
    none = CliRunner().invoke(app, [*args[:2], str(tmp_path / "none"), *args[3:]])
    assert none.exit_code == 1, none.output
    assert "run `towerserve train` first" in " ".join(none.output.split())
