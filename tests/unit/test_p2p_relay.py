"""Circuit relay v2: a relay and two clients driven through an in-test wire, no sockets or clock."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import pytest
from nacl.signing import VerifyKey

from pyrsia.errors import ProtocolViolation
from pyrsia.formats.peer_id import base58btc_decode
from pyrsia.p2p.behaviours.relay import client as rc
from pyrsia.p2p.behaviours.relay import hop, voucher
from pyrsia.p2p.behaviours.relay import messages as m
from pyrsia.p2p.identity import Identity
from pyrsia.p2p.swarm import behaviour as sw
from pyrsia.p2p.wire import protobuf, varint
from pyrsia.p2p.wire.multiaddr import Multiaddr

R = Identity.from_seed(bytes(range(32)))
A = Identity.from_seed(bytes(range(1, 33)))  # behind NAT: reserves on R
B = Identity.from_seed(bytes(range(2, 34)))  # reaches A through R
OTHER = Identity.from_seed(bytes(range(3, 35)))
OFFSET = 1_700_000_000.0  # unix time at now_s = 0
R_ADDR = Multiaddr.parse("/ip4/203.0.113.5/tcp/4001")

Behaviour = hop.Relay | rc.RelayClient
End = tuple[str, int, int]  # (node, conn, stream)


@dataclass
class Wire:
    """Nodes joined by connections; effects on one side become events on the other."""

    nodes: dict[str, Behaviour]
    now: float = 0.0
    links: dict[tuple[str, int], tuple[str, int]] = field(default_factory=dict)
    streams: dict[End, End] = field(default_factory=dict)
    raw: dict[End, bytearray] = field(default_factory=dict)  # streams handed over as connections
    raw_ended: set[End] = field(default_factory=set)
    gone: set[End] = field(default_factory=set)
    reports: list[tuple[str, object]] = field(default_factory=list)
    _next: dict[tuple[str, int], int] = field(default_factory=dict)

    def connect(self, x: str, cx: int, y: str, cy: int, *, x_seen: str, y_seen: str) -> None:
        """A connection `cx` on x / `cy` on y; `x_seen` is the address y sees x at."""
        self.links[(x, cx)], self.links[(y, cy)] = (y, cy), (x, cx)
        peers = {"r": R, "a": A, "b": B}
        self.deliver(
            x,
            sw.ConnectionUp(
                conn=cx, peer=peers[y].peer_id, direction="outbound", remote=Multiaddr.parse(y_seen)
            ),
        )
        self.deliver(
            y,
            sw.ConnectionUp(
                conn=cy, peer=peers[x].peer_id, direction="inbound", remote=Multiaddr.parse(x_seen)
            ),
        )

    def deliver(self, node: str, event: sw.Event) -> None:
        self.run(node, self.nodes[node].on_event(event, self.now))

    def run(self, node: str, effects: object) -> None:
        queue: deque[tuple[str, sw.Effect]] = deque((node, e) for e in effects)  # type: ignore[attr-defined]
        while queue:
            at, effect = queue.popleft()
            for target, event in self._apply(at, effect):
                queue.extend((target, e) for e in self.nodes[target].on_event(event, self.now))

    def _apply(self, at: str, effect: sw.Effect) -> list[tuple[str, sw.Event]]:
        match effect:
            case sw.OpenStream(conn=conn, protocols=protocols, tag=tag):
                peer, pconn = self.links[(at, conn)]
                ours, theirs = self._stream_id(at, conn), self._stream_id(peer, pconn)
                if protocols[0] not in self.nodes[peer].protocols:
                    return [(at, sw.StreamGone(conn=conn, stream=None, tag=tag, reason="protocol refused"))]
                self.streams[(at, conn, ours)] = (peer, pconn, theirs)
                self.streams[(peer, pconn, theirs)] = (at, conn, ours)
                return [
                    (peer, sw.InboundStream(conn=pconn, stream=theirs, protocol=protocols[0])),
                    (at, sw.StreamOpened(conn=conn, stream=ours, protocol=protocols[0], tag=tag)),
                ]
            case sw.Write(conn=conn, stream=stream, data=data):
                other = self.streams.get((at, conn, stream))
                if other is None or (at, conn, stream) in self.gone:
                    return []
                if other in self.raw:
                    self.raw[other] += data
                    return []
                return [(other[0], sw.StreamData(conn=other[1], stream=other[2], data=data))]
            case sw.CloseStream(conn=conn, stream=stream):
                other = self.streams.get((at, conn, stream))
                if other is None or other in self.gone:
                    return []
                if other in self.raw:
                    self.raw_ended.add(other)
                    return []
                return [(other[0], sw.StreamEnded(conn=other[1], stream=other[2]))]
            case sw.ResetStream(conn=conn, stream=stream):
                other = self.streams.get((at, conn, stream))
                self.gone.add((at, conn, stream))
                if other is None or other in self.gone:
                    return []
                self.gone.add(other)
                if other in self.raw:
                    return []
                return [(other[0], sw.StreamGone(conn=other[1], stream=other[2], tag=None, reason="reset"))]
            case sw.CloseConnection(conn=conn):
                peer, pconn = self.links[(at, conn)]
                return [
                    (at, sw.ConnectionDown(conn=conn, peer="", reason="closed")),
                    (peer, sw.ConnectionDown(conn=pconn, peer="", reason="closed")),
                ]
            case sw.Report(outcome=outcome):
                self.reports.append((at, outcome))
                if isinstance(outcome, rc.CircuitOpened):
                    end = (at, outcome.conn, outcome.stream)
                    self.raw[end] = bytearray(outcome.initial)
        return []

    def _stream_id(self, node: str, conn: int) -> int:
        n = self._next.get((node, conn), 1)
        self._next[(node, conn)] = n + 1
        return n

    def send_raw(self, end: End, data: bytes) -> None:
        """Bytes written by the connection the swarm runs over a circuit stream."""
        self.run(end[0], [sw.Write(conn=end[1], stream=end[2], data=data)])

    def outcomes(self, node: str, kind: type) -> list:  # type: ignore[type-arg]
        return [o for n, o in self.reports if n == node and isinstance(o, kind)]

    def circuit_end(self, node: str) -> End:
        (opened,) = self.outcomes(node, rc.CircuitOpened)
        return (node, opened.conn, opened.stream)


def _network(
    limits: hop.RelayLimits | None = None, *, relay_identity: Identity = R, **client: object
) -> Wire:
    relay = hop.Relay(relay_identity, lambda: [R_ADDR], unix_offset_s=OFFSET, limits=limits)
    a = rc.RelayClient(A.peer_id, unix_offset_s=OFFSET, **client)  # type: ignore[arg-type]
    b = rc.RelayClient(B.peer_id, unix_offset_s=OFFSET)
    wire = Wire(nodes={"r": relay, "a": a, "b": b})
    wire.connect("a", 1, "r", 10, x_seen="/ip4/198.51.100.7/tcp/50001", y_seen="/ip4/203.0.113.5/tcp/4001")
    wire.connect("b", 2, "r", 20, x_seen="/ip4/192.0.2.9/tcp/50002", y_seen="/ip4/203.0.113.5/tcp/4001")
    return wire


def _reserved(limits: hop.RelayLimits | None = None, **client: object) -> Wire:
    wire = _network(limits, **client)
    wire.run("a", wire.nodes["a"].reserve(1, wire.now))  # type: ignore[union-attr]
    return wire


def _circuit(limits: hop.RelayLimits | None = None) -> tuple[Wire, End, End]:
    wire = _reserved(limits)
    wire.run("b", wire.nodes["b"].connect(2, A.peer_id, "to-a", wire.now))  # type: ignore[union-attr]
    return wire, wire.circuit_end("a"), wire.circuit_end("b")


def _relay(w: Wire) -> hop.Relay:
    relay = w.nodes["r"]
    assert isinstance(relay, hop.Relay)
    return relay


# -- messages ---------------------------------------------------------------------------


def test_messages_encode_as_the_spec_protobuf_says() -> None:
    # HopMessage{type=RESERVE}: field 1 varint 0; STATUS OK: type 2, field 5 = 100.
    assert m.frame(m.HopMessage(type=m.HopType.RESERVE)) == b"\x02\x08\x00"
    assert m.HopMessage(type=m.HopType.STATUS, status=m.Status.OK).encode() == b"\x08\x02\x28\x64"
    # StopMessage{type=STATUS, status=CONNECTION_FAILED (203)}: field 4 varint 203 = cb 01.
    assert (
        m.StopMessage(type=m.StopType.STATUS, status=m.Status.CONNECTION_FAILED).encode()
        == b"\x08\x01\x20\xcb\x01"
    )
    # Limit{duration=120, data=131072}: 08 78 10 80 80 08.
    assert m.Limit(duration_s=120, data_bytes=131072).encode() == b"\x08\x78\x10\x80\x80\x08"
    # Peer.id is the peer id's multihash bytes: 0x00 0x24 then the key protobuf.
    peer = m.Peer(id=A.peer_id).encode()
    assert peer[:4] == b"\x0a\x26\x00\x24" and peer.endswith(A.public_key)


def test_messages_round_trip() -> None:
    message = m.HopMessage(
        type=m.HopType.STATUS,
        status=m.Status.OK,
        reservation=m.Reservation(expire=1_700_003_600, addrs=(R_ADDR.with_peer(R.peer_id),), voucher=b"v"),
        limit=m.Limit(duration_s=120, data_bytes=1 << 17),
    )
    assert m.HopMessage.decode(message.encode()) == message
    stop = m.StopMessage(type=m.StopType.CONNECT, peer=m.Peer(id=B.peer_id, addrs=(R_ADDR,)), limit=m.Limit())
    assert m.StopMessage.decode(stop.encode()) == stop


@pytest.mark.parametrize(
    "raw",
    [
        b"",  # no type
        b"\x08\x07",  # unknown type
        b"\x0a\x01x",  # type as bytes: wrong wire type
        b"\x08\x01\x12\x04\x0a\x02\x00\x01",  # CONNECT to a peer id that is no Ed25519 id
        b"\x08\x01\x12\x05\x0a\x02",  # truncated
        protobuf.encode([(1, 1), (2, protobuf.encode([(1, bytes(38))] + [(2, R_ADDR.to_bytes())] * 40))]),
    ],
)
def test_malformed_hop_messages_are_violations(raw: bytes) -> None:
    with pytest.raises(ProtocolViolation):
        m.HopMessage.decode(raw)


def test_unparsable_addresses_are_skipped_and_unknown_status_kept() -> None:
    reservation = protobuf.encode([(1, 5), (2, b"\xff\xff\xff"), (2, R_ADDR.to_bytes())])
    decoded = m.HopMessage.decode(protobuf.encode([(1, 2), (3, reservation), (5, 299)]))
    assert decoded.reservation is not None and decoded.reservation.addrs == (R_ADDR,)
    assert decoded.status == 299 and decoded.status != m.Status.OK


def test_the_reader_refuses_an_oversized_length_before_buffering() -> None:
    reader = m.MessageReader()
    with pytest.raises(ProtocolViolation):
        reader.feed(varint.encode(m.MESSAGE_BYTES_MAX + 1))
    split = m.MessageReader()
    frame = m.frame(m.HopMessage(type=m.HopType.RESERVE))
    assert split.feed(frame[:1]) is None
    assert split.feed(frame[1:] + b"tail") == b"\x08\x00" and split.rest == b"tail"


# -- vouchers ---------------------------------------------------------------------------


def test_a_voucher_is_a_signed_envelope_over_the_rfc_buffer() -> None:
    expiration = 1_700_003_600
    signed = voucher.sign(R, voucher.Voucher(relay=R.peer_id, peer=A.peer_id, expiration=expiration))
    fields = protobuf.decode(signed)
    assert [n for n, _ in fields] == [1, 2, 3, 5]
    payload_type, payload, signature = (protobuf.first(fields, n, bytes) for n in (2, 3, 5))
    assert payload_type == b"\x03\x02"
    assert isinstance(payload, bytes) and isinstance(signature, bytes)
    # RFC 0002: varint(len(domain)) domain varint(len(type)) type varint(len(payload)) payload.
    buffer = b"\x11libp2p-relay-rsvp" + b"\x02\x03\x02" + varint.prefixed(payload)
    VerifyKey(R.public_key).verify(buffer, signature)
    # The payload is canonical: relay, peer, expiration, in field order.
    assert payload == protobuf.encode(
        [(1, base58btc_decode(R.peer_id)), (2, base58btc_decode(A.peer_id)), (3, expiration)]
    )
    assert voucher.verify(signed, relay=R.peer_id, peer=A.peer_id, expiration=expiration).peer == A.peer_id


def test_forged_or_altered_vouchers_are_refused() -> None:
    expiration = 1_700_003_600
    genuine = voucher.Voucher(relay=R.peer_id, peer=A.peer_id, expiration=expiration)
    # Signed by another key that claims to be R.
    forged = voucher.seal(OTHER, voucher.DOMAIN, voucher.PAYLOAD_TYPE, genuine.encode()).encode()
    # R's signature, the payload changed after signing.
    envelope = voucher.seal(R, voucher.DOMAIN, voucher.PAYLOAD_TYPE, genuine.encode())
    longer = voucher.Voucher(relay=R.peer_id, peer=A.peer_id, expiration=expiration + 10**6)
    altered = voucher.Envelope(
        public_key=R.public_key,
        payload_type=voucher.PAYLOAD_TYPE,
        payload=longer.encode(),
        signature=envelope.signature,
    ).encode()
    # R's signature for another domain.
    other_domain = voucher.seal(R, "libp2p-routing-state", voucher.PAYLOAD_TYPE, genuine.encode()).encode()
    for data in (forged, altered, other_domain, b"\x0a\x00", b"junk"):
        with pytest.raises(ProtocolViolation):
            voucher.verify(data, relay=R.peer_id, peer=A.peer_id, expiration=expiration)
    good = voucher.sign(R, genuine)
    with pytest.raises(ProtocolViolation):
        voucher.verify(good, relay=R.peer_id, peer=B.peer_id, expiration=expiration)  # another peer's
    with pytest.raises(ProtocolViolation):
        voucher.verify(good, relay=R.peer_id, peer=A.peer_id, expiration=expiration + 1)
    with pytest.raises(ValueError):
        voucher.sign(OTHER, genuine)


# -- reservation, circuit, splice --------------------------------------------------------


def test_a_reservation_gives_circuit_addresses_and_a_verified_voucher() -> None:
    wire = _reserved()
    (reserved,) = wire.outcomes("a", rc.Reserved)
    assert reserved.relay == R.peer_id and reserved.expire == int(OFFSET) + 3600
    assert [str(a) for a in reserved.addrs] == [
        f"/ip4/203.0.113.5/tcp/4001/p2p/{R.peer_id}/p2p-circuit/p2p/{A.peer_id}"
    ]
    assert reserved.limit == m.Limit(duration_s=120, data_bytes=128 * 1024)
    (granted,) = wire.outcomes("r", hop.ReservationGranted)
    assert granted.peer == A.peer_id and granted.expire_s == 3600
    assert _relay(wire).reserved(A.peer_id, 10.0) and not _relay(wire).reserved(B.peer_id, 10.0)


def test_bytes_are_spliced_both_ways_and_half_closes_travel() -> None:
    wire, at_a, at_b = _circuit()
    (to_a,) = wire.outcomes("a", rc.CircuitOpened)
    (to_b,) = wire.outcomes("b", rc.CircuitOpened)
    assert (to_a.peer, to_a.initiator, to_a.relay) == (B.peer_id, False, R.peer_id)
    assert (to_b.peer, to_b.initiator) == (A.peer_id, True)
    assert to_a.limit == to_b.limit == m.Limit(duration_s=120, data_bytes=128 * 1024)
    wire.send_raw(at_b, b"noise message 1")
    wire.send_raw(at_a, b"noise message 2")
    wire.send_raw(at_b, b"+more")
    assert wire.raw[at_a] == b"noise message 1+more" and wire.raw[at_b] == b"noise message 2"
    assert _relay(wire).circuits == 1
    # Counted while the circuit runs, before any CircuitRelayed.
    assert not wire.outcomes("r", hop.CircuitRelayed)
    assert _relay(wire).counters == {"circuits_spliced": 1, "bytes_relayed": 35}
    wire.run("b", [sw.CloseStream(conn=at_b[1], stream=at_b[2])])
    assert at_a in wire.raw_ended
    wire.run("a", [sw.CloseStream(conn=at_a[1], stream=at_a[2])])
    assert at_b in wire.raw_ended and _relay(wire).circuits == 0
    (done,) = wire.outcomes("r", hop.CircuitRelayed)
    assert (done.bytes_to_target, done.bytes_to_source, done.reason) == (20, 15, "closed")


def test_a_splice_names_the_leg_its_bytes_came_from() -> None:
    """`Write.source`: the swarm holds back that leg's credit while the other leg is backlogged."""
    wire, at_a, at_b = _circuit()
    from_b = wire.streams[at_b]  # the relay's end of B's leg
    to_a = wire.streams[at_a]  # the relay's end of A's leg
    assert from_b[0] == to_a[0] == "r"
    effects = _relay(wire).on_event(sw.StreamData(conn=from_b[1], stream=from_b[2], data=b"bytes"), wire.now)
    (write,) = effects
    assert isinstance(write, sw.Write) and (write.conn, write.stream) == to_a[1:]
    assert write.source == from_b[1:] and write.data == b"bytes"


