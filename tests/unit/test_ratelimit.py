"""Token bucket and peer slots, with time as an input."""

from __future__ import annotations

from collections import deque

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyrsia.p2p.behaviours.autonat.admission import RequestAdmission
from pyrsia.p2p.ratelimit import PeerSlots, TokenBucket, prune_window


def test_unlimited_never_waits() -> None:
    bucket = TokenBucket(rate_bytes_s=0)
    assert bucket.unlimited and bucket.reserve(10**12, 0.0) == 0.0


def test_burst_then_the_rate() -> None:
    bucket = TokenBucket(rate_bytes_s=1000, burst_bytes=500)
    assert bucket.reserve(500, 0.0) == 0.0
    assert bucket.reserve(250, 0.0) == pytest.approx(0.25)
    assert bucket.reserve(250, 0.25) == pytest.approx(0.25)  # refilled 250, owed 250 more
    assert bucket.reserve(100, 10.0) == 0.0  # refill stops at the burst


def test_a_piece_above_the_burst_still_goes_out_later() -> None:
    bucket = TokenBucket(rate_bytes_s=1000, burst_bytes=100)
    assert bucket.reserve(1100, 0.0) == pytest.approx(1.0)


def test_time_going_back_does_not_mint_tokens() -> None:
    bucket = TokenBucket(rate_bytes_s=1000, burst_bytes=100)
    bucket.reserve(100, 5.0)
    assert bucket.reserve(100, 4.0) == pytest.approx(0.1)


@given(
    st.lists(
        st.tuples(st.floats(min_value=0, max_value=0.5), st.integers(min_value=1, max_value=300_000)),
        min_size=1,
        max_size=200,
    ),
    st.floats(min_value=0.5, max_value=5.0),
)
def test_bytes_in_any_window_stay_within_burst_plus_rate(
    steps: list[tuple[float, int]], window_s: float
) -> None:
    """Senders that wait as told never put more than burst + rate x T into T seconds."""
    rate, burst = 100_000, 10_000
    bucket = TokenBucket(rate_bytes_s=rate, burst_bytes=burst)
    now = 0.0
    sends: list[tuple[float, int]] = []
    for gap, size in steps:
        now += gap
        wait = bucket.reserve(size, now)
        now += wait  # one sender: it sends, then asks again
        sends.append((now, size))
    for start, _ in sends:
        # a piece is released at its send time; count those starting in [start, start + T)
        inside = sum(size for at, size in sends if start <= at < start + window_s)
        largest = max(size for _, size in sends)
        assert inside <= burst + rate * window_s + largest


def test_peer_slots_count_peers_not_streams() -> None:
    slots = PeerSlots(2)
    assert slots.acquire("a") and slots.acquire("a") and slots.acquire("b")
    assert not slots.acquire("c")
    slots.release("a")
    assert not slots.acquire("c")  # a still holds a stream
    slots.release("a")
    assert slots.acquire("c") and slots.serving == 2
    assert PeerSlots(0).acquire("anyone")


def test_prune_window_keeps_only_the_times_inside_the_window() -> None:
    stamps = deque([1.0, 5.0, 61.5, 70.0])
    assert list(prune_window(stamps, 71.0, 60.0)) == [61.5, 70.0]
    assert list(prune_window(deque(), 71.0, 60.0)) == []


def test_autonat_admission_refuses_in_order_and_forgets_quiet_peers() -> None:
    admission = RequestAdmission(rate_max=3, peer_rate_max=2, concurrent_max=2)
    assert admission.refusal("a", ["a"], 0.0) == "peer_concurrent"
    assert admission.refusal("a", ["b", "c"], 0.0) == "concurrent"
    for t in (0.0, 1.0):
        assert admission.refusal("a", [], t) is None
        admission.accept("a", t)
    assert admission.refusal("a", [], 2.0) == "peer_rate"
    admission.accept("b", 2.0)
    assert admission.refusal("c", [], 3.0) == "rate"
    assert admission.refusal("a", [], 62.0) is None  # a minute later both windows moved on
