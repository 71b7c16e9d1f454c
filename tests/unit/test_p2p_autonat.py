"""AutoNAT v2: codec vectors, client and server behaviours through an in-test wire, hostile peers.

No sockets, threads or clock: `Wire` turns one side's effects into the other side's
events, and executes the server's `DialBackRequested` as the host would (a new
connection to the address, when something listens there and is reachable).
"""

from __future__ import annotations

import contextlib
import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyrsia.errors import ConfigError, ProtocolViolation
from pyrsia.p2p.behaviours.autonat import client as cl
from pyrsia.p2p.behaviours.autonat import messages as m
from pyrsia.p2p.behaviours.autonat import server as sv
from pyrsia.p2p.behaviours.autonat.reachability import Reachability, server_key
from pyrsia.p2p.identity import Identity
from pyrsia.p2p.swarm import behaviour as sw
from pyrsia.p2p.wire import varint
from pyrsia.p2p.wire.multiaddr import Multiaddr

Behaviour = cl.AutonatClient | sv.AutonatServer


def _random(seed: int) -> Callable[[int], bytes]:
    rng = random.Random(seed)
    return rng.randbytes


def _addr(text: str) -> Multiaddr:
    return Multiaddr.parse(text)


# -- the in-test wire ------------------------------------------------------------------


@dataclass(eq=False)
class Node:
    name: str
    ip: str
    reachable: bool = True
    seed: int = 0
    client: cl.AutonatClient = field(init=False)
    server: sv.AutonatServer = field(init=False)
    reports: list[object] = field(default_factory=list)
    bytes_written: int = 0

    def __post_init__(self) -> None:
        self.peer = Identity.from_seed(bytes([self.seed % 256]) * 32).peer_id
        self.client = cl.AutonatClient(_random(self.seed))
        self.server = sv.AutonatServer(_random(self.seed + 1000))

    @property
    def listen(self) -> Multiaddr:
        return _addr(f"/ip4/{self.ip}/tcp/4001")

    def behaviours(self) -> tuple[Behaviour, Behaviour]:
        return (self.client, self.server)

    def outcomes(self, kind: type) -> list:  # type: ignore[type-arg]
        return [r for r in self.reports if isinstance(r, kind)]


class Wire:
    """Connections between nodes; runs effects until nothing is left to do."""

    def __init__(self) -> None:
        self.now_s = 0.0
        self._next_conn = 0
        self._next_stream = 0
        self.links: dict[tuple[int, int], tuple[Node, int]] = {}  # (id(node), conn) -> (peer node, its conn)
        self.owners: dict[tuple[int, int, int], Behaviour] = {}  # (id(node), conn, stream)
        self.listeners: dict[Multiaddr, Node] = {}
        self.nodes: list[Node] = []
        self.queue: deque[tuple[Node, Behaviour, sw.Effect]] = deque()
        self.hold_dial_backs = False
        self.held: list[tuple[Node, sv.DialBackRequested]] = []
        self.filtered: list[Node] = []  # servers whose egress is filtered: every dial-back fails

    def add(self, node: Node) -> Node:
        self.nodes.append(node)
        self.listeners[node.listen] = node
        return node

    def connect(self, a: Node, b: Node, *, a_seen_as: Multiaddr | None = None) -> tuple[int, int]:
        """`a` dials `b`; `b` sees `a` at an ephemeral port of `a`'s IP (or `a_seen_as`)."""
        self._next_conn += 1
        ca = self._next_conn
        self._next_conn += 1
        cb = self._next_conn
        self.links[(id(a), ca)] = (b, cb)
        self.links[(id(b), cb)] = (a, ca)
        seen = a_seen_as or _addr(f"/ip4/{a.ip}/tcp/{50000 + ca}")
        self.deliver(a, sw.ConnectionUp(conn=ca, peer=b.peer, direction="outbound", remote=b.listen))
        self.deliver(b, sw.ConnectionUp(conn=cb, peer=a.peer, direction="inbound", remote=seen))
        self.run()
        return ca, cb

    def deliver(self, node: Node, event: sw.Event, only: Behaviour | None = None) -> None:
        for behaviour in (only,) if only is not None else node.behaviours():
            for effect in behaviour.on_event(event, self.now_s):
                self.queue.append((node, behaviour, effect))

    def push(self, node: Node, behaviour: Behaviour, effects: Sequence[sw.Effect]) -> None:
        self.queue.extend((node, behaviour, e) for e in effects)
        self.run()

    def run(self) -> None:
        while self.queue:
            node, behaviour, effect = self.queue.popleft()
            self._execute(node, behaviour, effect)

    def _execute(self, node: Node, behaviour: Behaviour, effect: sw.Effect) -> None:
        match effect:
            case sw.OpenStream(conn=conn, protocols=protocols, tag=tag):
                if (id(node), conn) not in self.links:
                    self.deliver(
                        node, sw.StreamGone(conn=conn, stream=None, tag=tag, reason="no conn"), behaviour
                    )
                    return
                peer, peer_conn = self.links[(id(node), conn)]
                answering = [b for b in peer.behaviours() if protocols[0] in b.protocols]
                if not answering:
                    self.deliver(
                        node, sw.StreamGone(conn=conn, stream=None, tag=tag, reason="refused"), behaviour
                    )
                    return
                self._next_stream += 1
                stream = self._next_stream
                self.owners[(id(node), conn, stream)] = behaviour
                self.owners[(id(peer), peer_conn, stream)] = answering[0]
                self.deliver(
                    peer, sw.InboundStream(conn=peer_conn, stream=stream, protocol=protocols[0]), answering[0]
                )
                self.deliver(
                    node, sw.StreamOpened(conn=conn, stream=stream, protocol=protocols[0], tag=tag), behaviour
                )
            case sw.Write(conn=conn, stream=stream, data=data):
                node.bytes_written += len(data)
                if (target := self._remote(node, conn, stream)) is not None:
                    self.deliver(
                        target[0], sw.StreamData(conn=target[1], stream=stream, data=data), target[2]
                    )
            case sw.CloseStream(conn=conn, stream=stream):
                if (target := self._remote(node, conn, stream)) is not None:
                    self.deliver(target[0], sw.StreamEnded(conn=target[1], stream=stream), target[2])
            case sw.ResetStream(conn=conn, stream=stream):
                target = self._remote(node, conn, stream)
                self.owners.pop((id(node), conn, stream), None)
                if target is not None:
                    self.owners.pop((id(target[0]), target[1], stream), None)
                    gone = sw.StreamGone(conn=target[1], stream=stream, tag=None, reason="reset")
                    self.deliver(target[0], gone, target[2])
            case sw.CloseConnection(conn=conn, reason=reason):
                link = self.links.pop((id(node), conn), None)
                if link is None:
                    return
                peer, peer_conn = link
                self.links.pop((id(peer), peer_conn), None)
                self.deliver(node, sw.ConnectionDown(conn=conn, peer=peer.peer, reason=reason))
                self.deliver(peer, sw.ConnectionDown(conn=peer_conn, peer=node.peer, reason=reason))
            case sw.Report(outcome=outcome):
                node.reports.append(outcome)
                if isinstance(outcome, sv.DialBackRequested):
                    if self.hold_dial_backs:
                        self.held.append((node, outcome))
                    else:
                        self.dial_back(node, outcome)

    def dial_back(self, server_node: Node, asked: sv.DialBackRequested) -> None:
        """What the host does: a new connection to the address, then tells the server."""
        target = self.listeners.get(asked.address)
        if target is None or not target.reachable or server_node in self.filtered:
            self.push(
                server_node, server_node.server, server_node.server.dial_back_failed(asked.tag, "refused", 0)
            )
            return
        conn, _ = self.connect(server_node, target)
        self.push(server_node, server_node.server, server_node.server.dial_back_connected(asked.tag, conn, 0))

    def _remote(self, node: Node, conn: int, stream: int) -> tuple[Node, int, Behaviour] | None:
        link = self.links.get((id(node), conn))
        if link is None:
            return None
        owner = self.owners.get((id(link[0]), link[1], stream))
        return None if owner is None else (link[0], link[1], owner)

    def probe(self, client: Node, conn: int, addresses: Sequence[Multiaddr]) -> cl.ProbeResult:
        before = len(client.outcomes(cl.ProbeResult))
        self.push(client, client.client, client.client.probe(conn, addresses, self.now_s))
        results = client.outcomes(cl.ProbeResult)
        assert len(results) == before + 1, "a probe ends in exactly one ProbeResult"
        return results[-1]


