"""The advice `towerserve eval --repository` prints when the served path keeps history items
that the recommendation protocol then removes from its lists."""

from __future__ import annotations

from client.served_eval import exclusion_advice


def test_advice_names_the_setting_each_protocol_needs() -> None:
    assert exclusion_advice(20, "time") is None and exclusion_advice(1000, "random") is None
    assert exclusion_advice(1000, "time") is None
    time = exclusion_advice(0, "time")
    assert time is not None and "--exclude-recent 20" in time and "newest 0" in time
    random = exclusion_advice(20, "random")
    assert random is not None and "--exclude-recent 1000" in random
    assert exclusion_advice(0, "another") is None
