"""The ``events`` model's logic: bad events are refused with a clear error, a batch with one bad
event is refused whole (nothing of it stored, other users untouched), floods are rate-limited."""

from __future__ import annotations

import numpy as np
import pytest

from serving.errors import RequestError
from serving.events.recorder import EventPolicy, EventRecorder, RateLimiter
from serving.events.store import EventBatch

CATALOG = np.array([100, 101, 102, 103], dtype=np.int64)
NOW = 1_800_000_000


class Clock:
    def __init__(self, t: float = NOW) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def recorder(make_store) -> EventRecorder:
    return EventRecorder(make_store(), CATALOG, clock=Clock())


def tensors(users, items, ts, types) -> dict[str, np.ndarray]:
    return {
        "USER_IDS": np.asarray(users, dtype=np.int64),
        "ITEM_IDS": np.asarray(items, dtype=np.int64),
        "TS": np.asarray(ts, dtype=np.int64),
        "EVENT_TYPES": np.array([t.encode() for t in types], dtype=object),
    }


def test_good_events_are_recorded(recorder) -> None:
    out = recorder.infer(tensors([1, 2, 1], [100, 101, 102], [NOW - 5, NOW, NOW + 30],
                                 ["view", "purchase", "add_to_cart"]))  # fmt: skip
    assert out["N_RECORDED"].tolist() == [3] and out["N_RECORDED"].dtype == np.int64
    assert recorder.store.recent(1, 5)[0].tolist() == [100, 102]
    assert recorder.store.recent(2, 5)[0].tolist() == [101]
    assert recorder.recorded == 3 and not recorder.refused


BAD = {
    "unknown_item": ((5, 999, NOW, "view"), "item id 999 is not in the catalog"),
    "unknown_type": ((5, 100, NOW, "like"), "event type 'like' is not one of view, click"),
    "future_time": ((5, 100, NOW + 3600, "view"), "3600 s in the future .at most 60 s"),
    "negative_time": ((5, 100, -1, "view"), "time -1 is negative"),
    "bad_user": ((-1, 100, NOW, "view"), "user id -1 is negative"),
}


@pytest.mark.parametrize("reason", sorted(BAD))
@pytest.mark.parametrize("position", [0, 2, 4])
def test_one_bad_event_refuses_the_whole_batch(recorder, reason, position) -> None:
    """Whatever is wrong and wherever it is in the batch: an error naming the event and the
    rule, nothing of the batch stored, earlier history of every user intact."""
    recorder.infer(tensors([1, 2], [100, 101], [NOW - 100, NOW - 100], ["view", "view"]))
    event, message = BAD[reason]
    rows = [(1, 102, NOW - 1, "click"), (2, 103, NOW - 1, "view"), (5, 101, NOW, "click"),
            (1, 103, NOW, "purchase")]  # fmt: skip
    rows.insert(position, event)
    with pytest.raises(RequestError, match=rf"refused all 5 events.*event {position} .*{message}"):
        recorder.infer(tensors(*zip(*rows)))
    assert recorder.store.recent(1, 10)[0].tolist() == [100]
    assert recorder.store.recent(2, 10)[0].tolist() == [101]
    assert recorder.store.recent(5, 10)[0].tolist() == []
    assert recorder.refused[reason] == 1 and recorder.refused["in_bad_batch"] == 4
    assert recorder.recorded == 2
    # the same batch without the bad event goes in whole
    del rows[position]
    assert recorder.infer(tensors(*zip(*rows)))["N_RECORDED"].tolist() == [4]
    assert recorder.store.recent(1, 10)[0].tolist() == [100, 102, 103]


def test_several_problems_are_all_listed(recorder) -> None:
    with pytest.raises(RequestError) as info:
        recorder.infer(tensors([1, 1, -3], [999, 100, 998], [NOW, NOW + 999, NOW],
                               ["view", "view", "zap"]))  # fmt: skip
    text = str(info.value)
    for part in ("event 0 (user 1): item id 999", "event 1 (user 1): time", "event 2 (user -3)",
                 "item id 998", "'zap'"):  # fmt: skip
        assert part in text, part
    assert recorder.store.recent(1, 10)[0].tolist() == []


