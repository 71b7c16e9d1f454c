"""NAT traversal under bad input: an attacker speaks relay, AutoNAT and DCUtR badly to real Hosts.

Every attacker here is a real `Host` on loopback (or on this machine's own non-loopback
address, where a case needs another network group) that writes the protocols' messages
itself on streams it opens, or answers with them from a handler, instead of leaving the
talking to its behaviours. Each case checks what the spec says goes on the wire (a
status code, or a reset stream), the refusal the victim counts by name, and that the
victim still serves an honest peer afterwards.

- circuit relay v2 (libp2p/specs relay/circuit-v2.md): reservation floods from many
  peer ids (the total limit) and from one IP group, CONNECT to the relay itself, to
  the initiator itself and to a peer without a reservation, hop requests to a private
  node over a relayed connection (it offers no hop; never reserved on), a circuit past its
  duration limit, and a relay whose reservation lists many, long or unusable
  addresses (the node must neither advertise them nor swell its identify past what
  peers take);
- AutoNAT v2 (autonat/autonat-v2.md): a dial-request for an address of another IP is
  answered with a dial-data request and dials nothing until the data is paid; dial-data
  requests are bounded per minute, so the server's bytes to third parties stay bounded;
- DCUtR (relay/DCUtR.md): CONNECT answers that are garbage, too large, with too many or
  too long addresses, or only addresses the node must not dial (through a relay on
  the LAN, loopback ones too), and a dcutr stream on a direct connection;
- identify: one lying observer (many peer ids, one network group) never gets its
  address advertised (identify to a third peer; `listen_addrs` and `address_kinds`,
  which are what `pyrsia status` shows), nor crowds the few addresses a DCUtR CONNECT
  offers;
- reachability turning private → public drops the reservations and the circuit
  addresses; public → private reserves again (verdicts from real AutoNAT servers).
"""

from __future__ import annotations

import os
import queue
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace

import pytest

from pyrsia.errors import PeerError
from pyrsia.p2p.behaviours import dcutr, identify
from pyrsia.p2p.behaviours.autonat import messages as am
from pyrsia.p2p.behaviours.autonat import server as autonat_server
from pyrsia.p2p.behaviours.relay import client as relay_client
from pyrsia.p2p.behaviours.relay import messages as rm
from pyrsia.p2p.behaviours.relay.hop import RelayLimits
from pyrsia.p2p.identity import Identity
from pyrsia.p2p.swarm.host import Host, HostConfig, Stream
from pyrsia.p2p.swarm.interfaces import interface_addresses
from pyrsia.p2p.wire import varint
from pyrsia.p2p.wire.multiaddr import Multiaddr, tcp
from tests.support.wait import eventually

ECHO = "/test/echo/1.0.0"
RESERVE = rm.HopMessage(type=rm.HopType.RESERVE)


def _echo(stream: Stream) -> None:
    while data := stream.read():
        stream.write(data)


def _host(**changes: object) -> Host:
    settings: dict[str, object] = {"listen_host": "127.0.0.1", "listen_port": 0, **changes}
    return Host(Identity.from_seed(os.urandom(32)), HostConfig(**settings))  # type: ignore[arg-type]


def _at(host: Host, ip: str = "127.0.0.1") -> str:
    return str(tcp(ip, host.listen_port, host.peer_id))


def _own_ip(version: int) -> str | None:
    """An address of this machine off loopback (another network group than 127.0.0.0/24)."""
    for found in interface_addresses():
        if found.version == version and not found.ip.startswith(("127.", "::1", "fe80:")):
            return found.ip
    return None


def _hop(attacker: Host, peer: str, request: rm.HopMessage) -> rm.HopMessage:
    """One hop request written by hand on a stream of the attacker's; the relay's STATUS."""
    stream = attacker.open_stream(peer, [rm.HOP_PROTOCOL_ID])
    stream.write(rm.frame(request))
    body = stream.read_message(rm.MESSAGE_BYTES_MAX, timeout=20)
    assert body is not None, "the relay closed the hop stream without a STATUS"
    return rm.HopMessage.decode(body)


def _connect_to(target: str) -> rm.HopMessage:
    return rm.HopMessage(type=rm.HopType.CONNECT, peer=rm.Peer(id=target))


def _circuit_addresses(private: Host, count: int = 1) -> list[str]:
    eventually(lambda: len(private.address_kinds()["relayed"]) == count, lambda: f"{private.address_kinds()}")
    return private.address_kinds()["relayed"]


