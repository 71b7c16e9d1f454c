"""The Kademlia behaviour, driven event by event with no swarm, socket, thread or clock."""

from __future__ import annotations

import random

from pyrsia.p2p.behaviours.kad import messages as dm
from pyrsia.p2p.behaviours.kad.behaviour import (
    MALFORMED,
    PROTOCOL_ID,
    REQUESTS_OUT,
    STREAMS,
    STREAMS_PER_PEER,
    Finished,
    Kad,
    KadLimits,
    SnapshotDue,
)
from pyrsia.p2p.behaviours.kad.core import KadConfig, Kademlia, LookupDone, LookupEnd, ProvideDone
from pyrsia.p2p.behaviours.kad.messages import Message, MessageType, Peer
from pyrsia.p2p.identity import Identity
from pyrsia.p2p.swarm import behaviour as sw
from pyrsia.p2p.wire import varint
from pyrsia.p2p.wire.multiaddr import Multiaddr

ME = Identity.from_seed(bytes(range(32)))
PEER = Identity.from_seed(bytes(range(1, 33))).peer_id
OTHER = Identity.from_seed(bytes(range(2, 34))).peer_id
REMOTE = Multiaddr.parse("/ip4/10.0.0.7/tcp/51234")
PEER_ADDR = Multiaddr.parse("/ip4/10.0.0.7/tcp/44000")
TIMEOUT_S = 5.0


class Directory:
    """What the node tells the behaviour of peers: identify's kad addrs, the address book."""

    def __init__(self) -> None:
        self.kad: dict[str, tuple[bytes, ...]] = {}
        self.book: dict[str, tuple[Multiaddr, ...]] = {}

    def kad_addrs(self, peer: str) -> tuple[bytes, ...]:
        return self.kad.get(peer, ())

    def dial_addrs(self, peer: str, addrs: tuple[bytes, ...]) -> tuple[Multiaddr, ...]:
        known = [*self.book.get(peer, ()), *(Multiaddr.from_bytes(a) for a in addrs)]
        self.book[peer] = tuple(dict.fromkeys(known))
        return self.book[peer]


def make(config: KadConfig | None = None, limits: KadLimits | None = None) -> tuple[Kad, Directory]:
    directory = Directory()
    kad = Kad(kad_addrs=directory.kad_addrs, dial_addrs=directory.dial_addrs, limits=limits)
    core = Kademlia(
        peer_id=ME.peer_id,
        addrs=(),
        rng=random.Random(7),
        now_s=0.0,
        config=config or KadConfig(request_timeout_s=TIMEOUT_S, lookup_timeout_s=60.0),
    )
    kad.start(core, 0.0)
    return kad, directory


def up(kad: Kad, conn: int = 1, peer: str = PEER) -> list[sw.Effect]:
    event = sw.ConnectionUp(conn=conn, peer=peer, direction="inbound", remote=REMOTE)
    return list(kad.on_event(event, 0.0))


def frame(message: Message) -> bytes:
    return dm.encode_framed(message)


def unframe(data: bytes) -> Message:
    head = varint.decode(data)
    assert head is not None
    length, used = head
    assert len(data) == used + length
    return dm.decode(data[used:])


def request(
    kad: Kad, message: Message, *, conn: int = 1, stream: int = 2, now: float = 0.0
) -> list[sw.Effect]:
    return list(kad.on_event(sw.StreamData(conn=conn, stream=stream, data=frame(message)), now))


def reports(effects: list[sw.Effect]) -> list[object]:
    return [e.outcome for e in effects if isinstance(e, sw.Report)]


# -- inbound requests ---------------------------------------------------------------------


def test_a_stream_carries_requests_in_sequence_each_answered() -> None:
    kad, _ = make()
    up(kad)
    assert kad.on_event(sw.InboundStream(conn=1, stream=2, protocol=PROTOCOL_ID), 0.0) == []
    (write,) = request(kad, Message(type=MessageType.PING))
    assert isinstance(write, sw.Write) and (write.conn, write.stream) == (1, 2)
    assert unframe(write.data).type is MessageType.PING
    # The next request may arrive in pieces; it is answered once whole.
    data = frame(Message(type=MessageType.FIND_NODE, key=dm.peer_id_to_bytes(OTHER)))
    assert kad.on_event(sw.StreamData(conn=1, stream=2, data=data[:3]), 0.0) == []
    (write,) = kad.on_event(sw.StreamData(conn=1, stream=2, data=data[3:]), 0.0)
    assert isinstance(write, sw.Write) and unframe(write.data).type is MessageType.FIND_NODE
    assert kad.on_event(sw.StreamEnded(conn=1, stream=2), 0.0) == [sw.CloseStream(conn=1, stream=2)]
    assert kad.counts["requests_in"] == 2 and kad.published.requests_in == 0  # counts are live