def _servers(wire: Wire, count: int, *, first_octet: int = 8) -> list[Node]:
    return [wire.add(Node(f"s{i}", f"{first_octet}.{i}.0.1", seed=10 + i)) for i in range(count)]


# -- codec -----------------------------------------------------------------------------


def test_byte_vectors_follow_the_protobuf_wire_format() -> None:
    # DialBack{nonce=1}: key 0x09 (field 1, fixed64), 8 bytes little-endian, behind length 9.
    assert m.encode_dial_back(1) == bytes.fromhex("09090100000000000000")
    # DialBackResponse{OK}: proto3 omits the default, so an empty message.
    assert m.encode_dial_back_response() == b"\x00"
    # Message{dialResponse{status=OK(200), addrIdx=0, dialStatus=OK(200)}}: field 2, 6 bytes inside.
    response = m.DialResponse(status=m.RESPONSE_OK, addr_idx=0, dial_status=m.DIAL_OK)
    assert m.encode(response) == bytes.fromhex("08120608c80118c801")
    # Message{dialDataRequest{addrIdx=1, numBytes=30000}}: field 3; 30000 = varint b0 ea 01.
    ask = m.DialDataRequest(addr_idx=1, num_bytes=30000)
    assert m.encode(ask) == bytes.fromhex("081a06080110b0ea01")
    # Message{dialRequest{addrs=[/ip4/1.2.3.4/tcp/80], nonce=2}}
    address = _addr("/ip4/1.2.3.4/tcp/80").to_bytes()
    assert address == bytes.fromhex("0401020304060050")
    request = m.DialRequest(addrs=(address,), nonce=2)
    inner = bytes.fromhex("0a08") + address + bytes.fromhex("110200000000000000")
    assert m.encode(request) == varint.prefixed(b"\x0a" + varint.prefixed(inner))


nonces = st.integers(0, 2**64 - 1)
messages = st.one_of(
    st.builds(
        m.DialRequest, addrs=st.lists(st.binary(max_size=40), max_size=m.ADDRS_MAX).map(tuple), nonce=nonces
    ),
    st.builds(
        m.DialResponse,
        status=st.sampled_from(sorted(m.KNOWN_RESPONSE_STATUSES)),
        addr_idx=st.integers(0, m.UINT32_MAX),
        dial_status=st.sampled_from(sorted(m.KNOWN_DIAL_STATUSES)),
    ),
    st.builds(m.DialDataRequest, addr_idx=st.integers(0, m.UINT32_MAX), num_bytes=st.integers(0, 2**63 - 1)),
    st.builds(m.DialDataResponse, data=st.binary(max_size=m.DIAL_DATA_CHUNK_BYTES_MAX)),
)