def _reached_through(relay: Host, private: Host, public: Host) -> None:
    """The honest path still works: `public` reaches `private` through `relay` and echoes."""
    (address,) = [a for a in _circuit_addresses(private) if f"/p2p/{relay.peer_id}/" in a]
    assert public.connect(address) == private.peer_id
    stream = public.open_stream(private.peer_id, [ECHO])
    stream.write(b"honest")
    stream.close()
    assert stream.read_exactly(6, timeout=20) == b"honest"


def _stop_all(*hosts: Host) -> None:
    for host in hosts:
        host.stop()


# -- circuit relay v2: reservations ---------------------------------------------------------


def test_a_reservation_flood_from_many_peer_ids_meets_the_total_limit() -> None:
    limit = 3
    relay = _host(relay_limits=RelayLimits(reservations_max=limit), hole_punching=False).start()
    attackers = [_host(relay_service=False, hole_punching=False).start() for _ in range(limit + 2)]
    private = _host(reachability="private", relay_service=False, hole_punching=False)
    public = _host(relay_service=False, hole_punching=False)
    private.set_handler(ECHO, _echo)
    try:
        statuses = []
        for attacker in attackers:
            attacker.connect(_at(relay))
            statuses.append(_hop(attacker, relay.peer_id, RESERVE).status)
        # libp2p/specs relay/circuit-v2.md: a reservation refused "because there are too
        # many reservations" is RESERVATION_REFUSED.
        assert statuses == [rm.Status.OK] * limit + [rm.Status.RESERVATION_REFUSED] * 2
        assert relay.stats().refusals["relay_reservations"] == 2
        assert relay.stats().relay["reservations_granted"] == limit

        # The flood's reservations die with its connections; an honest node then reserves.
        _stop_all(*attackers)
        eventually(lambda: not any(relay.is_connected(a.peer_id) for a in attackers))
        for host in (private, public):
            host.start().connect(_at(relay))
        _reached_through(relay, private, public)
        assert relay.stats().relay["reservations_granted"] == limit + 1
    finally:
        _stop_all(public, private, *attackers, relay)


def test_reservations_from_one_ip_group_meet_the_per_group_limit() -> None:
    other_ip = _own_ip(4)
    if other_ip is None:
        pytest.skip("no IPv4 address off loopback: the honest node needs another /24")
    per_group = 2
    limits = RelayLimits(reservations_per_ip_group_max=per_group)
    relay = _host(listen_host="0.0.0.0", relay_limits=limits, hole_punching=False).start()
    attackers = [_host(relay_service=False, hole_punching=False).start() for _ in range(per_group + 1)]
    private = _host(reachability="private", relay_service=False, hole_punching=False)
    public = _host(relay_service=False, hole_punching=False)
    private.set_handler(ECHO, _echo)
    try:
        statuses = []
        for attacker in attackers:  # every one from 127.0.0.1: one IP group
            attacker.connect(_at(relay))
            statuses.append(_hop(attacker, relay.peer_id, RESERVE).status)
        assert statuses == [rm.Status.OK] * per_group + [rm.Status.RESERVATION_REFUSED]
        assert relay.stats().refusals["relay_reservations_per_ip_group"] == 1

        # While the group's reservations are held, a node from another network still reserves.
        private.start().connect(_at(relay, other_ip))
        public.start().connect(_at(relay))
        _reached_through(relay, private, public)
        assert all(relay.is_connected(a.peer_id) for a in attackers)
    finally:
        _stop_all(public, private, *attackers, relay)


# -- circuit relay v2: CONNECT ----------------------------------------------------------------


@pytest.fixture
def relayed() -> Iterator[tuple[Host, Host, Host]]:
    """R relays; B is private (and relays too, so it speaks hop); A is connected only to R."""
    relay = _host(hole_punching=False)
    private = _host(reachability="private", hole_punching=False)
    public = _host(
        reachability="private", relay_reservations_wanted=2, relay_service=False, hole_punching=False
    )
    private.set_handler(ECHO, _echo)
    for host in (relay, private, public):
        host.start()
    try:
        for host in (private, public):
            host.connect(_at(relay))
        yield relay, private, public
    finally:
        _stop_all(public, private, relay)


def test_connect_to_the_relay_to_oneself_or_to_a_peer_without_a_reservation_is_refused(
    relayed: tuple[Host, Host, Host],
) -> None:
    relay, private, public = relayed
    _circuit_addresses(private)
    stranger = Identity.from_seed(os.urandom(32)).peer_id
    assert _hop(public, relay.peer_id, _connect_to(relay.peer_id)).status == rm.Status.PERMISSION_DENIED
    assert _hop(public, relay.peer_id, _connect_to(public.peer_id)).status == rm.Status.PERMISSION_DENIED
    assert _hop(public, relay.peer_id, _connect_to(stranger)).status == rm.Status.NO_RESERVATION
    refusals = relay.stats().refusals
    assert refusals["relay_connect_self"] == 2 and refusals["relay_no_reservation"] == 1
    assert relay.stats().relay["circuits_spliced"] == 0
    _reached_through(relay, private, public)