def test_the_byte_limit_delivers_up_to_it_then_resets_both_streams() -> None:
    wire, at_a, at_b = _circuit(hop.RelayLimits(circuit_bytes_max=1000))
    wire.send_raw(at_b, b"x" * 600)
    wire.send_raw(at_a, b"y" * 900)  # the other direction has its own allowance
    assert at_a not in wire.gone
    wire.send_raw(at_b, b"z" * 600)
    assert wire.raw[at_a] == b"x" * 600 + b"z" * 400
    assert at_a in wire.gone and at_b in wire.gone
    assert _relay(wire).refusals["relay_circuit_bytes"] == 1 and _relay(wire).circuits == 0
    (done,) = wire.outcomes("r", hop.CircuitRelayed)
    assert (done.bytes_to_target, done.bytes_to_source, done.reason) == (1000, 900, "data limit")
    assert _relay(wire).counters["bytes_relayed"] == 1900  # what was delivered, not what was sent


def test_the_duration_limit_resets_both_streams_on_tick_or_on_data() -> None:
    wire, at_a, at_b = _circuit(hop.RelayLimits(circuit_duration_s=10))
    wire.now = 9.0
    wire.run("r", _relay(wire).tick(wire.now))
    wire.send_raw(at_b, b"still in time")
    assert wire.raw[at_a] == b"still in time" and at_a not in wire.gone
    wire.now = 10.5
    wire.run("r", _relay(wire).tick(wire.now))
    assert at_a in wire.gone and at_b in wire.gone and _relay(wire).circuits == 0
    # Without a tick, the next byte past the duration resets the circuit.
    wire2, at_a2, at_b2 = _circuit(hop.RelayLimits(circuit_duration_s=10))
    wire2.now = 11.0
    wire2.send_raw(at_a2, b"late")
    assert wire2.raw[at_b2] == b"" and at_b2 in wire2.gone
    assert _relay(wire2).refusals["relay_circuit_duration"] == 1


