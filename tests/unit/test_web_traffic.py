"""The traffic history core, driven directly: bounded, ordered in time, cumulative values kept as read."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyrsia.web.traffic import SERIES_MAX, TrafficHistory, counters_of


def test_counters_are_received_by_source_and_served_to_all_peers() -> None:
    series = counters_of({"local": 5, "peer": 7, "upstream": 11}, {"12D3KooWa": 3, "12D3KooWb": 4})
    assert series == {"received.local": 5, "received.peer": 7, "received.upstream": 11, "served.peers": 7}
    assert counters_of({}, {}) == {"served.peers": 0}


def test_the_history_keeps_the_newest_samples_up_to_its_bound() -> None:
    history = TrafficHistory(samples_max=3, interval_s=2.0)
    for t in range(1, 6):
        history.record(float(t), {"received.peer": t * 100})
    doc = history.to_json()
    assert doc["samples_max"] == 3 and doc["interval_s"] == 2.0
    assert doc["series"] == ["received.peer"]
    assert doc["samples"] == [
        {"at": 3.0, "bytes": {"received.peer": 300}},
        {"at": 4.0, "bytes": {"received.peer": 400}},
        {"at": 5.0, "bytes": {"received.peer": 500}},
    ]


def test_a_sample_not_later_than_the_last_is_ignored() -> None:
    history = TrafficHistory(samples_max=10, interval_s=1.0)
    history.record(10.0, {"a": 1})
    history.record(10.0, {"a": 2})
    history.record(9.0, {"a": 3})
    assert [(s.at_s, s.bytes_total) for s in history.samples()] == [(10.0, (("a", 1),))]


def test_series_are_the_union_over_samples_and_each_sample_has_a_bounded_number() -> None:
    history = TrafficHistory(samples_max=10, interval_s=1.0)
    history.record(1.0, {"a": 1})
    history.record(2.0, {"b": 2})
    history.record(3.0, {f"s{i:03d}": i for i in range(SERIES_MAX + 10)})
    doc = history.to_json()
    assert {"a", "b"} <= set(doc["series"])  # type: ignore[arg-type]
    assert len(history.samples()[-1].bytes_total) == SERIES_MAX


def test_a_history_needs_room_for_one_sample() -> None:
    with pytest.raises(ValueError):
        TrafficHistory(samples_max=0, interval_s=1.0)


@given(
    st.integers(min_value=1, max_value=20),
    st.lists(st.tuples(st.floats(min_value=0, max_value=1e6, allow_nan=False), st.integers(0, 2**62))),
)
def test_samples_stay_bounded_and_strictly_increasing_in_time(
    samples_max: int, readings: list[tuple[float, int]]
) -> None:
    history = TrafficHistory(samples_max=samples_max, interval_s=1.0)
    for at, value in readings:
        history.record(at, {"served.peers": value})
    times = [s.at_s for s in history.samples()]
    assert len(times) <= samples_max
    assert all(a < b for a, b in itertools.pairwise(times))
    if readings:
        assert times[-1] == max(at for at, _ in readings)
