"""DCUtR hole punching: two behaviours through an in-test wire with a fake clock, no sockets.

`Wire` is a discrete-event network: every effect one side returns becomes an event at
the other side one `latency_s` later (opening a stream is a round trip), reports are
collected with their time, and each side's `tick` runs every `TICK_S`. Its `Nat` is
the hole-punching host in miniature: it takes both sides' `PunchDial`s and, when both
SYNs left before the other's arrived (a TCP simultaneous open), brings up a direct
connection on both sides; when the NATs are closed, each dial fails (`dial_failed`).
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pytest

from pyrsia.errors import ProtocolViolation
from pyrsia.p2p.behaviours import dcutr
from pyrsia.p2p.identity import Identity
from pyrsia.p2p.swarm import behaviour as sw
from pyrsia.p2p.wire import protobuf, varint
from pyrsia.p2p.wire.multiaddr import Multiaddr

A_ID = Identity.from_seed(bytes(range(32))).peer_id  # dialled B through the relay
B_ID = Identity.from_seed(bytes(range(1, 33))).peer_id  # behind NAT, accepted the circuit
RELAY_ID = Identity.from_seed(bytes(range(2, 34))).peer_id
OTHER_ID = Identity.from_seed(bytes(range(3, 35))).peer_id

PUBLIC_RELAY = Multiaddr.parse(f"/ip4/1.1.1.1/tcp/4001/p2p/{RELAY_ID}/p2p-circuit")
PRIVATE_RELAY = Multiaddr.parse(f"/ip4/10.0.0.1/tcp/4001/p2p/{RELAY_ID}/p2p-circuit")
LOOPBACK_RELAY = Multiaddr.parse(f"/ip4/127.0.0.1/tcp/4001/p2p/{RELAY_ID}/p2p-circuit")
A_PUBLIC = Multiaddr.parse("/ip4/5.6.7.8/tcp/44000")
B_PUBLIC = Multiaddr.parse("/ip4/9.8.7.6/tcp/44001")
A_ADDRS = (
    A_PUBLIC,
    Multiaddr.parse("/ip4/192.168.1.5/tcp/44000"),
    Multiaddr.parse("/ip4/127.0.0.1/tcp/44000"),
)
B_ADDRS = (B_PUBLIC, Multiaddr.parse("/ip4/10.9.9.9/tcp/44001"))
RELAYED = 1
DIRECT = 2
LATENCY_S = 0.125  # one way; every time below is a sum of binary fractions, so exact
TICK_S = 0.25


def _message(kind: int, *addrs: Multiaddr | bytes) -> bytes:
    raw = tuple(a if isinstance(a, bytes) else a.to_bytes() for a in addrs)
    return dcutr.encode_message(dcutr.HolePunch(kind=kind, obs_addrs=raw))


def _reports(effects: Sequence[sw.Effect], kind: type) -> list[object]:
    return [e.outcome for e in effects if isinstance(e, sw.Report) and isinstance(e.outcome, kind)]


# -- the codec ---------------------------------------------------------------------------


def test_connect_and_sync_encode_as_the_spec_schema_says() -> None:
    # HolePunch{type=CONNECT(100), ObsAddrs=[/ip4/1.2.3.4/tcp/4001]}, worked by hand:
    # field 1 varint: 08 64; field 2 bytes: 12 08 | 04 01020304 06 0fa1; all behind length 0c.
    connect = _message(dcutr.CONNECT, Multiaddr.parse("/ip4/1.2.3.4/tcp/4001"))
    assert connect == bytes.fromhex("0c086412080401020304060fa1")
    # SYNC = 300 = 0b10_0101100: varint ac 02.
    assert _message(dcutr.SYNC) == bytes.fromhex("0308ac02")
    decoded = dcutr.HolePunch.decode(connect[1:])
    assert decoded.kind == dcutr.CONNECT and decoded.obs_addrs == (bytes.fromhex("0401020304060fa1"),)


@pytest.mark.parametrize(
    "body",
    [
        b"",  # no type: it is required
        protobuf.encode([(1, 7)]),  # a type the spec does not have
        protobuf.encode([(1, b"\x64")]),  # type as bytes
        protobuf.encode([(1, dcutr.CONNECT), (2, 5)]),  # ObsAddrs as a varint
        b"\x08",  # ends inside a varint
    ],
)
def test_malformed_messages_do_not_decode(body: bytes) -> None:
    with pytest.raises(ProtocolViolation):
        dcutr.HolePunch.decode(body)


# -- which addresses get dialled --------------------------------------------------------


def test_through_a_public_relay_only_public_tcp_addresses_of_that_peer_are_dialled() -> None:
    refusals: Counter[str] = Counter()
    offered: list[bytes] = [
        A_PUBLIC.to_bytes(),
        Multiaddr.parse(f"/ip4/5.6.7.9/tcp/44000/p2p/{A_ID}").to_bytes(),  # its own id: kept, id stripped
        Multiaddr.parse("/ip4/192.168.1.5/tcp/44000").to_bytes(),  # private
        Multiaddr.parse("/ip4/127.0.0.1/tcp/44000").to_bytes(),  # loopback
        Multiaddr.parse("/ip6/fe80::1/tcp/44000").to_bytes(),  # link-local
        Multiaddr.parse("/ip4/0.0.0.0/tcp/44000").to_bytes(),  # unspecified
        Multiaddr.parse("/dns4/intranet.example/tcp/44000").to_bytes(),  # a name
        Multiaddr.parse("/ip4/5.6.7.8/udp/44000/quic-v1").to_bytes(),  # not TCP
        Multiaddr.parse("/ip4/5.6.7.8/tcp/0").to_bytes(),  # port 0
        Multiaddr.parse(f"/ip4/5.6.7.10/tcp/44000/p2p/{OTHER_ID}").to_bytes(),  # another peer
        PUBLIC_RELAY.to_bytes(),  # relayed
        B_PUBLIC.to_bytes(),  # ours
        b"\xff\xff\xff\x01",  # not a multiaddr
        A_PUBLIC.to_bytes(),  # a duplicate
    ]
    dialled = dcutr.dialable(offered, peer=A_ID, reach="public", ours=(B_PUBLIC,), refusals=refusals)
    assert dialled == (A_PUBLIC, Multiaddr.parse("/ip4/5.6.7.9/tcp/44000"))
    assert refusals == Counter(
        dcutr_addr_out_of_reach=4,
        dcutr_addr_name=1,
        dcutr_addr_not_tcp=3,
        dcutr_addr_other_peer=1,
        dcutr_addr_ours=1,
        dcutr_addr_unparsed=1,
    )


def test_a_private_relay_allows_private_addresses_and_a_loopback_relay_loopback_too() -> None:
    offered = [a.to_bytes() for a in A_ADDRS]
    assert dcutr.dialable(offered, peer=A_ID, reach="private") == A_ADDRS[:2]
    assert dcutr.dialable(offered, peer=A_ID, reach="loopback") == A_ADDRS
    assert dcutr.dialable(offered, peer=A_ID, reach="link-local") == ()


def test_at_most_dial_addrs_max_addresses_are_dialled() -> None:
    refusals: Counter[str] = Counter()
    offered = [Multiaddr.parse(f"/ip4/5.6.7.{i}/tcp/4001").to_bytes() for i in range(1, 21)]
    dialled = dcutr.dialable(offered, peer=A_ID, reach="public", refusals=refusals)
    assert len(dialled) == dcutr.DIAL_ADDRS_MAX
    assert refusals["dcutr_addr_over_max"] == 20 - dcutr.DIAL_ADDRS_MAX


# -- the in-test wire --------------------------------------------------------------------


@dataclass
class Side:
    name: str
    peer: str  # who this side is
    behaviour: dcutr.Dcutr
    reports: list[tuple[float, object]] = field(default_factory=list)
    opens: list[float] = field(default_factory=list)
    dials: list[dcutr.PunchDial] = field(default_factory=list)


class Wire:
    def __init__(
        self,
        *,
        relay: Multiaddr = PUBLIC_RELAY,
        nat_open: Callable[[int], bool] = lambda attempt: True,
        a_addrs: Sequence[Multiaddr] = A_ADDRS,
        b_addrs: Sequence[Multiaddr] = B_ADDRS,
        a_speaks_dcutr: bool = True,
    ) -> None:
        self.a = Side("A", A_ID, dcutr.Dcutr(lambda: a_addrs))
        self.b = Side("B", B_ID, dcutr.Dcutr(lambda: b_addrs))
        self.relay = relay
        self.nat_open = nat_open
        self.a_speaks = a_speaks_dcutr
        self.now = 0.0
        self._queue: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = 0
        self._stream = 0
        self._dials: dict[int, dict[str, tuple[Side, dcutr.PunchDial]]] = {}
        self._direct = False
        self._schedule(TICK_S, self._tick)

    def other(self, side: Side) -> Side:
        return self.b if side is self.a else self.a

    def connect(self) -> None:
        """A dials B through the relay: A sees it outbound, B inbound."""
        self.deliver(
            self.a, sw.ConnectionUp(conn=RELAYED, peer=B_ID, direction="outbound", remote=self.relay)
        )
        self.deliver(self.b, sw.ConnectionUp(conn=RELAYED, peer=A_ID, direction="inbound", remote=self.relay))

    def deliver(self, side: Side, event: sw.Event) -> None:
        self.apply(side, side.behaviour.on_event(event, self.now))

    def run_until(self, end_s: float) -> None:
        while self._queue and self._queue[0][0] <= end_s:
            at, _, action = heapq.heappop(self._queue)
            self.now = at
            action()
        self.now = end_s

    def _schedule(self, at: float, action: Callable[[], None]) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (at, self._seq, action))

    def _later(self, side: Side, event: sw.Event, delay_s: float = LATENCY_S) -> None:
        self._schedule(self.now + delay_s, lambda: self.deliver(side, event))

    def _tick(self) -> None:
        for side in (self.a, self.b):
            self.apply(side, side.behaviour.tick(self.now))
        self._schedule(self.now + TICK_S, self._tick)

    def apply(self, side: Side, effects: Sequence[sw.Effect]) -> None:
        peer = self.other(side)
        for effect in effects:
            match effect:
                case sw.OpenStream(conn=conn, protocols=protocols, tag=tag):
                    side.opens.append(self.now)
                    self._stream += 1
                    stream = self._stream
                    if peer is self.a and not self.a_speaks:
                        gone = sw.StreamGone(conn=conn, stream=None, tag=tag, reason="protocol not supported")
                        self._later(side, gone, 2 * LATENCY_S)
                        continue
                    self._later(peer, sw.InboundStream(conn=conn, stream=stream, protocol=protocols[0]))
                    opened = sw.StreamOpened(conn=conn, stream=stream, protocol=protocols[0], tag=tag)
                    self._later(side, opened, 2 * LATENCY_S)
                case sw.Write(conn=conn, stream=stream, data=data):
                    self._later(peer, sw.StreamData(conn=conn, stream=stream, data=data))
                case sw.CloseStream(conn=conn, stream=stream):
                    self._later(peer, sw.StreamEnded(conn=conn, stream=stream))
                case sw.ResetStream(conn=conn, stream=stream):
                    self._later(peer, sw.StreamGone(conn=conn, stream=stream, tag=None, reason="reset"))
                case sw.Report(outcome=outcome):
                    side.reports.append((self.now, outcome))
                    if isinstance(outcome, dcutr.PunchDial):
                        side.dials.append(outcome)
                        self._schedule(outcome.at_s, lambda d=outcome, s=side: self._dial(s, d))
                case _:
                    raise AssertionError(f"unexpected effect {effect}")

    def _dial(self, side: Side, dial: dcutr.PunchDial) -> None:
        """Both SYNs must leave before the other's arrives: then the NATs let them cross."""
        dials = self._dials.setdefault(dial.attempt, {})
        dials[side.name] = (side, dial)
        if len(dials) == 1:
            self._schedule(self.now + 4 * LATENCY_S, lambda: self._give_up(dial.attempt))
            return
        (_, first), (_, second) = dials.values()
        if abs(first.at_s - second.at_s) < LATENCY_S and self.nat_open(dial.attempt):
            self._direct = True
            self._schedule(self.now + LATENCY_S, self._direct_up)

    def _direct_up(self) -> None:
        self.deliver(self.a, sw.ConnectionUp(conn=DIRECT, peer=B_ID, direction="outbound", remote=B_PUBLIC))
        self.deliver(self.b, sw.ConnectionUp(conn=DIRECT, peer=A_ID, direction="inbound", remote=A_PUBLIC))

    def _give_up(self, attempt: int) -> None:
        if self._direct:
            return
        for side, dial in self._dials[attempt].values():
            self.apply(side, side.behaviour.dial_failed(dial.tag, "connection refused", self.now))