def test_connect_without_reservation_to_self_and_to_the_relay_are_refused() -> None:
    wire = _network()
    b = wire.nodes["b"]
    assert isinstance(b, rc.RelayClient)
    wire.run("b", b.connect(2, A.peer_id, "no-rsvp", wire.now))
    wire.run("b", b.connect(2, R.peer_id, "the-relay", wire.now))
    wire.run("a", wire.nodes["a"].reserve(1, wire.now))  # type: ignore[union-attr]
    wire.run("a", wire.nodes["a"].connect(1, A.peer_id, "me", wire.now))  # type: ignore[union-attr]
    failures = {f.tag: f for f in wire.outcomes("b", rc.CircuitFailed) + wire.outcomes("a", rc.CircuitFailed)}
    assert failures["no-rsvp"].status == m.Status.NO_RESERVATION
    assert failures["the-relay"].status == m.Status.PERMISSION_DENIED
    assert failures["me"].status is None and b.refusals["relay_connect_refused"] == 0
    assert _relay(wire).refusals["relay_no_reservation"] == 1
    assert _relay(wire).refusals["relay_connect_self"] == 1
    # The initiator naming itself reaches the relay too when it asks directly.
    reply = _hop(_relay(wire), 20, 99, m.HopMessage(type=m.HopType.CONNECT, peer=m.Peer(id=B.peer_id)))
    assert reply.status == m.Status.PERMISSION_DENIED