def test_a_client_is_answered_but_kept_out_of_the_table() -> None:
    kad, directory = make()
    up(kad)
    kad.on_event(sw.InboundStream(conn=1, stream=2, protocol=PROTOCOL_ID), 0.0)
    request(kad, Message(type=MessageType.PING))
    assert kad.core is not None and len(kad.core.table) == 0
    directory.kad[PEER] = (PEER_ADDR.to_bytes(),)  # identify lists kad: a server
    request(kad, Message(type=MessageType.PING))
    assert [p.peer_id for p in kad.core.peers()] == [PEER]
    assert kad.published.table_peers == 1


def test_garbage_and_oversized_frames_reset_the_stream() -> None:
    kad, _ = make()
    up(kad)
    kad.on_event(sw.InboundStream(conn=1, stream=2, protocol=PROTOCOL_ID), 0.0)
    broken = kad.on_event(sw.StreamData(conn=1, stream=2, data=b"\x05\xff\xff\xff\xff\xff"), 0.0)
    assert broken == [sw.ResetStream(conn=1, stream=2)]
    kad.on_event(sw.InboundStream(conn=1, stream=4, protocol=PROTOCOL_ID), 0.0)
    huge = kad.on_event(sw.StreamData(conn=1, stream=4, data=b"\xff\xff\xff\x7f"), 0.0)
    assert huge == [sw.ResetStream(conn=1, stream=4)]
    assert kad.refusals[MALFORMED] == 2
    # Forgotten: later data on those streams is ignored.
    assert kad.on_event(sw.StreamData(conn=1, stream=2, data=b"\x00"), 0.0) == []


def test_unsupported_and_rate_limited_requests_are_refused_with_a_reset() -> None:
    kad, _ = make(KadConfig(inbound_burst=2.0, inbound_requests_per_s=0.001))
    up(kad)
    for stream in (2, 4):
        kad.on_event(sw.InboundStream(conn=1, stream=stream, protocol=PROTOCOL_ID), 0.0)
    key = dm.provider_key("sha256:" + "ab" * 32)
    assert request(kad, Message(type=MessageType.PUT_VALUE, key=key)) == [sw.ResetStream(conn=1, stream=2)]
    (write,) = request(kad, Message(type=MessageType.PING), stream=4)
    assert isinstance(write, sw.Write)
    assert request(kad, Message(type=MessageType.PING), stream=4) == [sw.ResetStream(conn=1, stream=4)]
    assert kad.counts["requests_refused"] == 2 and kad.counts["requests_in"] == 3


def test_an_add_provider_is_stored_and_its_stream_closed_unanswered() -> None:
    kad, _ = make()
    up(kad)
    kad.on_event(sw.InboundStream(conn=1, stream=2, protocol=PROTOCOL_ID), 0.0)
    key = dm.provider_key("sha256:" + "cd" * 32)
    me = Peer(id=dm.peer_id_to_bytes(PEER), addrs=(PEER_ADDR.to_bytes(),))
    add = Message(type=MessageType.ADD_PROVIDER, key=key, provider_peers=(me,))
    assert request(kad, add) == [sw.CloseStream(conn=1, stream=2)]
    assert kad.published.provider_records == 1


def test_streams_past_a_peers_share_or_the_total_are_refused_and_counted() -> None:
    kad, _ = make(limits=KadLimits(inbound_streams_per_peer_max=2, inbound_streams_max=3))
    up(kad)
    up(kad, conn=2, peer=OTHER)
    opened = [kad.on_event(sw.InboundStream(conn=1, stream=s, protocol=PROTOCOL_ID), 0.0) for s in (2, 4, 6)]
    assert opened == [[], [], [sw.ResetStream(conn=1, stream=6)]]
    assert kad.on_event(sw.InboundStream(conn=2, stream=2, protocol=PROTOCOL_ID), 0.0) == []
    assert kad.on_event(sw.InboundStream(conn=2, stream=4, protocol=PROTOCOL_ID), 0.0) == [
        sw.ResetStream(conn=2, stream=4)
    ]
    assert kad.refusals == {STREAMS_PER_PEER: 1, STREAMS: 1}
    assert kad.counts["requests_dropped"] == 2
    # A stream that ends makes room again.
    kad.on_event(sw.StreamEnded(conn=1, stream=2), 0.0)
    assert kad.on_event(sw.InboundStream(conn=1, stream=8, protocol=PROTOCOL_ID), 0.0) == []


