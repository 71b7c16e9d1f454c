"""The sync behaviour, driven event by event with no swarm, socket, thread or clock."""

from __future__ import annotations

import random

from pyrsia.p2p.behaviours.sync import core as sync
from pyrsia.p2p.behaviours.sync.behaviour import (
    FETCH_TIMEOUT_S,
    STATUS_BYTES_MAX,
    STATUS_TIMEOUT_S,
    Fetched,
    Sync,
)
from pyrsia.p2p.behaviours.sync.core import Blocks, GetBlocks, Status, SyncConfig, SyncCore
from pyrsia.p2p.identity import Identity
from pyrsia.p2p.swarm import behaviour as sw
from pyrsia.p2p.wire import varint
from pyrsia.p2p.wire.multiaddr import Multiaddr

PEER = Identity.from_seed(bytes(range(1, 33))).peer_id
OTHER = Identity.from_seed(bytes(range(2, 34))).peer_id
REMOTE = Multiaddr.parse("/ip4/10.0.0.7/tcp/51234")
GENESIS = b"g" * 32
OURS = Status(genesis=GENESIS, height=0, tip=b"t" * 32)
THEIRS = Status(genesis=GENESIS, height=10, tip=b"u" * 32)


def make(config: SyncConfig | None = None) -> tuple[Sync, list[Status]]:
    status = [OURS]
    behaviour = Sync(lambda: status[0])
    core = SyncCore(status=OURS, rng=random.Random(3), pinned_genesis=GENESIS, config=config or SyncConfig())
    behaviour.start(core)
    return behaviour, status


def up(behaviour: Sync, conn: int = 1, peer: str = PEER) -> None:
    event = sw.ConnectionUp(conn=conn, peer=peer, direction="outbound", remote=REMOTE)
    assert behaviour.on_event(event, 0.0) == ()


def framed(message: sync.Message) -> bytes:
    return varint.prefixed(sync.encode(message))


def unframe(data: bytes) -> sync.Message:
    head = varint.decode(data)
    assert head is not None
    length, used = head
    assert len(data) == used + length
    return sync.decode(data[used:])


def opened(behaviour: Sync, effect: sw.Effect, stream: int, now: float = 0.0) -> list[sw.Effect]:
    assert isinstance(effect, sw.OpenStream) and effect.protocols == (sync.PROTOCOL_ID,)
    event = sw.StreamOpened(conn=effect.conn, stream=stream, protocol=sync.PROTOCOL_ID, tag=effect.tag)
    return list(behaviour.on_event(event, now))


def exchange_status(behaviour: Sync, theirs: Status = THEIRS, stream: int = 3) -> list[sw.Effect]:
    """Identify says PEER serves sync; our status goes out, `theirs` comes back."""
    (open_,) = behaviour.peer_identified(PEER, True, 0.0)
    (write,) = opened(behaviour, open_, stream)
    assert isinstance(write, sw.Write) and unframe(write.data) == OURS
    return list(behaviour.on_event(sw.StreamData(conn=1, stream=stream, data=framed(theirs)), 0.1))


def test_a_status_exchange_learns_a_higher_peer_and_fetches_from_it() -> None:
    behaviour, _ = make()
    up(behaviour)
    close, open_ = exchange_status(behaviour)
    assert close == sw.CloseStream(conn=1, stream=3)
    assert behaviour.published.heights == {PEER: 10}
    (write,) = opened(behaviour, open_, 5)
    assert isinstance(write, sw.Write)
    asked = unframe(write.data)
    assert isinstance(asked, GetBlocks) and asked.start == 1 and asked.count == 10


def test_a_fetched_reply_goes_to_the_shell_encoded_and_its_outcome_comes_back() -> None:
    behaviour, status = make()
    up(behaviour)
    _, open_ = exchange_status(behaviour)
    opened(behaviour, open_, 5)
    reply = sync.encode(Blocks(blocks=(b"block",) * 10))
    half = varint.prefixed(reply)
    assert behaviour.on_event(sw.StreamData(conn=1, stream=5, data=half[:7]), 0.2) == []
    close, report = behaviour.on_event(sw.StreamData(conn=1, stream=5, data=half[7:]), 0.2)
    assert close == sw.CloseStream(conn=1, stream=5)
    assert isinstance(report, sw.Report) and report.conn == sw.NO_CONN
    fetched = report.outcome
    assert isinstance(fetched, Fetched) and fetched.peer == PEER and fetched.reply == reply
    # The shell stored them: the core credits the peer and announces the new tip.
    status[0] = THEIRS
    effects = behaviour.applied(fetched.request_id, THEIRS, 0.3, received=10, full=False)
    assert [e for e in effects if isinstance(e, sw.OpenStream)], "the new tip is announced"
    assert behaviour.published.best_known_height == 10


