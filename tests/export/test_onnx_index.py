from __future__ import annotations

import numpy as np
import pytest
import torch

from export.index import build_index, ivf_lists
from export.onnx import ParityError, check_parity, export_onnx
from towers.encoder import tiny_bert
from towers.models import CrossEncoder, ItemTower, UserTower


@pytest.mark.parametrize(
    "kind,factory",
    [
        ("item_tower", lambda: ItemTower(tiny_bert(), 8)),
        ("user_tower", lambda: UserTower(tiny_bert(), 8)),
        ("reranker", lambda: CrossEncoder(tiny_bert())),
    ],
)
def test_export_parity_with_dynamic_axes(tmp_path, kind, factory) -> None:
    torch.manual_seed(0)
    module = factory()
    path = export_onnx(kind, module, tmp_path / f"{kind}.onnx")
    assert path.is_file() and not (tmp_path / f"{kind}.onnx.data").exists()
    assert check_parity(kind, module, path) <= 1e-4


def test_parity_check_fails_on_a_different_model(tmp_path) -> None:
    torch.manual_seed(0)
    path = export_onnx("item_tower", ItemTower(tiny_bert(), 8), tmp_path / "a.onnx")
    with pytest.raises(ParityError, match="differs"):
        check_parity("item_tower", ItemTower(tiny_bert(), 8), path)


def test_index_returns_item_ids_flat_and_ivf() -> None:
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(3000, 16)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    ids = np.arange(3000, dtype=np.int64) * 10 + 7
    for kind in ("flat", "ivf"):
        index, params = build_index(vecs, ids, kind=kind, nprobe=ivf_lists(3000))
        _, found = index.search(vecs[:5], 1)
        assert found[:, 0].tolist() == ids[:5].tolist(), kind
    assert params["type"].startswith("IVF")
    with pytest.raises(ValueError, match="ids"):
        build_index(vecs, ids[:10])
