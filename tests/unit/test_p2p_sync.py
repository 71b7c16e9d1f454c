"""The sync core by hand: who is asked for what, and what a bad peer costs it."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyrsia.errors import ProtocolViolation
from pyrsia.p2p.behaviours.sync import core as sync
from pyrsia.p2p.behaviours.sync.core import (
    Blocks,
    Fetch,
    GetBlocks,
    Penalize,
    SendStatus,
    Status,
    SyncConfig,
    SyncCore,
)
from pyrsia.translog import codec

G = b"\x01" * 32
OTHER = b"\x02" * 32
EMPTY = Status(genesis=b"", height=-1, tip=b"")


def at(height: int, genesis: bytes = G) -> Status:
    return Status(genesis=genesis, height=height, tip=bytes([height % 256]) * 32)


def fetches(effects: list[sync.Effect]) -> list[Fetch]:
    return [e for e in effects if isinstance(e, Fetch)]


def core(status: Status = EMPTY, **config: float) -> SyncCore:
    settings: dict[str, float] = {"batch_blocks_max": 10, "fetches_max": 1, **config}
    return SyncCore(status=status, rng=random.Random(0), config=SyncConfig(**settings))  # type: ignore[arg-type]


def penalties(effects: list[sync.Effect]) -> list[Penalize]:
    return [e for e in effects if isinstance(e, Penalize)]


def test_a_new_peer_is_told_our_status_and_a_higher_one_is_asked_in_batches() -> None:
    sync_core = core(at(4))
    assert sync_core.peer_connected("a", 0.0) == [SendStatus(peer="a", status=at(4))]
    [fetch] = fetches(sync_core.status_received("a", at(30), 0.0))
    assert isinstance(fetch, Fetch) and (fetch.peer, fetch.start, fetch.count) == ("a", 5, 10)
    assert fetches(sync_core.status_received("b", at(50), 0.0)) == []  # fetches_max=1: one at a time
    effects = sync_core.blocks_applied(fetch.request_id, at(14), 1.0, received=10)
    assert SendStatus(peer="a", status=at(14)) in effects  # the new tip is announced
    assert penalties(effects) == []
    [again] = fetches(effects)
    assert (again.peer, again.start, again.count) == ("a", 15, 10)  # it delivered: it is asked again
    assert sync_core.best_known_height == 30  # a's claim, now that a delivered


def test_an_authority_leaves_a_near_block_to_consensus_for_a_while_then_fetches() -> None:
    sync_core = core(at(4), near_gap_blocks=2, near_wait_s=2.0)
    sync_core.peer_connected("a", 0.0)
    assert fetches(sync_core.status_received("a", at(5), 0.0)) == []  # one ahead: consensus brings it
    assert sync_core.next_deadline_s() == 2.0  # and the core wakes when the wait ends
    # Consensus delivered block 5 and the peer is at 6: the wait starts again at the new height.
    assert fetches(sync_core.committed(at(5), 1.5)) == []
    assert fetches(sync_core.status_received("a", at(6), 1.6)) == []
    assert sync_core.next_deadline_s() == 3.6
    assert fetches(sync_core.tick(3.5)) == []  # 1.9 s since a peer was seen ahead of height 5
    [fetch] = fetches(sync_core.tick(3.6))  # 2 s: fetch it
    assert (fetch.peer, fetch.start, fetch.count) == ("a", 6, 1)


def test_a_node_far_behind_fetches_at_once_even_with_a_near_wait() -> None:
    sync_core = core(at(4), near_gap_blocks=2, near_wait_s=2.0)
    sync_core.peer_connected("a", 0.0)
    [fetch] = fetches(sync_core.status_received("a", at(7), 0.0))
    assert (fetch.start, fetch.count) == (5, 3)
    plain = core(at(4))  # a regular node (no wait) fetches one block ahead at once
    plain.peer_connected("a", 0.0)
    assert len(fetches(plain.status_received("a", at(5), 0.0))) == 1


def test_an_empty_node_adopts_the_first_network_it_hears_of_then_refuses_others() -> None:
    sync_core = core()
    [fetch] = fetches(sync_core.status_received("a", at(3), 0.0))
    assert isinstance(fetch, Fetch) and fetch.start == 0 and fetch.count == 4
    sync_core.blocks_applied(fetch.request_id, at(3), 1.0, received=4)
    [penalty] = sync_core.status_received("evil", at(9, OTHER), 2.0)
    assert isinstance(penalty, Penalize) and penalty.disconnect and "another network" in penalty.reason
    assert sync_core.drops == {sync.OTHER_NETWORK: 1}
    # It comes back: still ignored, but left connected so it can read our status and why.
    assert sync_core.peer_connected("evil", 3.0) == []
    assert sync_core.status_received("evil", at(9, OTHER), 3.0) == []


def test_a_pinned_genesis_refuses_other_networks_before_any_block() -> None:
    sync_core = SyncCore(status=EMPTY, rng=random.Random(0), pinned_genesis=G)
    [penalty] = sync_core.status_received("evil", at(100, OTHER), 0.0)
    assert isinstance(penalty, Penalize)
    assert fetches(sync_core.status_received("late", EMPTY, 0.0)) == []
    [fetch] = fetches(sync_core.status_received("good", at(2), 0.0))
    assert isinstance(fetch, Fetch) and fetch.peer == "good"


def test_a_bad_block_disconnects_its_sender_and_the_next_peer_is_asked() -> None:
    sync_core = core(at(0))
    sync_core.status_received("honest", at(5), 0.0)
    [first] = fetches(sync_core.status_received("liar", at(5), 0.0)) or [None]
    if first is None:  # the rank put honest first (ties are broken at random): ask the liar by hand
        sync_core = core(at(0))
        [first] = fetches(sync_core.status_received("liar", at(5), 0.0))
        sync_core.status_received("honest", at(5), 0.0)
    assert isinstance(first, Fetch) and first.peer == "liar"
    effects = sync_core.blocks_refused(first.request_id, "block 1 does not verify", at(0), 1.0)
    assert (
        Penalize(peer="liar", kind=sync.BAD_BLOCK, reason="block 1 does not verify", disconnect=True)
        in effects
    )
    [retry] = fetches(effects)
    assert retry.peer == "honest" and retry.start == 1
    assert "liar" not in sync_core.peer_heights()
    assert sync_core.drops == {sync.BAD_BLOCK: 1} and "liar" in sync_core.banned(1.0)


def test_a_stalled_request_times_out_and_the_peer_rests_longer_each_time() -> None:
    sync_core = core(at(0), request_timeout_s=5.0, backoff_s=10.0)
    sync_core.peer_connected("slow", 0.0)
    [fetch] = fetches(sync_core.status_received("slow", at(9), 0.0))
    assert sync_core.next_deadline_s() == 5.0
    assert fetches(sync_core.tick(4.9)) == []
    assert fetches(sync_core.tick(5.0)) == []  # resting
    [retry] = fetches(sync_core.tick(15.0))
    assert retry.peer == "slow" and retry.request_id != fetch.request_id
    assert (
        sync_core.blocks_applied(fetch.request_id, at(9), 16.0, received=9) == []
    )  # a late reply is ignored
    assert fetches(sync_core.tick(20.0)) == []  # the retry stalls too: 20 s of rest now
    assert fetches(sync_core.tick(39.0)) == []
    [third] = fetches(sync_core.tick(40.0))
    assert third.peer == "slow"
    assert sync_core.penalties == {} and sync_core.drops == {}  # slow is not a lie


def test_status_is_repeated_every_interval_so_a_lost_announcement_heals() -> None:
    sync_core = core(at(3), status_interval_s=30.0)
    sync_core.peer_connected("a", 0.0)
    assert sync_core.tick(29.0) == []
    assert sync_core.tick(30.0) == [SendStatus(peer="a", status=at(3))]


def test_a_departed_peer_mid_request_hands_the_request_on() -> None:
    sync_core = core(at(0))
    [fetch] = fetches(sync_core.status_received("a", at(9), 0.0))
    sync_core.status_received("b", at(8), 0.0)
    [retry] = fetches(sync_core.peer_left("a", 1.0))
    assert isinstance(retry, Fetch) and retry.peer == "b" and retry.request_id != fetch.request_id


# -- defence -------------------------------------------------------------------------


def test_a_peer_repeating_block_0_is_struck_then_dropped_and_banned() -> None:
    sync_core = core(at(0), strikes_max=3, ban_s=100.0)
    [fetch] = fetches(sync_core.status_received("liar", at(50), 0.0))
    kinds = []
    for i in range(3):
        effects = sync_core.blocks_applied(fetch.request_id, at(0), float(i), received=1)  # block 0 again
        [penalty] = penalties(effects)
        kinds.append((penalty.kind, penalty.disconnect))
        if i < 2:
            [fetch] = fetches(effects)  # nobody else: it is asked again, no rest for a strike
            assert fetch.start == 1
        else:
            assert fetches(effects) == []
    assert kinds == [(sync.NO_PROGRESS, False), (sync.NO_PROGRESS, False), (sync.STRIKES, True)]
    assert sync_core.penalties == {sync.NO_PROGRESS: 3, sync.STRIKES: 1} and sync_core.drops == {
        sync.STRIKES: 1
    }
    assert "liar" not in sync_core.peer_heights() and sync_core.best_known_height == 0
    # Banned: it is sent away when it comes back, and its statuses are ignored.
    [again] = sync_core.peer_connected("liar", 50.0)
    assert isinstance(again, Penalize) and again.kind == sync.BANNED and again.disconnect
    assert sync_core.status_received("liar", at(50), 50.0) == []
    # The ban ends after ban_s; a second offence bans for twice as long.
    assert sync_core.peer_connected("liar", 102.5) == [SendStatus(peer="liar", status=at(0))]
    [fetch] = fetches(sync_core.status_received("liar", at(50), 103.0))
    for _ in range(3):
        effects = sync_core.blocks_applied(fetch.request_id, at(0), 103.0, received=1)
        fetch = next(iter(fetches(effects)), fetch)
    assert sync_core.banned(103.0)["liar"] == 303.0


def test_blocks_not_where_asked_and_short_batches_are_strikes_a_good_batch_clears_them() -> None:
    sync_core = core(at(9), strikes_max=3)
    [fetch] = fetches(sync_core.status_received("p", at(40), 0.0))
    assert (fetch.start, fetch.count) == (10, 10)
    # Blocks 8..12 sent: 8 and 9 held, 10..12 stored — progress, but not what was asked.
    effects = sync_core.blocks_applied(fetch.request_id, at(12), 1.0, received=5)
    assert [p.kind for p in penalties(effects)] == [sync.MISPLACED]
    [fetch] = fetches(effects)
    # Three of ten, though it claims 40 and the reply was small: a short batch.
    effects = sync_core.blocks_applied(fetch.request_id, at(15), 2.0, received=3)
    assert [p.kind for p in penalties(effects)] == [sync.SHORT]
    [fetch] = fetches(effects)
    # A short batch that filled the byte budget is honest, and a good batch clears strikes.
    effects = sync_core.blocks_applied(fetch.request_id, at(18), 3.0, received=3, full=True)
    assert penalties(effects) == []
    [fetch] = fetches(effects)
    effects = sync_core.blocks_applied(fetch.request_id, at(18), 4.0, received=2)
    assert [(p.kind, p.disconnect) for p in penalties(effects)] == [(sync.NO_PROGRESS, False)]


def test_a_claim_of_10_to_the_12_is_not_believed_does_not_starve_honest_sync_and_is_dropped() -> None:
    sync_core = core(at(0), strikes_max=3, fetches_max=2)
    [stalled] = fetches(sync_core.status_received("claimer", at(10**12), 0.0))
    assert stalled.peer == "claimer" and sync_core.best_known_height == 0  # a claim, not a fact
    [fetch] = fetches(sync_core.status_received("honest", at(25), 1.0))  # asked beside it
    assert fetch.peer == "honest"
    while sync_core.status.height < 25:
        assert fetch.peer == "honest"
        height = fetch.start + fetch.count - 1
        effects = sync_core.blocks_applied(fetch.request_id, at(height), 2.0, received=fetch.count)
        assert penalties(effects) == [] and sync_core.best_known_height == 25
        fetch = next(iter(fetches(effects)), fetch)
    # The claimer's stalled answer comes at last, to a range long since stored: no judgement.
    effects = sync_core.blocks_applied(stalled.request_id, at(25), 3.0, received=0)
    assert penalties(effects) == []
    [fetch] = fetches(effects)
    assert (fetch.peer, fetch.start) == ("claimer", 26)  # nobody else left to ask
    for strike in range(1, 4):
        effects = sync_core.blocks_applied(fetch.request_id, at(25), 3.0, received=0)
        [penalty] = penalties(effects)
        assert penalty.kind == (sync.EMPTY if strike < 3 else sync.STRIKES)
        assert penalty.disconnect == (strike == 3)
        fetch = next(iter(fetches(effects)), fetch)
    assert sync_core.best_known_height == 25 and "claimer" not in sync_core.peer_heights()
    assert not sync_core.fetching


@pytest.mark.parametrize("seed", range(20))
def test_a_lone_huge_claim_ranks_below_an_honest_peer_and_the_claimer_is_dropped_once_asked(
    seed: int,
) -> None:
    sync_core = core(at(0), strikes_max=3)
    sync_core.rng = random.Random(seed)
    [first] = fetches(sync_core.status_received("other", at(3), 0.0))
    assert fetches(sync_core.status_received("claimer", at(10**12), 0.0)) == []  # one at a time
    assert fetches(sync_core.status_received("honest", at(25), 0.0)) == []
    [fetch] = fetches(sync_core.blocks_applied(first.request_id, at(3), 0.5, received=3))
    while fetch.peer != "claimer":
        height = min(fetch.start + fetch.count - 1, 25)
        effects = sync_core.blocks_applied(
            fetch.request_id, at(height), 1.0, received=height - fetch.start + 1
        )
        assert penalties(effects) == [] and sync_core.best_known_height <= 25
        [fetch] = fetches(effects)
    assert sync_core.status.height == 25  # the claimer was asked only when nobody else could help
    dropped: list[Penalize] = []
    while not dropped:
        effects = sync_core.blocks_applied(fetch.request_id, at(25), 3.0, received=0)
        dropped = [p for p in penalties(effects) if p.disconnect]
        fetch = next(iter(fetches(effects)), fetch)
    assert dropped[0].peer == "claimer" and sync_core.penalties[sync.EMPTY] == 3
    assert sync_core.best_known_height == 25 and "claimer" not in sync_core.peer_heights()


def test_several_unproven_peers_are_asked_at_once_and_the_first_good_answer_wins() -> None:
    sync_core = core(at(0), fetches_max=3)
    asked: list[Fetch] = []
    for name in ("s1", "honest", "s2", "s3"):
        asked += fetches(sync_core.status_received(name, at(8 if name == "honest" else 10**12), 0.0))
    assert [f.peer for f in asked] == ["s1", "honest", "s2"] and {f.start for f in asked} == {1}
    effects = sync_core.blocks_applied(asked[1].request_id, at(8), 1.0, received=8)
    assert penalties(effects) == [] and sync_core.best_known_height == 8
    after = fetches(effects)
    # Answers to the same range, overtaken by it: neither credited nor struck.
    for late in (asked[0], asked[2]):
        effects = sync_core.blocks_applied(late.request_id, at(8), 1.5, received=1)
        assert penalties(effects) == []
        after += fetches(effects)
    assert sync_core.penalties == {} and sync_core.best_known_height == 8
    # Only the sybils claim more: the next range goes to up to three of them at once.
    assert {f.start for f in after} == {9} and len(after) == len({f.peer for f in after}) == 3
    assert "honest" not in {f.peer for f in after}


def test_sybils_fill_the_peer_table_but_a_peer_we_dialled_still_gets_in() -> None:
    sync_core = core(at(0), peers_max=8)
    for i in range(20):
        sync_core.status_received(f"sybil{i}", at(10**12), 0.0)
    assert len(sync_core.peer_heights()) == 8
    assert sync_core.peer_connected("dialled", 0.0, outbound=True) == [
        SendStatus(peer="dialled", status=at(0))
    ]
    sync_core.status_received("dialled", at(30), 0.1)
    assert len(sync_core.peer_heights()) == 8 and sync_core.peer_heights()["dialled"] == 30
    assert sync_core.peer_connected("another-inbound", 0.2) == []


@pytest.mark.parametrize("seed", range(10))
def test_ranking_prefers_a_peer_we_dialled_over_fifty_that_dialled_in(seed: int) -> None:
    sync_core = core(at(0))
    sync_core.rng = random.Random(seed)
    sync_core.peer_connected("dialled", 0.0, outbound=True)
    asked = []
    for i in range(50):
        asked += fetches(sync_core.status_received(f"sybil{i}", at(100), 0.0))
    assert fetches(sync_core.status_received("dialled", at(100), 0.0)) == []  # one at a time
    [stalled] = asked
    [fetch] = fetches(sync_core.request_failed(stalled.request_id, 1.0))
    assert fetch.peer == "dialled"


@given(
    st.one_of(
        st.builds(
            Status,
            genesis=st.just(G),
            height=st.integers(min_value=0, max_value=2**63 - 1),
            tip=st.binary(min_size=32, max_size=32),
        ),
        st.builds(
            GetBlocks,
            start=st.integers(min_value=0, max_value=2**63 - 1),
            count=st.integers(min_value=1, max_value=2**63 - 1),
        ),
        st.builds(Blocks, blocks=st.lists(st.binary(max_size=64), max_size=5).map(tuple)),
    )
)
def test_messages_round_trip(message: sync.Message) -> None:
    assert sync.decode(sync.encode(message)) == message


@pytest.mark.parametrize(
    "doc",
    [
        {"type": "status", "genesis": G, "height": -2, "tip": b""},
        {"type": "status", "genesis": b"short", "height": 1, "tip": G},
        {"type": "status", "genesis": b"", "height": 4, "tip": G},
        {"type": "get_blocks", "start": -1, "count": 1},
        {"type": "get_blocks", "start": 0, "count": 0},
        {"type": "blocks", "blocks": ["text"]},
        {"type": "blocks"},
        {"type": "gossip"},
        {"kind": "status"},
    ],
)
def test_malformed_messages_are_violations(doc: dict[str, object]) -> None:
    with pytest.raises(ProtocolViolation):
        sync.decode(codec.encode(doc))


@given(st.binary(max_size=100))
def test_random_bytes_decode_or_are_violations(raw: bytes) -> None:
    try:
        message = sync.decode(raw)
    except ProtocolViolation:
        return
    assert isinstance(message, Status | GetBlocks | Blocks)


def test_a_proven_peer_is_asked_for_the_next_range_while_a_batch_is_stored() -> None:
    sync_core = core(at(0), pipeline_depth=3)
    [first] = fetches(sync_core.status_received("a", at(100), 0.0))
    assert sync_core.blocks_received(first.request_id, 10, 0.1) == []  # unproven: no pipelining yet
    [second] = fetches(sync_core.blocks_applied(first.request_id, at(10), 0.2, received=10))
    assert (second.start, second.count) == (11, 10)
    # Proven now: on arrival of a batch the next range is asked for at once, one on the wire.
    [third] = fetches(sync_core.blocks_received(second.request_id, 10, 0.3))
    assert (third.peer, third.start, third.count) == ("a", 21, 10)
    [fourth] = fetches(sync_core.blocks_received(third.request_id, 10, 0.4))
    assert fourth.start == 31
    assert sync_core.blocks_received(fourth.request_id, 10, 0.5) == []  # pipeline_depth in flight
    # Stored in order and judged as before; a slot that comes free asks for the next range.
    effects = sync_core.blocks_applied(second.request_id, at(20), 0.6, received=10)
    assert penalties(effects) == []
    [fifth] = fetches(effects)
    assert (fifth.peer, fifth.start) == ("a", 41)
    effects = sync_core.blocks_applied(third.request_id, at(30), 0.8, received=10)
    assert penalties(effects) == [] and fetches(effects) == []  # fifth is on the wire
    assert sync_core.best_known_height == 100


def test_a_pipelined_batch_after_one_that_failed_to_store_costs_its_peer_nothing() -> None:
    sync_core = core(at(0), pipeline_depth=3)
    [first] = fetches(sync_core.status_received("a", at(100), 0.0))
    [second] = fetches(sync_core.blocks_applied(first.request_id, at(10), 0.1, received=10))
    [third] = fetches(sync_core.blocks_received(second.request_id, 10, 0.2))
    sync_core.request_failed(second.request_id, 0.3)  # our disk failed to store it
    # The next batch cannot link (it starts at 21, our log is at 10): stale, not the peer's fault.
    effects = sync_core.blocks_refused(third.request_id, "height 21 follows 10", at(10), 0.4)
    assert penalties(effects) == [] and sync_core.drops == {} and "a" in sync_core.peer_heights()
    # Once its backoff is over, the same peer is asked from where our log stands.
    [retry] = fetches(sync_core.tick(100.0))
    assert (retry.peer, retry.start) == ("a", 11)


def test_a_bad_block_in_a_pipelined_batch_drops_the_peer_and_forgets_what_followed() -> None:
    sync_core = core(at(0), pipeline_depth=3)
    [first] = fetches(sync_core.status_received("a", at(100), 0.0))
    [second] = fetches(sync_core.blocks_applied(first.request_id, at(10), 0.1, received=10))
    [third] = fetches(sync_core.blocks_received(second.request_id, 10, 0.2))
    effects = sync_core.blocks_refused(second.request_id, "block 14 does not verify", at(13), 0.3)
    assert [p.kind for p in penalties(effects)] == [sync.BAD_BLOCK] and penalties(effects)[0].disconnect
    assert sync_core.blocks_applied(third.request_id, at(13), 0.4, received=10) == []  # forgotten
    assert sync_core.drops == {sync.BAD_BLOCK: 1}