@given(message=messages)
def test_every_message_round_trips(message: m.Message) -> None:
    assert m.decode_body(m.encode_body(message)) == message


@given(nonce=nonces)
def test_dial_back_round_trips(nonce: int) -> None:
    encoded = m.encode_dial_back(nonce)
    length, start = varint.decode(encoded) or (0, 0)
    assert m.decode_dial_back(encoded[start : start + length]).nonce == nonce


@given(data=st.binary(max_size=200))
def test_garbage_is_a_violation_or_a_message_never_a_crash(data: bytes) -> None:
    with contextlib.suppress(ProtocolViolation):
        assert isinstance(
            m.decode_body(data), m.DialRequest | m.DialResponse | m.DialDataRequest | m.DialDataResponse
        )


def test_hostile_encodings_are_violations() -> None:
    two = m.encode_body(m.DialDataResponse(data=b"x")) + m.encode_body(m.DialDataResponse(data=b"y"))
    cases = {
        "no message": b"",
        "two messages in one oneof": two,
        "varint where a message belongs": bytes.fromhex("0805"),
        "uint32 over range": b"\x12\x06" + b"\x10" + varint.encode(2**32),
        "oversized dial data": b"\x22" + varint.prefixed(b"\x0a" + varint.prefixed(bytes(4097))),
        "too many addresses": b"\x0a" + varint.prefixed(b"".join(b"\x0a\x01\x00" for _ in range(33))),
        "nonce as a varint": b"\x0a\x02\x10\x01",
        "an address as a varint": b"\x0a\x02\x08\x01",
        "a status as bytes": b"\x12\x03\x0a\x01\x00",
        "wire type 3": b"\x0b",
        "truncated fixed64": b"\x0a\x03\x11\x01\x02",
    }
    for name, body in cases.items():
        with pytest.raises(ProtocolViolation):
            m.decode_body(body)
            pytest.fail(name)


# -- client and server through the wire --------------------------------------------------


def test_three_agreeing_servers_confirm_a_public_address() -> None:
    wire = Wire()
    me = wire.add(Node("me", "1.2.3.4", seed=1))
    results = []
    for server in _servers(wire, 3):
        conn, _ = wire.connect(me, server)
        results.append(wire.probe(me, conn, [me.listen]))
        if len(results) < 3:
            assert me.client.reachability == "unknown"
    assert [r.result for r in results] == ["reachable"] * 3
    assert all(r.address == me.listen for r in results)
    assert me.client.reachability == "public" and me.client.status(me.listen) == "reachable"
    (changed,) = me.outcomes(cl.ReachabilityChanged)
    assert changed.reachability == "public" and changed.reachable == (me.listen,)
    # No dial data was asked: the address is the IP the client connects from.
    assert not any(isinstance(r, sv.DialBackRequested) for r in me.reports)
    served = [r for s in wire.nodes[1:] for r in s.outcomes(sv.DialBackServed)]
    assert [s.dial_status for s in served] == [m.DIAL_OK] * 3
    # Every dial-back connection was closed by its server once done.
    assert len(wire.links) == 2 * 3


def test_a_node_behind_nat_is_private_after_three_failed_dial_backs() -> None:
    wire = Wire()
    me = wire.add(Node("me", "1.2.3.4", reachable=False, seed=1))
    for server in _servers(wire, 3):
        conn, _ = wire.connect(me, server)
        assert wire.probe(me, conn, [me.listen]).result == "unreachable"
    assert me.client.reachability == "private" and me.client.status(me.listen) == "unreachable"
    assert me.outcomes(cl.ReachabilityChanged)[-1].unreachable == (me.listen,)


def test_one_operator_with_many_peer_ids_counts_once() -> None:
    wire = Wire()
    me = wire.add(Node("me", "1.2.3.4", seed=1))
    for i in range(5):  # five peer ids, one /24
        server = wire.add(Node(f"sybil{i}", f"8.8.8.{i + 1}", seed=40 + i))
        conn, _ = wire.connect(me, server)
        assert wire.probe(me, conn, [me.listen]).result == "reachable"
    assert me.client.reachability == "unknown"


def test_dial_data_is_asked_and_paid_for_an_address_of_another_ip() -> None:
    wire = Wire()
    me = wire.add(Node("me", "1.2.3.4", seed=1))
    other_ip = Node("me-too", "1.2.3.99", seed=1)
    wire.listeners[other_ip.listen] = me  # our second address, on another IP
    (server,) = _servers(wire, 1)
    conn, _ = wire.connect(me, server)
    result = wire.probe(me, conn, [other_ip.listen])
    assert result.result == "reachable" and result.address == other_ip.listen
    # The server saw the request, asked for dial data, and only then dialled.
    (asked,) = server.outcomes(sv.DialBackRequested)
    assert asked.address == other_ip.listen
    assert sv.DIAL_DATA_BYTES_MIN <= me.bytes_written <= sv.DIAL_DATA_BYTES_MAX + 1000
    assert server.server.refusals == {} and me.client.refusals == {}
    # An address of the IP the client connects from costs nothing.
    me.bytes_written = 0
    assert wire.probe(me, conn, [me.listen]).result == "reachable"
    assert me.bytes_written < 1000


