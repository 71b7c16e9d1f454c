"""The chunk scheduler core, driven input by input with no I/O and no clock."""

from __future__ import annotations

from pyrsia.p2p.behaviours.exchange.scheduler import (
    Cancel,
    Done,
    Evict,
    ExchangeConfig,
    ExchangeCore,
    Failed,
    Request,
)

MIB = 1 << 20
CONFIG = ExchangeConfig(window_chunks_max=4, window_chunks_min=2, request_chunks_max=2, stall_timeout_s=5.0)


def _core(chunks: int, have: set[int] | None = None) -> ExchangeCore:
    return ExchangeCore(
        chunk_count=chunks, chunk_bytes=MIB, size=chunks * MIB, have=have or set(), config=CONFIG
    )


def _requested(effects: list[object], peer: str | None = None) -> list[int]:
    return [
        i
        for e in effects
        if isinstance(e, Request) and (peer is None or e.peer == peer)
        for i in range(e.first, e.first + e.count)
    ]


def test_windows_fill_from_the_lowest_chunks_and_refill_on_arrival() -> None:
    core = _core(10)
    effects = core.add_peers([("a", 0.01), ("b", 0.02)], 0.0)
    assert effects == [Request(peer="a", first=0, count=2), Request(peer="b", first=2, count=2)]
    effects = core.chunk_verified("a", 0, 0.1)
    # a is now the measured best: its window widens to the maximum (4), whole runs of 2
    assert effects == [Request(peer="a", first=4, count=2)]
    # one more in: room for a whole run again
    assert core.chunk_verified("a", 1, 0.2) == [Request(peer="a", first=6, count=2)]


def test_a_window_with_room_for_less_than_a_run_waits_until_only_that_much_is_left() -> None:
    core = _core(7)
    assert _requested(core.add_peers([("a", 0.01)], 0.0)) == [0, 1]
    assert _requested(core.chunk_verified("a", 0, 0.1)) == [2, 3]  # widened to 4; room for one run
    assert _requested(core.chunk_verified("a", 1, 0.2)) == [4, 5]
    assert core.chunk_verified("a", 2, 0.3) == [Request(peer="a", first=6, count=1)]  # the last chunk


def test_the_faster_peer_gets_the_wider_window_and_most_chunks() -> None:
    core = _core(40)
    effects = core.add_peers([("fast", None), ("slow", None)], 0.0)
    from_peer: dict[int, str] = {}
    queue = {"fast": _requested(effects, "fast"), "slow": _requested(effects, "slow")}
    now = 0.0
    next_at = {"fast": 0.01, "slow": 0.1}
    while not core.finished:
        peer = min((p for p in queue if queue[p]), key=lambda p: next_at[p])
        now = next_at[peer]
        index = queue[peer].pop(0)
        next_at[peer] = now + (0.01 if peer == "fast" else 0.1)
        effects = core.chunk_verified(peer, index, now)
        from_peer.setdefault(index, peer)
        for effect in effects:
            if isinstance(effect, Request):
                queue[effect.peer] += list(range(effect.first, effect.first + effect.count))
            if isinstance(effect, Cancel):
                queue[effect.peer].remove(effect.first)
    stats = core.peer_stats()
    assert stats["fast"].chunks > 4 * stats["slow"].chunks
    assert core.have == frozenset(range(40))


def test_resume_requests_only_what_is_missing() -> None:
    core = _core(6, have={0, 1, 2, 4})
    effects = core.add_peers([("a", None)], 0.0)
    assert _requested(effects) == [3, 5]
    assert core.chunk_verified("a", 3, 1.0) == []
    assert core.chunk_verified("a", 5, 1.1) == [Done()]
    assert core.finished and core.next_deadline_s() is None


def test_nothing_missing_is_done_at_once_even_without_providers() -> None:
    assert _core(3, have={0, 1, 2}).add_peers([], 0.0) == [Done()]
    assert _core(0).add_peers([], 0.0) == [Done()]


def test_a_bad_chunk_evicts_its_sender_and_the_chunk_goes_elsewhere() -> None:
    core = _core(4)
    core.add_peers([("a", 0.01), ("b", 0.02)], 0.0)
    effects = core.chunk_refused("a", 0, "hash mismatch", 0.1)
    assert effects[0] == Evict(peer="a", reason="sent a bad chunk 0: hash mismatch")
    assert core.active_peers() == ["b"]
    # b gets a and b's chunks back as its window frees
    remaining = {0, 1, 2, 3}
    for index in (2, 3):
        effects = core.chunk_verified("b", index, 0.2)
        remaining.discard(index)
    asked = set(_requested(effects, "b"))
    assert asked <= {0, 1}
    # Late bytes from an evicted peer that still verify are kept; b's copy is cancelled.
    assert core.chunk_verified("a", 1, 0.3) == [Cancel(peer="b", first=1, count=1)]
    assert 1 in core.have


