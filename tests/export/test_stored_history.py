"""The stored user histories a bundle carries (export/bundle.py ``stored_histories``)."""

from __future__ import annotations

import pandas as pd

from export.bundle import stored_histories


def test_only_events_before_the_cut_newest_n_oldest_first() -> None:
    events = pd.DataFrame(
        {
            "user_id": [1, 1, 1, 1, 2, 2, 3],
            "item_id": [10, 11, 12, 13, 20, 21, 30],
            "ts": [100, 300, 200, 900, 150, 950, 990],
            "event_type": ["click"] * 7,
        }
    )
    users, offsets, items, ts = stored_histories(events, cut_ts=900, n=2)
    # user 1's event at 900 and user 2's at 950 are after the cut; user 3 has none before it
    assert users.tolist() == [1, 2] and offsets.tolist() == [0, 2, 3]
    assert items.tolist() == [12, 11, 20] and ts.tolist() == [200, 300, 150]
    users, offsets, items, _ = stored_histories(events, cut_ts=None, n=3)
    assert users.tolist() == [1, 2, 3] and items[:3].tolist() == [12, 11, 13]