def test_one_status_exchange_per_peer_at_a_time() -> None:
    behaviour, _ = make()
    up(behaviour)
    (open_,) = behaviour.peer_identified(PEER, True, 0.0)
    assert behaviour.committed(0.1) == []
    assert behaviour.published.status_exchanges_skipped == 1
    # Once it ended, the next announcement is sent.
    behaviour.on_event(sw.StreamOpened(conn=1, stream=3, protocol=sync.PROTOCOL_ID, tag=open_.tag), 0.1)
    behaviour.on_event(sw.StreamData(conn=1, stream=3, data=framed(OURS)), 0.2)
    (again,) = behaviour.committed(0.3)
    assert isinstance(again, sw.OpenStream)


def test_a_silent_peer_times_out_and_its_fetch_fails() -> None:
    behaviour, _ = make(SyncConfig(backoff_s=100.0))
    up(behaviour)
    _, open_ = exchange_status(behaviour)
    opened(behaviour, open_, 5, now=0.1)
    assert [e for e in behaviour.tick(0.1 + FETCH_TIMEOUT_S - 0.01) if isinstance(e, sw.ResetStream)] == []
    effects = list(behaviour.tick(0.1 + FETCH_TIMEOUT_S))
    assert sw.ResetStream(conn=1, stream=5) in effects
    # Backed off: nothing is asked of it again at once.
    assert [e for e in effects if isinstance(e, sw.OpenStream)] == []


def test_an_unanswered_status_exchange_ends_on_tick() -> None:
    behaviour, _ = make()
    up(behaviour)
    (open_,) = behaviour.peer_identified(PEER, True, 0.0)
    opened(behaviour, open_, 3)
    assert sw.ResetStream(conn=1, stream=3) in behaviour.tick(STATUS_TIMEOUT_S)
    # A new exchange may start: the pending one is forgotten.
    (again,) = behaviour.peer_identified(PEER, True, STATUS_TIMEOUT_S + 1)
    assert isinstance(again, sw.OpenStream)


def test_an_oversized_status_reply_resets_the_stream() -> None:
    behaviour, _ = make()
    up(behaviour)
    (open_,) = behaviour.peer_identified(PEER, True, 0.0)
    opened(behaviour, open_, 3)
    huge = varint.encode(STATUS_BYTES_MAX + 1)
    assert behaviour.on_event(sw.StreamData(conn=1, stream=3, data=huge), 0.1) == [
        sw.ResetStream(conn=1, stream=3)
    ]
    assert behaviour.published.heights == {}


def test_a_peer_that_sends_a_bad_block_loses_every_connection() -> None:
    behaviour, _ = make()
    up(behaviour)
    up(behaviour, conn=2)
    _, open_ = exchange_status(behaviour)
    opened(behaviour, open_, 5)
    data = framed(Blocks(blocks=(b"x",)))
    (_, report) = behaviour.on_event(sw.StreamData(conn=open_.conn, stream=5, data=data), 0.2)
    assert isinstance(report, sw.Report) and isinstance(report.outcome, Fetched)
    effects = behaviour.refused(report.outcome.request_id, "does not verify", OURS, 0.3)
    closes = sorted(e.conn for e in effects if isinstance(e, sw.CloseConnection))
    assert closes == [1, 2]
    assert behaviour.penalties[-1] == (PEER, "does not verify")
    assert behaviour.is_banned(PEER, 0.4)
    assert behaviour.status_received(PEER, THEIRS, 0.5) == []  # ignored while banned


def test_a_peer_leaves_the_core_with_its_last_connection() -> None:
    behaviour, _ = make()
    up(behaviour)
    up(behaviour, conn=2)
    exchange_status(behaviour)
    behaviour.on_event(sw.ConnectionDown(conn=1, peer=PEER, reason="gone"), 1.0)
    assert behaviour.published.heights == {PEER: 10}
    behaviour.on_event(sw.ConnectionDown(conn=2, peer=PEER, reason="gone"), 1.0)
    assert behaviour.published.heights == {}


def test_a_status_the_shell_read_reaches_the_core() -> None:
    behaviour, _ = make()
    up(behaviour, conn=4, peer=OTHER)
    effects = behaviour.status_received(OTHER, THEIRS, 0.0)
    # It found us first: it hears our status in turn, and is asked for blocks.
    assert len([e for e in effects if isinstance(e, sw.OpenStream)]) == 2
    assert all(e.conn == 4 for e in effects if isinstance(e, sw.OpenStream))


def test_inbound_streams_are_not_the_behaviours_and_stop_resets_its_own() -> None:
    behaviour, _ = make()
    up(behaviour)
    assert behaviour.on_event(sw.InboundStream(conn=1, stream=2, protocol=sync.PROTOCOL_ID), 0.0) == [
        sw.ResetStream(conn=1, stream=2)
    ]
    (open_,) = behaviour.peer_identified(PEER, True, 0.0)
    opened(behaviour, open_, 3)
    assert behaviour.stop() == [sw.ResetStream(conn=1, stream=3)]
    assert behaviour.peer_identified(PEER, True, 1.0) == [] and behaviour.tick(1.0) == ()
