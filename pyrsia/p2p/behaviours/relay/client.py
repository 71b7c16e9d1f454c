"""The client's side of circuit relay v2: reserve on a relay, connect through one, accept.

libp2p/specs relay/circuit-v2.md: a node behind NAT opens `hop` on a relay it is
connected to and sends RESERVE; the STATUS OK carries a `Reservation` (its expiry, the
relay's addresses, a voucher the relay signed) and the `Limit` circuits will have.
`RelayClient` keeps the reservation while the connection lives, renews it when
`renew_fraction` of its time has passed (`tick`), and reports `Reserved` (with the
`/p2p-circuit` addresses to advertise) or `ReservationLost`. The relay's addresses are
its word: only direct TCP addresses with a port, to a specified IP (not IPv6
link-local) or a name, naming no other peer, make circuit addresses, at most
`CIRCUIT_ADDRS_PER_RELAY_MAX` of them, each at most `CIRCUIT_ADDRESS_BYTES_MAX` long;
the rest are counted (`relay_reservation_addrs`) and dropped, so a relay listing
many or long addresses cannot swell what the node advertises past what identify
carries (8 KiB), which would cost the node every peer. `release` gives one up
(the node turned out reachable: it is never renewed, and a grant still on its way is
dropped), which the relay lets expire, the spec having no message for it. A voucher that does not
verify (another signer, another peer, another expiry) refuses the reservation.

A peer reaching us sends CONNECT to the relay, which opens `stop` to us with
StopMessage CONNECT naming the initiator: we accept with STATUS OK when the stop
stream comes over a connection we hold a reservation on, is not itself relayed, and
fewer than `circuits_max` circuits are open; otherwise PERMISSION_DENIED or
RESOURCE_LIMIT_EXCEEDED, counted. `connect` is the initiator's side: CONNECT on a
relay's hop stream, STATUS OK back. Either way the stream becomes a raw connection to
the other peer: `CircuitOpened` hands it to the swarm (which runs Noise and yamux
over it as over TCP) together with any bytes that followed the relay's message, and
this behaviour forgets the stream.

What this needs from the swarm beyond the seam:
- a timer: `tick(now_s)` renews, expires and times out requests;
- wall-clock time for `Reservation.expire`: `now_s + unix_offset_s`;
- whether a connection is relayed: `ConnectionUp.remote` or `connection_relayed(conn)`;
- a stream handed over as a connection (`CircuitOpened`), and `circuit_closed(conn,
  stream)` when that relayed connection ends, so the count of circuits stays true.
Pure.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from pyrsia.errors import ProtocolViolation
from pyrsia.p2p.behaviours.relay import messages as m
from pyrsia.p2p.behaviours.relay import voucher
from pyrsia.p2p.swarm import behaviour as sw
from pyrsia.p2p.swarm.addresses import ip_of, kind_of
from pyrsia.p2p.wire.multiaddr import Multiaddr

REQUEST_TIMEOUT_S = 30.0
RENEW_FRACTION = 0.75
RESERVATION_S_MAX = 24 * 3600.0  # a relay promising more is believed for a day
CIRCUITS_MAX = 16
PENDING_PER_CONN_MAX = 8  # stop streams still waiting for the relay's CONNECT, per connection
CIRCUIT_ADDRS_PER_RELAY_MAX = 4  # circuit addresses made from one reservation
CIRCUIT_ADDRESS_BYTES_MAX = 200  # ip6/tcp/p2p/p2p-circuit/p2p is ~100 bytes; a long name fits too
RESERVE_REST_S = 60.0  # a relay that refused (or lost) our reservation is not asked again before this


# -- outcomes reported to the swarm ----------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Reserved:
    """A reservation (new or renewed); `addrs` are our circuit addresses through `relay`."""

    relay: str
    addrs: tuple[Multiaddr, ...]
    expire: int  # unix seconds
    limit: m.Limit | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ReservationFailed:
    relay: str
    status: int | None  # the relay's status, None when it never answered
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ReservationLost:
    """A reservation we held is gone: expired, renewal refused, or its connection closed."""

    relay: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CircuitOpened:
    """`stream` on `conn` (to `relay`) is now a raw connection to `peer`: run Noise+yamux on it."""

    conn: int
    stream: int
    peer: str
    relay: str
    limit: m.Limit | None
    initiator: bool  # we sent CONNECT (we dial: Noise initiator)
    initial: bytes = b""  # bytes that arrived after the relay's message, the circuit's first
    tag: object = None  # the `connect` call's tag, for the initiator


@dataclass(frozen=True, slots=True, kw_only=True)
class CircuitFailed:
    tag: object
    target: str
    status: int | None
    reason: str


# -- state -------------------------------------------------------------------------------


@dataclass(slots=True)
class _Conn:
    peer: str
    relayed: bool


@dataclass(slots=True)
class _Held:
    addrs: tuple[Multiaddr, ...]
    expire: int
    expire_s: float
    renew_s: float


@dataclass(slots=True)
class _Ask:
    """A hop request of ours: RESERVE (`target` None) or CONNECT."""

    conn: int
    target: str | None
    tag: object
    opened_s: float
    stream: int | None = None
    reader: m.MessageReader | None = None


_ASK = "relay-ask"
_RELEASED = object()  # the tag of a RESERVE whose grant we no longer want


class RelayClient:
    """Reserves on relays, connects through them, and answers their stop streams."""

    protocols = (m.STOP_PROTOCOL_ID,)

    def __init__(
        self,
        local_peer: str,
        *,
        unix_offset_s: float,
        circuits_max: int = CIRCUITS_MAX,
        renew_fraction: float = RENEW_FRACTION,
    ) -> None:
        if not 0.0 < renew_fraction < 1.0:
            raise ValueError("a reservation is renewed part way through its life")
        self._me = local_peer
        self._unix_offset_s = unix_offset_s
        self._circuits_max = circuits_max
        self._renew_fraction = renew_fraction
        self._conns: dict[int, _Conn] = {}
        self._relayed: set[int] = set()
        self._held: dict[int, _Held] = {}
        self._asks: dict[int, _Ask] = {}
        self._ask_streams: dict[tuple[int, int], int] = {}
        self._next_ask = 0
        self._stops: dict[tuple[int, int], tuple[m.MessageReader, float]] = {}
        self._circuits: set[tuple[int, int]] = set()
        self.refusals: Counter[str] = Counter()

    # -- inputs beyond the seam -------------------------------------------------------------

    def connection_relayed(self, conn: int) -> None:
        self._relayed.add(conn)
        if conn in self._conns:
            self._conns[conn].relayed = True

    def circuit_closed(self, conn: int, stream: int) -> None:
        self._circuits.discard((conn, stream))

    @property
    def circuits(self) -> int:
        return len(self._circuits)

    def reservation(self, conn: int) -> tuple[Multiaddr, ...] | None:
        held = self._held.get(conn)
        return None if held is None else held.addrs

    def reserve(self, conn: int, now_s: float) -> list[sw.Effect]:
        """Ask the relay on `conn` for a reservation (or renew ours); `Reserved` or a failure follows."""
        info = self._conns.get(conn)
        if info is None:
            return []
        if info.relayed:
            self.refusals["relay_reserve_over_relayed"] += 1
            outcome = ReservationFailed(relay=info.peer, status=None, reason="connection is relayed")
            return [sw.Report(conn=conn, outcome=outcome)]
        if any(a.conn == conn and a.target is None for a in self._asks.values()):
            return []
        return self._ask(conn, None, None, now_s)

    def release(self, conn: int) -> list[sw.Effect]:
        """Give up the reservation on `conn` (we turned out reachable): never renew it, and
        report `ReservationLost` so its circuit addresses stop being advertised. The spec
        has no message for this; the relay lets it expire. An answer still on its way
        to a RESERVE of ours is dropped the same way when it comes."""
        info = self._conns.get(conn)
        for n in [n for n, a in self._asks.items() if a.conn == conn and a.target is None]:
            self._asks[n].tag = _RELEASED
        if self._held.pop(conn, None) is None or info is None:
            return []
        return [sw.Report(conn=conn, outcome=ReservationLost(relay=info.peer, reason="released"))]

    def connect(self, conn: int, target: str, tag: object, now_s: float) -> list[sw.Effect]:
        """Ask the relay on `conn` for a circuit to `target`; `CircuitOpened` or `CircuitFailed` follows."""
        info = self._conns.get(conn)
        reason = "no such connection" if info is None else "connection is relayed" if info.relayed else ""
        if target == self._me:
            reason = "a circuit to ourselves"
        if reason:
            self.refusals["relay_connect_refused"] += 1
            failed = CircuitFailed(tag=tag, target=target, status=None, reason=reason)
            return [sw.Report(conn=conn, outcome=failed)]
        return self._ask(conn, target, tag, now_s)

    def tick(self, now_s: float) -> list[sw.Effect]:
        effects: list[sw.Effect] = []
        for conn, held in list(self._held.items()):
            relay = self._conns[conn].peer
            if now_s >= held.expire_s:
                del self._held[conn]
                effects.append(sw.Report(conn=conn, outcome=ReservationLost(relay=relay, reason="expired")))
            elif now_s >= held.renew_s:
                effects += self.reserve(conn, now_s)
        for n, ask in list(self._asks.items()):
            if now_s - ask.opened_s > REQUEST_TIMEOUT_S:
                if ask.stream is not None:
                    effects.append(sw.ResetStream(conn=ask.conn, stream=ask.stream))
                effects += self._ask_failed(n, None, "relay did not answer in time")
        for (conn, stream), (_, opened_s) in list(self._stops.items()):
            if now_s - opened_s > REQUEST_TIMEOUT_S:
                del self._stops[(conn, stream)]
                self.refusals["relay_stop_timeout"] += 1
                effects.append(sw.ResetStream(conn=conn, stream=stream))
        return effects

    # -- the seam ---------------------------------------------------------------------------

    def on_event(self, event: sw.Event, now_s: float) -> Sequence[sw.Effect]:
        match event:
            case sw.ConnectionUp(conn=conn, peer=peer, remote=remote):
                self._conns[conn] = _Conn(peer, remote.is_relayed or conn in self._relayed)
            case sw.ConnectionDown(conn=conn):
                return self._connection_down(conn)
            case sw.InboundStream(conn=conn, stream=stream):
                if conn not in self._conns:
                    return [sw.ResetStream(conn=conn, stream=stream)]
                if sum(1 for k in self._stops if k[0] == conn) >= PENDING_PER_CONN_MAX:
                    self.refusals["relay_stop_pending"] += 1
                    return [sw.ResetStream(conn=conn, stream=stream)]
                self._stops[(conn, stream)] = (m.MessageReader(), now_s)
            case sw.StreamOpened(conn=conn, stream=stream, tag=tag):
                opened = _ask_of(tag)
                return self._ask_opened(opened, conn, stream) if opened is not None else ()
            case sw.StreamData(conn=conn, stream=stream, data=data):
                if (conn, stream) in self._stops:
                    return self._stop_data(conn, stream, data)
                replying = self._ask_streams.get((conn, stream))
                if replying is not None:
                    return self._reply_data(replying, data, now_s)
            case sw.StreamEnded(conn=conn, stream=stream):
                if self._stops.pop((conn, stream), None) is not None:
                    self.refusals["relay_stop_malformed"] += 1
                    return [sw.ResetStream(conn=conn, stream=stream)]
                ended = self._ask_streams.get((conn, stream))
                if ended is not None:
                    return [
                        sw.ResetStream(conn=conn, stream=stream),
                        *self._ask_failed(ended, None, "relay closed the stream without an answer"),
                    ]
            case sw.StreamGone(conn=conn, stream=stream, tag=tag):
                if stream is not None:
                    self._stops.pop((conn, stream), None)
                gone = _ask_of(tag) if stream is None else self._ask_streams.get((conn, stream))
                if gone is not None and gone in self._asks:
                    return self._ask_failed(gone, None, "hop stream refused or reset")
        return ()

    def _connection_down(self, conn: int) -> list[sw.Effect]:
        effects: list[sw.Effect] = []
        # Asks first, while the connection still names its relay: a renewal in flight ends
        # as the loss of that relay's reservation, and the swarm must know which relay.
        for n in [n for n, a in self._asks.items() if a.conn == conn]:
            effects += self._ask_failed(n, None, "connection closed")
        info = self._conns.pop(conn, None)
        self._relayed.discard(conn)
        for key in [k for k in self._stops if k[0] == conn]:
            del self._stops[key]
        self._circuits = {c for c in self._circuits if c[0] != conn}
        if self._held.pop(conn, None) is not None and info is not None:
            lost = ReservationLost(relay=info.peer, reason="connection closed")
            effects.append(sw.Report(conn=conn, outcome=lost))
        return effects

    def _ask(self, conn: int, target: str | None, tag: object, now_s: float) -> list[sw.Effect]:
        n = self._next_ask
        self._next_ask += 1
        self._asks[n] = _Ask(conn=conn, target=target, tag=tag, opened_s=now_s)
        return [sw.OpenStream(conn=conn, protocols=(m.HOP_PROTOCOL_ID,), tag=(_ASK, n))]

    def _ask_opened(self, n: int, conn: int, stream: int) -> list[sw.Effect]:
        ask = self._asks.get(n)
        if ask is None:
            return [sw.ResetStream(conn=conn, stream=stream)]
        ask.stream, ask.reader = stream, m.MessageReader()
        self._ask_streams[(conn, stream)] = n
        if ask.target is None:
            request = m.HopMessage(type=m.HopType.RESERVE)
        else:
            request = m.HopMessage(type=m.HopType.CONNECT, peer=m.Peer(id=ask.target))
        return [sw.Write(conn=conn, stream=stream, data=m.frame(request))]

    def _reply_data(self, n: int, data: bytes, now_s: float) -> list[sw.Effect]:
        ask = self._asks[n]
        assert ask.reader is not None and ask.stream is not None
        stream = ask.stream
        try:
            body = ask.reader.feed(data)
            if body is None:
                return []
            reply = m.HopMessage.decode(body)
            if reply.type != m.HopType.STATUS:
                raise ProtocolViolation("relay answered with something other than STATUS")
        except ProtocolViolation as exc:
            self.refusals["relay_reply_malformed"] += 1
            return [sw.ResetStream(conn=ask.conn, stream=stream), *self._ask_failed(n, None, str(exc))]
        if reply.status != m.Status.OK:
            return [
                sw.CloseStream(conn=ask.conn, stream=stream),
                *self._ask_failed(n, reply.status, "relay refused"),
            ]
        if ask.target is None and ask.tag is _RELEASED:
            self._forget_ask(n)
            relay = self._conns[ask.conn].peer
            lost = ReservationLost(relay=relay, reason="released")
            return [sw.CloseStream(conn=ask.conn, stream=stream), sw.Report(conn=ask.conn, outcome=lost)]
        if ask.target is None:
            return [sw.CloseStream(conn=ask.conn, stream=stream), *self._reserved(n, reply, now_s)]
        self._forget_ask(n)
        self._circuits.add((ask.conn, stream))
        opened = CircuitOpened(
            conn=ask.conn,
            stream=stream,
            peer=ask.target,
            relay=self._conns[ask.conn].peer,
            limit=reply.limit,
            initiator=True,
            initial=ask.reader.rest,
            tag=ask.tag,
        )
        return [sw.Report(conn=ask.conn, outcome=opened)]

    def _reserved(self, n: int, reply: m.HopMessage, now_s: float) -> list[sw.Effect]:
        ask = self._asks[n]
        relay = self._conns[ask.conn].peer
        reservation = reply.reservation
        now_unix = now_s + self._unix_offset_s
        if reservation is None or reservation.expire <= now_unix:
            self.refusals["relay_reservation_malformed"] += 1
            return self._ask_failed(n, reply.status, "reservation missing or already expired")
        if reservation.voucher:
            try:
                voucher.verify(reservation.voucher, relay=relay, peer=self._me, expiration=reservation.expire)
            except ProtocolViolation as exc:
                self.refusals["relay_voucher_invalid"] += 1
                return self._ask_failed(n, reply.status, f"voucher: {exc}")
        self._forget_ask(n)
        remaining = min(reservation.expire - now_unix, RESERVATION_S_MAX)
        addrs = self._circuit_addresses(reservation.addrs, relay)
        self._held[ask.conn] = _Held(
            addrs=addrs,
            expire=reservation.expire,
            expire_s=now_s + remaining,
            renew_s=now_s + remaining * self._renew_fraction,
        )
        outcome = Reserved(relay=relay, addrs=addrs, expire=reservation.expire, limit=reply.limit)
        return [sw.Report(conn=ask.conn, outcome=outcome)]

    def _circuit_addresses(self, offered: Sequence[Multiaddr], relay: str) -> tuple[Multiaddr, ...]:
        out: list[Multiaddr] = []
        for address in offered:
            circuit = _circuit_address(address, relay, self._me) if _usable(address, relay) else None
            if (
                circuit is None
                or circuit in out
                or len(out) >= CIRCUIT_ADDRS_PER_RELAY_MAX
                or len(circuit.to_bytes()) > CIRCUIT_ADDRESS_BYTES_MAX
            ):
                self.refusals["relay_reservation_addrs"] += 1
                continue
            out.append(circuit)
        return tuple(out)

    def _ask_failed(self, n: int, status: int | None, reason: str) -> list[sw.Effect]:
        ask = self._forget_ask(n)
        info = self._conns.get(ask.conn)
        relay = info.peer if info is not None else ""
        if ask.target is not None:
            failed = CircuitFailed(tag=ask.tag, target=ask.target, status=status, reason=reason)
            return [sw.Report(conn=ask.conn, outcome=failed)]
        if self._held.pop(ask.conn, None) is not None:
            return [sw.Report(conn=ask.conn, outcome=ReservationLost(relay=relay, reason=reason))]
        return [
            sw.Report(conn=ask.conn, outcome=ReservationFailed(relay=relay, status=status, reason=reason))
        ]

    def _forget_ask(self, n: int) -> _Ask:
        ask = self._asks.pop(n)
        if ask.stream is not None:
            self._ask_streams.pop((ask.conn, ask.stream), None)
        return ask

    def _stop_data(self, conn: int, stream: int, data: bytes) -> list[sw.Effect]:
        reader = self._stops[(conn, stream)][0]
        try:
            body = reader.feed(data)
            if body is None:
                return []
            del self._stops[(conn, stream)]
            request = m.StopMessage.decode(body)
        except ProtocolViolation:
            self._stops.pop((conn, stream), None)
            self.refusals["relay_stop_malformed"] += 1
            return _stop_answer(conn, stream, m.Status.MALFORMED_MESSAGE)
        info = self._conns[conn]
        status = m.Status.OK
        if request.type != m.StopType.CONNECT:
            status, refusal = m.Status.UNEXPECTED_MESSAGE, "relay_stop_unexpected"
        elif request.peer is None:
            status, refusal = m.Status.MALFORMED_MESSAGE, "relay_stop_malformed"
        elif info.relayed:
            status, refusal = m.Status.PERMISSION_DENIED, "relay_stop_over_relayed"
        elif conn not in self._held:
            status, refusal = m.Status.PERMISSION_DENIED, "relay_stop_unreserved"
        elif len(self._circuits) >= self._circuits_max:
            status, refusal = m.Status.RESOURCE_LIMIT_EXCEEDED, "relay_stop_circuits"
        if status != m.Status.OK or request.peer is None:
            self.refusals[refusal] += 1
            return _stop_answer(conn, stream, status)
        self._circuits.add((conn, stream))
        reply = m.StopMessage(type=m.StopType.STATUS, status=m.Status.OK)
        opened = CircuitOpened(
            conn=conn,
            stream=stream,
            peer=request.peer.id,
            relay=info.peer,
            limit=request.limit,
            initiator=False,
            initial=reader.rest,
        )
        return [sw.Write(conn=conn, stream=stream, data=m.frame(reply)), sw.Report(conn=conn, outcome=opened)]


def relays_to_reserve(
    *,
    wanted: int,
    held: Collection[str],
    asking: Collection[str],
    candidates: Iterable[tuple[str, bool]],
    resting: Collection[str] = (),
    exclude: str = "",
) -> tuple[str, ...]:
    """The relays to ask for a reservation now, so that `wanted` are held or being asked.

    `candidates` are the peers speaking hop with whether we hold a direct connection to
    each. libp2p/specs relay/circuit-v2.md: never reserve over a relayed connection, so
    only directly connected ones qualify; they are filtered before the count is taken,
    so a peer reached only through a relay never uses up a place another could fill.
    `resting` are relays that refused or lost a reservation less than `RESERVE_REST_S`
    ago, `exclude` the one that just did: asking them again at once would turn relays
    that are full into a loop of requests at network speed. Sorted, so the choice is stable.
    """
    room = wanted - len(held) - len(asking)
    if room <= 0:
        return ()
    eligible = sorted(
        {
            peer
            for peer, direct in candidates
            if direct and peer not in held and peer not in asking and peer not in resting and peer != exclude
        }
    )
    return tuple(eligible[:room])


def _ask_of(tag: object) -> int | None:
    match tag:
        case (str() as kind, int() as n) if kind == _ASK:
            return n
    return None


def _usable(address: Multiaddr, relay: str) -> bool:
    """A relay address a peer could dial: direct TCP with a port, to a specified IP or a name."""
    if address.is_relayed or address.peer_id not in (None, relay):
        return False
    endpoint = address.tcp_endpoint()
    if endpoint is None or endpoint[1] == 0 or kind_of(address) == "unspecified":
        return False
    ip = ip_of(address)
    return not (isinstance(ip, ipaddress.IPv6Address) and ip.is_link_local)


def _circuit_address(address: Multiaddr, relay: str, me: str) -> Multiaddr:
    """libp2p/specs relay/circuit-v2.md: `<relay addr>/p2p/<relay>/p2p-circuit/p2p/<us>`."""
    return Multiaddr((*address.with_peer(relay).components, ("p2p-circuit", ""), ("p2p", me)))


def _stop_answer(conn: int, stream: int, status: m.Status) -> list[sw.Effect]:
    reply = m.StopMessage(type=m.StopType.STATUS, status=status)
    return [sw.Write(conn=conn, stream=stream, data=m.frame(reply)), sw.CloseStream(conn=conn, stream=stream)]