def _of(side: Side, kind: type) -> list[tuple[float, object]]:
    return [(t, o) for t, o in side.reports if isinstance(o, kind)]


# -- the exchange, its timing and its outcome --------------------------------------------


def test_b_syncs_and_both_dial_half_a_round_trip_later_and_the_direct_connection_wins() -> None:
    wire = Wire()
    wire.connect()
    wire.run_until(5.0)
    # B opened at 0; the stream was up at 2L, CONNECT went then and A's came back at 4L:
    # RTT = 2L. B wrote SYNC at 4L and dials at 4L + RTT/2 = 5L, the moment SYNC reaches A,
    # which dials at once.
    assert wire.b.opens == [0.0]
    (b_dial,) = wire.b.dials
    (a_dial,) = wire.a.dials
    assert b_dial.at_s == 5 * LATENCY_S and a_dial.at_s == 5 * LATENCY_S
    assert (b_dial.client, a_dial.client) == (False, True)  # spec: A is the client
    assert b_dial.addrs == (A_PUBLIC,)  # A offered only its public address through a public relay
    assert a_dial.addrs == (B_PUBLIC,)
    assert b_dial.relayed_conn == RELAYED and b_dial.attempt == 1
    (b_done,) = _of(wire.b, dcutr.DirectConnection)
    (a_done,) = _of(wire.a, dcutr.DirectConnection)
    assert b_done == (
        6 * LATENCY_S,
        dcutr.DirectConnection(peer=A_ID, conn=DIRECT, relayed_conn=RELAYED, attempts=1),
    )
    assert a_done[1] == dcutr.DirectConnection(peer=B_ID, conn=DIRECT, relayed_conn=RELAYED, attempts=1)
    assert _of(wire.a, dcutr.PunchFailed) == [] and _of(wire.b, dcutr.PunchFailed) == []
    assert wire.a.behaviour.punching == () and wire.b.behaviour.punching == ()
    assert not wire.a.behaviour.refusals and not wire.b.behaviour.refusals


