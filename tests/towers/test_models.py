from __future__ import annotations

import numpy as np
import pytest
import torch

from towers.distil import pca_projection
from towers.encoder import make_student, student_layers, tiny_bert
from towers.finetune import in_batch_loss
from towers.models import CrossEncoder, ItemTower, UserTower, load_module, save_module


def test_student_layers_spread_and_validated() -> None:
    assert student_layers(6, 2) == [0, 5]
    assert student_layers(6, 3) == [0, 2, 5]
    assert student_layers(6, 1) == [5]
    with pytest.raises(ValueError, match="1..6"):
        student_layers(6, 7)


def test_student_copies_teacher_layers() -> None:
    teacher = tiny_bert(n_layers=4)
    student = make_student(teacher, 2)
    for dst, src in enumerate(student_layers(4, 2)):
        a = student.encoder.layer[dst].state_dict()
        b = teacher.encoder.layer[src].state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_towers_normalise_and_history_matters() -> None:
    torch.manual_seed(0)
    user = UserTower(tiny_bert(), 8).eval()
    ids = torch.tensor([[101, 2000, 102], [101, 102, 0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    hist = torch.nn.functional.normalize(torch.randn(2, 3, 8), dim=-1)
    w = torch.full((2, 3), 1 / 3)
    out = user(ids, mask, torch.tensor([[1.0], [0.0]]), hist, w)
    assert torch.allclose(out.norm(dim=-1), torch.ones(2), atol=1e-5)
    # with no query, the vector is the (projected) history: it changes with the history
    out2 = user(ids, mask, torch.tensor([[1.0], [0.0]]), hist.flip(1) * 0 + hist[:, :1], w)
    assert not torch.allclose(out[1], out2[1])
    item = ItemTower(tiny_bert(), 8).eval()
    assert torch.allclose(item(ids, mask).norm(dim=-1), torch.ones(2), atol=1e-5)


def test_save_load_round_trip(tmp_path) -> None:
    ce = CrossEncoder(tiny_bert()).eval()
    save_module(ce, ce.bert.config, tmp_path / "reranker", dim=8)
    again = load_module("reranker", tmp_path / "reranker")
    x = torch.tensor([[101, 2000, 102, 3000, 102]])
    assert torch.allclose(
        ce(x, torch.ones_like(x), torch.zeros_like(x)),
        again(x, torch.ones_like(x), torch.zeros_like(x)),
    )
    with pytest.raises(FileNotFoundError, match="towerserve train"):
        load_module("item_tower", tmp_path / "missing")


def test_in_batch_loss_masks_duplicate_targets() -> None:
    users = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    items = users.clone()
    targets = np.array([0, 1, 1, 2])
    log_q = np.log(np.full(3, 1 / 3))
    loss = in_batch_loss(users, items, targets, log_q, temp=0.05)
    assert torch.isfinite(loss) and float(loss) < 0.1


def test_pca_projection_rows_orthonormal() -> None:
    x = np.random.default_rng(0).normal(size=(200, 16)).astype(np.float32)
    p = pca_projection(x, 4).numpy()
    assert np.allclose(p @ p.T, np.eye(4), atol=1e-4)
    with pytest.raises(ValueError, match="exceeds"):
        pca_projection(x, 32)


@pytest.mark.slow
def test_real_teacher_embeds_similar_texts_closer() -> None:
    from towers.teacher import embed_texts, load_teacher

    vecs = embed_texts(
        load_teacher(), ["red cotton t-shirt", "crimson cotton tee", "stainless steel frying pan"]
    )
    assert vecs.shape == (3, 384)
    assert vecs[0] @ vecs[1] > vecs[0] @ vecs[2]
