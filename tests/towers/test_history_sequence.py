"""The user tower's sequence block: torch module, numpy serving form, and the tower with it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from towers.encoder import tiny_bert
from towers.features import MIN_RECENCY_WEIGHT, recency_weights
from towers.history_sequence import check_sequence_arrays, history_sequence
from towers.models import HistorySequence, UserTower, load_module, save_module


def _random_block(dim: int = 16, max_len: int = 5, seed: int = 0) -> HistorySequence:
    torch.manual_seed(seed)
    block = HistorySequence(dim, heads=4, max_len=max_len)
    for p in block.parameters():
        torch.nn.init.normal_(p, std=0.3)
    return block.eval()


def test_numpy_form_equals_the_torch_block_whatever_the_padding() -> None:
    """Left padding (training), right padding (serving), an empty row, a row longer than
    the rank table, and an old item whose weight is the floor: the same term both ways."""
    block = _random_block()
    vectors = torch.randn(4, 7, 16)
    weights = torch.zeros(4, 7)
    weights[0, :3] = torch.tensor([0.2, 0.3, 0.5])  # right-padded
    weights[1, 2:] = torch.rand(5) + 0.1  # left-padded
    weights[1, 3] = MIN_RECENCY_WEIGHT
    weights[3] = torch.rand(7) + 0.1  # 7 items, ranks beyond the 5-row table share its last
    with torch.no_grad():
        expected = block(vectors, weights).numpy()
    got = history_sequence(block.arrays(), vectors.numpy(), weights.numpy())
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert not got[2].any()  # no history, no term
    assert np.abs(got[[0, 1, 3]]).max() > 0.1


def test_the_block_reads_order_and_padding_side_does_not_matter() -> None:
    block = _random_block()
    v = torch.randn(1, 3, 16)
    w = torch.full((1, 3), 1 / 3)
    with torch.no_grad():
        forward = block(v, w)
        backward = block(v.flip(1), w)
        left = block(torch.cat([torch.zeros(1, 2, 16), v], 1), torch.cat([torch.zeros(1, 2), w], 1))
    assert not torch.allclose(forward, backward, atol=1e-4)  # order matters (a mean would not)
    assert torch.allclose(forward, left, atol=1e-5)  # where the padding sits does not


def test_an_untrained_block_adds_nothing() -> None:
    """The block's readout starts at zero, so a tower starts as the weighted mean alone."""
    block = HistorySequence(16)
    with torch.no_grad():
        out = block(torch.randn(2, 4, 16), torch.full((2, 4), 0.25))
    assert torch.equal(out, torch.zeros(2, 16))


def test_check_sequence_arrays_names_what_is_wrong() -> None:
    arrays = _random_block().arrays()
    check_sequence_arrays(arrays, 16)
    with pytest.raises(ValueError, match="lack out.weight"):
        check_sequence_arrays({k: v for k, v in arrays.items() if k != "out.weight"}, 16)
    with pytest.raises(ValueError, match="qkv.weight must be"):
        check_sequence_arrays(arrays, 32)
    with pytest.raises(ValueError, match="do not divide"):
        check_sequence_arrays({**arrays, "heads": np.array(3)}, 16)


def test_old_events_keep_a_positive_weight() -> None:
    """An event 1,000 decay constants older than the newest still marks a real item."""
    w = recency_weights(np.array([0, 1000 * 60, 1001 * 60]), tau_s=60.0)
    assert (w > 0).all()
    assert w[0] == pytest.approx(MIN_RECENCY_WEIGHT)


def test_user_tower_with_a_sequence_block_saves_loads_and_matches_numpy(tmp_path: Path) -> None:
    torch.manual_seed(3)
    user = UserTower(tiny_bert(), 8, sequence=True).eval()
    assert user.sequence is not None
    with torch.no_grad():
        user.sequence.out.weight.copy_(torch.randn(8, 8))
    save_module(user, user.text.bert.config, tmp_path / "user_tower", dim=8)
    loaded = load_module("user_tower", tmp_path / "user_tower")
    assert isinstance(loaded, UserTower) and loaded.sequence is not None
    ids = torch.tensor([[101, 2000, 102]] * 2)
    hist = torch.nn.functional.normalize(torch.randn(2, 4, 8), dim=-1)
    w = torch.softmax(torch.randn(2, 4), dim=-1)
    with torch.no_grad():
        expected = user(ids, torch.ones_like(ids), torch.zeros(2, 1), hist, w).numpy()
        again = loaded(ids, torch.ones_like(ids), torch.zeros(2, 1), hist, w).numpy()
    np.testing.assert_allclose(again, expected, atol=1e-6)
    arrays = user.sequence_arrays()
    assert arrays is not None
    pooled = np.einsum("bh,bhd->bd", w.numpy(), hist.numpy())
    got = pooled @ user.history_head() + history_sequence(arrays, hist.numpy(), w.numpy())
    got /= np.linalg.norm(got, axis=1, keepdims=True)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert UserTower(tiny_bert(), 8).sequence_arrays() is None
