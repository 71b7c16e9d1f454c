"""The sync core by hand: who is asked for what, and what a bad peer costs it."""

from __future__ import annotations

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
    return SyncCore(status=status, config=SyncConfig(batch_blocks_max=10, **config))  # type: ignore[arg-type]


def test_a_new_peer_is_told_our_status_and_a_higher_one_is_asked_in_batches() -> None:
    sync_core = core(at(4))
    assert sync_core.peer_connected("a", 0.0) == [SendStatus(peer="a", status=at(4))]
    [fetch] = fetches(sync_core.status_received("a", at(30), 0.0))
    assert isinstance(fetch, Fetch) and (fetch.peer, fetch.start, fetch.count) == ("a", 5, 10)
    assert fetches(sync_core.status_received("b", at(50), 0.0)) == []  # one request at a time
    effects = sync_core.blocks_applied(fetch.request_id, at(14), 1.0)
    assert SendStatus(peer="a", status=at(14)) in effects  # the new tip is announced
    [again] = fetches(effects)
    assert (again.peer, again.start, again.count) == ("b", 15, 10)  # the highest peer next


def test_an_empty_node_adopts_the_first_network_it_hears_of_then_refuses_others() -> None:
    sync_core = core()
    [fetch] = fetches(sync_core.status_received("a", at(3), 0.0))
    assert isinstance(fetch, Fetch) and fetch.start == 0 and fetch.count == 4
    sync_core.blocks_applied(fetch.request_id, at(3), 1.0)
    [penalty] = sync_core.status_received("evil", at(9, OTHER), 2.0)
    assert isinstance(penalty, Penalize) and penalty.disconnect and "another network" in penalty.reason


def test_a_pinned_genesis_refuses_other_networks_before_any_block() -> None:
    sync_core = SyncCore(status=EMPTY, pinned_genesis=G)
    [penalty] = sync_core.status_received("evil", at(100, OTHER), 0.0)
    assert isinstance(penalty, Penalize)
    assert fetches(sync_core.status_received("late", EMPTY, 0.0)) == []
    [fetch] = fetches(sync_core.status_received("good", at(2), 0.0))
    assert isinstance(fetch, Fetch) and fetch.peer == "good"


def test_a_bad_block_disconnects_its_sender_and_the_next_peer_is_asked() -> None:
    sync_core = core(at(0))
    [first] = fetches(sync_core.status_received("liar", at(99), 0.0))
    sync_core.status_received("honest", at(5), 0.0)
    assert isinstance(first, Fetch) and first.peer == "liar"
    effects = sync_core.blocks_refused(first.request_id, "block 1 does not verify", at(0), 1.0)
    assert Penalize(peer="liar", reason="block 1 does not verify", disconnect=True) in effects
    [retry] = fetches(effects)
    assert retry.peer == "honest" and retry.start == 1
    assert "liar" not in sync_core.peer_heights()


def test_a_stalled_request_times_out_and_the_peer_rests_for_a_while() -> None:
    sync_core = core(at(0), request_timeout_s=5.0, backoff_s=10.0)
    sync_core.peer_connected("slow", 0.0)
    [fetch] = fetches(sync_core.status_received("slow", at(9), 0.0))
    assert sync_core.next_deadline_s() == 5.0
    assert fetches(sync_core.tick(4.9)) == []
    assert fetches(sync_core.tick(5.0)) == []  # resting
    [retry] = fetches(sync_core.tick(15.0))
    assert retry.peer == "slow" and retry.request_id != fetch.request_id
    assert sync_core.blocks_applied(fetch.request_id, at(9), 16.0) == []  # a late reply is ignored


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
