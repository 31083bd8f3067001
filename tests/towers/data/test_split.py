"""The random split of a data set (``towerserve data split``) and the task built from it."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from client.cli import app
from towers.data import GenerateConfig, generate, load_dataset
from towers.data.dataset import random_split
from towers.data.schema import DataError
from towers.data.split import HELDOUT_EVENTS_FILE, heldout_events, split_info, write_random_split
from towers.features import MAX_HISTORY
from towers.next_item import random_split_task


@pytest.fixture(scope="module")
def small_data(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("split") / "data"
    generate(GenerateConfig(n_items=300, n_users=80, n_queries=50, seed=2), root)
    return root


def test_random_split_is_seeded_and_disjoint() -> None:
    events = pd.DataFrame({"user_id": np.arange(100), "item_id": np.arange(100), "ts": 1})
    train, test = random_split(events, 0.2, seed=1)
    assert len(test) == 20 and len(train) == 80
    assert set(train["user_id"]).isdisjoint(test["user_id"])
    again, _ = random_split(events, 0.2, seed=1)
    assert train.equals(again)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        random_split(events, 1.0)


def test_split_writes_a_training_copy_and_the_held_out_events(small_data, tmp_path) -> None:
    record = write_random_split(small_data, tmp_path / "split", test_frac=0.25, seed=3)
    src, copy = load_dataset(small_data), load_dataset(tmp_path / "split")
    held = heldout_events(tmp_path / "split")
    assert len(copy.events) + len(held) == len(src.events)
    assert record["n_heldout_events"] == len(held) == round(0.25 * len(src.events))
    assert split_info(copy) == record and split_info(src) is None
    assert len(copy.items) == len(src.items) and len(copy.queries) == len(src.queries)
    meta = json.loads((tmp_path / "split" / "meta.json").read_text())
    assert meta["split"]["heldout_events"] == HELDOUT_EVENTS_FILE


def test_split_refuses_bad_input(small_data, tmp_path) -> None:
    with pytest.raises(ValueError, match="must differ"):
        write_random_split(small_data, small_data)
    with pytest.raises(ValueError, match="strictly between"):
        write_random_split(small_data, tmp_path / "x", test_frac=0.0)
    with pytest.raises(DataError, match="heldout_events.parquet not found"):
        heldout_events(small_data)
    result = CliRunner().invoke(
        app, ["data", "split", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 1 and "not a directory" in " ".join(result.output.split())


def test_split_cli(small_data, tmp_path) -> None:
    result = CliRunner().invoke(
        app, ["data", "split", "--data", str(small_data), "--out", str(tmp_path / "s")]
    )
    assert result.exit_code == 0, result.output
    assert "held-out events written" in result.output
    assert (tmp_path / "s" / HELDOUT_EVENTS_FILE).is_file()


def test_random_task_excludes_every_training_item() -> None:
    cols = ["user_id", "item_id", "event_type", "ts"]
    train = pd.DataFrame(
        [(1, i, "click", 10 + i) for i in range(60)] + [(2, 5, "view", 3)], columns=cols
    )
    held = pd.DataFrame(
        [
            (1, 100, "click", 1),  # older than training events: fine in this protocol
            (1, 3, "purchase", 99),  # a training item: not a target
            (2, 7, "view", 50),  # not positive
            (3, 8, "click", 50),  # no training events: cold start, left out
        ],
        columns=cols,
    )
    task = random_split_task(train, held)
    assert task.user_ids.tolist() == [1] and task.targets == [{100}]
    assert len(task.hist_ids[0]) == MAX_HISTORY and task.hist_ids[0][-1] == 59  # newest
    assert task.long_histories[0].tolist() == list(range(60))  # all (<= LONG_HISTORY)
    assert sorted(task.excluded[0].tolist()) == list(range(60))  # every training item
    assert task.start_ts == 70
    with pytest.raises(ValueError, match="no training events"):
        random_split_task(train.iloc[:0], held)