def _hop(
    relay: hop.Relay, conn: int, stream: int, request: m.HopMessage | bytes, now_s: float = 0.0
) -> m.HopMessage:
    """Open a hop stream on the relay, send `request`, decode its one STATUS reply."""
    assert relay.on_event(sw.InboundStream(conn=conn, stream=stream, protocol=m.HOP_PROTOCOL_ID), now_s) == []
    data = request if isinstance(request, bytes) else m.frame(request)
    effects = relay.on_event(sw.StreamData(conn=conn, stream=stream, data=data), now_s)
    write = effects[0]
    assert isinstance(write, sw.Write) and (write.conn, write.stream) == (conn, stream)
    assert sw.CloseStream(conn=conn, stream=stream) in effects
    reader = m.MessageReader()
    body = reader.feed(write.data)
    assert body is not None
    return m.HopMessage.decode(body)


def _up(relay: hop.Relay, conn: int, who: Identity, remote: str) -> None:
    relay.on_event(
        sw.ConnectionUp(conn=conn, peer=who.peer_id, direction="inbound", remote=Multiaddr.parse(remote)), 0.0
    )


RESERVE = m.HopMessage(type=m.HopType.RESERVE)


def test_reservation_floods_meet_the_total_per_peer_and_per_group_limits() -> None:
    limits = hop.RelayLimits(reservations_max=3, reservations_per_peer_max=2, reservations_per_ip_group_max=2)
    relay = hop.Relay(R, lambda: [R_ADDR], unix_offset_s=OFFSET, limits=limits)
    peers = [Identity.from_seed(bytes([40 + n]) * 32) for n in range(6)]
    # Two peers in one /24 fill that group; the third from it is refused.
    for n, (who, ip) in enumerate(zip(peers[:3], ["10.1.1.1", "10.1.1.2", "10.1.1.3"], strict=True)):
        _up(relay, n, who, f"/ip4/{ip}/tcp/5000")
    statuses = [_hop(relay, n, 1, RESERVE).status for n in range(3)]
    assert statuses == [m.Status.OK, m.Status.OK, m.Status.RESERVATION_REFUSED]
    assert relay.refusals["relay_reservations_per_ip_group"] == 1
    # A third reservation from elsewhere fills the relay; a fourth is refused.
    _up(relay, 3, peers[3], "/ip4/10.2.2.2/tcp/5000")
    _up(relay, 4, peers[4], "/ip4/10.3.3.3/tcp/5000")
    assert _hop(relay, 3, 1, RESERVE).status == m.Status.OK
    assert _hop(relay, 4, 1, RESERVE).status == m.Status.RESERVATION_REFUSED
    assert relay.refusals["relay_reservations"] == 1
    # Renewing a held reservation is not a new one.
    assert _hop(relay, 0, 3, RESERVE, now_s=5.0).status == m.Status.OK
    # Reservations end with their connection, and room opens.
    relay.on_event(sw.ConnectionDown(conn=0, peer=peers[0].peer_id, reason="gone"), 6.0)
    assert _hop(relay, 4, 3, RESERVE, now_s=6.0).status == m.Status.OK