def test_a_private_relay_capable_node_offers_no_hop_not_even_over_a_relayed_connection(
    relayed: tuple[Host, Host, Host],
) -> None:
    _, private, public = relayed
    (circuit,) = _circuit_addresses(private)
    _circuit_addresses(public)  # A is private too: it holds its one reservation, on R
    assert public.connect(circuit) == private.peer_id
    info = public.wait_identified(private.peer_id)
    # B has relay_service on but is private: nobody could dial a reservation on it, so it
    # offers no hop at all (the hop core's own refusal of a hop over a relayed
    # connection, PERMISSION_DENIED, is a unit test: a public node is never reached
    # through a relay here).
    assert info.relayed and rm.HOP_PROTOCOL_ID not in info.protocols
    assert rm.HOP_PROTOCOL_ID not in private.protocols

    # A wants a second reservation, yet never asks B. A ping over that connection
    # follows any hop stream A would have opened, in the same order.
    public.ping(private.peer_id)
    assert private.stats().relay.get("reservations_granted", 0) == 0
    assert public.stats().reservations == 1

    # Asked by hand over the relayed connection, B does not speak hop.
    with pytest.raises(PeerError):
        _hop(public, private.peer_id, RESERVE)
    assert private.stats().relay.get("reservations_granted", 0) == 0

    stream = public.open_stream(private.peer_id, [ECHO])
    stream.write(b"still here")
    stream.close()
    assert stream.read_exactly(10, timeout=20) == b"still here"


def test_a_circuit_past_its_duration_is_reset_at_both_ends() -> None:
    duration_s = 5  # room for the circuit to open and echo once on a loaded machine
    relay = _host(relay_limits=RelayLimits(circuit_duration_s=duration_s), hole_punching=False)
    private = _host(reachability="private", relay_service=False, hole_punching=False)
    public = _host(relay_service=False, hole_punching=False)
    private.set_handler(ECHO, _echo)
    for host in (relay, private, public):
        host.start()
    try:
        for host in (private, public):
            host.connect(_at(relay))
        (circuit,) = _circuit_addresses(private)
        assert public.connect(circuit) == private.peer_id
        stream = public.open_stream(private.peer_id, [ECHO])
        stream.write(b"before")
        assert stream.read_exactly(6, timeout=20) == b"before"

        # The relay resets both legs once the circuit is `duration_s` old: each end loses
        # the connection that ran over it, and the open stream fails.
        eventually(
            lambda: not public.is_connected(private.peer_id) and not private.is_connected(public.peer_id),
            lambda: (
                f"public {public.peer_info(private.peer_id)}, private {private.peer_info(public.peer_id)}"
            ),
        )
        with pytest.raises(PeerError):
            stream.write(b"after", timeout=5)
            stream.read(6, timeout=5)
        assert relay.stats().refusals["relay_circuit_duration"] >= 1
        eventually(lambda: relay.stats().circuits_relayed == 0)

        # The reservation outlives the circuit: a new one works at once.
        assert public.connect(circuit) == private.peer_id
        assert public.ping(private.peer_id) > 0
    finally:
        _stop_all(public, private, relay)


# -- AutoNAT v2 -------------------------------------------------------------------------------


class _ThirdParty:
    """A listener on another loopback IP that counts the connections it is sent."""

    def __init__(self, ip: str) -> None:
        self._listener = socket.create_server((ip, 0))
        self._listener.settimeout(0.1)
        self.address = tcp(ip, self._listener.getsockname()[1])
        self.accepted = 0
        self._running = True
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while self._running:
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self._running = False
        self._thread.join(5)
        self._listener.close()


def _dial_request(client: Host, server: Host, address: Multiaddr) -> tuple[Stream, am.Message]:
    stream = client.open_stream(server.peer_id, [am.DIAL_REQUEST_PROTOCOL])
    nonce = int.from_bytes(os.urandom(8), "big") | 1
    stream.write(am.encode(am.DialRequest(addrs=(address.to_bytes(),), nonce=nonce)))
    body = stream.read_message(am.MESSAGE_BYTES_MAX, timeout=20)
    assert body is not None, "the server closed the dial-request stream without an answer"
    return stream, am.decode_body(body)


