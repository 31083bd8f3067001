"""The popularity prior that moves with the event stream (serving/prior_stream.py): the same
values as the bundle's at the cut, counts decayed on event time, the bundle's standardisation
kept, a failing store leaves it as it was, and how a retriever gets one (or stays frozen)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from serving.events.settings import EventSettings
from serving.events.sqlite_store import SqliteEventStore
from serving.events.store import EventBatch
from serving.prior_stream import MovingPrior, attach_moving_prior
from serving.retriever import Retriever
from towers.bundle_contract import MANIFEST_FILE, PRIOR_BUNDLE_FILE
from towers.prior import bundle_arrays, compute_prior

DAY = 86_400
HALF_LIFE_S = 3.0 * DAY
AT = 1_000 * DAY


def log(rows: list[tuple[int, int]]) -> pd.DataFrame:
    """(item_id, ts) rows as a behaviour log."""
    return pd.DataFrame(
        {
            "user_id": np.zeros(len(rows), np.int64),
            "item_id": [r[0] for r in rows],
            "event_type": ["click"] * len(rows),
            "ts": [r[1] for r in rows],
        }
    )


TRAIN = log([(1, AT - DAY)] * 5 + [(2, AT - 10 * DAY)] * 3 + [(3, AT - 2 * DAY)])
ITEMS = np.array([3, 1, 2, 4], np.int64)  # not sorted: the lookup sorts


def moving(store: SqliteEventStore, **kw) -> tuple[MovingPrior, object]:
    prior = compute_prior(TRAIN, ITEMS, AT, HALF_LIFE_S, 0.1)
    assert prior.counts is not None and prior.mean is not None and prior.std is not None
    kw.setdefault("refresh_s", 0.0)
    mp = MovingPrior(
        ITEMS,
        prior.counts,
        at_ts=AT,
        half_life_s=HALF_LIFE_S,
        mean=prior.mean,
        std=prior.std,
        store=store,
        **kw,
    )
    return mp, prior


def record(store: SqliteEventStore, rows: list[tuple[int, int]]) -> None:
    store.append(
        EventBatch.of([7] * len(rows), [r[0] for r in rows], [r[1] for r in rows], [1] * len(rows))
    )


@pytest.fixture
def store(tmp_path: Path):
    s = SqliteEventStore(tmp_path / "events.sqlite")
    yield s
    s.close()


def test_starts_at_the_bundle_values_and_follows_new_events(store) -> None:
    mp, prior = moving(store)
    np.testing.assert_array_equal(mp(ITEMS), prior.values)
    assert mp.refresh() == 0 and mp.now_ts == AT  # an empty store moves nothing
    new = [(4, AT + DAY)] * 6 + [(1, AT + 2 * DAY)]
    record(store, new)
    assert mp.refresh() == 7
    assert mp.now_ts == AT + 2 * DAY  # event time, not wall time
    # the same as counting every event up to now from scratch, standardised the bundle's way
    at = AT + 2 * DAY + 1
    fresh = compute_prior(pd.concat([TRAIN, log(new)]), ITEMS, at, HALF_LIFE_S)
    counts = np.asarray(fresh.counts) * 2.0 ** (1 / HALF_LIFE_S)  # decayed to now, not now+1
    expected = (np.log1p(counts) - prior.mean) / prior.std
    np.testing.assert_allclose(mp(ITEMS), expected, rtol=1e-5, atol=1e-6)
    got = mp(ITEMS)
    assert got[3] > prior.values[3] and got[3] > got[2]  # item 4 is trending now
    assert mp(np.array([99]))[0] == pytest.approx(prior.default)  # unknown: the default


def test_events_before_the_cut_and_unknown_items_are_skipped(store) -> None:
    mp, prior = moving(store)
    record(store, [(1, AT - 5)] * 3 + [(99, AT + 5)])  # already counted / not in the prior
    assert mp.refresh() == 0
    assert mp.stats()["skipped"] == 4 and mp.now_ts == AT
    np.testing.assert_array_equal(mp(ITEMS), prior.values)


def test_old_timestamps_do_not_decay_to_zero(store) -> None:
    """A replay of a data set from years ago decays on its own clock."""
    mp, prior = moving(store)
    record(store, [(2, AT + 60)])
    mp.refresh()
    before = mp(ITEMS)
    assert np.all(before > prior.values.min() - 1.0)
    assert abs(float(before[1]) - float(prior.values[1])) < 0.01  # a minute: item 1 barely moved


def test_a_failing_store_leaves_the_prior_as_it_was(store) -> None:
    mp, _ = moving(store)
    record(store, [(4, AT + 1)])
    mp.refresh()
    values = mp(ITEMS).copy()
    store.close()  # every read now fails
    assert mp.refresh() == 0
    assert mp.stats()["failures"] == 1
    np.testing.assert_array_equal(mp(ITEMS), values)


def test_requests_start_background_refreshes(store) -> None:
    clock = [0.0]
    mp, prior = moving(store, refresh_s=5.0, clock=lambda: clock[0])
    record(store, [(4, AT + 1)] * 3)
    mp(ITEMS)  # the first request starts a refresh and is answered with the old values
    deadline = time.monotonic() + 30
    while mp.stats()["refreshes"] < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert mp.stats()["counted"] == 3
    record(store, [(4, AT + 2)])
    mp(ITEMS)  # within refresh_s of the last one: no refresh
    clock[0] = 6.0
    mp(ITEMS)
    while mp.stats()["counted"] < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert mp.stats()["counted"] == 4


def test_bundle_arrays_recount_old_artifacts() -> None:
    prior = compute_prior(TRAIN, ITEMS, AT, HALF_LIFE_S, 0.1)
    from dataclasses import replace

    old = replace(prior, mean=None, std=None, counts=None)  # artifacts before the moving prior
    again, arrays = bundle_arrays(old, ITEMS, TRAIN)
    np.testing.assert_allclose(arrays["counts"], np.asarray(prior.counts))
    assert again.meta() == prior.meta()
    other = log([(4, AT - 1)])  # another data set: the values are not reproduced
    again, arrays = bundle_arrays(old, ITEMS, other)
    assert "counts" not in arrays and "mean" not in again.meta()


def _bundle_copy(untrained_bundle: Path, tmp_path: Path, *, counts: bool = True) -> Path:
    """A copy of the untrained bundle inside ``repo/retriever/1`` with a prior (weight 0.1) as
    export writes it: raw counts in ``item_prior.npz``, mean and std in the manifest; with
    ``counts`` False, as bundles before the moving prior were."""
    import json

    from towers.bundle_contract import ITEM_IDS_FILE

    folder = tmp_path / "repo" / "retriever" / "1"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(untrained_bundle, folder)
    item_ids = np.load(folder / ITEM_IDS_FILE)
    events = log([(int(i), AT - int(i) * 3600) for i in item_ids[:50]])
    prior, arrays = bundle_arrays(
        compute_prior(events, item_ids, AT, HALF_LIFE_S, 0.1), item_ids, events
    )
    if not counts:
        del arrays["counts"]
    np.savez(folder / PRIOR_BUNDLE_FILE, **arrays)
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    meta = prior.meta()
    if not counts:
        meta = {k: v for k, v in meta.items() if k not in ("mean", "std")}
    manifest["prior"] = meta
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest))
    return folder


def test_attach_gives_a_retriever_a_moving_prior_or_keeps_it_frozen(
    untrained_bundle: Path, tmp_path: Path
) -> None:
    import json

    folder = _bundle_copy(untrained_bundle, tmp_path)
    version = json.loads((folder / MANIFEST_FILE).read_text())["model_version"]

    def attach(**settings: object) -> tuple[Retriever, MovingPrior | None]:
        r = Retriever.from_dir(folder, model_version=version, omp_threads=None)
        params = EventSettings(**settings).to_params() if settings else {}  # type: ignore[arg-type]
        return r, attach_moving_prior(r, folder, params)

    r, mp = attach()  # defaults: sqlite beside the repository, moving
    assert isinstance(mp, MovingPrior) and r.prior is mp
    assert (tmp_path / "repo.events.sqlite").is_file()
    frozen = r.prior
    assert attach(prior="frozen")[1] is None
    assert attach(store="off")[1] is None
    assert frozen is not None
    _bundle_copy(untrained_bundle, tmp_path, counts=False)  # a bundle from before: frozen
    r, mp = attach()
    assert mp is None and r.prior is not None and not isinstance(r.prior, MovingPrior)