def test_reservations_per_peer_and_the_request_rate_are_bounded() -> None:
    limits = hop.RelayLimits(reservations_per_peer_max=2, rate_per_minute_max=5)
    relay = hop.Relay(R, lambda: [R_ADDR], unix_offset_s=OFFSET, limits=limits)
    for conn in range(3):
        _up(relay, conn, A, f"/ip4/10.9.{conn}.1/tcp/5000")
    assert [_hop(relay, c, 1, RESERVE).status for c in range(3)] == [
        m.Status.OK,
        m.Status.OK,
        m.Status.RESERVATION_REFUSED,
    ]
    assert relay.refusals["relay_reservations_per_peer"] == 1
    statuses = [_hop(relay, 0, 3 + 2 * n, RESERVE, now_s=1.0).status for n in range(4)]
    assert statuses[:2] == [m.Status.OK, m.Status.OK]
    assert statuses[2:] == [m.Status.RESOURCE_LIMIT_EXCEEDED] * 2 and relay.refusals["relay_rate"] == 2
    assert _hop(relay, 0, 99, RESERVE, now_s=70.0).status == m.Status.OK  # a minute later


def test_reservations_expire_on_tick() -> None:
    relay = hop.Relay(R, lambda: [R_ADDR], unix_offset_s=OFFSET, limits=hop.RelayLimits(reservation_ttl_s=60))
    _up(relay, 1, A, "/ip4/10.0.0.1/tcp/1")
    assert _hop(relay, 1, 1, RESERVE).status == m.Status.OK
    assert relay.tick(59.0) == []
    (ended,) = relay.tick(60.0)
    assert ended == sw.Report(conn=1, outcome=hop.ReservationEnded(peer=A.peer_id, reason="expired"))
    _up(relay, 2, B, "/ip4/10.0.0.2/tcp/1")
    reply = _hop(relay, 2, 1, m.HopMessage(type=m.HopType.CONNECT, peer=m.Peer(id=A.peer_id)), now_s=61.0)
    assert reply.status == m.Status.NO_RESERVATION