def test_autonat_dials_another_ip_only_once_dial_data_is_paid_and_bounds_the_asks() -> None:
    server = _host(relay_service=False, hole_punching=False).start()
    attackers = [_host(relay_service=False, hole_punching=False).start() for _ in range(3)]
    third = _ThirdParty("127.0.0.2")  # not the IP the attackers connect from (127.0.0.1)
    honest_servers = [_host(relay_service=False, hole_punching=False).start() for _ in range(2)]
    honest = _host(reachability="auto", relay_service=False, hole_punching=False)
    try:
        for attacker in attackers:
            attacker.connect(_at(server))

        # Unpaid: the server asks for dial data and dials nothing; the attacker walks away.
        stream, asked = _dial_request(attackers[0], server, third.address)
        assert isinstance(asked, am.DialDataRequest) and asked.addr_idx == 0
        assert autonat_server.DIAL_DATA_BYTES_MIN <= asked.num_bytes <= autonat_server.DIAL_DATA_BYTES_MAX
        stream.reset()
        eventually(lambda: server.stats().refusals.get("autonat_dial_data_unpaid", 0) == 1)
        assert third.accepted == 0

        # Paid: the same request, the bytes sent, and the server dials the address once.
        stream, asked = _dial_request(attackers[0], server, third.address)
        assert isinstance(asked, am.DialDataRequest)
        for offset in range(0, asked.num_bytes, am.DIAL_DATA_CHUNK_BYTES_MAX):
            piece = min(am.DIAL_DATA_CHUNK_BYTES_MAX, asked.num_bytes - offset)
            stream.write(am.encode(am.DialDataResponse(data=bytes(piece))))
        body = stream.read_message(am.MESSAGE_BYTES_MAX, timeout=30)
        assert body is not None
        answer = am.decode_body(body)
        # The third party speaks no libp2p: the dial reached it and went no further.
        assert answer == am.DialResponse(status=am.RESPONSE_OK, addr_idx=0, dial_status=am.DIAL_ERROR)
        assert third.accepted == 1

        # Amplification bound: dial-data asks per minute are few, whoever asks; the rest
        # are rejected outright, and nothing more reaches the third party.
        answers: list[am.Message] = []
        for attacker in attackers:
            for _ in range(5):
                stream, reply = _dial_request(attacker, server, third.address)
                answers.append(reply)
                if isinstance(reply, am.DialDataRequest):
                    stream.reset()
        asks_left = autonat_server.DIAL_DATA_REQUESTS_PER_MINUTE_MAX - 2
        assert sum(isinstance(a, am.DialDataRequest) for a in answers) == asks_left
        rejected = [a for a in answers if not isinstance(a, am.DialDataRequest)]
        assert rejected == [am.DialResponse(status=am.E_REQUEST_REJECTED)] * (15 - asks_left)
        assert server.stats().refusals["autonat_dial_data_rate"] == 15 - asks_left
        eventually(lambda: server.stats().refusals.get("autonat_dial_data_unpaid", 0) == 1 + asks_left)
        assert third.accepted == 1

        # An honest node, dialled back on its own IP, still gets its answer from this server
        # (with two others: a verdict takes three).
        honest.start()
        for peer in (server, *honest_servers):
            honest.connect(_at(peer))
        eventually(lambda: honest.stats().reachability == "public", lambda: f"{honest.stats()}")
    finally:
        third.close()
        _stop_all(honest, *honest_servers, *attackers, server)


# -- DCUtR ------------------------------------------------------------------------------------


def _connect_message(addrs: list[bytes]) -> bytes:
    return dcutr.encode_message(dcutr.HolePunch(kind=dcutr.CONNECT, obs_addrs=tuple(addrs)))


def _hostile_answers(victim_addr: Multiaddr) -> dict[str, tuple[bytes, str]]:
    """What the attacker answers B's CONNECT with, and the refusal B counts for it."""
    other = Identity.from_seed(os.urandom(32)).peer_id
    unusable = [
        b"\xff\x01garbage",  # no multiaddr at all
        tcp("169.254.10.1", 4001).to_bytes(),  # link-local: never dialled
        tcp("0.0.0.0", 4001).to_bytes(),  # unspecified
        Multiaddr.parse("/dns4/attacker.example/tcp/4001").to_bytes(),  # a name to resolve
        tcp("127.0.0.1", 4001, other).to_bytes(),  # names another peer
        tcp("127.0.0.1", 0).to_bytes(),  # port 0
        victim_addr.to_bytes(),  # B's own address
    ]
    return {
        "garbage": (varint.prefixed(b"\x08\x64\x12\xff\xff\xff"), "dcutr_malformed"),
        "oversized message": (varint.encode(dcutr.MESSAGE_BYTES_MAX + 1) + bytes(64), "dcutr_message_size"),
        "too many addresses": (
            _connect_message([tcp("127.0.0.1", 5000 + i).to_bytes() for i in range(dcutr.OBS_ADDRS_MAX + 1)]),
            "dcutr_addrs_count",
        ),
        "too long an address": (
            _connect_message([tcp("127.0.0.1", 4001).to_bytes() + bytes(dcutr.ADDRESS_BYTES_MAX)]),
            "dcutr_addr_size",
        ),
        "only unusable addresses": (_connect_message(unusable), "dcutr_addr_out_of_reach"),
    }


