"""The holdout towers of towers/train.py: the prior, co-visitation and no-query blend fits
rank with towers that never saw the events those fits validate on."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from towers.config import preset_config
from towers.data import Dataset
from towers.train import StageTimer, holdout_towers


@pytest.mark.parametrize("item_ids", [True, False])
def test_no_holdout_towers_when_the_fits_share_the_final_towers(item_ids: bool):
    cfg = preset_config("tiny", fit_towers="shared", item_ids=item_ids)
    events = pd.DataFrame({"user_id": [1], "item_id": [1], "ts": [0], "event": ["click"]})
    ds = Dataset(items=pd.DataFrame(), events=events)
    # returns before touching the teacher or the student
    got = holdout_towers(ds, cfg, None, None, None, 10, "time", StageTimer())  # type: ignore[arg-type]
    assert got is None


def test_full_trainings_fit_on_holdout_towers_by_default() -> None:
    """auto means holdout (measured on the demo data, README "Fits on towers that never saw
    the validation"); only the tiny preset, for short test trainings, shares the towers."""
    assert preset_config("demo").fit_towers == "auto"
    assert preset_config("full").fit_towers == "auto"
    assert preset_config("tiny").fit_towers == "shared"


def test_a_bad_fit_towers_setting_is_refused() -> None:
    from typer.testing import CliRunner

    from client.cli import app

    runner = CliRunner()
    bad = runner.invoke(app, ["train", "--fit-towers", "maybe"])
    assert bad.exit_code == 2 and "auto, holdout or shared" in bad.output
    update = runner.invoke(app, ["train", "--from", "x", "--since", "0", "--fit-towers", "shared"])
    assert update.exit_code == 2 and "drop --from" in update.output


@pytest.mark.slow
def test_the_tiny_model_fits_with_towers_that_never_saw_the_validation(tiny_model) -> None:
    """The tests' model asks for the holdout towers (the tiny preset skips them to keep the
    other small trainings short): trained on fewer events than the final ones, from the same
    student, and the report says so."""
    report = json.loads((tiny_model["artifacts"] / "train_report.json").read_text())
    holdout = report["fit_towers"]
    assert holdout["kind"] == "holdout"
    assert 0 < holdout["n_train_events"] < report["n_train_events"]
    assert holdout["item_ids"]["n_ids"] <= report["item_ids"]["n_ids"]
    assert {"holdout_finetune", "holdout_embed_items"} <= set(report["seconds"])
    assert "distil" in report["seconds"] and "holdout_distil" not in report["seconds"]