def test_reserve_and_connect_over_a_relayed_connection_are_denied() -> None:
    relay = hop.Relay(R, lambda: [R_ADDR], unix_offset_s=OFFSET)
    _up(relay, 1, A, f"/ip4/203.0.113.9/tcp/4001/p2p/{OTHER.peer_id}/p2p-circuit")
    assert _hop(relay, 1, 1, RESERVE).status == m.Status.PERMISSION_DENIED
    _up(relay, 2, B, "/ip4/10.0.0.2/tcp/1")
    relay.connection_relayed(2)  # told by the swarm rather than seen in the address
    connect = m.HopMessage(type=m.HopType.CONNECT, peer=m.Peer(id=A.peer_id))
    assert _hop(relay, 2, 1, connect).status == m.Status.PERMISSION_DENIED
    assert relay.refusals["relay_over_relayed"] == 2
    # The client will not reserve over one either.
    client = rc.RelayClient(A.peer_id, unix_offset_s=OFFSET)
    client.on_event(sw.ConnectionUp(conn=5, peer=R.peer_id, direction="outbound", remote=R_ADDR), 0.0)
    client.connection_relayed(5)
    (report,) = client.reserve(5, 0.0)
    assert isinstance(report, sw.Report) and isinstance(report.outcome, rc.ReservationFailed)


@pytest.mark.parametrize(
    ("raw", "status", "refusal"),
    [
        (b"\x03\x08\x07\x00", m.Status.MALFORMED_MESSAGE, "relay_malformed"),  # unknown type
        (varint.prefixed(b"\xff\xff"), m.Status.MALFORMED_MESSAGE, "relay_malformed"),  # not protobuf
        (varint.encode(100_000), m.Status.MALFORMED_MESSAGE, "relay_malformed"),  # oversized
        (
            m.frame(m.HopMessage(type=m.HopType.CONNECT)),
            m.Status.MALFORMED_MESSAGE,
            "relay_malformed",
        ),  # no peer
        (
            m.frame(m.HopMessage(type=m.HopType.STATUS, status=100)),
            m.Status.UNEXPECTED_MESSAGE,
            "relay_unexpected",
        ),
    ],
)
def test_malformed_requests_get_their_status_and_are_counted(
    raw: bytes, status: m.Status, refusal: str
) -> None:
    relay = hop.Relay(R, lambda: [R_ADDR], unix_offset_s=OFFSET)
    _up(relay, 1, A, "/ip4/10.0.0.1/tcp/1")
    assert _hop(relay, 1, 1, raw).status == status
    assert relay.refusals[refusal] == 1


def test_idle_hop_streams_are_bounded_and_time_out() -> None:
    relay = hop.Relay(R, lambda: [R_ADDR], unix_offset_s=OFFSET)
    _up(relay, 1, A, "/ip4/10.0.0.1/tcp/1")
    opened = [
        relay.on_event(sw.InboundStream(conn=1, stream=s, protocol=m.HOP_PROTOCOL_ID), 0.0)
        for s in range(hop.PENDING_PER_CONN_MAX + 3)
    ]
    assert opened.count([]) == hop.PENDING_PER_CONN_MAX
    assert relay.refusals["relay_pending_streams"] == 3
    effects = relay.tick(hop.REQUEST_TIMEOUT_S + 1)
    assert len([e for e in effects if isinstance(e, sw.ResetStream)]) == hop.PENDING_PER_CONN_MAX
    assert relay.refusals["relay_request_timeout"] == hop.PENDING_PER_CONN_MAX


def test_a_target_that_refuses_makes_connect_fail_for_the_initiator() -> None:
    wire = _reserved(circuits_max=0)
    wire.run("b", wire.nodes["b"].connect(2, A.peer_id, "t", wire.now))  # type: ignore[union-attr]
    (failed,) = wire.outcomes("b", rc.CircuitFailed)
    assert failed.status == m.Status.CONNECTION_FAILED
    assert wire.nodes["a"].refusals["relay_stop_circuits"] == 1
    assert _relay(wire).refusals["relay_stop_refused"] == 1 and _relay(wire).circuits == 0


def test_a_target_that_never_answers_times_out_as_connection_failed() -> None:
    wire = _reserved()
    relay = _relay(wire)
    # B asks for A; the stop stream opens but A's answer is withheld: drive the relay alone.
    effects = relay.on_event(sw.InboundStream(conn=20, stream=50, protocol=m.HOP_PROTOCOL_ID), 0.0)
    connect = m.frame(m.HopMessage(type=m.HopType.CONNECT, peer=m.Peer(id=A.peer_id)))
    (open_stop,) = relay.on_event(sw.StreamData(conn=20, stream=50, data=connect), 0.0)
    assert isinstance(open_stop, sw.OpenStream) and open_stop.conn == 10
    relay.on_event(sw.StreamOpened(conn=10, stream=60, protocol=m.STOP_PROTOCOL_ID, tag=open_stop.tag), 0.0)
    effects = relay.tick(hop.REQUEST_TIMEOUT_S + 1)
    write = effects[0]
    assert isinstance(write, sw.Write) and write.conn == 20
    assert m.HopMessage.decode(write.data[1:]).status == m.Status.CONNECTION_FAILED
    assert sw.ResetStream(conn=10, stream=60) in effects and relay.circuits == 0