def test_the_dial_waits_rtt_over_two_after_sync_measured_from_connect() -> None:
    b = dcutr.Dcutr(lambda: B_ADDRS)
    (open_,) = b.on_event(sw.ConnectionUp(conn=1, peer=A_ID, direction="inbound", remote=PUBLIC_RELAY), 10.0)
    assert isinstance(open_, sw.OpenStream) and open_.protocols == (dcutr.PROTOCOL_ID,)
    # The stream takes 3 s to open: that is not part of the RTT, which starts with CONNECT.
    (write,) = b.on_event(sw.StreamOpened(conn=1, stream=7, protocol=dcutr.PROTOCOL_ID, tag=open_.tag), 13.0)
    assert write == sw.Write(conn=1, stream=7, data=_message(dcutr.CONNECT, B_PUBLIC))
    effects = b.on_event(sw.StreamData(conn=1, stream=7, data=_message(dcutr.CONNECT, A_PUBLIC)), 13.5)
    assert effects[0] == sw.Write(conn=1, stream=7, data=_message(dcutr.SYNC))
    assert effects[1] == sw.CloseStream(conn=1, stream=7)
    (dial,) = _reports(effects, dcutr.PunchDial)
    assert isinstance(dial, dcutr.PunchDial) and dial.at_s == 13.75 and dial.addrs == (A_PUBLIC,)