def test_dial_data_bytes_are_within_the_spec_range_and_paid_in_4096_byte_pieces() -> None:
    server = sv.AutonatServer(_random(5))
    client = cl.AutonatClient(_random(6))
    peer = Identity.from_seed(bytes(32)).peer_id
    server.on_event(
        sw.ConnectionUp(conn=1, peer=peer, direction="inbound", remote=_addr("/ip4/1.2.3.4/tcp/5")), 0
    )
    client.on_event(
        sw.ConnectionUp(conn=9, peer="srv", direction="outbound", remote=_addr("/ip4/8.0.0.1/tcp/1")), 0
    )
    (opened,) = client.probe(9, [_addr("/ip4/1.2.3.5/tcp/4001")], 0)
    assert isinstance(opened, sw.OpenStream)
    (write,) = client.on_event(sw.StreamOpened(conn=9, stream=3, protocol="", tag=opened.tag), 0)
    assert isinstance(write, sw.Write)
    server.on_event(sw.InboundStream(conn=1, stream=3, protocol=m.DIAL_REQUEST_PROTOCOL), 0)
    (ask,) = server.on_event(sw.StreamData(conn=1, stream=3, data=write.data), 0)
    assert isinstance(ask, sw.Write)
    body = _body(ask.data)
    decoded = m.decode_body(body)
    assert isinstance(decoded, m.DialDataRequest) and decoded.addr_idx == 0
    assert sv.DIAL_DATA_BYTES_MIN <= decoded.num_bytes <= sv.DIAL_DATA_BYTES_MAX
    (pay,) = client.on_event(sw.StreamData(conn=9, stream=3, data=ask.data), 0)
    assert isinstance(pay, sw.Write)
    pieces = _bodies(pay.data)
    sizes = [len(p.data) for p in pieces if isinstance(p, m.DialDataResponse)]
    assert len(sizes) == len(pieces) and max(sizes) == m.DIAL_DATA_CHUNK_BYTES_MAX
    assert sum(sizes) == decoded.num_bytes
    # Everything but the last piece leaves the server waiting; the last one makes it dial.
    assert server.on_event(sw.StreamData(conn=1, stream=3, data=pay.data[:-10]), 0) == []
    (dial,) = server.on_event(sw.StreamData(conn=1, stream=3, data=pay.data[-10:]), 0)
    assert isinstance(dial, sw.Report) and isinstance(dial.outcome, sv.DialBackRequested)


def test_an_unreachable_address_of_another_ip_is_reported_unreachable() -> None:
    wire = Wire()
    me = wire.add(Node("me", "1.2.3.4", seed=1))
    (server,) = _servers(wire, 1)
    conn, _ = wire.connect(me, server)
    result = wire.probe(me, conn, [_addr("/ip4/5.6.7.8/tcp/4001")])
    assert result.result == "unreachable"


def test_a_client_without_dial_back_support_gets_no_verdict() -> None:
    wire = Wire()
    me = wire.add(Node("me", "1.2.3.4", seed=1))
    (server,) = _servers(wire, 1)
    conn, _ = wire.connect(me, server)
    me.client.protocols = ()  # type: ignore[misc]
    result = wire.probe(me, conn, [me.listen])
    assert result.result == "no-verdict"
    assert me.client.reachability == "unknown"
    assert server.outcomes(sv.DialBackServed)[0].dial_status == m.DIAL_BACK_ERROR


def test_forced_reachability_overrides_the_answers() -> None:
    wire = Wire()
    me = wire.add(Node("me", "1.2.3.4", seed=1))
    me.client = cl.AutonatClient(_random(1), reachability="private")
    for server in _servers(wire, 3):
        conn, _ = wire.connect(me, server)
        assert wire.probe(me, conn, [me.listen]).result == "reachable"
    assert me.client.reachability == "private" and me.client.status(me.listen) == "reachable"
    assert cl.AutonatClient(_random(1), reachability="public").reachability == "public"
    with pytest.raises(ConfigError):
        cl.AutonatClient(_random(1), reachability="maybe")


def test_a_private_network_may_check_private_addresses_a_public_client_may_not() -> None:
    wire = Wire()
    lab = wire.add(Node("lab", "10.0.0.5", seed=1))
    servers = [wire.add(Node(f"l{i}", f"10.0.0.{10 + i}", seed=20 + i)) for i in range(3)]
    for server in servers:
        conn, _ = wire.connect(lab, server)
        assert wire.probe(lab, conn, [lab.listen]).result == "reachable"
    # Off the public internet servers count by peer id: the lab confirms itself.
    assert lab.client.reachability == "public"

    me = wire.add(Node("me", "1.2.3.4", seed=2))
    conn, _ = wire.connect(me, servers[0])
    assert wire.probe(
        me, conn, [_addr("/ip4/10.0.0.5/tcp/4001"), _addr("/ip4/127.0.0.1/tcp/4001")]
    ).result == ("refused")
    assert servers[0].server.refusals["autonat_no_dialable_address"] == 1


def test_the_server_dials_only_the_first_address_it_is_willing_to_dial() -> None:
    wire = Wire()
    me = wire.add(Node("me", "1.2.3.4", seed=1))
    (server,) = _servers(wire, 1)
    conn, _ = wire.connect(me, server)
    someone_else = Identity.from_seed(bytes([99]) * 32).peer_id
    addresses = [
        _addr("/ip4/10.1.1.1/tcp/4001"),  # private: refused for a public client
        _addr("/dns4/example.org/tcp/4001"),  # a name: not resolved
        _addr(f"/ip4/1.2.3.4/tcp/4001/p2p/{someone_else}"),  # another peer's
        _addr("/ip4/1.2.3.4/tcp/4001/p2p-circuit"),  # relayed
        me.listen,
        _addr("/ip4/1.2.3.4/tcp/9999"),
    ]
    result = wire.probe(me, conn, addresses)
    assert result.result == "reachable" and result.address == me.listen
    (served,) = server.outcomes(sv.DialBackServed)
    assert served.address == me.listen


