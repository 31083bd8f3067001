from __future__ import annotations

import numpy as np
import pytest
import torch

from towers.distil import pca_projection
from towers.encoder import make_student, student_layers, tiny_bert
from towers.features import CONTEXT_ONCE_INPUTS, build_context_once, build_pairs
from towers.finetune import in_batch_loss
from towers.models import (
    ContextOnceCrossEncoder,
    CrossEncoder,
    ItemTower,
    UserTower,
    load_module,
    save_module,
)


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


def test_item_ids_start_at_zero_and_map_unknown_ids_to_the_empty_row(tmp_path) -> None:
    torch.manual_seed(0)
    item = ItemTower(tiny_bert(), 8, id_keys=[30, 10, 20, 10]).eval()
    assert item.n_ids == 3 and item.id_keys.tolist() == [10, 20, 30]
    assert item.id_rows(np.array([20, 99, 10, -1, 30])).tolist() == [2, 0, 1, 0, 3]
    ids = torch.tensor([[101, 2000, 102], [101, 102, 0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    rows = torch.from_numpy(item.id_rows(np.array([10, 99])))
    # a fresh id table is zero: with ids, the vector is the text vector
    assert torch.allclose(item(ids, mask, rows), item(ids, mask), atol=1e-6)
    with torch.no_grad():
        item.ids.weight[1:] = torch.randn(3, 8)
    both = item(ids, mask, rows)
    assert torch.allclose(both.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert not torch.allclose(both[0], item(ids, mask)[0])  # known id: moved
    assert torch.allclose(both[1], item(ids, mask)[1], atol=1e-6)  # unknown id: text only
    save_module(item, item.text.bert.config, tmp_path / "item_tower", dim=8)
    again = load_module("item_tower", tmp_path / "item_tower")
    assert isinstance(again, ItemTower)
    assert torch.allclose(again(ids, mask, rows), both, atol=1e-6)
    np.testing.assert_array_equal(again.id_vectors(), item.id_vectors())


def test_item_tower_saved_before_ids_loads_text_only(tmp_path) -> None:
    from safetensors.torch import load_file, save_file

    item = ItemTower(tiny_bert(), 8, id_keys=[1, 2]).eval()
    save_module(item, item.text.bert.config, tmp_path / "old", dim=8)
    state = load_file(str(tmp_path / "old" / "model.safetensors"))
    del state["id_keys"], state["ids.weight"]
    save_file(state, str(tmp_path / "old" / "model.safetensors"))
    again = load_module("item_tower", tmp_path / "old")
    assert isinstance(again, ItemTower) and again.n_ids == 0
    assert again.id_rows(np.array([1, 2])).tolist() == [0, 0]


def test_torch_and_served_combination_agree() -> None:
    from towers.bundle_contract import ItemIdTable, combine_item_vectors
    from towers.models import combine

    rng = np.random.default_rng(0)
    text = rng.normal(size=(4, 8)).astype(np.float32)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    idv = rng.normal(size=(4, 8)).astype(np.float32) * 0.5
    served = combine_item_vectors(text, idv)
    trained = combine(torch.from_numpy(text), torch.from_numpy(idv)).numpy()
    np.testing.assert_allclose(served, trained, atol=1e-6)
    table = ItemIdTable(np.array([5, 7], np.int64), idv[:2])
    out = table.combine(text[:3], np.array([7, 5, 6]))
    np.testing.assert_allclose(out[0], combine_item_vectors(text[:1], idv[1:2])[0], atol=1e-6)
    np.testing.assert_allclose(out[1], combine_item_vectors(text[1:2], idv[:1])[0], atol=1e-6)
    np.testing.assert_allclose(out[2], text[2], atol=1e-6)  # unknown id: the text vector


def test_finetune_learns_id_vectors_for_items_with_interactions(tokenizer) -> None:
    from towers.config import preset_config
    from towers.examples import HistoryPairs, QueryPositives
    from towers.finetune import finetune_towers

    torch.manual_seed(0)
    n = 12
    item_ids = np.arange(100, 100 + n, dtype=np.int64)
    item = ItemTower(tiny_bert(), 8, id_keys=item_ids[:8])  # the last 4 items are new
    user = UserTower(tiny_bert(), 8)
    texts = [f"item {i} shirt" for i in range(n)]
    rng = np.random.default_rng(0)
    hist = HistoryPairs(
        hist_pos=rng.integers(0, 8, size=(40, 3)),
        hist_ts=np.tile(np.arange(3), (40, 1)),
        target_pos=rng.integers(0, 8, size=40),
        target_ts=np.full(40, 5),
    )
    queries = QueryPositives(texts=[], positives=[])
    cfg = preset_config("tiny", finetune_steps=5, finetune_batch=8, bf16=False)
    finetune_towers(item, user, tokenizer, texts, queries, hist, cfg, item_ids)
    norms = np.linalg.norm(item.id_vectors(), axis=1)
    assert (norms > 0).all()  # trained from zero
    assert float(item.ids.weight[0].detach().abs().sum()) == 0.0  # "no id" row stays zero


def test_id_epochs_learn_what_follows_what_and_keep_the_best_epoch() -> None:
    """Items with unrelated text, where item i is always followed by item i + 7: only the id
    vectors can learn that, and the held-out (newest) pairs' recall rises."""
    from towers.config import preset_config
    from towers.examples import HistoryPairs
    from towers.finetune import finetune_ids

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    n, dim, reps = 300, 16, 6
    text = rng.normal(size=(n, dim)).astype(np.float32)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    first = np.tile(np.arange(n), reps)
    hist_pos = np.full((len(first), 3), -1, np.int64)
    hist_pos[:, -1] = first
    hist = HistoryPairs(
        hist_pos=hist_pos,
        hist_ts=np.zeros_like(hist_pos),
        target_pos=(first + 7) % n,
        target_ts=rng.permutation(len(first)),
    )
    item = ItemTower(tiny_bert(), dim, id_keys=np.arange(n))
    user = UserTower(tiny_bert(), dim)
    cfg = preset_config("tiny", id_epochs=8, id_batch=128, id_patience=2, id_lr=0.05)
    log_q = np.full(n, -np.log(n))
    report = finetune_ids(item, user, text, hist, item.id_rows(np.arange(n)), log_q, cfg)
    curve = report["valid_recall@50"]
    assert isinstance(curve, list) and curve[0] < 0.3
    assert max(curve) > curve[0] + 0.3, curve
    assert report["epochs"] == int(np.argmax(curve))  # the best epoch's weights are kept


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_cross_encoder_cls_only_last_layer_equals_the_full_model(layers: int) -> None:
    """Eval mode computes the last layer for [CLS] alone: same logits as every layer on every
    token (the Hugging Face model), with padding, both segments and bf16 autocast."""
    torch.manual_seed(layers)
    ce = CrossEncoder(tiny_bert(n_layers=layers)).eval()
    for layer in ce.bert.encoder.layer:  # non-trivial weights: a random init is near identity
        for p in layer.parameters():
            p.data.add_(torch.randn_like(p) * 0.2)
    ids = torch.randint(1000, 5000, (5, 13))
    ids[:, 0] = 101
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    mask[3, 4:] = 0
    ids = ids * mask
    types = torch.zeros_like(ids)
    types[:, 6:] = 1
    with torch.no_grad():
        fast = ce(ids, mask, types)
        full = ce.full_forward(ids, mask, types)
        assert fast.shape == (5,)
        assert torch.allclose(fast, full, atol=1e-5), (fast - full).abs().max()
        # the padded tokens' ids do not matter
        other = ce(ids + (1 - mask) * 7, mask, types)
        assert torch.allclose(fast, other, atol=1e-5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = ce(ids, mask, types).float()
        assert torch.allclose(half, full, atol=0.1)
    # training still runs the full model (dropout active): outputs vary between calls
    ce.train()
    assert not torch.allclose(ce(ids, mask, types), ce(ids, mask, types))


def test_context_once_form_equals_the_pair_model() -> None:
    """A 1-layer cross-encoder fed one context and many items (the context's keys and values
    once per call) gives the pair model's logits, with padded contexts and items of every
    length; a deeper one is refused."""
    torch.manual_seed(3)
    ce = CrossEncoder(tiny_bert(n_layers=1)).eval()
    for p in ce.bert.encoder.layer.parameters():  # non-trivial weights
        p.data.add_(torch.randn_like(p) * 0.2)
    once = ContextOnceCrossEncoder(ce).eval()
    rng = np.random.default_rng(0)
    items = [rng.integers(1000, 5000, n) for n in (1, 4, 9, 9, 15)]
    for query in (rng.integers(1000, 5000, 6), np.zeros(0, np.int64)):
        pairs = [torch.from_numpy(a) for a in build_pairs(query, items)]
        with torch.no_grad():
            expected = ce(*pairs)
            for pad_to in (1, 8):
                feeds = build_context_once(query, items, pad_to=pad_to)
                got = once(*(torch.from_numpy(feeds[n]) for n in CONTEXT_ONCE_INPUTS))
                assert got.shape == (5,)
                assert torch.allclose(got, expected, atol=1e-5), (got - expected).abs().max()
    with pytest.raises(ValueError, match="needs a 1-layer cross-encoder"):
        ContextOnceCrossEncoder(CrossEncoder(tiny_bert(n_layers=2)))


def test_user_history_head_is_the_whole_tower_for_an_empty_query() -> None:
    """Serving skips the graph for an empty query: normalize(pooled @ history_head) is what
    the tower computes with has_query 0, whatever the query tokens."""
    torch.manual_seed(5)
    user = UserTower(tiny_bert(), 8).eval()
    with torch.no_grad():
        user.history.weight.add_(torch.randn(8, 8) * 0.5)
        user.history_scale.fill_(0.7)
    ids = torch.tensor([[101, 2000, 102]] * 2)
    hist = torch.nn.functional.normalize(torch.randn(2, 4, 8), dim=-1)
    w = torch.softmax(torch.randn(2, 4), dim=-1)
    with torch.no_grad():
        expected = user(ids, torch.ones_like(ids), torch.zeros(2, 1), hist, w).numpy()
    pooled = np.einsum("bh,bhd->bd", w.numpy(), hist.numpy())
    got = pooled @ user.history_head()
    got /= np.linalg.norm(got, axis=1, keepdims=True)
    np.testing.assert_allclose(got, expected, atol=1e-6)