def test_a_dials_the_moment_sync_arrives() -> None:
    a = dcutr.Dcutr(lambda: A_ADDRS)
    assert (
        a.on_event(sw.ConnectionUp(conn=1, peer=B_ID, direction="outbound", remote=PUBLIC_RELAY), 0.0) == []
    )
    assert a.on_event(sw.InboundStream(conn=1, stream=4, protocol=dcutr.PROTOCOL_ID), 1.0) == []
    (answer,) = a.on_event(sw.StreamData(conn=1, stream=4, data=_message(dcutr.CONNECT, B_PUBLIC)), 1.0)
    assert answer == sw.Write(conn=1, stream=4, data=_message(dcutr.CONNECT, A_PUBLIC))
    close, report = a.on_event(sw.StreamData(conn=1, stream=4, data=_message(dcutr.SYNC)), 1.5)
    assert close == sw.CloseStream(conn=1, stream=4)
    assert isinstance(report, sw.Report) and isinstance(report.outcome, dcutr.PunchDial)
    assert report.outcome.at_s == 1.5 and report.outcome.client and report.outcome.addrs == (B_PUBLIC,)


def test_messages_split_across_chunks_and_joined_in_one_are_both_read() -> None:
    a = dcutr.Dcutr(lambda: A_ADDRS)
    a.on_event(sw.ConnectionUp(conn=1, peer=B_ID, direction="outbound", remote=PUBLIC_RELAY), 0.0)
    a.on_event(sw.InboundStream(conn=1, stream=4, protocol=dcutr.PROTOCOL_ID), 0.0)
    both = _message(dcutr.CONNECT, B_PUBLIC) + _message(dcutr.SYNC)
    effects: list[sw.Effect] = []
    for byte in both:
        effects += a.on_event(sw.StreamData(conn=1, stream=4, data=bytes([byte])), 0.5)
    assert [type(e) for e in effects] == [sw.Write, sw.CloseStream, sw.Report]


