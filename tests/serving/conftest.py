"""Fixtures for the serving stages: a tiny but real bundle and a stand-in ``pb_utils``.

The bundle has every file the served models read: the real teacher ``tokenizer.json``, three
small hand-built ONNX graphs with the exported towers' signatures (embedding-table sums, not
BERT: fast to build and run), a real FAISS index whose ids are the item ids, item tokens,
titles, popularity, blend and stored histories, and a manifest with sha256 checksums.

``triton_python_backend_utils`` only exists inside the server; ``fake_pb_utils`` provides the
few classes the ``model.py`` files use, so their ``initialize``/``execute`` run in-process.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import faiss
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from serving.bundle import sha256
from towers.covisit import CovisitTable
from towers.lexical import LexicalIndex
from towers.teacher import tokenizer_path
from towers.text import item_token_lists, load_tokenizer

VOCAB = 30522
DIM = 8
MODEL_VERSION = "test-v1"
COLORS = ["red", "blue", "green", "black", "white"]
KINDS = ["shirt", "shoes", "jeans", "jacket", "hat", "socks"]


def _text_sum(prefix: str, table: str) -> list[onnx.NodeProto]:
    """Nodes summing the embedding rows of unmasked tokens into ``{prefix}sum`` ``[B, D]``."""
    return [
        helper.make_node("Gather", [table, "input_ids"], [f"{prefix}emb"]),
        helper.make_node("Cast", ["attention_mask"], [f"{prefix}m"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", [f"{prefix}m", "axis_last"], [f"{prefix}m3"]),
        helper.make_node("Mul", [f"{prefix}emb", f"{prefix}m3"], [f"{prefix}masked"]),
        helper.make_node("ReduceSum", [f"{prefix}masked", "axis_1"], [f"{prefix}sum"], keepdims=0),
    ]


def _model(nodes, inputs, outputs, inits) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _consts(rng: np.random.Generator) -> list[onnx.TensorProto]:
    return [
        numpy_helper.from_array(rng.normal(size=(VOCAB, DIM)).astype(np.float32), "table"),
        numpy_helper.from_array(np.full(DIM, 1e-3, np.float32), "bias"),
        numpy_helper.from_array(np.array([-1], np.int64), "axis_last"),
        numpy_helper.from_array(np.array([1], np.int64), "axis_1"),
    ]


def int_input(name: str, shape: list) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.INT64, shape)


def float_value(name: str, shape: list) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def item_tower_graph(rng: np.random.Generator) -> onnx.ModelProto:
    nodes = _text_sum("t_", "table") + [
        helper.make_node("Add", ["t_sum", "bias"], ["raw"]),
        helper.make_node("LpNormalization", ["raw"], ["embedding"], axis=1, p=2),
    ]
    ins = [int_input("input_ids", ["B", "L"]), int_input("attention_mask", ["B", "L"])]
    return _model(nodes, ins, [float_value("embedding", ["B", DIM])], _consts(rng))


def user_tower_graph(rng: np.random.Generator) -> onnx.ModelProto:
    nodes = _text_sum("t_", "table") + [
        helper.make_node("Mul", ["t_sum", "has_query"], ["query"]),
        helper.make_node("Unsqueeze", ["history_weights", "axis_last"], ["w3"]),
        helper.make_node("Mul", ["history_vectors", "w3"], ["hw"]),
        helper.make_node("ReduceSum", ["hw", "axis_1"], ["hist"], keepdims=0),
        helper.make_node("Add", ["query", "hist"], ["both"]),
        helper.make_node("Add", ["both", "bias"], ["raw"]),
        helper.make_node("LpNormalization", ["raw"], ["user_vector"], axis=1, p=2),
    ]
    ins = [
        int_input("input_ids", ["B", "L"]),
        int_input("attention_mask", ["B", "L"]),
        float_value("has_query", ["B", 1]),
        float_value("history_vectors", ["B", "H", DIM]),
        float_value("history_weights", ["B", "H"]),
    ]
    return _model(nodes, ins, [float_value("user_vector", ["B", DIM])], _consts(rng))


def reranker_graph(rng: np.random.Generator) -> onnx.ModelProto:
    inits = [
        numpy_helper.from_array(rng.normal(size=VOCAB).astype(np.float32), "table1"),
        numpy_helper.from_array(np.array([1], np.int64), "axis_1"),
    ]
    nodes = [
        helper.make_node("Gather", ["table1", "input_ids"], ["v"]),
        helper.make_node("Cast", ["attention_mask"], ["m"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["token_type_ids"], ["t"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["v", "m"], ["vm"]),
        helper.make_node("Mul", ["vm", "t"], ["vmt"]),
        helper.make_node("Add", ["vm", "vmt"], ["weighted"]),
        helper.make_node("ReduceSum", ["weighted", "axis_1"], ["score"], keepdims=0),
    ]
    ins = [
        int_input("input_ids", ["B", "L"]),
        int_input("attention_mask", ["B", "L"]),
        int_input("token_type_ids", ["B", "L"]),
    ]
    return _model(nodes, ins, [float_value("score", ["B"])], inits)


def make_bundle(
    folder: Path,
    *,
    n_items: int = 60,
    n_users: int = 4,
    seed: int = 0,
    index: str = "flat",
    model_version: str = MODEL_VERSION,
) -> Path:
    """Write a complete small bundle to ``folder`` and return it."""
    import onnxruntime as ort

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy2(tokenizer_path(), folder / "tokenizer.json")
    tok = load_tokenizer(folder / "tokenizer.json")
    item_ids = (1000 + 7 * np.arange(n_items)).astype(np.int64)
    titles = [f"{COLORS[i % 5]} {KINDS[i % 6]} model {i}" for i in range(n_items)]
    for name, graph in (
        ("item_tower", item_tower_graph(rng)),
        ("user_tower", user_tower_graph(rng)),
        ("reranker", reranker_graph(rng)),
    ):
        onnx.save_model(graph, str(folder / f"{name}.onnx"))
    from towers.text import encode_items

    ids, mask = encode_items(tok, titles)
    sess = ort.InferenceSession(str(folder / "item_tower.onnx"), providers=["CPUExecutionProvider"])
    vectors = sess.run(None, {"input_ids": ids, "attention_mask": mask})[0].astype(np.float32)
    np.save(folder / "item_ids.npy", item_ids)
    np.save(folder / "item_embeddings.npy", vectors)
    if index == "flat":
        idx = faiss.IndexIDMap2(faiss.IndexFlatIP(DIM))
        params = {"type": "Flat", "nlist": 0, "nprobe": 0}
    else:
        idx = faiss.IndexIVFFlat(faiss.IndexFlatIP(DIM), DIM, 4, faiss.METRIC_INNER_PRODUCT)
        idx.train(vectors)
        params = {"type": "IVF4,Flat", "nlist": 4, "nprobe": 4}
    idx.add_with_ids(vectors, item_ids)
    faiss.write_index(idx, str(folder / "index.faiss"))
    tokens = item_token_lists(tok, titles)
    offsets = np.concatenate([[0], np.cumsum([len(t) for t in tokens])]).astype(np.int64)
    np.savez(
        folder / "item_tokens.npz",
        item_ids=item_ids,
        offsets=offsets,
        tokens=np.concatenate(tokens).astype(np.int32),
    )
    (folder / "item_titles.json").write_text(json.dumps(titles))
    np.save(folder / "popularity.npy", rng.normal(size=n_items).astype(np.float32))
    LexicalIndex.build(titles).save(folder)
    blend = {
        "features": ["rerank", "retrieval", "popularity", "lexical"],
        "weights": [0.5, 2.0, 0.1, 0.05],
    }
    (folder / "blend.json").write_text(json.dumps({**blend, "bias": 0.25}))
    # user u (ids 1..n_users) has u + 2 events; user 1 also one item not in the catalog
    users = np.arange(1, n_users + 1, dtype=np.int64)
    hist_items, hist_ts = [], []
    for u in users:
        picks = item_ids[rng.choice(n_items, size=int(u) + 2, replace=False)]
        if u == 1:
            picks[0] = 999_999
        hist_items.append(picks)
        hist_ts.append(1_700_000_000 + 3600 * np.arange(len(picks), dtype=np.int64))
    offs = np.concatenate([[0], np.cumsum([len(h) for h in hist_items])]).astype(np.int64)
    np.savez(
        folder / "user_history.npz",
        user_ids=users,
        offsets=offs,
        item_ids=np.concatenate(hist_items),
        ts=np.concatenate(hist_ts),
    )
    # co-visitation (towers/covisit.py): each item's neighbour is the next item of the catalog
    CovisitTable(
        item_ids,
        np.arange(n_items + 1, dtype=np.int64),
        np.roll(item_ids, -1),
        np.ones(n_items, np.float32),
        "item_knn",
        0.2,
    ).save(folder / "item_covisit.npz")
    manifest = {
        "model_version": model_version,
        "dim": DIM,
        "n_items": n_items,
        "created_at": "2024-01-01T00:00:00+00:00",
        "index": params,
        "recency_tau_s": 86400.0,
        "max_k": 20,
        "n_candidates": 30,
        "checksums": {p.name: sha256(p) for p in sorted(folder.iterdir()) if p.is_file()},
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return folder


@pytest.fixture(scope="session")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete small bundle (flat index), shared by the session: do not modify it."""
    return make_bundle(tmp_path_factory.mktemp("serving") / "bundle")


