"""The relay's side of circuit relay v2: reservations, CONNECT, and splicing two streams.

libp2p/specs relay/circuit-v2.md "Hop Protocol": a peer opens `/libp2p/circuit/relay/
0.2.0/hop` and sends RESERVE or CONNECT; the relay answers one STATUS. A reservation
lives `reservation_ttl_s` and only while the reserving connection lives; RESERVE again
renews it. CONNECT names a target holding a reservation; the relay opens
`/libp2p/circuit/relay/0.2.0/stop` on the target's reserving connection, sends
StopMessage CONNECT, and on the target's STATUS OK answers the initiator OK: from then
on the hop stream and the stop stream are one circuit, and every `StreamData` on one
leg is a `Write` on the other, naming the leg it came from (`Write.source`), so the
swarm holds back the sender's yamux credit while the other leg's receiver is slower.
A circuit is reset on both legs once either direction passes `circuit_bytes_max`
bytes (the first `circuit_bytes_max` are delivered) or the circuit is
`circuit_duration_s` old ("the relay should reset the stream to the source and the
stream to the destination").

Refusals, each with its spec status and counted by name in `refusals`:
- over a relayed connection ("Implementations should not accept reservations [or
  connection initiations] over already relayed connections"): PERMISSION_DENIED;
- more than `reservations_max` in all, `reservations_per_peer_max` per peer or
  `reservations_per_ip_group_max` per IP group (IPv4 /24, IPv6 /64): RESERVATION_REFUSED;
- more than `rate_per_minute_max` hop requests from one peer in a minute, more than
  `circuits_per_peer_max` circuits touching the initiator or the target, more than
  `circuits_max` in all: RESOURCE_LIMIT_EXCEEDED;
- CONNECT to the initiator itself or to the relay: PERMISSION_DENIED; to a peer without
  a live reservation: NO_RESERVATION; the target refused or never answered:
  CONNECTION_FAILED; an unparsable message: MALFORMED_MESSAGE; STATUS where a request
  belongs: UNEXPECTED_MESSAGE.

What this needs from the swarm beyond the seam (see the report outcomes below):
- whether a connection is relayed: taken from `ConnectionUp.remote` (a `/p2p-circuit`
  address) or told by `connection_relayed(conn)`;
- a timer: `tick(now_s)` every second or so expires reservations, circuits past their
  duration and requests that never completed;
- wall-clock time for `Reservation.expire`: `now_s + unix_offset_s`, the offset given
  at construction;
- the node's public addresses for `Reservation.addrs`: the `addresses` callable;
- `ReservationGranted` / `ReservationEnded` ask the swarm to keep (or stop keeping)
  the reserving connection open against idle trimming.

`counters` run live: `circuits_spliced` when a circuit is bridged and `bytes_relayed`
as each write is passed on, so a long circuit (up to `circuit_duration_s`, carrying up
to `circuit_bytes_max` each way) shows while it runs, not only in its `CircuitRelayed`.
Pure.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pyrsia.errors import ProtocolViolation
from pyrsia.p2p.behaviours.relay import messages as m
from pyrsia.p2p.behaviours.relay import voucher
from pyrsia.p2p.identity import Identity
from pyrsia.p2p.ratelimit import prune_window
from pyrsia.p2p.swarm import behaviour as sw
from pyrsia.p2p.swarm.addresses import ip_of
from pyrsia.p2p.swarm.limits import subnet_of
from pyrsia.p2p.wire.multiaddr import Multiaddr

REQUEST_TIMEOUT_S = 30.0  # a hop request must arrive, and a stop answer come back, within this
PENDING_PER_CONN_MAX = 8  # hop streams still waiting for their request, per connection
EARLY_BYTES_MAX = m.MESSAGE_BYTES_MAX  # circuit bytes buffered before the circuit is spliced
RATE_WINDOW_S = 60.0


@dataclass(frozen=True, slots=True, kw_only=True)
class RelayLimits:
    reservations_max: int = 128
    reservations_per_peer_max: int = 4
    reservations_per_ip_group_max: int = 16
    reservation_ttl_s: int = 3600
    circuits_max: int = 256
    circuits_per_peer_max: int = 16
    circuit_duration_s: int = 120
    circuit_bytes_max: int = 128 * 1024
    rate_per_minute_max: int = 30

    def __post_init__(self) -> None:
        for name in self.__slots__:
            if getattr(self, name) < 0:
                raise ValueError(f"relay limit {name} cannot be negative")

    @property
    def limit(self) -> m.Limit:
        return m.Limit(duration_s=self.circuit_duration_s, data_bytes=self.circuit_bytes_max)


# -- outcomes reported to the swarm -----------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ReservationGranted:
    """Keep `conn` open (tag it against idle trimming) until `expire_s` (our clock)."""

    peer: str
    expire_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class ReservationEnded:
    """The reservation on this connection expired or its connection went: untag it."""

    peer: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CircuitRelayed:
    """A circuit ended; how many bytes it carried each way, and why it ended."""

    source: str
    target: str
    bytes_to_target: int
    bytes_to_source: int
    reason: str


# -- state --------------------------------------------------------------------------------


@dataclass(slots=True)
class _Conn:
    peer: str
    remote: Multiaddr
    relayed: bool


@dataclass(slots=True)
class _Reservation:
    expire_s: float
    group: str | None


@dataclass(slots=True)
class _Circuit:
    source: str
    target: str
    src: tuple[int, int]  # the hop stream (conn, stream)
    dst_conn: int
    started_s: float
    dst_stream: int | None = None
    spliced: bool = False
    stop_reader: m.MessageReader = field(default_factory=m.MessageReader)
    early: bytearray = field(default_factory=bytearray)  # from the source before the splice
    to_target: int = 0
    to_source: int = 0
    ended: set[str] = field(default_factory=set)  # legs whose peer closed its write side

    @property
    def dst(self) -> tuple[int, int] | None:
        return None if self.dst_stream is None else (self.dst_conn, self.dst_stream)


_STOP = "relay-stop"


class Relay:
    """The relay (hop) behaviour; `identity` signs vouchers, `addresses()` are ours to hand out."""

    protocols = (m.HOP_PROTOCOL_ID,)

    def __init__(
        self,
        identity: Identity,
        addresses: Callable[[], Sequence[Multiaddr]],
        *,
        unix_offset_s: float,
        limits: RelayLimits | None = None,
    ) -> None:
        self._identity = identity
        self._me = identity.peer_id
        self._addresses = addresses
        self._unix_offset_s = unix_offset_s
        self.limits = limits or RelayLimits()
        self._conns: dict[int, _Conn] = {}
        self._relayed: set[int] = set()
        self._pending: dict[tuple[int, int], tuple[m.MessageReader, float]] = {}
        self._reservations: dict[tuple[str, int], _Reservation] = {}
        self._circuits: dict[int, _Circuit] = {}
        self._legs: dict[tuple[int, int], int] = {}
        self._next_circuit = 0
        self._requests: dict[str, deque[float]] = {}
        self.refusals: Counter[str] = Counter()
        self.counters: Counter[str] = Counter({"circuits_spliced": 0, "bytes_relayed": 0})

    # -- inputs beyond the seam -----------------------------------------------------------

    def connection_relayed(self, conn: int) -> None:
        """The swarm says `conn` runs over a relayed circuit."""
        self._relayed.add(conn)
        if conn in self._conns:
            self._conns[conn].relayed = True

    def reserved(self, peer: str, now_s: float) -> bool:
        return any(p == peer and r.expire_s > now_s for (p, _), r in self._reservations.items())

    def reservations(self, now_s: float) -> int:
        """Reservations live now (at most `limits.reservations_max`)."""
        return sum(1 for r in self._reservations.values() if r.expire_s > now_s)

    @property
    def circuits(self) -> int:
        return len(self._circuits)

    def tick(self, now_s: float) -> list[sw.Effect]:
        effects: list[sw.Effect] = []
        for key, reservation in list(self._reservations.items()):
            if reservation.expire_s <= now_s:
                del self._reservations[key]
                effects.append(
                    sw.Report(conn=key[1], outcome=ReservationEnded(peer=key[0], reason="expired"))
                )
        for (conn, stream), (_, opened_s) in list(self._pending.items()):
            if now_s - opened_s > REQUEST_TIMEOUT_S:
                del self._pending[(conn, stream)]
                self.refusals["relay_request_timeout"] += 1
                effects.append(sw.ResetStream(conn=conn, stream=stream))
        for cid, circuit in list(self._circuits.items()):
            if circuit.spliced and self._over_duration(circuit, now_s):
                self.refusals["relay_circuit_duration"] += 1
                effects += self._reset_circuit(cid, "duration limit")
            elif not circuit.spliced and now_s - circuit.started_s > REQUEST_TIMEOUT_S:
                self.refusals["relay_stop_timeout"] += 1
                effects += self._fail_connect(cid, m.Status.CONNECTION_FAILED)
        return effects

    # -- the seam -----------------------------------------------------------------------------

    def on_event(self, event: sw.Event, now_s: float) -> Sequence[sw.Effect]:
        match event:
            case sw.ConnectionUp(conn=conn, peer=peer, remote=remote):
                self._conns[conn] = _Conn(peer, remote, remote.is_relayed or conn in self._relayed)
            case sw.ConnectionDown(conn=conn):
                return self._connection_down(conn)
            case sw.InboundStream(conn=conn, stream=stream):
                return self._inbound(conn, stream, now_s)
            case sw.StreamOpened(conn=conn, stream=stream, tag=(str() as kind, int() as cid)) if (
                kind == _STOP
            ):
                return self._stop_opened(cid, conn, stream)
            case sw.StreamData(conn=conn, stream=stream, data=data):
                return self._data(conn, stream, data, now_s)
            case sw.StreamEnded(conn=conn, stream=stream):
                return self._ended(conn, stream)
            case sw.StreamGone(conn=conn, stream=stream, tag=tag):
                return self._gone(conn, stream, tag)
        return ()

    def _connection_down(self, conn: int) -> list[sw.Effect]:
        self._conns.pop(conn, None)
        self._relayed.discard(conn)
        for stream_key in [k for k in self._pending if k[0] == conn]:
            del self._pending[stream_key]
        for reservation_key in [k for k in self._reservations if k[1] == conn]:
            del self._reservations[reservation_key]
        effects: list[sw.Effect] = []
        for cid, circuit in list(self._circuits.items()):
            if conn in (circuit.src[0], circuit.dst_conn):
                effects += self._reset_circuit(cid, "connection closed")
        return [e for e in effects if not (isinstance(e, sw.ResetStream) and e.conn == conn)]

    def _inbound(self, conn: int, stream: int, now_s: float) -> list[sw.Effect]:
        if conn not in self._conns:
            return [sw.ResetStream(conn=conn, stream=stream)]
        if sum(1 for k in self._pending if k[0] == conn) >= PENDING_PER_CONN_MAX:
            self.refusals["relay_pending_streams"] += 1
            return [sw.ResetStream(conn=conn, stream=stream)]
        self._pending[(conn, stream)] = (m.MessageReader(), now_s)
        return []

    def _data(self, conn: int, stream: int, data: bytes, now_s: float) -> list[sw.Effect]:
        pending = self._pending.get((conn, stream))
        if pending is not None:
            reader = pending[0]
            try:
                body = reader.feed(data)
                if body is None:
                    return []
                del self._pending[(conn, stream)]
                request = m.HopMessage.decode(body)
            except ProtocolViolation:
                self._pending.pop((conn, stream), None)
                self.refusals["relay_malformed"] += 1
                return self._answer(conn, stream, m.Status.MALFORMED_MESSAGE)
            return self._request(conn, stream, request, reader.rest, now_s)
        cid = self._legs.get((conn, stream))
        if cid is None:
            return []
        circuit = self._circuits[cid]
        if circuit.spliced:
            return self._splice(cid, circuit, (conn, stream), data, now_s)
        if (conn, stream) == circuit.src:
            if len(circuit.early) + len(data) > EARLY_BYTES_MAX:
                self.refusals["relay_early_bytes"] += 1
                return self._reset_circuit(cid, "source wrote too much before the circuit opened")
            circuit.early += data
            return []
        return self._stop_answer(cid, circuit, data, now_s)

    def _request(
        self, conn: int, stream: int, request: m.HopMessage, rest: bytes, now_s: float
    ) -> list[sw.Effect]:
        info = self._conns[conn]
        if request.type == m.HopType.STATUS:
            self.refusals["relay_unexpected"] += 1
            return self._answer(conn, stream, m.Status.UNEXPECTED_MESSAGE)
        if info.relayed:
            self.refusals["relay_over_relayed"] += 1
            return self._answer(conn, stream, m.Status.PERMISSION_DENIED)
        if not self._within_rate(info.peer, now_s):
            self.refusals["relay_rate"] += 1
            return self._answer(conn, stream, m.Status.RESOURCE_LIMIT_EXCEEDED)
        if request.type == m.HopType.RESERVE:
            return self._reserve(conn, stream, info, now_s)
        return self._connect(conn, stream, info, request, rest, now_s)

    def _within_rate(self, peer: str, now_s: float) -> bool:
        recent = prune_window(self._requests.setdefault(peer, deque()), now_s, RATE_WINDOW_S)
        if len(recent) >= self.limits.rate_per_minute_max:
            return False
        recent.append(now_s)
        if len(self._requests) > 4 * self.limits.reservations_max:
            for stale in [p for p, q in self._requests.items() if not q or now_s - q[-1] > RATE_WINDOW_S]:
                del self._requests[stale]
        return True

    def _reserve(self, conn: int, stream: int, info: _Conn, now_s: float) -> list[sw.Effect]:
        key = (info.peer, conn)
        live = {k: r for k, r in self._reservations.items() if r.expire_s > now_s}
        self._reservations = live
        if key not in live:
            group = _group_of(info.remote)
            refusal = None
            if len(live) >= self.limits.reservations_max:
                refusal = "relay_reservations"
            elif sum(1 for p, _ in live if p == info.peer) >= self.limits.reservations_per_peer_max:
                refusal = "relay_reservations_per_peer"
            elif group is not None and (
                sum(1 for r in live.values() if r.group == group) >= self.limits.reservations_per_ip_group_max
            ):
                refusal = "relay_reservations_per_ip_group"
            if refusal is not None:
                self.refusals[refusal] += 1
                return self._answer(conn, stream, m.Status.RESERVATION_REFUSED)
            live[key] = _Reservation(expire_s=0.0, group=group)
        ttl = self.limits.reservation_ttl_s
        live[key].expire_s = now_s + ttl
        expire = int(now_s + self._unix_offset_s) + ttl
        signed = voucher.sign(
            self._identity, voucher.Voucher(relay=self._me, peer=info.peer, expiration=expire)
        )
        addrs = tuple(a.with_peer(self._me) for a in self._addresses() if not a.is_relayed)
        reply = m.HopMessage(
            type=m.HopType.STATUS,
            status=m.Status.OK,
            reservation=m.Reservation(expire=expire, addrs=addrs[: m.ADDRS_MAX], voucher=signed),
            limit=self.limits.limit,
        )
        return [
            sw.Write(conn=conn, stream=stream, data=m.frame(reply)),
            sw.CloseStream(conn=conn, stream=stream),
            sw.Report(conn=conn, outcome=ReservationGranted(peer=info.peer, expire_s=now_s + ttl)),
        ]

    def _connect(
        self, conn: int, stream: int, info: _Conn, request: m.HopMessage, rest: bytes, now_s: float
    ) -> list[sw.Effect]:
        if request.peer is None:
            self.refusals["relay_malformed"] += 1
            return self._answer(conn, stream, m.Status.MALFORMED_MESSAGE)
        target = request.peer.id
        if target in (info.peer, self._me):
            self.refusals["relay_connect_self"] += 1
            return self._answer(conn, stream, m.Status.PERMISSION_DENIED)
        held = [(k[1], r) for k, r in self._reservations.items() if k[0] == target and r.expire_s > now_s]
        held = [(c, r) for c, r in held if c in self._conns]
        if not held:
            self.refusals["relay_no_reservation"] += 1
            return self._answer(conn, stream, m.Status.NO_RESERVATION)
        if len(self._circuits) >= self.limits.circuits_max or any(
            sum(1 for c in self._circuits.values() if p in (c.source, c.target))
            >= self.limits.circuits_per_peer_max
            for p in (info.peer, target)
        ):
            self.refusals["relay_circuits"] += 1
            return self._answer(conn, stream, m.Status.RESOURCE_LIMIT_EXCEEDED)
        if len(rest) > EARLY_BYTES_MAX:
            self.refusals["relay_early_bytes"] += 1
            return [sw.ResetStream(conn=conn, stream=stream)]
        dst_conn = max(held, key=lambda item: item[1].expire_s)[0]
        cid = self._next_circuit
        self._next_circuit += 1
        circuit = _Circuit(
            source=info.peer, target=target, src=(conn, stream), dst_conn=dst_conn, started_s=now_s
        )
        circuit.early += rest
        self._circuits[cid] = circuit
        self._legs[(conn, stream)] = cid
        return [sw.OpenStream(conn=dst_conn, protocols=(m.STOP_PROTOCOL_ID,), tag=(_STOP, cid))]

    def _stop_opened(self, cid: int, conn: int, stream: int) -> list[sw.Effect]:
        circuit = self._circuits.get(cid)
        if circuit is None:  # the source went while the stream was opening
            return [sw.ResetStream(conn=conn, stream=stream)]
        circuit.dst_stream = stream
        self._legs[(conn, stream)] = cid
        request = m.StopMessage(
            type=m.StopType.CONNECT, peer=m.Peer(id=circuit.source), limit=self.limits.limit
        )
        return [sw.Write(conn=conn, stream=stream, data=m.frame(request))]

    def _stop_answer(self, cid: int, circuit: _Circuit, data: bytes, now_s: float) -> list[sw.Effect]:
        try:
            body = circuit.stop_reader.feed(data)
            if body is None:
                return []
            answer = m.StopMessage.decode(body)
        except ProtocolViolation:
            self.refusals["relay_stop_malformed"] += 1
            return self._fail_connect(cid, m.Status.CONNECTION_FAILED)
        if answer.type != m.StopType.STATUS or answer.status != m.Status.OK:
            self.refusals["relay_stop_refused"] += 1
            return self._fail_connect(cid, m.Status.CONNECTION_FAILED)
        # libp2p/specs relay/circuit-v2.md: on the target's OK the relay answers the
        # initiator OK "and then proceeds to bridge the two streams".
        circuit.spliced = True
        circuit.started_s = now_s
        self.counters["circuits_spliced"] += 1
        reply = m.HopMessage(type=m.HopType.STATUS, status=m.Status.OK, limit=self.limits.limit)
        src_conn, src_stream = circuit.src
        effects: list[sw.Effect] = [sw.Write(conn=src_conn, stream=src_stream, data=m.frame(reply))]
        early, circuit.early = bytes(circuit.early), bytearray()
        dst = circuit.dst
        assert dst is not None
        if early:
            effects += self._splice(cid, circuit, circuit.src, early, now_s)
        if circuit.stop_reader.rest and cid in self._circuits:
            effects += self._splice(cid, circuit, dst, circuit.stop_reader.rest, now_s)
        return effects

    def _splice(
        self, cid: int, circuit: _Circuit, leg: tuple[int, int], data: bytes, now_s: float
    ) -> list[sw.Effect]:
        if self._over_duration(circuit, now_s):
            self.refusals["relay_circuit_duration"] += 1
            return self._reset_circuit(cid, "duration limit")
        to_target = leg == circuit.src
        other = circuit.dst if to_target else circuit.src
        assert other is not None
        sent = circuit.to_target if to_target else circuit.to_source
        cap = self.limits.circuit_bytes_max
        allowed = len(data) if cap == 0 else max(0, min(len(data), cap - sent))
        if to_target:
            circuit.to_target += allowed
        else:
            circuit.to_source += allowed
        self.counters["bytes_relayed"] += allowed
        effects: list[sw.Effect] = []
        if allowed:
            # `source`: while the other leg's backlog is high, the swarm stops crediting this
            # leg's sender (backpressure), rather than buffering or resetting the circuit.
            effects.append(sw.Write(conn=other[0], stream=other[1], data=data[:allowed], source=leg))
        if allowed < len(data):
            self.refusals["relay_circuit_bytes"] += 1
            effects += self._reset_circuit(cid, "data limit")
        return effects

    def _over_duration(self, circuit: _Circuit, now_s: float) -> bool:
        duration = self.limits.circuit_duration_s
        return duration > 0 and now_s - circuit.started_s >= duration

    def _ended(self, conn: int, stream: int) -> list[sw.Effect]:
        pending = self._pending.pop((conn, stream), None)
        if pending is not None:
            self.refusals["relay_malformed"] += 1
            return self._answer(conn, stream, m.Status.MALFORMED_MESSAGE)
        cid = self._legs.get((conn, stream))
        if cid is None:
            return []
        circuit = self._circuits[cid]
        if not circuit.spliced:
            if (conn, stream) == circuit.src:
                return self._reset_circuit(cid, "source closed before the circuit opened")
            self.refusals["relay_stop_refused"] += 1
            return self._fail_connect(cid, m.Status.CONNECTION_FAILED)
        # A half-close travels through the circuit; both halves closed ends it.
        is_src = (conn, stream) == circuit.src
        circuit.ended.add("src" if is_src else "dst")
        other = circuit.dst if is_src else circuit.src
        assert other is not None
        effects: list[sw.Effect] = [sw.CloseStream(conn=other[0], stream=other[1])]
        if circuit.ended == {"src", "dst"}:
            effects += self._forget(cid, "closed")
        return effects

    def _gone(self, conn: int, stream: int | None, tag: object) -> list[sw.Effect]:
        if stream is None:
            if isinstance(tag, tuple) and len(tag) == 2 and tag[0] == _STOP and tag[1] in self._circuits:
                self.refusals["relay_stop_refused"] += 1
                return self._fail_connect(tag[1], m.Status.CONNECTION_FAILED)
            return []
        if self._pending.pop((conn, stream), None) is not None:
            return []
        cid = self._legs.get((conn, stream))
        if cid is None:
            return []
        circuit = self._circuits[cid]
        if not circuit.spliced and (conn, stream) != circuit.src:
            effects = self._fail_connect(cid, m.Status.CONNECTION_FAILED)
        else:
            effects = self._reset_circuit(cid, "stream reset")
        return [e for e in effects if e != sw.ResetStream(conn=conn, stream=stream)]

    def _fail_connect(self, cid: int, status: m.Status) -> list[sw.Effect]:
        circuit = self._circuits[cid]
        effects = self._answer(*circuit.src, status)
        dst = circuit.dst
        if dst is not None:
            effects.append(sw.ResetStream(conn=dst[0], stream=dst[1]))
        self._forget(cid, "connect failed")
        return effects

    def _reset_circuit(self, cid: int, reason: str) -> list[sw.Effect]:
        circuit = self._circuits[cid]
        effects: list[sw.Effect] = [sw.ResetStream(conn=circuit.src[0], stream=circuit.src[1])]
        dst = circuit.dst
        if dst is not None:
            effects.append(sw.ResetStream(conn=dst[0], stream=dst[1]))
        return effects + self._forget(cid, reason)

    def _forget(self, cid: int, reason: str) -> list[sw.Effect]:
        circuit = self._circuits.pop(cid)
        self._legs.pop(circuit.src, None)
        dst = circuit.dst
        if dst is not None:
            self._legs.pop(dst, None)
        if not circuit.spliced:
            return []
        outcome = CircuitRelayed(
            source=circuit.source,
            target=circuit.target,
            bytes_to_target=circuit.to_target,
            bytes_to_source=circuit.to_source,
            reason=reason,
        )
        return [sw.Report(conn=circuit.src[0], outcome=outcome)]

    @staticmethod
    def _answer(conn: int, stream: int, status: m.Status) -> list[sw.Effect]:
        reply = m.HopMessage(type=m.HopType.STATUS, status=status)
        return [
            sw.Write(conn=conn, stream=stream, data=m.frame(reply)),
            sw.CloseStream(conn=conn, stream=stream),
        ]


def _group_of(remote: Multiaddr) -> str | None:
    ip = ip_of(remote)
    return None if ip is None else subnet_of(str(ip))