def test_failed_punches_are_retried_twice_with_backoff_then_reported() -> None:
    wire = Wire(nat_open=lambda attempt: False)
    wire.connect()
    wire.run_until(60.0)
    # Attempt 1: SYNC at 4L, both dial at 5L, both dials fail at 9L = 1.125 s. B waits
    # 2 s, so attempt 2 opens on the first tick after 3.125 (3.25) and fails at 4.375;
    # then 4 s, so attempt 3 opens on the first tick after 8.375 (8.5).
    assert wire.b.opens == [0.0, 3.25, 8.5]
    assert [d.attempt for d in wire.b.dials] == [1, 2, 3]
    (last,) = _of(wire.b, dcutr.PunchFailed)
    assert isinstance(last[1], dcutr.PunchFailed)
    assert last[1].final and last[1].attempts == 3 and "dial failed" in last[1].reason
    a_failures = [o for _, o in _of(wire.a, dcutr.PunchFailed)]
    assert len(a_failures) == 3 and not any(f.final for f in a_failures if isinstance(f, dcutr.PunchFailed))
    assert _of(wire.b, dcutr.DirectConnection) == []
    assert wire.b.behaviour.punching == () and wire.a.behaviour.punching == ()


def test_a_second_attempt_can_succeed() -> None:
    wire = Wire(nat_open=lambda attempt: attempt >= 2)
    wire.connect()
    wire.run_until(30.0)
    assert len(wire.b.opens) == 2
    (done,) = _of(wire.b, dcutr.DirectConnection)
    assert isinstance(done[1], dcutr.DirectConnection) and done[1].attempts == 2
    assert _of(wire.b, dcutr.PunchFailed) == []


def test_a_silent_peer_times_out_each_attempt_through_tick() -> None:
    b = dcutr.Dcutr(lambda: B_ADDRS, exchange_timeout_s=5.0, retry_backoff_s=1.0)
    (open_,) = b.on_event(sw.ConnectionUp(conn=1, peer=A_ID, direction="inbound", remote=PUBLIC_RELAY), 0.0)
    b.on_event(sw.StreamOpened(conn=1, stream=3, protocol=dcutr.PROTOCOL_ID, tag=open_.tag), 0.0)  # type: ignore[union-attr]
    assert b.tick(4.9) == []
    assert b.tick(5.0) == [sw.ResetStream(conn=1, stream=3)]
    assert b.tick(5.9) == []
    (reopen,) = b.tick(6.0)  # backoff 1 s
    assert isinstance(reopen, sw.OpenStream)
    assert b.tick(11.0) == []  # still opening: the deadline is 5 s after the open, at 11
    assert b.tick(12.9) == []  # backoff 2 s, until 13
    (third,) = b.tick(13.0)
    assert isinstance(third, sw.OpenStream)
    (failed,) = _reports(b.tick(18.0), dcutr.PunchFailed)
    assert isinstance(failed, dcutr.PunchFailed) and failed.final and failed.attempts == 3


def test_a_peer_without_dcutr_fails_the_punch_at_once() -> None:
    wire = Wire(a_speaks_dcutr=False)
    wire.connect()
    wire.run_until(30.0)
    assert wire.b.opens == [0.0]
    ((_, failed),) = _of(wire.b, dcutr.PunchFailed)
    assert isinstance(failed, dcutr.PunchFailed) and failed.final and "refused" in failed.reason


