"""The user_history training stage (towers.history_fit)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from towers.config import preset_config
from towers.encoder import tiny_bert
from towers.examples import HistoryPairs
from towers.features import MAX_HISTORY, padded_recency_weights, recency_weights
from towers.history_fit import fit_user_history
from towers.models import UserTower

DIM, N_ITEMS = 16, 300


def _sequential_pairs(n: int, seed: int = 0) -> tuple[HistoryPairs, np.ndarray]:
    """Histories of 5 items at one time; the next item is a fixed successor of the *newest*,
    which a (here uniform) weighted mean cannot single out and a sequence model can."""
    rng = np.random.default_rng(seed)
    items = rng.normal(size=(N_ITEMS, DIM)).astype(np.float32)
    items /= np.linalg.norm(items, axis=1, keepdims=True)
    successor = rng.permutation(N_ITEMS)
    hist = np.full((n, MAX_HISTORY), -1, np.int64)
    hist[:, -5:] = rng.integers(0, N_ITEMS, (n, 5))
    ts = np.where(hist >= 0, 1_000, 0).astype(np.int64)
    target = successor[hist[:, -1]]
    return HistoryPairs(hist, ts, target, np.arange(n, dtype=np.int64) + 2_000), items


def _tower() -> UserTower:
    torch.manual_seed(0)
    return UserTower(tiny_bert(), DIM)


def test_a_sequence_block_is_kept_where_order_predicts_the_next_item() -> None:
    pairs, items = _sequential_pairs(3000)
    user = _tower()
    cfg = preset_config("tiny", user_sequence="auto", history_epochs=8, history_lr=3e-3)
    report = fit_user_history(user, pairs, items, cfg)
    recall = report["valid_recall@50"]
    assert isinstance(recall, dict)
    assert report["chosen"] == "sequence", report
    assert recall["sequence"] > recall["mean"] + 0.05
    assert user.sequence is not None
    assert float(report["sequence_gain_lo"]) > 0  # type: ignore[arg-type]


def test_off_never_fits_a_sequence_and_few_pairs_keep_the_tower() -> None:
    pairs, items = _sequential_pairs(600)
    user = _tower()
    report = fit_user_history(user, pairs, items, preset_config("tiny", user_sequence="off"))
    assert "sequence" not in report["valid_recall@50"]  # type: ignore[operator]
    assert user.sequence is None
    few, _ = _sequential_pairs(50)
    before = user.history.weight.detach().clone()
    assert fit_user_history(user, few, items, preset_config("tiny"))["chosen"] == "fine-tuned"
    assert torch.equal(user.history.weight, before)


def test_a_refitted_path_keeps_the_fine_tuned_scale() -> None:
    """A query-plus-history request weighs the two as before: the history share's mean norm
    over the pairs is unchanged by the refit."""
    pairs, items = _sequential_pairs(3000)
    user = _tower()
    vecs = torch.from_numpy(items[np.maximum(pairs.hist_pos[:500], 0)]) * torch.from_numpy(
        pairs.hist_pos[:500] >= 0
    ).unsqueeze(-1)
    w = torch.from_numpy(padded_recency_weights(pairs.hist_pos[:500], pairs.hist_ts[:500], 60.0))
    with torch.no_grad():
        before = user.history_part(vecs, w).norm(dim=-1).mean()
    fit_user_history(user, pairs, items, preset_config("tiny", history_epochs=10))
    with torch.no_grad():
        after = user.history_part(vecs, w).norm(dim=-1).mean()
    assert float(after) == pytest.approx(float(before), rel=0.15)


def test_padded_recency_weights_match_the_row_by_row_form() -> None:
    rng = np.random.default_rng(1)
    hist = np.full((20, MAX_HISTORY), -1, np.int64)
    ts = np.zeros((20, MAX_HISTORY), np.int64)
    for r in range(1, 20):
        hist[r, -r:] = rng.integers(0, 50, r)
        ts[r, -r:] = np.sort(rng.integers(0, 10**7, r))
    got = padded_recency_weights(hist, ts, 86_400.0)
    assert not got[0].any()  # no history: all padding
    for r in range(1, 20):
        np.testing.assert_allclose(got[r, -r:], recency_weights(ts[r, -r:], 86_400.0), rtol=1e-6)
        assert not got[r, :-r].any()


def test_train_cli_checks_user_sequence() -> None:
    from typer.testing import CliRunner

    from client.cli import app

    runner = CliRunner()
    bad = runner.invoke(app, ["train", "--user-sequence", "maybe"])
    assert bad.exit_code == 2 and "auto, on or off" in bad.output
    update = runner.invoke(app, ["train", "--from", "x", "--since", "0", "--user-sequence", "on"])
    assert update.exit_code == 2 and "drop --from" in update.output  # (the panel wraps lines)


def test_an_update_trains_the_sequence_block_with_the_history_path() -> None:
    from towers.update import trainable_parameters

    user = UserTower(tiny_bert(), DIM, sequence=True)
    assert user.sequence is not None
    chosen = {id(p) for p in trainable_parameters(user)}
    assert all(id(p) in chosen for p in user.sequence.parameters())
    assert {id(user.history.weight), id(user.history_scale)} <= chosen
    assert not any(p.requires_grad for p in user.text.parameters())
