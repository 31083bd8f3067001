"""serving.graphs and serving.torch_engine on the CPU: runtime choice, refusals with a reason,
and the torch program against ONNX Runtime on a real (untrained) bundle."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from serving.graphs import (
    GraphRuntimeError,
    Runtime,
    cuda_available,
    open_graph,
    runtime_from_params,
)
from serving.item_tower import ITEM_TOWER_INPUTS, ItemEncoder
from serving.onnx_session import OnnxModel
from serving.openvino_engine import OpenVinoGraph
from serving.pipeline import InProcessRecommend
from serving.reranker import RERANKER_INPUTS
from serving.stage_metrics import graph_backend
from serving.torch_engine import TorchGraph, bucket_shape
from serving.user_tower import USER_TOWER_INPUTS
from towers.bundle_contract import load_manifest
from towers.features import CONTEXT_ONCE_INPUTS, build_context_once, build_pairs

TEXTS = ["red cotton shirt", "waterproof hiking jacket with a hood", "kettle", "a b c d e f g"]


def test_runtime_refuses_unknown_values_by_name():
    with pytest.raises(ValueError, match="device must be one of cpu, cuda, auto"):
        Runtime(device="tpu")
    with pytest.raises(ValueError, match="precision must be one of fp32, fp16, bf16"):
        Runtime(precision="int4")
    with pytest.raises(ValueError, match="engine must be one of"):
        Runtime(engine="tvm")
    with pytest.raises(ValueError, match="intra_op_threads must be >= 1"):
        Runtime(intra_op_threads=0)


def test_runtime_from_triton_parameters():
    assert runtime_from_params({}) == Runtime()
    got = runtime_from_params(
        {"device": "CUDA", "precision": "bf16", "cuda_graphs": "1", "engine": "torch"}, 3
    )
    assert got == Runtime("cuda", "bf16", 3, True, "torch")


def test_cpu_default_is_onnx_runtime(untrained_bundle):
    graph = open_graph(untrained_bundle, "item_tower", Runtime(), expected_inputs=ITEM_TOWER_INPUTS)
    assert isinstance(graph, OnnxModel)
    assert graph_backend(graph) == "onnxruntime-cpu"
    auto = open_graph(
        untrained_bundle, "item_tower", Runtime(device="auto"), expected_inputs=ITEM_TOWER_INPUTS
    )
    assert isinstance(auto, TorchGraph) == cuda_available()


@pytest.mark.skipif(cuda_available(), reason="checks the refusal on a machine without a GPU")
def test_cuda_without_a_gpu_is_refused_with_the_reason(untrained_bundle):
    with pytest.raises(GraphRuntimeError, match="needs torch with a CUDA device"):
        open_graph(
            untrained_bundle, "reranker", Runtime(device="cuda"), expected_inputs=RERANKER_INPUTS
        )


def test_missing_torch_program_names_the_export_flag(untrained_bundle, tmp_path):
    for name in ("item_tower.onnx", "manifest.json"):
        (tmp_path / name).write_bytes((untrained_bundle / name).read_bytes())
    with pytest.raises(GraphRuntimeError, match="towerserve export --device cuda"):
        open_graph(
            tmp_path, "item_tower", Runtime(engine="torch"), expected_inputs=ITEM_TOWER_INPUTS
        )
    with pytest.raises(GraphRuntimeError, match="device cuda only"):
        open_graph(
            tmp_path, "item_tower", Runtime(engine="tensorrt"), expected_inputs=ITEM_TOWER_INPUTS
        )


def test_torch_program_refuses_other_inputs(untrained_bundle):
    with pytest.raises(ValueError, match="expected"):
        TorchGraph(untrained_bundle / "item_tower.pt2", device="cpu", expected_inputs=("x",))


def graph_feeds(name: str, form: str = "") -> tuple[tuple[str, ...], dict[str, np.ndarray]]:
    """The input names of graph ``name`` and a small batch with padding, history and a row
    without a query; the reranker's as pairs, or (``form="context_once"``) the same pairs in
    the context-once form, which the CPU runtimes run for a 1-layer cross-encoder."""
    inputs = {"item_tower": ITEM_TOWER_INPUTS, "user_tower": USER_TOWER_INPUTS}.get(
        name, RERANKER_INPUTS
    )
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 29000, size=(3, 13)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[1, 6:] = 0
    feeds = {"input_ids": ids * mask, "attention_mask": mask}
    if name == "reranker":  # pairs of one context with items of 1 to 12 tokens
        query = rng.integers(1000, 29000, 5)
        items = [rng.integers(1000, 29000, n) for n in (1, 7, 12)]
        ids, mask, types = build_pairs(query, items)
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        if form == "context_once":
            return CONTEXT_ONCE_INPUTS, build_context_once(query, items, pad_to=8)
    if name == "user_tower":
        hist = rng.normal(size=(3, 4, 128)).astype(np.float32)
        feeds["history_vectors"] = hist / np.linalg.norm(hist, axis=-1, keepdims=True)
        feeds["history_weights"] = np.full((3, 4), 0.25, np.float32)
        feeds["has_query"] = np.array([[1.0], [1.0], [0.0]], np.float32)
    return inputs, feeds


@pytest.mark.parametrize("name", ["item_tower", "user_tower", "reranker"])
def test_torch_program_matches_onnx_runtime_fp32(untrained_bundle, name):
    inputs, feeds = graph_feeds(name)
    cpu_inputs, cpu_feeds = graph_feeds(name, CPU_FORM.get(name, ""))
    onnx = open_graph(untrained_bundle, name, Runtime(), expected_inputs=cpu_inputs)
    torch_fp32 = open_graph(
        untrained_bundle, name, Runtime(engine="torch", precision="fp32"), expected_inputs=inputs
    )
    assert graph_backend(torch_fp32) == "torch-cpu-fp32"
    np.testing.assert_allclose(torch_fp32(**feeds), onnx(**cpu_feeds), atol=1e-4)


#: The form the CPU runtimes run (the untrained bundle's cross-encoder has one layer).
CPU_FORM = {"reranker": "context_once"}


def test_the_cpu_runs_the_context_once_reranker_and_the_pair_graph_stays(untrained_bundle):
    """The pair graph (GPU programs, TensorRT) and the context-once graph (CPU) of one
    bundle score the same pairs alike."""
    from serving.graphs import cpu_onnx_path

    assert cpu_onnx_path(untrained_bundle, "reranker").name == "reranker.context_once.onnx"
    assert cpu_onnx_path(untrained_bundle, "user_tower").name == "user_tower.onnx"
    _, pairs = graph_feeds("reranker")
    _, once = graph_feeds("reranker", "context_once")
    pair_graph = OnnxModel(untrained_bundle / "reranker.onnx", expected_inputs=RERANKER_INPUTS)
    np.testing.assert_allclose(
        pair_graph(**pairs),
        open_graph(untrained_bundle, "reranker", Runtime(), expected_inputs=CONTEXT_ONCE_INPUTS)(
            **once
        ),
        atol=1e-5,
    )


@pytest.mark.parametrize("name", ["item_tower", "user_tower", "reranker"])
def test_openvino_matches_onnx_runtime(untrained_bundle, name):
    inputs, feeds = graph_feeds(name, CPU_FORM.get(name, ""))
    onnx = open_graph(untrained_bundle, name, Runtime(), expected_inputs=inputs)(**feeds)
    fp32 = open_graph(
        untrained_bundle, name, Runtime(engine="openvino", precision="fp32"), expected_inputs=inputs
    )
    assert isinstance(fp32, OpenVinoGraph) and graph_backend(fp32) == "openvino-cpu-fp32"
    np.testing.assert_allclose(fp32(**feeds), onnx, atol=1e-4)
    bf16 = open_graph(
        untrained_bundle, name, Runtime(engine="openvino", precision="bf16"), expected_inputs=inputs
    )
    got = bf16(**feeds)
    assert got.dtype == np.float32 and got.shape == onnx.shape
    np.testing.assert_allclose(got, onnx, atol=0.05 * max(1.0, float(np.abs(onnx).max())))


def test_openvino_refuses_what_it_cannot_run(untrained_bundle):
    with pytest.raises(GraphRuntimeError, match="runs bf16, fp32, int8 on the CPU, not fp16"):
        open_graph(
            untrained_bundle,
            "reranker",
            Runtime(engine="openvino", precision="fp16"),
            expected_inputs=RERANKER_INPUTS,
        )
    with pytest.raises(GraphRuntimeError, match="engine openvino runs on the CPU"):
        open_graph(
            untrained_bundle,
            "reranker",
            Runtime(device="cuda", engine="openvino", precision="bf16"),
            expected_inputs=RERANKER_INPUTS,
        )
    with pytest.raises(ValueError, match="expected"):
        OpenVinoGraph(untrained_bundle / "item_tower.onnx", expected_inputs=("x",))


def test_int8_reranker_ranks_like_fp32(untrained_bundle, tmp_path):
    from client.int8_export import add_int8_reranker, calibration_pairs

    bundle = tmp_path / "bundle"
    shutil.copytree(untrained_bundle, bundle)
    with pytest.raises(GraphRuntimeError, match="--rerank-precision int8"):
        open_graph(
            bundle,
            "reranker",
            Runtime(engine="openvino", precision="int8"),
            expected_inputs=RERANKER_INPUTS,
        )
    diff = add_int8_reranker(bundle)  # from the context-once graph the CPU serves
    int8 = open_graph(
        bundle,
        "reranker",
        Runtime(engine="openvino", precision="int8"),
        expected_inputs=CONTEXT_ONCE_INPUTS,
    )
    assert graph_backend(int8) == "openvino-cpu-int8"
    fp32 = open_graph(bundle, "reranker", Runtime(), expected_inputs=CONTEXT_ONCE_INPUTS)
    feeds = calibration_pairs(bundle, n_batches=2, seed=5, context_once=True)
    a = np.concatenate([int8(**f) for f in feeds])
    b = np.concatenate([fp32(**f) for f in feeds])
    assert np.abs(a - b).max() <= max(diff * 3, 0.05 * float(np.abs(b).max()))
    assert load_manifest(bundle).checksums["reranker.int8.xml"]  # checksummed in the manifest
    with pytest.raises(GraphRuntimeError, match="engine openvino"):
        open_graph(bundle, "reranker", Runtime(precision="int8"), expected_inputs=RERANKER_INPUTS)


def test_item_encoder_bf16_stays_close_to_fp32(untrained_bundle):
    fp32 = ItemEncoder.from_dir(untrained_bundle)
    bf16 = ItemEncoder.from_dir(untrained_bundle, runtime=Runtime(engine="torch", precision="bf16"))
    a, b = fp32.embed(TEXTS), bf16.embed(TEXTS)
    assert b.dtype == np.float32 and a.shape == b.shape
    assert np.min(np.sum(a * b, axis=1)) > 0.99  # unit vectors: cosine


def test_in_process_pipeline_same_answer_on_both_cpu_runtimes(untrained_bundle):
    onnx = InProcessRecommend(untrained_bundle)
    torch_fp32 = InProcessRecommend(untrained_bundle, Runtime(engine="torch", precision="fp32"))
    for query in ("red cotton shirt", ""):
        a = onnx(query, user_id=3, k=10, budget_ms=5000)
        b = torch_fp32(query, user_id=3, k=10, budget_ms=5000)
        assert a.n_scored == b.n_scored > 0
        np.testing.assert_array_equal(a.item_ids, b.item_ids)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-4)


def test_bucket_shapes_pad_batch_sequence_and_history():
    assert bucket_shape("input_ids", (3, 13)) == (8, 16)
    assert bucket_shape("attention_mask", (9, 33)) == (16, 48)
    assert bucket_shape("token_type_ids", (100, 64)) == (128, 64)
    assert bucket_shape("history_vectors", (1, 5, 128)) == (8, 8, 128)
    assert bucket_shape("history_weights", (1, 5)) == (8, 8)
    assert bucket_shape("has_query", (1, 1)) == (8, 1)
