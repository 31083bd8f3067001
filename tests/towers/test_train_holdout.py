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


@pytest.mark.parametrize("item_ids", [True, False])
def test_auto_trains_holdout_towers_with_or_without_ids(monkeypatch, item_ids: bool) -> None:
    """auto means holdout (measured on the demo data, README "Fits on towers that never saw
    the validation"): it goes on to train, on the events less the validation window, whether
    or not ids are learned; only the tiny preset, for short test trainings, shares."""
    import towers.train as train_module

    assert preset_config("demo").fit_towers == "auto"
    assert preset_config("tiny").fit_towers == "shared"
    seen: dict[str, int] = {}

    def fake_train_towers(kept, *args, **kwargs):  # the fine-tune itself is not under test
        seen["events"] = len(kept.events)
        raise RuntimeError("trained")

    monkeypatch.setattr(train_module, "train_towers", fake_train_towers)
    cfg = preset_config("demo", item_ids=item_ids)
    day = 86_400
    events = pd.DataFrame(
        {"user_id": [1, 1, 2, 2], "item_id": [1, 2, 1, 3], "ts": [0, day, 8 * day, 9 * day],
         "event": ["click"] * 4}
    )  # fmt: skip
    ds = Dataset(items=pd.DataFrame(), events=events)
    with pytest.raises(RuntimeError, match="trained"):
        holdout_towers(ds, cfg, None, None, None, 10 * day, "time", StageTimer())  # type: ignore[arg-type]
    assert 0 < seen["events"] < len(events)


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