def test_a_relayed_connection_going_down_ends_the_punch() -> None:
    b = dcutr.Dcutr(lambda: B_ADDRS)
    b.on_event(sw.ConnectionUp(conn=1, peer=A_ID, direction="inbound", remote=PUBLIC_RELAY), 0.0)
    assert b.punching == (A_ID,)
    (failed,) = _reports(
        b.on_event(sw.ConnectionDown(conn=1, peer=A_ID, reason="gone"), 1.0), dcutr.PunchFailed
    )
    assert (
        isinstance(failed, dcutr.PunchFailed)
        and failed.final
        and failed.reason == "relayed connection closed"
    )
    assert b.punching == () and b.tick(100.0) == []


def test_a_stale_dial_failure_is_ignored() -> None:
    b = dcutr.Dcutr(lambda: B_ADDRS)
    (open_,) = b.on_event(sw.ConnectionUp(conn=1, peer=A_ID, direction="inbound", remote=PUBLIC_RELAY), 0.0)
    b.on_event(sw.StreamOpened(conn=1, stream=3, protocol=dcutr.PROTOCOL_ID, tag=open_.tag), 0.0)  # type: ignore[union-attr]
    (dial,) = _reports(
        b.on_event(sw.StreamData(conn=1, stream=3, data=_message(dcutr.CONNECT, A_PUBLIC)), 0.5),
        dcutr.PunchDial,
    )
    assert isinstance(dial, dcutr.PunchDial)
    assert b.dial_failed("not a tag", "x", 1.0) == []
    assert b.dial_failed(object(), "x", 1.0) == []
    assert b.dial_failed(dial.tag, "refused", 1.0) == []  # attempt 1 failed: backoff, no report
    assert b.dial_failed(dial.tag, "refused", 1.0) == []  # twice: no longer dialling
    assert b.punching == (A_ID,)


# -- where it starts, and where it must not ---------------------------------------------


def test_it_never_starts_over_a_direct_connection_or_as_the_dialling_side() -> None:
    b = dcutr.Dcutr(lambda: B_ADDRS)
    direct = Multiaddr.parse("/ip4/5.6.7.8/tcp/44000")
    assert b.on_event(sw.ConnectionUp(conn=1, peer=A_ID, direction="inbound", remote=direct), 0.0) == []
    assert b.upgrade(1, 0.0) == []
    # Outbound through the relay: we are A, and A waits for B's CONNECT.
    assert (
        b.on_event(sw.ConnectionUp(conn=2, peer=OTHER_ID, direction="outbound", remote=PUBLIC_RELAY), 0.0)
        == []
    )
    # Inbound relayed, but a direct connection to that peer already exists: nothing to do.
    assert b.on_event(sw.ConnectionUp(conn=3, peer=A_ID, direction="inbound", remote=PUBLIC_RELAY), 0.0) == []
    assert b.punching == ()


def test_connect_over_a_direct_connection_or_to_b_is_refused_and_counted() -> None:
    a = dcutr.Dcutr(lambda: A_ADDRS)
    a.on_event(sw.ConnectionUp(conn=1, peer=B_ID, direction="outbound", remote=B_PUBLIC), 0.0)
    assert a.on_event(sw.InboundStream(conn=1, stream=2, protocol=dcutr.PROTOCOL_ID), 0.0) == [
        sw.ResetStream(conn=1, stream=2)
    ]
    a.on_event(sw.ConnectionUp(conn=5, peer=OTHER_ID, direction="inbound", remote=PUBLIC_RELAY), 0.0)
    assert a.on_event(sw.InboundStream(conn=5, stream=2, protocol=dcutr.PROTOCOL_ID), 0.0) == [
        sw.ResetStream(conn=5, stream=2)
    ]
    assert a.on_event(sw.InboundStream(conn=9, stream=2, protocol=dcutr.PROTOCOL_ID), 0.0) == [
        sw.ResetStream(conn=9, stream=2)
    ]
    assert a.refusals == Counter(dcutr_direct_connection=1, dcutr_wrong_role=1, dcutr_unknown_connection=1)


# -- hostile input -----------------------------------------------------------------------