def test_idle_streams_are_closed_and_trickled_ones_reset_on_tick() -> None:
    kad, _ = make(limits=KadLimits(stream_idle_timeout_s=10.0))
    up(kad)
    kad.on_event(sw.InboundStream(conn=1, stream=2, protocol=PROTOCOL_ID), 0.0)
    kad.on_event(sw.InboundStream(conn=1, stream=4, protocol=PROTOCOL_ID), 0.0)
    kad.on_event(sw.StreamData(conn=1, stream=4, data=frame(Message(type=MessageType.PING))[:2]), 5.0)
    assert [e for e in kad.tick(9.0) if isinstance(e, sw.CloseStream | sw.ResetStream)] == []
    ended = [e for e in kad.tick(10.0) if isinstance(e, sw.CloseStream | sw.ResetStream)]
    assert ended == [sw.CloseStream(conn=1, stream=2)]
    ended = [e for e in kad.tick(15.0) if isinstance(e, sw.CloseStream | sw.ResetStream)]
    assert ended == [sw.ResetStream(conn=1, stream=4)]


def test_a_stopped_behaviour_refuses_inbound_streams() -> None:
    kad, _ = make()
    up(kad)
    kad.on_event(sw.InboundStream(conn=1, stream=2, protocol=PROTOCOL_ID), 0.0)
    effects, tags = kad.stop(1.0)
    assert effects == [sw.ResetStream(conn=1, stream=2)] and tags == []
    assert kad.on_event(sw.InboundStream(conn=1, stream=4, protocol=PROTOCOL_ID), 1.0) == [
        sw.ResetStream(conn=1, stream=4)
    ]
    assert kad.tick(2.0) == ()


# -- outbound requests --------------------------------------------------------------------


def _known_peer(kad: Kad, directory: Directory, *, connected: bool) -> None:
    if connected:
        up(kad)
    directory.kad[PEER] = (PEER_ADDR.to_bytes(),)
    assert kad.add_peer(PEER, (PEER_ADDR.to_bytes(),), 0.0) == []


def test_a_lookup_opens_a_stream_writes_the_request_and_reads_the_reply() -> None:
    kad, directory = make()
    _known_peer(kad, directory, connected=True)
    key = dm.peer_id_to_bytes(OTHER)
    (open_,) = kad.find_node(key, "mine", 0.0)
    assert open_ == sw.OpenStream(conn=1, protocols=(PROTOCOL_ID,), tag=open_.tag)
    (write,) = kad.on_event(sw.StreamOpened(conn=1, stream=3, protocol=PROTOCOL_ID, tag=open_.tag), 0.0)
    assert isinstance(write, sw.Write) and (write.conn, write.stream) == (1, 3)
    asked = unframe(write.data)
    assert asked.type is MessageType.FIND_NODE and asked.key == key
    reply = frame(Message(type=MessageType.FIND_NODE, key=key))
    effects = list(kad.on_event(sw.StreamData(conn=1, stream=3, data=reply), 0.1))
    assert effects[0] == sw.CloseStream(conn=1, stream=3)
    (finished,) = reports(effects)
    assert isinstance(finished, Finished) and finished.tag == "mine"
    assert isinstance(finished.done, LookupDone) and finished.done.end is LookupEnd.COMPLETE
    assert [p.peer_id for p in finished.done.closest] == [PEER]
    assert kad.counts["requests_out"] == 1 and kad.counts["lookups_done"] == 1


def test_an_unconnected_peer_is_dialled_first_and_the_stream_opened_once_it_is_up() -> None:
    kad, directory = make()
    _known_peer(kad, directory, connected=False)
    (dial,) = kad.find_node(dm.peer_id_to_bytes(OTHER), "t", 0.0)
    assert isinstance(dial, sw.Dial) and dial.peer == PEER and dial.addrs == (PEER_ADDR,)
    assert directory.book[PEER] == (PEER_ADDR,)  # the address book learned where it listens
    (open_,) = up(kad, conn=5)
    assert isinstance(open_, sw.OpenStream) and open_.conn == 5


def test_a_failed_dial_fails_the_request_and_ends_the_lookup() -> None:
    kad, directory = make()
    _known_peer(kad, directory, connected=False)
    (dial,) = kad.find_node(dm.peer_id_to_bytes(OTHER), "t", 0.0)
    assert isinstance(dial, sw.Dial)
    effects = list(kad.on_event(sw.DialFailed(peer=PEER, tag=dial.tag, reason="refused"), 0.1))
    assert kad.counts["requests_failed"] >= 1
    # The core asks again (request_attempts_max) or gives up; either way, no stream hangs.
    for _ in range(3):
        dials = [e for e in effects if isinstance(e, sw.Dial)]
        if not dials:
            break
        effects = list(kad.on_event(sw.DialFailed(peer=PEER, tag=dials[0].tag, reason="refused"), 0.2))
    (finished,) = reports(effects)
    assert isinstance(finished, Finished) and isinstance(finished.done, LookupDone)
    assert finished.done.end is LookupEnd.EXHAUSTED