def test_a_stalled_peer_is_evicted_at_its_deadline() -> None:
    core = _core(8)
    core.add_peers([("a", None), ("b", None)], 0.0)
    core.chunk_verified("b", 2, 1.0)
    deadline = core.next_deadline_s()
    assert deadline == 5.0  # a has made no progress since it was asked at 0
    effects = core.tick(5.0)
    assert effects == [Evict(peer="a", reason="stalled: no chunk for 5 s")]  # b's window is full
    assert _requested(core.chunk_verified("b", 3, 5.1), "b")[0] == 0  # a's chunks went back to the pool


def test_all_providers_bad_is_failed_naming_them() -> None:
    core = _core(3)
    core.add_peers([("a", None), ("b", None)], 0.0)
    core.chunk_refused("a", 0, "wrong length", 0.1)
    effects = core.peer_failed("b", "not found", 0.2)
    assert effects[0] == Evict(peer="b", reason="not found")
    assert isinstance(effects[-1], Failed)
    assert "a: sent a bad chunk 0" in effects[-1].reason and "b: not found" in effects[-1].reason
    assert core.finished and core.tick(9.0) == []


def test_no_providers_at_all_is_failed() -> None:
    effects = _core(3).add_peers([], 0.0)
    assert len(effects) == 1 and isinstance(effects[0], Failed)


def test_end_game_duplicates_a_straggler_and_the_first_copy_wins() -> None:
    core = _core(8)
    assert _requested(core.add_peers([("fast", 0.001), ("slow", 0.05)], 0.0)) == [0, 1, 2, 3]
    assert _requested(core.chunk_verified("fast", 0, 0.01)) == [4, 5]
    assert _requested(core.chunk_verified("fast", 1, 0.02)) == [6, 7]
    # nothing is left unrequested: fast, with room, re-requests what slow has not sent
    assert core.chunk_verified("fast", 4, 0.03) == [Request(peer="fast", first=2, count=1)]
    assert core.chunk_verified("fast", 5, 0.04) == [Request(peer="fast", first=3, count=1)]
    assert core.chunk_verified("fast", 6, 0.05) == []  # no chunk has room for a third copy
    core.chunk_verified("fast", 7, 0.06)
    assert core.chunk_verified("fast", 2, 0.07) == [Cancel(peer="slow", first=2, count=1)]
    assert core.chunk_verified("fast", 3, 0.08) == [Cancel(peer="slow", first=3, count=1), Done()]
    assert core.chunk_verified("slow", 2, 1.0) == []  # the late copy is dropped
    stats = core.peer_stats()
    assert stats["fast"].chunks == 8 and stats["slow"].chunks == 0 and stats["slow"].outstanding == 0


def test_end_game_leaves_a_chunk_to_a_holder_that_will_deliver_it_sooner() -> None:
    core = _core(4)
    core.add_peers([("a", None), ("b", None)], 0.0)  # a: 0, 1; b: 2, 3
    effects = core.chunk_verified("b", 2, 0.01)  # b: 100 MiB/s; a has sent nothing yet
    assert _requested(effects, "b") == [0, 1]  # so b doubles a's chunks
    effects = core.chunk_verified("a", 0, 0.02)  # a: 50 MiB/s; b's 3 is due about now
    assert effects == [Cancel(peer="b", first=0, count=1)]  # and a does not double it
    effects = core.chunk_verified("b", 3, 0.02)
    assert effects == []
    assert core.chunk_verified("b", 1, 0.03) == [Cancel(peer="a", first=1, count=1), Done()]


def test_end_game_never_asks_more_than_copies_max() -> None:
    core = _core(2)
    core.add_peers([("a", None), ("b", None), ("c", None)], 0.0)
    for peer, index, at in (("a", 0, 0.01), ("b", 1, 0.5)):
        core.chunk_verified(peer, index, at)
    assert core.finished


def test_peer_left_mid_transfer_returns_its_chunks() -> None:
    core = _core(4)
    core.add_peers([("a", None), ("b", None)], 0.0)
    effects = core.peer_failed("a", "disconnected", 0.5)
    assert Evict(peer="a", reason="disconnected") in effects
    done: list[object] = []
    queue = _requested(effects, "b")
    now = 0.5
    pending = [0, 1, 2, 3]
    for index in [2, 3]:
        now += 0.1
        done += core.chunk_verified("b", index, now)
        pending.remove(index)
    queue = _requested(done, "b")
    for index in queue:
        now += 0.1
        done += core.chunk_verified("b", index, now)
    assert done[-1] == Done()