def _answering(data: bytes, *, first: bytes | None = None) -> tuple[dcutr.Dcutr, Sequence[sw.Effect]]:
    """A, after B's stream opened: feed `first` (if any) then `data`."""
    a = dcutr.Dcutr(lambda: A_ADDRS)
    a.on_event(sw.ConnectionUp(conn=1, peer=B_ID, direction="outbound", remote=PUBLIC_RELAY), 0.0)
    a.on_event(sw.InboundStream(conn=1, stream=4, protocol=dcutr.PROTOCOL_ID), 0.0)
    if first is not None:
        a.on_event(sw.StreamData(conn=1, stream=4, data=first), 0.0)
    return a, a.on_event(sw.StreamData(conn=1, stream=4, data=data), 0.0)


@pytest.mark.parametrize(
    ("data", "first", "refusal"),
    [
        (varint.encode(dcutr.MESSAGE_BYTES_MAX + 1) + b"\x00" * 64, None, "dcutr_message_size"),
        (
            _message(dcutr.CONNECT, *[Multiaddr.parse(f"/ip4/9.8.7.{i}/tcp/1") for i in range(33)]),
            None,
            "dcutr_addrs_count",
        ),
        (_message(dcutr.CONNECT, b"\x04" * (dcutr.ADDRESS_BYTES_MAX + 1)), None, "dcutr_addr_size"),
        (varint.prefixed(protobuf.encode([(1, 7)])), None, "dcutr_malformed"),
        (varint.prefixed(protobuf.encode([(2, B_PUBLIC.to_bytes())])), None, "dcutr_malformed"),
        (varint.prefixed(b"\x0f\x01"), None, "dcutr_malformed"),
        (_message(dcutr.SYNC), None, "dcutr_unexpected"),  # SYNC before CONNECT
        (_message(dcutr.CONNECT, B_PUBLIC), _message(dcutr.CONNECT, B_PUBLIC), "dcutr_unexpected"),
    ],
)
def test_hostile_messages_reset_the_stream_end_the_punch_and_are_counted(
    data: bytes, first: bytes | None, refusal: str
) -> None:
    a, effects = _answering(data, first=first)
    assert effects[0] == sw.ResetStream(conn=1, stream=4)
    (failed,) = _reports(effects, dcutr.PunchFailed)
    assert isinstance(failed, dcutr.PunchFailed) and failed.final
    assert a.refusals == Counter({refusal: 1})
    assert a.punching == ()


def test_b_refuses_sync_in_place_of_connect_and_does_not_retry() -> None:
    b = dcutr.Dcutr(lambda: B_ADDRS)
    (open_,) = b.on_event(sw.ConnectionUp(conn=1, peer=A_ID, direction="inbound", remote=PUBLIC_RELAY), 0.0)
    b.on_event(sw.StreamOpened(conn=1, stream=3, protocol=dcutr.PROTOCOL_ID, tag=open_.tag), 0.0)  # type: ignore[union-attr]
    effects = b.on_event(sw.StreamData(conn=1, stream=3, data=_message(dcutr.SYNC)), 0.5)
    assert effects[0] == sw.ResetStream(conn=1, stream=3)
    assert b.refusals == Counter(dcutr_unexpected=1)
    assert b.punching == () and b.tick(100.0) == []


def test_private_and_loopback_addresses_from_a_peer_behind_a_public_relay_are_not_dialled() -> None:
    hostile = (Multiaddr.parse("/ip4/127.0.0.1/tcp/22"), Multiaddr.parse("/ip4/10.0.0.5/tcp/6379"), B_PUBLIC)
    _, effects = _answering(_message(dcutr.SYNC), first=_message(dcutr.CONNECT, *hostile))
    (dial,) = _reports(effects, dcutr.PunchDial)
    assert isinstance(dial, dcutr.PunchDial) and dial.addrs == (B_PUBLIC,)


def test_nothing_dialable_means_no_dial_but_the_peer_may_still_reach_us() -> None:
    a, effects = _answering(
        _message(dcutr.SYNC), first=_message(dcutr.CONNECT, Multiaddr.parse("/ip4/10.0.0.5/tcp/1"))
    )
    assert effects == [sw.CloseStream(conn=1, stream=4)]
    assert a.refusals == Counter(dcutr_addr_out_of_reach=1)
    (done,) = _reports(
        a.on_event(sw.ConnectionUp(conn=2, peer=B_ID, direction="inbound", remote=B_PUBLIC), 1.0),
        dcutr.DirectConnection,
    )
    assert isinstance(done, dcutr.DirectConnection) and done.conn == 2