# -- a hostile client ------------------------------------------------------------------

CLIENT = Identity.from_seed(bytes([7]) * 32).peer_id
VICTIM = _addr("/ip4/9.9.9.9/tcp/4001")


def _server(**limits: int) -> sv.AutonatServer:
    server = sv.AutonatServer(_random(3), **limits)  # type: ignore[arg-type]
    remote = _addr("/ip4/1.2.3.4/tcp/50000")
    for conn in range(1, 4):
        server.on_event(sw.ConnectionUp(conn=conn, peer=CLIENT, direction="inbound", remote=remote), 0)
    return server


def _body(data: bytes) -> bytes:
    (body,) = _split(data)
    return body


def _split(data: bytes) -> list[bytes]:
    reader = varint.LengthPrefixedReader(size_max=1 << 20)
    reader.feed(data)
    out = []
    while (body := reader.next_message()) is not None:
        out.append(body)
    assert reader.buffered == 0
    return out


def _bodies(data: bytes) -> list[m.Message]:
    return [m.decode_body(b) for b in _split(data)]


def _ask(
    server: sv.AutonatServer, conn: int, stream: int, addrs: list[Multiaddr], now_s: float = 0
) -> list[sw.Effect]:
    effects = list(
        server.on_event(sw.InboundStream(conn=conn, stream=stream, protocol=m.DIAL_REQUEST_PROTOCOL), now_s)
    )
    if effects:
        return effects
    request = m.DialRequest(addrs=tuple(a.to_bytes() for a in addrs), nonce=42)
    return list(server.on_event(sw.StreamData(conn=conn, stream=stream, data=m.encode(request)), now_s))


def _status(effects: Sequence[sw.Effect]) -> int:
    write = effects[0]
    assert isinstance(write, sw.Write) and isinstance(effects[1], sw.CloseStream)
    response = m.decode_body(_body(write.data))
    assert isinstance(response, m.DialResponse)
    return response.status


def test_a_lying_client_cannot_make_the_server_dial_a_third_party_without_dial_data() -> None:
    server = _server()
    (ask,) = _ask(server, 1, 3, [VICTIM])
    assert isinstance(ask, sw.Write) and isinstance(m.decode_body(_body(ask.data)), m.DialDataRequest)
    # Paying less than asked, then hanging up: no dial, counted.
    short = m.encode(m.DialDataResponse(data=bytes(4096)))
    assert server.on_event(sw.StreamData(conn=1, stream=3, data=short), 1) == []
    assert server.on_event(sw.StreamEnded(conn=1, stream=3), 2) == [sw.CloseStream(conn=1, stream=3)]
    assert server.refusals["autonat_dial_data_unpaid"] == 1
    # Sending another request instead of data is a violation.
    _ask(server, 1, 5, [VICTIM], 3)
    again = m.encode(m.DialRequest(addrs=(VICTIM.to_bytes(),), nonce=1))
    assert server.on_event(sw.StreamData(conn=1, stream=5, data=again), 3) == [
        sw.ResetStream(conn=1, stream=5)
    ]
    assert server.refusals["autonat_malformed"] == 1
    # Not paying at all: the request times out.
    _ask(server, 1, 7, [VICTIM], 4)
    assert server.tick(4 + sv.REQUEST_TIMEOUT_S + 1) == [sw.ResetStream(conn=1, stream=7)]
    assert server.refusals["autonat_request_timeout"] == 1
    assert server.dial_backs == 0


def test_requests_over_the_per_peer_rate_are_rejected_then_the_connection_closed() -> None:
    server = _server(requests_per_peer_per_minute_max=3)
    statuses = []
    for n in range(3):
        effects = _ask(server, 1, 2 * n + 1, [_addr("/ip4/10.0.0.1/tcp/1")], n)  # refused: private
        statuses.append(_status(effects))
    assert statuses == [m.E_DIAL_REFUSED] * 3
    rejected = [_ask(server, 1, 100 + 2 * n, [VICTIM], 10) for n in range(sv.REFUSALS_PER_MINUTE_MAX + 1)]
    assert all(_status(e) == m.E_REQUEST_REJECTED for e in rejected[:-1])
    assert rejected[-1] == [sw.CloseConnection(conn=1, reason="autonat requests in a loop")]
    assert server.refusals["autonat_peer_rate"] == sv.REFUSALS_PER_MINUTE_MAX + 1
    assert server.refusals["autonat_flood"] == 1
    # A minute later the peer may ask again.
    (ask,) = _ask(server, 2, 999, [VICTIM], 200)
    assert isinstance(m.decode_body(_body(ask.data)), m.DialDataRequest)


def test_one_request_per_peer_at_once_and_a_total_rate() -> None:
    server = _server(requests_per_minute_max=2)
    assert isinstance(_ask(server, 1, 1, [VICTIM])[0], sw.Write)  # asked for dial data, still open
    assert _status(_ask(server, 2, 1, [VICTIM])) == m.E_REQUEST_REJECTED
    assert server.refusals["autonat_peer_concurrent"] == 1
    other = Identity.from_seed(bytes([8]) * 32).peer_id
    for conn in (7, 8):
        remote = _addr(f"/ip4/5.5.5.{conn}/tcp/1")
        server.on_event(
            sw.ConnectionUp(conn=conn, peer=f"{other}{conn}", direction="inbound", remote=remote), 0
        )
    assert isinstance(_ask(server, 7, 1, [VICTIM])[0], sw.Write)
    assert _status(_ask(server, 8, 1, [VICTIM])) == m.E_REQUEST_REJECTED
    assert server.refusals["autonat_rate"] == 1