@pytest.fixture
def punching() -> Iterator[tuple[Host, Host]]:
    """R relays; B is private and punches every relayed connection it accepts."""
    relay = _host(relay_service=True, hole_punching=False).start()
    private = _host(reachability="private", relay_service=False, relayed_grace_s=1.0)
    private.set_handler(ECHO, _echo)
    private.start()
    try:
        private.connect(_at(relay))
        _circuit_addresses(private)
        yield relay, private
    finally:
        _stop_all(private, relay)


@pytest.mark.parametrize(
    "case",
    ["garbage", "oversized message", "too many addresses", "too long an address", "only unusable addresses"],
)
def test_dcutr_connect_with_bad_addresses_dials_nothing_and_is_counted(
    punching: tuple[Host, Host], case: str
) -> None:
    relay, private = punching
    answer, refusal = _hostile_answers(tcp("127.0.0.1", private.listen_port))[case]
    seen: queue.Queue[str] = queue.Queue()

    def answer_badly(stream: Stream) -> None:
        first = stream.read_message(dcutr.MESSAGE_BYTES_MAX, timeout=20)
        assert first is not None
        seen.put("connect" if dcutr.HolePunch.decode(first).kind == dcutr.CONNECT else "other")
        stream.write(answer)
        try:
            after = stream.read_message(dcutr.MESSAGE_BYTES_MAX, timeout=20)
        except PeerError:
            seen.put("reset")
            return
        seen.put(
            "sync" if after is not None and dcutr.HolePunch.decode(after).kind == dcutr.SYNC else "other"
        )

    # The attacker is A: it dials B through R, so B opens /libp2p/dcutr and sends CONNECT.
    attacker = _host(relay_service=False, hole_punching=False)
    attacker.set_handler(dcutr.PROTOCOL_ID, answer_badly)
    honest = _host(relay_service=False)
    with attacker, honest:
        attacker.connect(_at(relay))
        (circuit,) = _circuit_addresses(private)
        assert attacker.connect(circuit) == private.peer_id
        assert seen.get(timeout=30) == "connect"
        # A malformed answer ends the punch with the stream reset (the spec: refuse over
        # 4 KiB); addresses B will not dial are skipped, B sends SYNC and dials nothing.
        expected = "sync" if case == "only unusable addresses" else "reset"
        assert seen.get(timeout=30) == expected
        refusals = private.stats().refusals
        assert refusals[refusal] >= 1, refusals
        if case == "only unusable addresses":
            for name in ("unparsed", "name", "other_peer", "not_tcp", "ours"):
                assert refusals[f"dcutr_addr_{name}"] >= 1, (name, refusals)
        assert private.stats().holepunch["attempts"] == 0  # no dial was made
        info = attacker.peer_info(private.peer_id)
        assert info is None or info.relayed  # no direct connection came of it

        # An honest peer through the same relay is still punched through to a direct connection.
        honest.connect(_at(relay))
        assert honest.connect(circuit) == private.peer_id
        # B counts its punch once its own side of the direct connection is up, which may be
        # after the honest peer already sees it: both are waited for.
        eventually(
            lambda: (info := honest.peer_info(private.peer_id)) is not None
            and not info.relayed
            and private.stats().holepunch["successes"] >= 1,
            lambda: f"honest sees {honest.peer_info(private.peer_id)}; {private.stats().holepunch}",
        )