def test_a_small_clock_skew_is_allowed(make_store) -> None:
    rec = EventRecorder(make_store(), CATALOG, policy=EventPolicy(max_skew_s=5), clock=Clock())
    assert rec.infer(tensors([1], [100], [NOW + 5], ["view"]))["N_RECORDED"].tolist() == [1]
    with pytest.raises(RequestError, match="at most 5 s allowed"):
        rec.infer(tensors([1], [100], [NOW + 6], ["view"]))


def test_a_flood_from_one_user_is_rate_limited_without_touching_others(make_store) -> None:
    clock = Clock()
    rec = EventRecorder(
        make_store(), CATALOG, policy=EventPolicy(rate_per_user_s=2, burst_per_user=4), clock=clock
    )
    for _ in range(4):
        rec.infer(tensors([1], [100], [NOW], ["view"]))
    with pytest.raises(RequestError, match=r"user 1 is over the rate limit of 2 events/s.*0\.5 s"):
        rec.infer(tensors([1], [101], [NOW], ["view"]))
    # a batch with the flooding user and another: refused whole, the other user untouched
    with pytest.raises(RequestError, match="refused all 2 events"):
        rec.infer(tensors([2, 1], [102, 101], [NOW, NOW], ["view", "view"]))
    assert rec.store.recent(2, 10)[0].tolist() == []
    assert rec.infer(tensors([2], [102], [NOW], ["view"]))["N_RECORDED"].tolist() == [1]
    assert rec.refused["rate_limited"] == 3 and rec.store.count(1) == 4
    clock.t += 0.5  # one token back
    assert rec.infer(tensors([1], [101], [NOW], ["view"]))["N_RECORDED"].tolist() == [1]
    with pytest.raises(RequestError, match="at most 4 events of one user per request"):
        rec.infer(tensors([3] * 5, [100] * 5, [NOW] * 5, ["view"] * 5))


def test_rate_limiter_takes_all_or_nothing() -> None:
    clock = Clock(0.0)
    limiter = RateLimiter(rate_s=1.0, burst=2, clock=clock)
    assert limiter.try_take({1: 2}) == {}
    assert limiter.try_take({2: 1, 1: 1}) == {1: pytest.approx(1.0)}
    assert limiter.try_take({2: 2}) == {}  # 2 was not charged by the refused call
    clock.t = 1.0
    assert limiter.try_take({1: 1}) == {}


def test_malformed_requests_get_clear_errors(recorder) -> None:
    with pytest.raises(RequestError, match="one entry per event; got 2, 1, 1 and 1"):
        recorder.infer(tensors([1, 2], [100], [NOW], ["view"]))
    with pytest.raises(RequestError, match="missing input TS"):
        recorder.infer({k: v for k, v in tensors([1], [100], [NOW], ["view"]).items() if k != "TS"})
    with pytest.raises(RequestError, match="must hold UTF-8"):
        recorder.infer({**tensors([1], [100], [NOW], ["view"]),
                        "EVENT_TYPES": np.array([b"\xff"], dtype=object)})  # fmt: skip
    assert recorder.infer(tensors([], [], [], []))["N_RECORDED"].tolist() == [0]


def test_a_batch_larger_than_allowed_is_refused(make_store) -> None:
    rec = EventRecorder(make_store(), CATALOG, policy=EventPolicy(max_batch=3), clock=Clock())
    with pytest.raises(RequestError, match="4 events in one request; at most 3"):
        rec.record(EventBatch.of([1] * 4, [100] * 4, [NOW] * 4, [0] * 4))
    assert rec.store.count() == 0


def test_warm_up_writes_and_counts_nothing(recorder) -> None:
    recorder.warm_up()
    assert recorder.store.count() == 0 and recorder.recorded == 0 and not recorder.refused