def test_at_most_n_dial_backs_at_once() -> None:
    server = sv.AutonatServer(_random(3), dial_backs_concurrent_max=2)
    for conn in range(1, 4):
        remote = _addr(f"/ip4/1.2.3.{conn}/tcp/50000")
        server.on_event(sw.ConnectionUp(conn=conn, peer=f"p{conn}", direction="inbound", remote=remote), 0)
    dials = [_ask(server, conn, 1, [_addr(f"/ip4/1.2.3.{conn}/tcp/4001")]) for conn in (1, 2)]
    assert all(isinstance(d[0], sw.Report) for d in dials) and server.dial_backs == 2
    assert _status(_ask(server, 3, 1, [_addr("/ip4/1.2.3.3/tcp/4001")])) == m.E_REQUEST_REJECTED
    assert server.refusals["autonat_dial_backs_busy"] == 1
    # A dial the host never answers ends with E_DIAL_ERROR at the timeout, freeing the slot.
    effects = server.tick(sv.DIAL_BACK_TIMEOUT_S + 1)
    statuses = [m.decode_body(_body(e.data)) for e in effects if isinstance(e, sw.Write)]
    assert statuses == [m.DialResponse(status=m.RESPONSE_OK, addr_idx=0, dial_status=m.DIAL_ERROR)] * 2
    assert server.dial_backs == 0
    # A late connection for a finished dial-back is closed, not used.
    tag = next(e.outcome.tag for e in dials[0] if isinstance(e, sw.Report))  # type: ignore[attr-defined]
    assert server.dial_back_connected(tag, 77, 20) == [
        sw.CloseConnection(conn=77, reason="autonat dial-back no longer wanted")
    ]


def test_oversized_and_malformed_requests_reset_only_their_stream() -> None:
    server = _server()
    hostile = {
        "length over 8192": varint.encode(m.MESSAGE_BYTES_MAX + 1),
        "garbage": varint.prefixed(b"\xff\xff\xff"),
        "a response instead of a request": m.encode(m.DialResponse(status=m.RESPONSE_OK)),
    }
    for n, data in enumerate(hostile.values()):
        server.on_event(sw.InboundStream(conn=1, stream=n, protocol=m.DIAL_REQUEST_PROTOCOL), 0)
        assert server.on_event(sw.StreamData(conn=1, stream=n, data=data), 0) == [
            sw.ResetStream(conn=1, stream=n)
        ]
    assert server.refusals["autonat_malformed"] == len(hostile)
    # An oversized piece of dial data.
    _ask(server, 1, 50, [VICTIM])
    big = b"\x22" + varint.prefixed(b"\x0a" + varint.prefixed(bytes(5000)))
    assert server.on_event(sw.StreamData(conn=1, stream=50, data=varint.prefixed(big)), 0) == [
        sw.ResetStream(conn=1, stream=50)
    ]
    assert server.refusals["autonat_malformed"] == len(hostile) + 1


def test_the_dial_back_connection_closing_early_is_a_dial_back_error() -> None:
    wire = Wire()
    me = wire.add(Node("me", "1.2.3.4", seed=1))
    (server,) = _servers(wire, 1)
    conn, _ = wire.connect(me, server)
    wire.hold_dial_backs = True
    wire.push(me, me.client, me.client.probe(conn, [me.listen], 0))
    ((server_node, asked),) = wire.held
    dial_conn, my_conn = wire.connect(server_node, me)
    assert server.server.dial_back_connected(asked.tag, dial_conn, 0) == [
        sw.OpenStream(conn=dial_conn, protocols=(m.DIAL_BACK_PROTOCOL,), tag=asked.tag)
    ]
    # The new connection drops before the dial-back stream opens.
    wire.push(me, me.client, [sw.CloseConnection(conn=my_conn, reason="gone")])
    assert server.server.dial_backs == 0
    (result,) = me.outcomes(cl.ProbeResult)
    assert result.result == "no-verdict"


# -- a hostile server ------------------------------------------------------------------


def _client(**limits: int) -> tuple[cl.AutonatClient, int, int]:
    """A client with a probe under way on conn 1, stream 3; returns it, its nonce, and stream."""
    client = cl.AutonatClient(_random(4), **limits)  # type: ignore[arg-type]
    # conn 1: ours to the server; conn 2: the server's dial-back connection to us.
    for conn, ip, direction in ((1, "8.0.0.1", "outbound"), (2, "8.0.1.1", "inbound")):
        client.on_event(
            sw.ConnectionUp(
                conn=conn, peer=f"srv{conn}", direction=direction, remote=_addr(f"/ip4/{ip}/tcp/1")
            ),
            0,
        )
    (opened,) = client.probe(1, [_addr("/ip4/1.2.3.4/tcp/4001")], 0)
    assert isinstance(opened, sw.OpenStream)
    (write,) = client.on_event(sw.StreamOpened(conn=1, stream=3, protocol="", tag=opened.tag), 0)
    assert isinstance(write, sw.Write)
    request = m.decode_body(_body(write.data))
    assert isinstance(request, m.DialRequest)
    return client, request.nonce, 3


def _dial_back(client: cl.AutonatClient, conn: int, stream: int, nonce: int) -> Sequence[sw.Effect]:
    client.on_event(sw.InboundStream(conn=conn, stream=stream, protocol=m.DIAL_BACK_PROTOCOL), 0)
    return client.on_event(sw.StreamData(conn=conn, stream=stream, data=m.encode_dial_back(nonce)), 0)