def test_a_forged_voucher_refuses_the_reservation() -> None:
    # The relay on the connection is R, but its vouchers are signed with another key.
    wire = _network(relay_identity=OTHER)
    wire.run("a", wire.nodes["a"].reserve(1, wire.now))  # type: ignore[union-attr]
    assert wire.outcomes("a", rc.Reserved) == []
    (failed,) = wire.outcomes("a", rc.ReservationFailed)
    assert failed.status == m.Status.OK and "voucher" in failed.reason
    assert wire.nodes["a"].refusals["relay_voucher_invalid"] == 1
    assert wire.nodes["a"].reservation(1) is None  # type: ignore[union-attr]


def test_the_client_renews_before_expiry_and_loses_the_reservation_with_its_connection() -> None:
    wire = _reserved(hop.RelayLimits(reservation_ttl_s=100))
    a = wire.nodes["a"]
    assert isinstance(a, rc.RelayClient)
    wire.now = 74.0
    wire.run("a", a.tick(wire.now))
    assert len(wire.outcomes("a", rc.Reserved)) == 1
    wire.now = 76.0
    wire.run("a", a.tick(wire.now))
    renewed = wire.outcomes("a", rc.Reserved)
    assert len(renewed) == 2 and renewed[1].expire == int(OFFSET + 76) + 100
    assert _relay(wire).reserved(A.peer_id, 170.0)
    wire.run("a", [sw.CloseConnection(conn=1, reason="test")])
    (lost,) = wire.outcomes("a", rc.ReservationLost)
    assert lost == rc.ReservationLost(relay=R.peer_id, reason="connection closed")
    assert not _relay(wire).reserved(A.peer_id, 80.0)


def test_a_refused_renewal_and_an_unrenewed_expiry_lose_the_reservation() -> None:
    wire = _reserved(hop.RelayLimits(reservation_ttl_s=60, rate_per_minute_max=1))
    a = wire.nodes["a"]
    assert isinstance(a, rc.RelayClient)
    wire.now = 46.0  # renewal due (3/4 of 60 s), still inside the relay's rate window: the renewal is refused
    wire.run("a", a.tick(wire.now))
    (lost,) = wire.outcomes("a", rc.ReservationLost)
    assert lost.reason == "relay refused" and a.reservation(1) is None
    quiet = _reserved(hop.RelayLimits(reservation_ttl_s=100))
    client = quiet.nodes["a"]
    assert isinstance(client, rc.RelayClient)
    effects = client.tick(100.0)  # renewal never ran: the reservation is gone
    assert [e.outcome for e in effects if isinstance(e, sw.Report)] == [
        rc.ReservationLost(relay=R.peer_id, reason="expired")
    ]


def test_the_client_refuses_stop_streams_without_a_reservation_or_malformed() -> None:
    client = rc.RelayClient(A.peer_id, unix_offset_s=OFFSET)
    client.on_event(sw.ConnectionUp(conn=1, peer=R.peer_id, direction="outbound", remote=R_ADDR), 0.0)

    def stop(stream: int, data: bytes) -> int | None:
        client.on_event(sw.InboundStream(conn=1, stream=stream, protocol=m.STOP_PROTOCOL_ID), 0.0)
        write, *_ = client.on_event(sw.StreamData(conn=1, stream=stream, data=data), 0.0)
        assert isinstance(write, sw.Write)
        return m.StopMessage.decode(write.data[1:]).status

    connect = m.frame(m.StopMessage(type=m.StopType.CONNECT, peer=m.Peer(id=B.peer_id)))
    assert stop(2, connect) == m.Status.PERMISSION_DENIED
    assert stop(4, m.frame(m.StopMessage(type=m.StopType.STATUS, status=100))) == m.Status.UNEXPECTED_MESSAGE
    assert stop(6, varint.prefixed(b"\x08")) == m.Status.MALFORMED_MESSAGE
    assert client.refusals == {
        "relay_stop_unreserved": 1,
        "relay_stop_unexpected": 1,
        "relay_stop_malformed": 1,
    }
    assert client.circuits == 0


def test_the_client_bounds_circuits_and_frees_them_when_told() -> None:
    wire = _reserved(circuits_max=1)
    wire.run("b", wire.nodes["b"].connect(2, A.peer_id, "first", wire.now))  # type: ignore[union-attr]
    wire.run("b", wire.nodes["b"].connect(2, A.peer_id, "second", wire.now))  # type: ignore[union-attr]
    assert [f.tag for f in wire.outcomes("b", rc.CircuitFailed)] == ["second"]
    a = wire.nodes["a"]
    assert isinstance(a, rc.RelayClient)
    (opened,) = wire.outcomes("a", rc.CircuitOpened)
    a.circuit_closed(opened.conn, opened.stream)
    wire.run("b", wire.nodes["b"].connect(2, A.peer_id, "third", wire.now))  # type: ignore[union-attr]
    assert len(wire.outcomes("a", rc.CircuitOpened)) == 2


def test_circuits_per_peer_are_bounded_at_the_relay() -> None:
    wire = _reserved(hop.RelayLimits(circuits_per_peer_max=2))
    for n in range(3):
        wire.run("b", wire.nodes["b"].connect(2, A.peer_id, n, wire.now))  # type: ignore[union-attr]
    assert [f.status for f in wire.outcomes("b", rc.CircuitFailed)] == [m.Status.RESOURCE_LIMIT_EXCEEDED]
    assert _relay(wire).refusals["relay_circuits"] == 1 and _relay(wire).circuits == 2