def test_dcutr_through_a_relay_on_the_lan_never_dials_loopback() -> None:
    lan_ip = _own_ip(4)
    if lan_ip is None:
        pytest.skip("no IPv4 address off loopback to put the relay on")
    relay = _host(listen_host="0.0.0.0", hole_punching=False).start()
    private = _host(listen_host="0.0.0.0", reachability="private", relay_service=False).start()
    seen: queue.Queue[str] = queue.Queue()

    def offer_loopback(stream: Stream) -> None:
        stream.read_message(dcutr.MESSAGE_BYTES_MAX, timeout=20)
        # B's own loopback listener is there to be hit: a SYN to it would connect at once.
        stream.write(_connect_message([tcp("127.0.0.1", private.listen_port).to_bytes()]))
        after = stream.read_message(dcutr.MESSAGE_BYTES_MAX, timeout=20)
        seen.put("sync" if after is not None and dcutr.HolePunch.decode(after).kind == dcutr.SYNC else "?")

    attacker = _host(listen_host="0.0.0.0", relay_service=False, hole_punching=False)
    attacker.set_handler(dcutr.PROTOCOL_ID, offer_loopback)
    honest = _host(listen_host="0.0.0.0", relay_service=False)
    try:
        # B meets the relay on the LAN: a peer reached through it may be punched to on
        # the LAN, never on loopback, which would be B's own machine.
        private.connect(_at(relay, lan_ip))
        (circuit,) = _circuit_addresses(private)
        assert circuit.startswith(f"/ip4/{lan_ip}/")
        attacker.start().connect(_at(relay, lan_ip))
        assert attacker.connect(circuit) == private.peer_id
        assert seen.get(timeout=30) == "sync"
        assert private.stats().refusals["dcutr_addr_out_of_reach"] == 1
        assert private.stats().holepunch["attempts"] == 0

        honest.start().connect(_at(relay, lan_ip))
        assert honest.connect(circuit) == private.peer_id
        eventually(
            lambda: (info := honest.peer_info(private.peer_id)) is not None and not info.relayed,
            lambda: f"honest sees {honest.peer_info(private.peer_id)}; {private.stats().holepunch}",
        )
    finally:
        _stop_all(honest, attacker, private, relay)


def test_a_dcutr_stream_on_a_direct_connection_is_reset(punching: tuple[Host, Host]) -> None:
    _, private = punching
    with _host(relay_service=False, hole_punching=False) as attacker:
        attacker.connect(_at(private))
        stream = attacker.open_stream(private.peer_id, [dcutr.PROTOCOL_ID])
        with pytest.raises(PeerError):  # reset on arrival: the write may already see it
            stream.write(_connect_message([tcp("127.0.0.1", 4001).to_bytes()]))
            stream.read_message(dcutr.MESSAGE_BYTES_MAX, timeout=20)
        assert private.stats().refusals["dcutr_direct_connection"] == 1
        assert private.stats().holepunch["attempts"] == 0
        assert attacker.ping(private.peer_id) > 0


# -- identify: a lying observer -----------------------------------------------------------------


class _LyingHost(Host):
    """Tells every peer it sees it at `lie`, whatever the socket says."""

    lie: Multiaddr | None = None

    def _identify_info(self, remote: Multiaddr) -> identify.IdentifyInfo:
        return replace(super()._identify_info(remote), observed_addr=self.lie or remote)


def _liar(lie: Multiaddr) -> _LyingHost:
    host = _LyingHost(
        Identity.from_seed(os.urandom(32)),
        HostConfig(listen_host="127.0.0.1", listen_port=0, relay_service=False, hole_punching=False),
    )
    host.lie = lie
    return host.start()


def test_one_lying_observer_never_gets_its_address_advertised() -> None:
    ipv4, ipv6 = _own_ip(4), _own_ip(6)
    if ipv4 is None or ipv6 is None:
        pytest.skip("needs an IPv4 and an IPv6 address off loopback: two observer groups")
    victim = _host(listen_host="::", relay_service=False, hole_punching=False).start()
    fake = tcp("203.0.113.77", victim.listen_port)
    liars = [_liar(fake) for _ in range(3)]
    witness = _host(relay_service=False, hole_punching=False).start()
    second_group = _liar(fake)
    try:
        # Three peer ids, one network (this machine's IPv4 address): one observer.
        for liar in liars:
            assert liar.connect(_at(victim, ipv4)) == victim.peer_id
            assert victim.wait_identified(liar.peer_id).observed_addr == fake  # the lie was heard

        def advertised_anywhere() -> list[str]:
            kinds = victim.address_kinds()
            heard = witness.peer_info(victim.peer_id)
            told = [str(a) for a in heard.listen_addrs] if heard is not None else []
            return [a for a in (*kinds["announced"], *kinds["observed"], *told) if "203.0.113.77" in a]

        witness.connect(_at(victim))
        witness.wait_identified(victim.peer_id)
        victim.ping(witness.peer_id)  # any identify push queued before this ping has landed
        assert advertised_anywhere() == []
        assert str(fake) not in [str(a) for a in victim.listen_addrs]

        # The measure can fail: a second network group saying the same confirms it (the
        # documented two-observer threshold), and then it shows everywhere.
        assert second_group.connect(str(tcp(ipv6, victim.listen_port, victim.peer_id))) == victim.peer_id
        victim.wait_identified(second_group.peer_id)
        eventually(lambda: len(advertised_anywhere()) == 3, lambda: f"{advertised_anywhere()}")
    finally:
        _stop_all(second_group, witness, *liars, victim)