def _respond(client: cl.AutonatClient, dial_status: int, status: int = m.RESPONSE_OK) -> cl.ProbeResult:
    response = m.encode(m.DialResponse(status=status, addr_idx=0, dial_status=dial_status))
    effects = client.on_event(sw.StreamData(conn=1, stream=3, data=response), 0)
    assert effects[0] == sw.CloseStream(conn=1, stream=3)
    results = [
        e.outcome for e in effects if isinstance(e, sw.Report) and isinstance(e.outcome, cl.ProbeResult)
    ]
    return results[0]


def test_the_dial_back_with_our_nonce_is_answered_and_closed() -> None:
    client, nonce, _ = _client()
    assert list(_dial_back(client, 2, 8, nonce)) == [
        sw.Write(conn=2, stream=8, data=b"\x00"),
        sw.CloseStream(conn=2, stream=8),
    ]
    assert _respond(client, m.DIAL_OK).result == "reachable"


def test_a_wrong_nonce_on_dial_back_is_ignored_and_a_claimed_success_discarded() -> None:
    client, nonce, _ = _client()
    assert list(_dial_back(client, 2, 8, nonce ^ 1)) == [sw.ResetStream(conn=2, stream=8)]
    assert client.refusals["autonat_dial_back_unknown_nonce"] == 1
    result = _respond(client, m.DIAL_OK)
    assert result.result == "failed" and client.refusals["autonat_unverified_dial_ok"] == 1
    assert client.reachability == "unknown" and client.status(_addr("/ip4/1.2.3.4/tcp/4001")) == "unknown"


def test_unknown_statuses_are_discarded() -> None:
    client, _, _ = _client()
    assert _respond(client, 250).result == "failed"
    client, _, _ = _client()
    assert _respond(client, m.DIAL_OK, status=7).result == "failed"
    assert client.refusals["autonat_unknown_status"] == 1


def test_the_client_refuses_to_pay_more_dial_data_than_its_bound() -> None:
    client, _, _ = _client(dial_data_bytes_max=50_000)
    ask = m.encode(m.DialDataRequest(addr_idx=0, num_bytes=60_000))
    effects = client.on_event(sw.StreamData(conn=1, stream=3, data=ask), 0)
    assert effects[0] == sw.ResetStream(conn=1, stream=3)
    assert client.refusals["autonat_dial_data_too_much"] == 1
    client, _, _ = _client()
    bad_index = m.encode(m.DialDataRequest(addr_idx=5, num_bytes=30_000))
    assert client.on_event(sw.StreamData(conn=1, stream=3, data=bad_index), 0)[0] == sw.ResetStream(
        conn=1, stream=3
    )
    assert client.refusals["autonat_malformed"] == 1


def test_dial_back_floods_and_oversized_dial_backs_are_refused() -> None:
    client, _, _ = _client(dial_back_streams_max=4)
    for stream in range(4):
        assert (
            client.on_event(sw.InboundStream(conn=2, stream=stream, protocol=m.DIAL_BACK_PROTOCOL), 0) == ()
        )
    assert client.on_event(sw.InboundStream(conn=2, stream=9, protocol=m.DIAL_BACK_PROTOCOL), 0) == [
        sw.ResetStream(conn=2, stream=9)
    ]
    assert client.refusals["autonat_dial_back_streams"] == 1
    oversized = varint.encode(m.DIAL_BACK_BYTES_MAX + 1) + bytes(10)
    assert client.on_event(sw.StreamData(conn=2, stream=0, data=oversized), 0) == [
        sw.ResetStream(conn=2, stream=0)
    ]
    assert client.refusals["autonat_dial_back_malformed"] == 1
    # A freed place takes a new stream again.
    assert client.on_event(sw.InboundStream(conn=2, stream=10, protocol=m.DIAL_BACK_PROTOCOL), 0) == ()


def test_a_probe_times_out_and_one_probe_per_connection() -> None:
    client, _, _ = _client()
    assert client.probe(1, [_addr("/ip4/1.2.3.4/tcp/4001")], 0) == []
    effects = client.tick(cl.PROBE_TIMEOUT_S + 1)
    assert effects[0] == sw.ResetStream(conn=1, stream=3)
    result = effects[1]
    assert isinstance(result, sw.Report) and result.outcome == cl.ProbeResult(
        server="srv1", result="failed", detail="timed out"
    )


# -- the tally ---------------------------------------------------------------------------


def test_three_of_the_last_five_distinct_servers_decide() -> None:
    tally = Reachability()
    address = _addr("/ip4/1.2.3.4/tcp/4001")
    for n, verdict in enumerate([True, True, False, False]):
        tally.record(address, f"s{n}", reachable=verdict, now_s=n)
    assert tally.status(address) == "unknown"
    tally.record(address, "s0", reachable=False, now_s=5)  # s0 changes its mind: one vote still
    assert tally.status(address) == "unreachable" and tally.reachability == "private"
    for n in range(5, 8):  # the network changed: three fresh answers flip it
        tally.record(address, f"s{n}", reachable=True, now_s=n)
    assert tally.status(address) == "reachable" and tally.reachability == "public"
    tally.expire(8 + tally.ttl_s)
    assert tally.status(address) == "unknown" and tally.reachability == "unknown"