def test_a_answers_at_most_attempts_max_punches_per_peer_in_the_window() -> None:
    a = dcutr.Dcutr(lambda: A_ADDRS)
    a.on_event(sw.ConnectionUp(conn=1, peer=B_ID, direction="outbound", remote=PUBLIC_RELAY), 0.0)
    for stream in (1, 3, 5):
        assert (
            a.on_event(sw.InboundStream(conn=1, stream=stream, protocol=dcutr.PROTOCOL_ID), float(stream))
            == []
        )
        a.on_event(sw.StreamGone(conn=1, stream=stream, tag=None, reason="reset"), float(stream))
    assert a.on_event(sw.InboundStream(conn=1, stream=7, protocol=dcutr.PROTOCOL_ID), 10.0) == [
        sw.ResetStream(conn=1, stream=7)
    ]
    assert a.refusals == Counter(dcutr_attempts=1)
    later = 1.0 + dcutr.ATTEMPT_WINDOW_S + 0.5  # the first answer left the window
    assert a.on_event(sw.InboundStream(conn=1, stream=9, protocol=dcutr.PROTOCOL_ID), later) == []


def test_one_stream_at_a_time_per_peer_and_punches_max_in_all() -> None:
    a = dcutr.Dcutr(lambda: A_ADDRS, punches_max=2)
    peers = [Identity.from_seed(bytes([i]) * 32).peer_id for i in range(1, 4)]
    for conn, peer in enumerate(peers, start=1):
        a.on_event(sw.ConnectionUp(conn=conn, peer=peer, direction="outbound", remote=PUBLIC_RELAY), 0.0)
    assert a.on_event(sw.InboundStream(conn=1, stream=1, protocol=dcutr.PROTOCOL_ID), 0.0) == []
    assert a.on_event(sw.InboundStream(conn=1, stream=3, protocol=dcutr.PROTOCOL_ID), 0.0) == [
        sw.ResetStream(conn=1, stream=3)
    ]
    assert a.on_event(sw.InboundStream(conn=2, stream=1, protocol=dcutr.PROTOCOL_ID), 0.0) == []
    assert a.on_event(sw.InboundStream(conn=3, stream=1, protocol=dcutr.PROTOCOL_ID), 0.0) == [
        sw.ResetStream(conn=3, stream=1)
    ]
    assert a.refusals == Counter(dcutr_concurrent=1, dcutr_punches=1)
    # As B, too: a fourth relayed peer finds no room and is told so.
    extra = Identity.from_seed(bytes([9]) * 32).peer_id
    effects = a.on_event(sw.ConnectionUp(conn=4, peer=extra, direction="inbound", remote=PUBLIC_RELAY), 0.0)
    (failed,) = _reports(effects, dcutr.PunchFailed)
    assert isinstance(failed, dcutr.PunchFailed) and failed.final and a.refusals["dcutr_punches"] == 2


def test_a_silent_answerer_holds_its_slot_only_until_the_exchange_timeout() -> None:
    a = dcutr.Dcutr(lambda: A_ADDRS, exchange_timeout_s=5.0)
    a.on_event(sw.ConnectionUp(conn=1, peer=B_ID, direction="outbound", remote=PUBLIC_RELAY), 0.0)
    a.on_event(sw.InboundStream(conn=1, stream=4, protocol=dcutr.PROTOCOL_ID), 0.0)
    assert a.tick(4.0) == []
    effects = a.tick(5.0)
    assert effects[0] == sw.ResetStream(conn=1, stream=4)
    (failed,) = _reports(effects, dcutr.PunchFailed)
    assert isinstance(failed, dcutr.PunchFailed) and not failed.final
    assert a.punching == ()


def test_without_start_on_connect_the_host_starts_it_with_upgrade() -> None:
    b = dcutr.Dcutr(lambda: B_ADDRS, start_on_connect=False)
    assert b.on_event(sw.ConnectionUp(conn=1, peer=A_ID, direction="inbound", remote=PUBLIC_RELAY), 0.0) == []
    (open_,) = b.upgrade(1, 2.0)
    assert isinstance(open_, sw.OpenStream) and open_.conn == 1 and b.punching == (A_ID,)
    assert b.upgrade(1, 2.0) == []  # one punch per peer at a time