# -- reachability: private -> public -> private ------------------------------------------------------


class _Forwarder:
    """A port that refuses connections until `open()`, then forwards them to `target_port`.

    It stands for a NAT whose port mapping appears (a router's forwarding rule added)
    and disappears: the node's announced address turns reachable, then unreachable.
    """

    def __init__(self) -> None:
        self.target_port = 0
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))  # bound, not listening: dials are refused
        self.address = tcp("127.0.0.1", self._listener.getsockname()[1])
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread: threading.Thread | None = None
        self._peers: dict[socket.socket, socket.socket] = {}
        self._closed = False

    def open(self) -> None:
        self._listener.listen(16)
        self._listener.setblocking(False)
        self._selector.register(self._listener, selectors.EVENT_READ, self._accept)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            self._wake_w.send(b"x")
            self._thread.join(5)
        for sock in [self._listener, *self._peers, self._wake_r, self._wake_w]:
            sock.close()
        self._selector.close()

    def _run(self) -> None:
        while True:
            for key, _ in self._selector.select():
                if key.data is None:
                    return
                callback: Callable[[socket.socket], None] = key.data
                callback(key.fileobj)  # type: ignore[arg-type]

    def _accept(self, listener: socket.socket) -> None:
        inside, _ = listener.accept()
        try:
            outside = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
        except OSError:
            inside.close()
            return
        for a, b in ((inside, outside), (outside, inside)):
            a.setblocking(False)
            self._peers[a] = b
            self._selector.register(a, selectors.EVENT_READ, self._pump)

    def _pump(self, sock: socket.socket) -> None:
        other = self._peers.get(sock)
        if other is None:  # its pair closed both ends earlier in the same select batch
            return
        try:
            data = sock.recv(65536)
            if data:
                other.setblocking(True)
                other.sendall(data)
                other.setblocking(False)
                return
        except OSError:
            pass
        for end in (sock, other):  # one side closed: so does the other
            if end in self._peers:
                self._selector.unregister(end)
                del self._peers[end]
                end.close()


def test_reachability_turning_public_drops_reservations_and_turning_private_reserves() -> None:
    servers = [_host().start() for _ in range(3)]  # AutoNAT servers, and relays
    forwarder = _Forwarder()
    node = _host(
        reachability="auto",
        relay_service=False,
        hole_punching=False,
        announce=(forwarder.address,),
        autonat_interval_s=6.0,  # each server asked every 6 s at most: within its per-peer rate
    )
    witness = _host(relay_service=False, hole_punching=False).start()

    def witnessed_circuits() -> list[str]:
        info = witness.peer_info(node.peer_id)
        return [str(a) for a in info.listen_addrs if a.is_relayed] if info is not None else []

    try:
        node.start()
        forwarder.target_port = node.listen_port
        for server in servers:
            node.connect(_at(server))
        witness.connect(_at(node))

        # Nothing answers at the announced address: private, reserved on two relays.
        eventually(lambda: node.stats().reachability == "private", lambda: f"{node.stats()}", within_s=60)
        eventually(lambda: node.stats().reservations == 2, lambda: f"{node.stats()}")
        eventually(lambda: len(witnessed_circuits()) == 2, witnessed_circuits)

        # The mapping appears: three fresh dial-backs arrive, the node is public, and it
        # gives up its reservations and stops advertising circuit addresses.
        forwarder.open()
        eventually(lambda: node.stats().reachability == "public", lambda: f"{node.stats()}", within_s=60)
        eventually(lambda: node.stats().reservations == 0, lambda: f"{node.stats()}")
        assert node.address_kinds()["relayed"] == []
        assert not any(a.is_relayed for a in node.listen_addrs)
        eventually(lambda: witnessed_circuits() == [], witnessed_circuits)
        assert all(node.is_connected(s.peer_id) for s in servers)

        # And it goes: private again, and reserved again.
        forwarder.close()
        eventually(lambda: node.stats().reachability == "private", lambda: f"{node.stats()}", within_s=60)
        eventually(lambda: node.stats().reservations == 2, lambda: f"{node.stats()}")
        eventually(lambda: len(witnessed_circuits()) == 2, witnessed_circuits)
    finally:
        forwarder.close()
        _stop_all(witness, node, *servers)


# -- circuit relay v2: a relay that lies in its reservation -------------------------------------