@pytest.fixture(scope="session")
def repository(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Triton repository written from ``bundle``: do not modify it."""
    from export.repository import write_repository

    return write_repository(bundle, tmp_path_factory.mktemp("serving") / "repository")


@pytest.fixture(scope="session")
def teacher_tokenizer():
    return load_tokenizer(tokenizer_path())


# ------------------------------------------------------------------------------------------
# A stand-in for triton_python_backend_utils
# ------------------------------------------------------------------------------------------


class Tensor:
    def __init__(self, name: str, data: np.ndarray) -> None:
        if not isinstance(data, np.ndarray):
            raise TypeError(f"pb_utils.Tensor {name} needs a numpy array")
        self._name, self._data = name, data

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> np.ndarray:
        return self._data


class TritonError:
    def __init__(self, message: str) -> None:
        self._message = message

    def message(self) -> str:
        return self._message


class InferenceResponse:
    def __init__(self, output_tensors: list[Tensor] | None = None, error=None) -> None:
        self._outputs = list(output_tensors or [])
        self._error = error

    def output_tensors(self) -> list[Tensor]:
        return self._outputs

    def has_error(self) -> bool:
        return self._error is not None

    def error(self):
        return self._error

    def outputs(self) -> dict[str, np.ndarray]:
        return {t.name(): t.as_numpy() for t in self._outputs}


class InferenceRequest:
    def __init__(self, **tensors: np.ndarray) -> None:
        self._inputs = [Tensor(k, v) for k, v in tensors.items()]

    def inputs(self) -> list[Tensor]:
        return self._inputs


class Logger:
    """``pb_utils.Logger`` stand-in: records ``(level, message)`` in ``Logger.records``."""

    records: list[tuple[str, str]] = []

    @classmethod
    def log_info(cls, message: str) -> None:
        cls.records.append(("INFO", message))

    @classmethod
    def log_warn(cls, message: str) -> None:
        cls.records.append(("WARNING", message))

    @classmethod
    def log_error(cls, message: str) -> None:
        cls.records.append(("ERROR", message))

    @classmethod
    def log_verbose(cls, message: str) -> None:
        cls.records.append(("VERBOSE", message))


@pytest.fixture
def fake_pb_utils(monkeypatch: pytest.MonkeyPatch) -> Iterator[types.ModuleType]:
    """Install a ``triton_python_backend_utils`` stand-in for importing ``model.py`` files.

    The log handler a model's ``initialize`` installs on the root logger (``log_to_triton``)
    is removed again afterwards, and the root logger's level restored.
    """
    from serving.backend import TritonLogHandler

    module = types.ModuleType("triton_python_backend_utils")
    module.Tensor = Tensor
    module.TritonError = TritonError
    module.InferenceResponse = InferenceResponse
    module.InferenceRequest = InferenceRequest
    module.Logger = Logger
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", module)
    monkeypatch.setattr(Logger, "records", [])
    root = logging.getLogger()
    level = root.level
    yield module
    for handler in [h for h in root.handlers if isinstance(h, TritonLogHandler)]:
        root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture
def load_model(fake_pb_utils: types.ModuleType):
    """``load_model(repository, name)``: import ``<repository>/<name>/1/model.py`` fresh and
    ``initialize`` it the way the server does."""
    return _load_model


def _load_model(repository: Path, name: str):
    path = repository / name / "1" / "model.py"
    spec = importlib.util.spec_from_file_location(f"_triton_model_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from google.protobuf import json_format, text_format
    from tritonclient.grpc import model_config_pb2

    config = text_format.Parse(
        (repository / name / "config.pbtxt").read_text(), model_config_pb2.ModelConfig()
    )
    # The server hands initialize the config as JSON with the proto's field names.
    doc = json_format.MessageToDict(config, preserving_proto_field_name=True)
    model = module.TritonPythonModel()
    model.initialize(
        {
            "model_config": json.dumps(doc),
            "model_repository": str(repository / name),
            "model_version": "1",
            "model_name": name,
            "model_instance_kind": "CPU",
            "model_instance_name": f"{name}_0",
            "model_instance_device_id": "0",
        }
    )
    return model


def retrieve(url: str, vector: np.ndarray, k: int = 20, *, version: int | None = None) -> list[int]:
    """The ``retriever`` model's candidate ids for ``vector`` (all of them, best first), from
    version ``version`` (default: the one Triton picks, the newest loaded)."""
    import tritonclient.grpc as grpcclient

    vec = np.asarray(vector, np.float32).reshape(1, -1)
    inputs = [
        grpcclient.InferInput("USER_VECTOR", list(vec.shape), "FP32"),
        grpcclient.InferInput("K", [1], "INT32"),
    ]
    inputs[0].set_data_from_numpy(vec)
    inputs[1].set_data_from_numpy(np.array([k], np.int32))
    with grpcclient.InferenceServerClient(url) as client:
        result = client.infer(
            "retriever",
            inputs,
            model_version="" if version is None else str(version),
            client_timeout=30,
        )
    return result.as_numpy("CANDIDATE_IDS").tolist()