@given(answers=st.lists(st.tuples(st.integers(0, 9), st.booleans()), max_size=60))
def test_the_tally_never_holds_more_than_its_window_nor_both_verdicts(
    answers: list[tuple[int, bool]],
) -> None:
    tally = Reachability()
    address = _addr("/ip4/1.2.3.4/tcp/4001")
    for n, (server, verdict) in enumerate(answers):
        tally.record(address, f"s{server}", reachable=verdict, now_s=n)
        recent: dict[str, bool] = {}
        for s, v in answers[: n + 1]:
            recent.pop(f"s{s}", None)
            recent[f"s{s}"] = v
        window = list(recent.values())[-5:]
        expected = (
            "reachable"
            if window.count(True) >= 3
            else "unreachable"
            if window.count(False) >= 3
            else "unknown"
        )
        assert tally.status(address) == expected


def test_the_tally_bounds_its_addresses_and_checks_its_settings() -> None:
    tally = Reachability(addresses_max=2)
    for port in range(1, 5):
        tally.record(_addr(f"/ip4/1.2.3.4/tcp/{port}"), "s", reachable=True, now_s=0)
    assert tally.dropped["autonat_addresses_full"] == 2
    with pytest.raises(ConfigError):
        Reachability(window=4, confirmations_min=2)
    assert server_key("p", _addr("/ip4/8.8.8.8/tcp/1")) == server_key("q", _addr("/ip4/8.8.8.9/tcp/1"))
    assert server_key("p", _addr("/ip4/10.0.0.1/tcp/1")) != server_key("q", _addr("/ip4/10.0.0.1/tcp/1"))


def test_a_client_hanging_up_mid_dial_back_gets_no_answer_but_the_dial_back_ends_cleanly() -> None:
    server = sv.AutonatServer(_random(3))
    remote = _addr("/ip4/1.2.3.4/tcp/50000")
    server.on_event(sw.ConnectionUp(conn=1, peer=CLIENT, direction="inbound", remote=remote), 0)
    (dial,) = _ask(server, 1, 3, [_addr("/ip4/1.2.3.4/tcp/4001")])
    assert isinstance(dial, sw.Report) and isinstance(dial.outcome, sv.DialBackRequested)
    # Surplus dial data after the dial started is ignored; a reset of the request stream orphans it.
    surplus = m.encode(m.DialDataResponse(data=b"x"))
    assert server.on_event(sw.StreamData(conn=1, stream=3, data=surplus), 0) == []
    assert list(server.on_event(sw.StreamGone(conn=1, stream=3, tag=None, reason="reset"), 0)) == []
    assert server.dial_backs == 1
    server.dial_back_connected(dial.outcome.tag, 9, 0)
    (nonce,) = server.on_event(sw.StreamOpened(conn=9, stream=2, protocol="", tag=dial.outcome.tag), 0)
    assert nonce == sw.Write(conn=9, stream=2, data=m.encode_dial_back(42))
    done = server.on_event(sw.StreamData(conn=9, stream=2, data=m.encode_dial_back_response()), 0)
    assert done == [
        sw.CloseStream(conn=9, stream=2),
        sw.CloseConnection(conn=9, reason="autonat dial-back done"),
    ]
    assert server.dial_backs == 0


class _ClaimsSuccess(sv.AutonatServer):
    """A lying server: answers that every dial-back worked, without dialling."""

    def _dial(self, request: sv._Request, now_s: float) -> list[sw.Effect]:
        request.state = "dialing"
        return self._finish(request, m.DIAL_OK)


@pytest.mark.parametrize("seed", range(30))
def test_two_lying_servers_of_seven_never_decide_the_verdict(seed: int) -> None:
    rng = random.Random(seed)
    wire = Wire()
    reachable = rng.random() < 0.5
    me = wire.add(Node("me", "1.2.3.4", reachable=reachable, seed=1))
    servers = _servers(wire, 7)
    liars = rng.sample(servers, rng.randint(0, 2))
    for liar in liars:
        if rng.random() < 0.5:
            liar.server = _ClaimsSuccess(_random(seed))
        else:
            wire.filtered.append(liar)
    rng.shuffle(servers)
    for server in servers:
        conn, _ = wire.connect(me, server)
        wire.probe(me, conn, [me.listen])
    expected = ("reachable", "public") if reachable else ("unreachable", "private")
    assert (me.client.status(me.listen), me.client.reachability) == expected, f"seed={seed}"
    assert me.client.refusals["autonat_unverified_dial_ok"] == sum(
        isinstance(s.server, _ClaimsSuccess) for s in liars
    )


def test_a_nonce_on_a_connection_we_dialled_or_a_relayed_one_proves_nothing() -> None:
    client, nonce, _ = _client()  # the probe went out on conn 1, which we dialled
    relayed = _addr("/ip4/9.9.9.9/tcp/4001/p2p/" + Identity.from_seed(b"r" * 32).peer_id + "/p2p-circuit")
    client.on_event(sw.ConnectionUp(conn=5, peer="s", direction="inbound", remote=relayed, relayed=True), 0)
    for conn, stream in ((1, 8), (5, 10)):
        opened = client.on_event(sw.InboundStream(conn=conn, stream=stream, protocol=m.DIAL_BACK_PROTOCOL), 0)
        assert list(opened) == [sw.ResetStream(conn=conn, stream=stream)]
        assert (
            client.on_event(sw.StreamData(conn=conn, stream=stream, data=m.encode_dial_back(nonce)), 0) == ()
        )
    assert client.refusals["autonat_dial_back_not_inbound"] == 2
    result = _respond(client, m.DIAL_OK)
    assert result.result == "failed" and client.refusals["autonat_unverified_dial_ok"] == 1
    # The same nonce on a connection the server made to us counts.
    client, nonce, _ = _client()
    assert sw.CloseStream(conn=2, stream=8) in list(_dial_back(client, 2, 8, nonce))
    assert _respond(client, m.DIAL_OK).result == "reachable"