def _lying_relay(addrs: list[Multiaddr]) -> Host:
    """A host whose hop handler grants every RESERVE with `addrs` as the relay's addresses."""
    host = _host(relay_service=False, hole_punching=False)

    def grant(stream: Stream) -> None:
        body = stream.read_message(rm.MESSAGE_BYTES_MAX, timeout=20)
        if body is None or rm.HopMessage.decode(body).type != rm.HopType.RESERVE:
            stream.reset()
            return
        expire = int(time.time()) + 3600
        reservation = rm.Reservation(expire=expire, addrs=tuple(addrs))
        stream.write(
            rm.frame(rm.HopMessage(type=rm.HopType.STATUS, status=rm.Status.OK, reservation=reservation))
        )
        stream.close()
        while stream.read():  # hold the stream until the node closes its side
            pass

    host.set_handler(rm.HOP_PROTOCOL_ID, grant)
    return host.start()


def test_a_relay_listing_many_or_bogus_addresses_cannot_bloat_or_poison_what_the_node_advertises() -> None:
    long_name = "r" * 60 + ".example"
    relays: list[Host] = []
    bogus = [
        tcp("0.0.0.0", 4001),  # unspecified
        Multiaddr.parse("/ip6/fe80::1/tcp/4001"),  # IPv6 link-local
        tcp("198.51.100.9", 0),  # port 0
        Multiaddr.parse("/ip4/198.51.100.9/udp/4001"),  # not TCP: nothing we dial
    ]
    for n in range(2):
        many = [
            Multiaddr.parse(f"/dns4/{long_name}{n}/tcp/{4000 + i}") for i in range(rm.ADDRS_MAX - len(bogus))
        ]
        relays.append(_lying_relay([*bogus, *many]))
    node = _host(reachability="private", relay_service=False, hole_punching=False).start()
    witness = _host(relay_service=False, hole_punching=False).start()
    try:
        for relay in relays:
            node.connect(_at(relay))
        eventually(lambda: node.stats().reservations == 2, lambda: f"{node.stats()}")
        relayed = [Multiaddr.parse(a) for a in node.address_kinds()["relayed"]]
        assert len(relayed) == 2 * relay_client.CIRCUIT_ADDRS_PER_RELAY_MAX
        for address in relayed:
            relay_part = Multiaddr(
                address.components[: [n for n, _ in address.components].index("p2p-circuit")]
            )
            assert relay_part.tcp_endpoint() is not None and relay_part.value_of("tcp") != "0", address
            assert str(relay_part).startswith("/dns4/"), address
        # What the node tells a peer stays within what identify takes (libp2p: 8 KiB,
        # pyrsia: 64 addresses), so the peer identifies it.
        witness.connect(_at(node))
        info = witness.wait_identified(node.peer_id)
        assert {str(a) for a in relayed} <= {str(a) for a in info.listen_addrs}
        dropped = 2 * (rm.ADDRS_MAX - relay_client.CIRCUIT_ADDRS_PER_RELAY_MAX)
        assert node.stats().refusals["relay_reservation_addrs"] == dropped
        assert all(node.is_connected(relay.peer_id) for relay in relays)  # nobody refused our identify
        assert witness.ping(node.peer_id) > 0
    finally:
        _stop_all(witness, node, *relays)


def test_a_lying_observer_cannot_crowd_the_addresses_offered_for_a_hole_punch(
    punching: tuple[Host, Host],
) -> None:
    relay, private = punching
    # One observer, many peer ids, each with an address that sorts before the true one.
    liars = [_liar(tcp(f"1.0.0.{n}", 4001)) for n in range(1, dcutr.DIAL_ADDRS_MAX + 3)]
    offered: queue.Queue[tuple[Multiaddr, ...]] = queue.Queue()

    def read_offer(stream: Stream) -> None:
        body = stream.read_message(dcutr.MESSAGE_BYTES_MAX, timeout=20)
        assert body is not None
        offered.put(tuple(Multiaddr.from_bytes(raw) for raw in dcutr.HolePunch.decode(body).obs_addrs))
        stream.reset()

    probe = _host(relay_service=False, hole_punching=False)
    probe.set_handler(dcutr.PROTOCOL_ID, read_offer)
    try:
        for liar in liars:
            liar.connect(_at(private))
            private.wait_identified(liar.peer_id)
        (circuit,) = _circuit_addresses(private)
        probe.start().connect(_at(relay))
        assert probe.connect(circuit) == private.peer_id
        addrs = offered.get(timeout=30)
        # What the relay sees (B's address with its listen port) is offered; the liars,
        # one network however many peer ids, take one place at most.
        assert tcp("127.0.0.1", private.listen_port) in addrs, addrs
        assert sum(1 for a in addrs if str(a).startswith("/ip4/1.0.0.")) <= 1, addrs
    finally:
        _stop_all(probe, *liars)