def test_a_reply_that_does_not_come_in_time_resets_the_stream() -> None:
    kad, directory = make()
    _known_peer(kad, directory, connected=True)
    (open_,) = kad.find_node(dm.peer_id_to_bytes(OTHER), "t", 0.0)
    kad.on_event(sw.StreamOpened(conn=1, stream=3, protocol=PROTOCOL_ID, tag=open_.tag), 0.0)
    assert [e for e in kad.tick(TIMEOUT_S - 0.1) if isinstance(e, sw.ResetStream)] == []
    effects = list(kad.tick(TIMEOUT_S))
    assert sw.ResetStream(conn=1, stream=3) in effects
    assert kad.counts["requests_failed"] == 1
    # A late reply on the reset stream changes nothing.
    late = frame(Message(type=MessageType.FIND_NODE))
    assert kad.on_event(sw.StreamData(conn=1, stream=3, data=late), TIMEOUT_S + 1) == []


def test_a_bad_reply_or_a_lost_connection_fails_the_request() -> None:
    kad, directory = make()
    _known_peer(kad, directory, connected=True)
    (open_,) = kad.find_node(dm.peer_id_to_bytes(OTHER), "t", 0.0)
    kad.on_event(sw.StreamOpened(conn=1, stream=3, protocol=PROTOCOL_ID, tag=open_.tag), 0.0)
    effects = list(kad.on_event(sw.StreamData(conn=1, stream=3, data=b"\x05\xff\xff\xff\xff\xff"), 0.1))
    assert effects[0] == sw.ResetStream(conn=1, stream=3)
    assert kad.counts["requests_failed"] == 1
    retry = [e for e in effects if isinstance(e, sw.OpenStream)]
    assert retry, "the core sends the request again"
    kad.on_event(sw.StreamOpened(conn=1, stream=5, protocol=PROTOCOL_ID, tag=retry[0].tag), 0.1)
    effects = list(kad.on_event(sw.ConnectionDown(conn=1, peer=PEER, reason="gone"), 0.2))
    assert kad.counts["requests_failed"] == 2
    (finished,) = reports(effects)
    assert isinstance(finished, Finished) and isinstance(finished.done, LookupDone)


def test_a_provide_sends_add_provider_without_waiting_for_a_reply() -> None:
    kad, directory = make()
    _known_peer(kad, directory, connected=True)
    key = dm.provider_key("sha256:" + "ef" * 32)
    (open_,) = kad.provide(key, "p", 0.0)
    kad.on_event(sw.StreamOpened(conn=1, stream=3, protocol=PROTOCOL_ID, tag=open_.tag), 0.0)
    effects = list(
        kad.on_event(
            sw.StreamData(conn=1, stream=3, data=frame(Message(type=MessageType.FIND_NODE, key=key))), 0.1
        )
    )
    (add_open,) = [e for e in effects if isinstance(e, sw.OpenStream)]
    (finished,) = reports(effects)
    assert isinstance(finished, Finished) and isinstance(finished.done, ProvideDone)
    assert finished.done.stored_at == (PEER,)
    write, close = kad.on_event(
        sw.StreamOpened(conn=1, stream=5, protocol=PROTOCOL_ID, tag=add_open.tag), 0.1
    )
    assert isinstance(write, sw.Write) and unframe(write.data).type is MessageType.ADD_PROVIDER
    assert close == sw.CloseStream(conn=1, stream=5)
    assert kad.published.provided_keys == 1


def test_outbound_requests_past_the_bound_fail_at_once() -> None:
    kad, directory = make(limits=KadLimits(outbound_streams_max=1))
    _known_peer(kad, directory, connected=True)
    up(kad, conn=2, peer=OTHER)
    directory.kad[OTHER] = (PEER_ADDR.to_bytes(),)
    kad.add_peer(OTHER, (Multiaddr.parse("/ip4/10.0.0.8/tcp/44000").to_bytes(),), 0.0)
    effects = kad.find_node(dm.peer_id_to_bytes(ME.peer_id)[::-1], "t", 0.0)
    assert len([e for e in effects if isinstance(e, sw.OpenStream)]) == 1
    assert kad.refusals[REQUESTS_OUT] >= 1


def test_the_table_is_handed_out_for_saving_every_interval() -> None:
    kad, directory = make(limits=KadLimits(snapshot_interval_s=300.0))
    _known_peer(kad, directory, connected=True)
    assert reports(list(kad.tick(299.0))) == []
    (due,) = [o for o in reports(list(kad.tick(300.0))) if isinstance(o, SnapshotDue)]
    restored = Kademlia(peer_id=ME.peer_id, addrs=(), rng=random.Random(1), now_s=0.0)
    assert restored.restore(due.snapshot, 0.0) == 1
    assert [o for o in reports(list(kad.tick(301.0))) if isinstance(o, SnapshotDue)] == []