def test_a_leg_reset_or_a_connection_down_resets_the_other_leg() -> None:
    wire, at_a, at_b = _circuit()
    wire.run("b", [sw.ResetStream(conn=at_b[1], stream=at_b[2])])
    assert at_a in wire.gone and _relay(wire).circuits == 0
    wire2, at_a2, _ = _circuit()
    wire2.run("b", [sw.CloseConnection(conn=2, reason="test")])
    assert at_a2 in wire2.gone and _relay(wire2).circuits == 0
    (done,) = wire2.outcomes("r", hop.CircuitRelayed)
    assert done.reason == "connection closed"


def test_a_released_reservation_is_never_renewed_nor_a_late_grant_kept() -> None:
    wire = _reserved(hop.RelayLimits(reservation_ttl_s=100))
    a = wire.nodes["a"]
    assert isinstance(a, rc.RelayClient)
    wire.run("a", a.release(1))
    assert wire.outcomes("a", rc.ReservationLost) == [rc.ReservationLost(relay=R.peer_id, reason="released")]
    assert a.reservation(1) is None
    wire.now = 80.0  # past the renewal point: nothing is asked again
    wire.run("a", a.tick(wire.now))
    assert len(wire.outcomes("a", rc.Reserved)) == 1
    assert a.release(1) == []  # nothing left to give up

    late = _network()
    client = late.nodes["a"]
    assert isinstance(client, rc.RelayClient)
    asked = client.reserve(1, late.now)  # RESERVE goes out, then the node turns public
    assert client.release(1) == []
    late.run("a", asked)
    assert late.outcomes("a", rc.Reserved) == []
    assert late.outcomes("a", rc.ReservationLost) == [rc.ReservationLost(relay=R.peer_id, reason="released")]
    assert client.reservation(1) is None


def test_only_usable_relay_addresses_make_circuit_addresses_and_few_of_them() -> None:
    offered = [
        "/ip4/0.0.0.0/tcp/4001",  # unspecified
        "/ip6/fe80::1/tcp/4001",  # IPv6 link-local
        "/ip4/203.0.113.5/tcp/0",  # no port
        "/ip4/203.0.113.5/udp/4001",  # not TCP
        f"/ip4/203.0.113.5/tcp/4001/p2p/{OTHER.peer_id}",  # another peer's
        f"/dns4/{'r' * 120}.example/tcp/4001",  # too long once a circuit address
        *(f"/ip4/203.0.113.5/tcp/{4001 + i}" for i in range(6)),
    ]
    relay = hop.Relay(R, lambda: [Multiaddr.parse(a) for a in offered], unix_offset_s=OFFSET)
    a = rc.RelayClient(A.peer_id, unix_offset_s=OFFSET)
    wire = Wire(nodes={"r": relay, "a": a, "b": rc.RelayClient(B.peer_id, unix_offset_s=OFFSET)})
    wire.connect("a", 1, "r", 10, x_seen="/ip4/198.51.100.7/tcp/50001", y_seen="/ip4/203.0.113.5/tcp/4001")
    wire.run("a", a.reserve(1, wire.now))
    (reserved,) = wire.outcomes("a", rc.Reserved)
    suffix = f"/p2p/{R.peer_id}/p2p-circuit/p2p/{A.peer_id}"
    assert [str(x) for x in reserved.addrs] == [
        f"/ip4/203.0.113.5/tcp/{4001 + i}{suffix}" for i in range(rc.CIRCUIT_ADDRS_PER_RELAY_MAX)
    ]
    assert a.refusals["relay_reservation_addrs"] == len(offered) - rc.CIRCUIT_ADDRS_PER_RELAY_MAX


def test_relays_to_reserve_skips_relayed_ones_before_counting_the_places() -> None:
    # "a" sorts first but is reached only through a relay: it must not take "b"'s place.
    pick = rc.relays_to_reserve(
        wanted=2, held=(), asking=(), candidates=[("a", False), ("c", True), ("b", True)]
    )
    assert pick == ("b", "c")
    assert rc.relays_to_reserve(wanted=2, held=("b",), asking=(), candidates=[("b", True), ("c", True)]) == (
        "c",
    )
    assert rc.relays_to_reserve(wanted=2, held=("b",), asking=("c",), candidates=[("d", True)]) == ()
    assert rc.relays_to_reserve(wanted=2, held=(), asking=(), candidates=[("b", True)], exclude="b") == ()


def test_a_connection_lost_with_a_renewal_in_flight_names_the_relay_once() -> None:
    wire = _reserved(hop.RelayLimits(reservation_ttl_s=100))
    a = wire.nodes["a"]
    assert isinstance(a, rc.RelayClient)
    asked = a.tick(76.0)  # the renewal goes out; the relay vanishes before it answers
    assert [type(e) for e in asked] == [sw.OpenStream]
    effects = a.on_event(sw.ConnectionDown(conn=1, peer=R.peer_id, reason="keep-alive timed out"), 90.0)
    assert [e.outcome for e in effects if isinstance(e, sw.Report)] == [
        rc.ReservationLost(relay=R.peer_id, reason="connection closed")
    ]
    assert a.reservation(1) is None
    # Relays that refused a moment ago rest: with every relay full, nothing is asked.
    assert (
        rc.relays_to_reserve(
            wanted=2, held=(), asking=(), candidates=[("b", True), ("c", True)], resting=("c",), exclude="b"
        )
        == ()
    )
