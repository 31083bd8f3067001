"""Each served stage on the GPU against the same stage on the CPU (ONNX Runtime fp32,
faiss-cpu), and one end-to-end query through the four stages on the GPU. Marked ``gpu``:
skipped where torch sees no CUDA device; run by benchmarks/gpu_check.sh on a lent GPU."""

from __future__ import annotations

import numpy as np
import pytest

from serving.graphs import Runtime, open_graph
from serving.item_tower import ITEM_TOWER_INPUTS, ItemEncoder
from serving.onnx_session import OnnxModel
from serving.pipeline import InProcessRecommend
from serving.reranker import RERANKER_INPUTS, Reranker
from serving.retriever import Retriever
from serving.stage_metrics import graph_backend
from serving.user_tower import USER_TOWER_INPUTS, UserEncoder

pytestmark = pytest.mark.gpu

GPU = Runtime(device="cuda", precision="fp16")
#: fp16 against fp32: unit vectors within this (max abs), reranker logits within this.
VECTOR_TOL = 2e-2
LOGIT_TOL = 5e-2


def _feeds(name: str, batch: int = 5, seq: int = 23, dim: int = 128) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    ids = rng.integers(1000, 29000, size=(batch, seq)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[1, seq // 2 :] = 0
    feeds = {"input_ids": ids * mask, "attention_mask": mask}
    if name == "reranker":
        types = np.zeros_like(ids)
        types[:, 7:] = 1
        feeds["token_type_ids"] = types
    if name == "user_tower":
        hist = rng.normal(size=(batch, 6, dim)).astype(np.float32)
        feeds["history_vectors"] = hist / np.linalg.norm(hist, axis=-1, keepdims=True)
        feeds["history_weights"] = np.full((batch, 6), 1 / 6, np.float32)
        feeds["has_query"] = np.array([[1.0]] * (batch - 1) + [[0.0]], np.float32)
    return feeds


INPUTS = {
    "item_tower": ITEM_TOWER_INPUTS,
    "user_tower": USER_TOWER_INPUTS,
    "reranker": RERANKER_INPUTS,
}


@pytest.mark.parametrize("name", list(INPUTS))
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_graph_on_gpu_matches_onnx_runtime(demo_bundle, name, precision):
    # the pair graph: the CPU runtimes run a 1-layer reranker's context-once form instead
    cpu = OnnxModel(demo_bundle / f"{name}.onnx", expected_inputs=INPUTS[name])
    gpu = open_graph(demo_bundle, name, Runtime("cuda", precision), expected_inputs=INPUTS[name])
    assert graph_backend(gpu) == f"torch-cuda-{precision}"
    feeds = _feeds(name)
    tol = (LOGIT_TOL if name == "reranker" else VECTOR_TOL) * (4 if precision == "bf16" else 1)
    np.testing.assert_allclose(gpu(**feeds), cpu(**feeds), atol=tol)


@pytest.mark.parametrize("name", list(INPUTS))
def test_cuda_graphs_replay_what_eager_computes(demo_bundle, name):
    eager = open_graph(
        demo_bundle, name, Runtime("cuda", "fp16", cuda_graphs=False), expected_inputs=INPUTS[name]
    )
    graphs = open_graph(
        demo_bundle, name, Runtime("cuda", "fp16", cuda_graphs=True), expected_inputs=INPUTS[name]
    )
    for batch, seq in ((5, 23), (17, 40), (5, 23)):  # two buckets, the first replayed
        feeds = _feeds(name, batch, seq)
        np.testing.assert_allclose(graphs(**feeds), eager(**feeds), atol=5e-3)
    assert len(graphs._graphs) == 2


def test_large_batches_run_eagerly_under_cuda_graphs(demo_bundle):
    graphs = open_graph(demo_bundle, "item_tower", GPU, expected_inputs=ITEM_TOWER_INPUTS)
    eager = open_graph(
        demo_bundle,
        "item_tower",
        Runtime("cuda", cuda_graphs=False),
        expected_inputs=ITEM_TOWER_INPUTS,
    )
    feeds = _feeds("item_tower", batch=300, seq=30)
    np.testing.assert_allclose(graphs(**feeds), eager(**feeds), atol=5e-3)
    assert len(graphs._graphs) == 0


def test_item_encoder_on_gpu(demo_bundle):
    from towers.data import item_texts, load_dataset

    texts = item_texts(load_dataset(demo_bundle.parent / "data").items)[:500]
    cpu = ItemEncoder.from_dir(demo_bundle).embed(texts)
    gpu_stage = ItemEncoder.from_dir(demo_bundle, runtime=GPU, batch_size=256)
    gpu = gpu_stage.embed(texts)
    assert gpu_stage.backend == "torch-cuda-fp16" and gpu_stage.prefetch
    assert np.min(np.sum(cpu * gpu, axis=1)) > 0.999


def test_user_encoder_on_gpu(demo_bundle):
    from serving.tokenizer import QueryTokenizer

    tok = QueryTokenizer.from_dir(demo_bundle).infer({"QUERY": np.array([b"red shirt"], object)})
    tensors = {
        "INPUT_IDS": tok["INPUT_IDS"],
        "ATTENTION_MASK": tok["ATTENTION_MASK"],
        "HAS_QUERY": tok["HAS_QUERY"],
        "USER_ID": np.array([3], np.int64),
        "HISTORY_IDS": np.zeros(0, np.int64),
        "HISTORY_TS": np.zeros(0, np.int64),
    }
    cpu = UserEncoder.from_dir(demo_bundle).infer(tensors)
    gpu = UserEncoder.from_dir(demo_bundle, runtime=GPU).infer(tensors)
    np.testing.assert_array_equal(cpu["HISTORY_USED"], gpu["HISTORY_USED"])
    np.testing.assert_allclose(gpu["USER_VECTOR"], cpu["USER_VECTOR"], atol=VECTOR_TOL)


def test_retriever_on_gpu(demo_bundle):
    version = Retriever.from_dir(demo_bundle, model_version=_version(demo_bundle))
    gpu = Retriever.from_dir(demo_bundle, model_version=_version(demo_bundle), device="cuda")
    assert gpu.backend in ("faiss-gpu", "torch-exact")
    vectors = np.load(demo_bundle / "item_embeddings.npy")[:20]
    for vec in vectors:
        a_ids, a_s = version.search(vec, 50)
        b_ids, b_s = gpu.search(vec, 50)
        assert len(set(a_ids) & set(b_ids)) >= 49  # exact both: ties at most
        np.testing.assert_allclose(np.sort(b_s), np.sort(a_s), atol=1e-4)


def test_reranker_on_gpu_scores_every_candidate_like_the_cpu(demo_bundle):
    version = _version(demo_bundle)
    cpu = Reranker.from_dir(demo_bundle, model_version=version, chunk_size=100)
    gpu = Reranker.from_dir(demo_bundle, model_version=version, chunk_size=100, runtime=GPU)
    cand = np.load(demo_bundle / "item_ids.npy")[:100]
    scores = np.linspace(1, 0, 100).astype(np.float32)
    context = cpu.context_tokens("red cotton shirt", np.zeros(0, np.int64))
    a = cpu.rerank(context, cand, scores, k=100, budget_ms=5000, query="red cotton shirt")
    b = gpu.rerank(context, cand, scores, k=100, budget_ms=5000, query="red cotton shirt")
    assert a.n_scored == b.n_scored == 100
    order_a, order_b = np.argsort(a.item_ids), np.argsort(b.item_ids)
    np.testing.assert_array_equal(a.item_ids[order_a], b.item_ids[order_b])
    np.testing.assert_allclose(b.scores[order_b], a.scores[order_a], atol=LOGIT_TOL)


def test_end_to_end_query_on_gpu(demo_bundle):
    pipe = InProcessRecommend(demo_bundle, GPU)
    assert pipe.reranker.backend == pipe.user_tower.backend == "torch-cuda-fp16"
    assert pipe.retriever.backend in ("faiss-gpu", "torch-exact")
    search = pipe("red cotton shirt", k=10, budget_ms=1000)
    home = pipe("", user_id=3, k=10, budget_ms=1000)
    for answer in (search, home):
        assert len(answer.item_ids) == 10 and answer.n_scored == 100 and not answer.degraded
        assert np.all(np.isfinite(answer.scores))


def test_auto_device_picks_the_gpu(demo_bundle):
    graph = open_graph(
        demo_bundle, "item_tower", Runtime(device="auto"), expected_inputs=ITEM_TOWER_INPUTS
    )
    assert graph_backend(graph) == "torch-cuda-fp16"


def _version(bundle) -> str:
    from serving.bundle import load_manifest

    return load_manifest(bundle).model_version
