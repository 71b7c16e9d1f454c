"""NAT traversal as a simulation: hosts behind NATs, relays, AutoNAT servers, hole punches.

`SimHost` stands in for `swarm/host.py` around the real, pure cores — the AutoNAT v2
client and server, the relay's hop and client sides, DCUtR — and an echo protocol
that plays the node's traffic. It owns connections and streams, executes the cores'
effects and turns what happens into their events, and does what the host does around
them: AutoNAT rounds (up to `AUTONAT_SERVERS_PER_ROUND_MAX` direct servers per
`autonat_interval_s`, retried every `AUTONAT_RETRY_S`), dialling AutoNAT dial-backs on
a fresh connection, reserving on relays when the node is private (the host's own
choice, `relay.client.relays_to_reserve`, with relays that refused resting
`RESERVE_REST_S`), dialling a hole punch's addresses from the listen port at the
punch's time, closing the relayed connection `relayed_grace_s` after a
direct one came, closing the connections a relay's connection carried when it goes.

`Internet` is the network under them. Every node has an IP and listens on
`LISTEN_PORT`; a node behind NAT has a NAT of its own (a home router) with a public IP:

- mapping: `port-preserving` (endpoint-independent: the outside port is the inside
  one) or `random-port` (a fresh outside port for every destination: symmetric);
- filtering: an inbound SYN passes only to an (outside port, remote endpoint) pair the
  inside host has sent to (address-and-port-dependent); anything else is dropped
  silently, which is how a NAT drops unsolicited inbound connections.

A dial sends SYNs (again after 1, 2, 4 … s, as TCP does, until its timeout); a hole
punch's SYN may be lost (`Internet.punch_syn_loss`), which is what DCUtR retries for.
When both sides' SYNs cross (a hole punch), the first let through makes the one
connection of that 4-tuple. Established connections carry frames reliably and in
order (the simulated network with `reorder=False` and no loss); a connection to a node
that vanished is noticed only after the keep-alive timeout (`HostConfig.keepalive_*`,
drawn per connection). Streams are multiplexed per connection with a few frames
(open / accept / refuse / data / end / reset / close); a relayed connection's frames
cross the relay pickled as bytes on the circuit stream, spliced by the real relay
core, so its limits and resets apply to them.
"""

from __future__ import annotations

import heapq
import pickle
import random
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pyrsia.p2p.behaviours import dcutr
from pyrsia.p2p.behaviours.autonat import client as autonat_client
from pyrsia.p2p.behaviours.autonat import server as autonat_server
from pyrsia.p2p.behaviours.relay import client as relay_client
from pyrsia.p2p.behaviours.relay import hop
from pyrsia.p2p.identity import Identity
from pyrsia.p2p.swarm import behaviour as sw
from pyrsia.p2p.swarm.host import AUTONAT_RETRY_S, AUTONAT_SERVERS_PER_ROUND_MAX, HostConfig
from pyrsia.p2p.wire.multiaddr import Multiaddr, tcp
from tests.sim.driver import Outgoing, Simulation

LISTEN_PORT = 4001
TICK_S = 1.0  # behaviours' tick: the cores ask for "about once a second"
SYN_RETRIES_S = (1.0, 2.0, 4.0, 8.0)  # gaps between SYNs of one dial
ECHO = "/pyrsia-sim/echo"
ECHO_INTERVAL_S = 2.0
REDIAL_S = 30.0  # a lost bootstrap connection (to a relay or server) is dialled again
CIRCUIT_RETRY_S = 20.0  # after a circuit was refused, the next CONNECT waits this long
UNIX_OFFSET_S = 1_700_000_000.0
DEFAULTS = HostConfig()
DIAL_TIMEOUT_S = DEFAULTS.dial_address_timeout_s

Endpoint = tuple[str, int]


# -- the network ---------------------------------------------------------------------------


@dataclass(slots=True)
class Nat:
    """One home router: its public IP, how it maps and what it lets in."""

    ip: str
    port_preserving: bool
    rng: random.Random
    _maps: dict[tuple[int, Endpoint], int] = field(default_factory=dict)
    _holes: set[tuple[int, Endpoint]] = field(default_factory=set)

    def outbound(self, port: int, remote: Endpoint) -> int:
        """The outside port a packet from inside `port` to `remote` leaves from; opens its pinhole."""
        ext = self._maps.get((port, remote))
        if ext is None:
            ext = port if self.port_preserving else self.rng.randrange(20_000, 65_000)
            self._maps[(port, remote)] = ext
        self._holes.add((ext, remote))
        return ext

    def admits(self, port: int, remote: Endpoint) -> bool:
        return (port, remote) in self._holes


@dataclass(slots=True)
class Link:
    id: int
    dialer: str
    acceptor: str


class Internet:
    """IPs, NATs and direct links; the place a vanished node's peers learn it is gone."""

    def __init__(self, sim: Simulation, *, punch_syn_loss: float = 0.0) -> None:
        self.sim = sim
        self.punch_syn_loss = punch_syn_loss
        self.rng = random.Random(f"{sim.seed}/internet")
        self.hosts: dict[str, SimHost] = {}
        self.owner_of_ip: dict[str, str] = {}
        self.nats: dict[str, Nat] = {}
        self.links: dict[int, Link] = {}
        self.tuples: dict[frozenset[Endpoint], int] = {}
        self._next_link = 0

    def add(self, host: SimHost) -> None:
        self.hosts[host.name] = host
        self.owner_of_ip[host.public_ip] = host.name
        if host.nat is not None:
            self.nats[host.name] = host.nat
        self.sim.add(host.name, host)

    def alive(self, name: str) -> bool:
        return self.sim.network.is_up(name)

    def public_endpoint(self, host: SimHost, port: int, remote: Endpoint) -> Endpoint:
        if host.nat is None:
            return (host.ip, port)
        return (host.nat.ip, host.nat.outbound(port, remote))

    def admits(self, host: SimHost, port: int, remote: Endpoint) -> bool:
        if host.nat is None:
            return port == LISTEN_PORT
        return host.nat.admits(port, remote)

    def new_link(self, dialer: str, acceptor: str, key: frozenset[Endpoint]) -> Link:
        self._next_link += 1
        link = Link(self._next_link, dialer, acceptor)
        self.links[link.id] = link
        self.tuples[key] = link.id
        return link

    def vanish(self, name: str) -> None:
        """`name` is gone without a word: each peer notices after its keep-alive timeout."""
        self.sim.crash(name)
        for link in list(self.links.values()):
            if name not in (link.dialer, link.acceptor):
                continue
            other = link.acceptor if link.dialer == name else link.dialer
            if not self.alive(other):
                continue
            after_s = DEFAULTS.keepalive_timeout_s + self.rng.uniform(0.0, DEFAULTS.keepalive_interval_s)
            host = self.hosts[other]
            link_id = link.id
            self.sim.call(
                other, lambda now, h=host, i=link_id, a=after_s: h.later(now + a, lambda: h.link_dead(i))
            )


# -- one connection and its streams ----------------------------------------------------------


@dataclass(slots=True, eq=False)
class Stream:
    owner: object  # a behaviour, or the relayed connection id it carries (an int)
    tag: object = None
    protocol: str = ""
    opening: bool = False
    local_closed: bool = False
    remote_closed: bool = False


@dataclass(slots=True, eq=False)
class Conn:
    id: int
    peer: str
    direction: str
    remote: Multiaddr
    link: int | None = None
    carrier: tuple[int, int] | None = None  # (connection to the relay, circuit stream)
    streams: dict[int, Stream] = field(default_factory=dict)
    next_stream: int = 0
    inbox: bytearray = field(default_factory=bytearray)
    opened_s: float = 0.0

    @property
    def relayed(self) -> bool:
        return self.carrier is not None

    def new_stream_id(self) -> int:
        # yamux: the dialling side's streams are odd, the other side's even.
        self.next_stream += 1
        return 2 * self.next_stream - (1 if self.direction == "outbound" else 0)


@dataclass(slots=True, eq=False)
class Dial:
    id: int
    target: Endpoint
    port: int  # ours: LISTEN_PORT for a hole punch, else an ephemeral one
    deadline_s: float
    on_up: Callable[[Conn], None]
    on_fail: Callable[[str], None]
    done: bool = False


class Echo:
    """The node's own traffic: `send` one numbered ping; the peer echoes it and closes."""

    protocols = (ECHO,)

    def __init__(self) -> None:
        self.replies: list[tuple[int, float, bool]] = []  # (number, answered at, over a relayed conn)
        self.served = 0
        self._relayed: dict[int, bool] = {}
        self._serving: set[tuple[int, int]] = set()
        self._mine: dict[tuple[int, int], int] = {}

    def send(self, conn: int, number: int) -> list[sw.Effect]:
        return [sw.OpenStream(conn=conn, protocols=(ECHO,), tag=("echo", number))]

    def on_event(self, event: sw.Event, now_s: float) -> Sequence[sw.Effect]:
        match event:
            case sw.ConnectionUp(conn=conn, relayed=relayed):
                self._relayed[conn] = relayed
            case sw.ConnectionDown(conn=conn):
                self._relayed.pop(conn, None)
                self._serving = {k for k in self._serving if k[0] != conn}
                self._mine = {k: n for k, n in self._mine.items() if k[0] != conn}
            case sw.InboundStream(conn=conn, stream=stream):
                self._serving.add((conn, stream))
            case sw.StreamOpened(conn=conn, stream=stream, tag=("echo", int() as number)):
                self._mine[(conn, stream)] = number
                return [sw.Write(conn=conn, stream=stream, data=b"echo %d" % number)]
            case sw.StreamData(conn=conn, stream=stream, data=data):
                if (conn, stream) in self._serving:
                    self._serving.discard((conn, stream))
                    self.served += 1
                    return [
                        sw.Write(conn=conn, stream=stream, data=data),
                        sw.CloseStream(conn=conn, stream=stream),
                    ]
                number = self._mine.pop((conn, stream), None)
                if number is not None and data == b"echo %d" % number:
                    self.replies.append((number, now_s, self._relayed.get(conn, False)))
                    return [sw.CloseStream(conn=conn, stream=stream)]
            case sw.StreamGone(conn=conn, stream=stream):
                self._mine.pop((conn, stream or -1), None)
                self._serving.discard((conn, stream or -1))
        return ()

    def tick(self, now_s: float) -> Sequence[sw.Effect]:
        return ()


# -- the host --------------------------------------------------------------------------------


@dataclass(slots=True)
class HostLog:
    """What happened, for the properties: every outcome with its time."""

    reachability: list[tuple[float, str]] = field(default_factory=list)
    verdicts: list[tuple[float, str, str]] = field(default_factory=list)  # (at, server, result)
    reserved: list[tuple[float, str]] = field(default_factory=list)
    lost: list[tuple[float, str, str]] = field(default_factory=list)
    expired_at_relay: list[tuple[float, str]] = field(default_factory=list)
    direct: list[tuple[float, str, int]] = field(default_factory=list)  # (at, peer, attempts)
    punch_failed: list[tuple[float, str, int, bool]] = field(default_factory=list)
    punch_dials: int = 0
    circuits_opened: int = 0
    reserve_asks_relayed: int = 0


class SimHost:
    """One node: the real cores behind a host that does what `swarm/host.py` does."""

    def __init__(
        self,
        internet: Internet,
        *,
        index: int,
        ip: str,
        nat: Nat | None = None,
        relay_limits: hop.RelayLimits | None = None,
        reachability: str = "auto",
        liar: str = "",
    ) -> None:
        self.internet = internet
        self.identity = Identity.from_seed(struct.pack(">QQ", internet.sim.seed, index) * 2)
        self.name = self.identity.peer_id
        self.ip = ip
        self.nat = nat
        self.public_ip = nat.ip if nat is not None else ip
        self.rng = random.Random(f"{internet.sim.seed}/host/{index}")
        self.mode = reachability
        self.reachability = "unknown" if reachability == "auto" else reachability
        # A lying AutoNAT server: "deny" says every dial-back failed without dialling;
        # "confirm" sends the nonce over the request's own connection, dialling nothing.
        self.liar = liar
        self.log = HostLog()
        self.relay_client = relay_client.RelayClient(self.name, unix_offset_s=UNIX_OFFSET_S)
        self.relay: hop.Relay | None = None
        if relay_limits is not None:
            self.relay = hop.Relay(
                self.identity, lambda: (self.listen,), unix_offset_s=UNIX_OFFSET_S, limits=relay_limits
            )
        self.dcutr = dcutr.Dcutr(self._punch_addrs)
        self.autonat_server = autonat_server.AutonatServer(self.rng.randbytes)
        self.autonat_client = autonat_client.AutonatClient(self.rng.randbytes, reachability=reachability)
        self.echo = Echo()
        self.behaviours: list[sw.Behaviour] = [self.relay_client, self.dcutr, self.autonat_server]
        self.behaviours += [self.autonat_client, self.echo]
        if self.relay is not None:
            self.behaviours.append(self.relay)
        self.handlers: dict[str, sw.Behaviour] = {p: b for b in self.behaviours for p in b.protocols}
        self.conns: dict[int, Conn] = {}
        self.by_link: dict[int, int] = {}
        self.dials: dict[int, Dial] = {}
        self.circuit_addrs: dict[str, tuple[Multiaddr, ...]] = {}
        self.reserving: set[str] = set()
        self.reserve_resting: dict[str, float] = {}
        self.bootstrap: list[SimHost] = []
        self.echo_target: SimHost | None = None
        self.echo_sent = 0
        self.echo_due = 0.0
        self.circuit_dialing_until = 0.0
        self.autonat_asked: dict[str, float] = {}
        self.autonat_due = 0.0
        self.redial_due = 0.0
        self._next_conn = 0
        self._next_dial = 0
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._timer_seq = 0
        self._next_tick_s = 0.0
        self._out: list[Outgoing] = []
        self._now = 0.0

    # -- addresses -----------------------------------------------------------------

    @property
    def listen(self) -> Multiaddr:
        return tcp(self.ip, LISTEN_PORT)

    @property
    def public(self) -> Multiaddr:
        """Where others dial us: our IP, or our NAT's with the listen port (what observers confirm)."""
        return tcp(self.public_ip, LISTEN_PORT)

    def _punch_addrs(self) -> tuple[Multiaddr, ...]:
        # host._punch_addrs: observed (the listen port for outbound connections), then listen.
        return tuple(dict.fromkeys((self.public, self.listen)))

    def _autonat_candidates(self) -> tuple[Multiaddr, ...]:
        return tuple(dict.fromkeys((self.listen, self.public)))

    # -- the driver's node interface -----------------------------------------------------

    def receive(self, src: str, payload: object, now_s: float) -> list[Outgoing]:
        self._now = now_s
        assert isinstance(payload, tuple)
        match payload:
            case ("syn", int() as dial_id, tuple() as src_ep, tuple() as dst_ep):
                self._syn(src, dial_id, src_ep, dst_ep)
            case ("synack", int() as dial_id, int() as link_id, tuple() as dst_ep):
                self._synack(src, dial_id, link_id, dst_ep)
            case ("f", int() as link_id, tuple() as frame):
                conn_id = self.by_link.get(link_id)
                if conn_id is not None and conn_id in self.conns:
                    self._frame(self.conns[conn_id], frame)
        return self._flush()

    def tick(self, now_s: float) -> list[Outgoing]:
        self._now = now_s
        while self._timers and self._timers[0][0] <= now_s:
            _, _, action = heapq.heappop(self._timers)
            action()
        if now_s >= self._next_tick_s:
            self._next_tick_s = now_s + TICK_S
            for behaviour in self.behaviours:
                self._apply(behaviour, behaviour.tick(now_s))
            self._rounds()
        return self._flush()

    def next_deadline_s(self) -> float | None:
        return min(self._next_tick_s, self._timers[0][0]) if self._timers else self._next_tick_s

    def later(self, when_s: float, action: Callable[[], None]) -> list[Outgoing]:
        self._timer_seq += 1
        heapq.heappush(self._timers, (when_s, self._timer_seq, action))
        return []

    def _flush(self) -> list[Outgoing]:
        out, self._out = self._out, []
        return out

    # -- dialling ------------------------------------------------------------------

    def dial(
        self,
        target: Endpoint,
        *,
        punch: bool = False,
        timeout_s: float = DIAL_TIMEOUT_S,
        on_up: Callable[[Conn], None] = lambda conn: None,
        on_fail: Callable[[str], None] = lambda reason: None,
    ) -> None:
        self._next_dial += 1
        port = LISTEN_PORT if punch else self.rng.randrange(30_000, 60_000)
        dial = Dial(self._next_dial, target, port, self._now + timeout_s, on_up, on_fail)
        self.dials[dial.id] = dial
        self._send_syn(dial, 0)
        self.later(dial.deadline_s, lambda: self._dial_timeout(dial))

    def _send_syn(self, dial: Dial, sent: int) -> None:
        if dial.done or self._now >= dial.deadline_s:
            return
        owner = self.internet.owner_of_ip.get(dial.target[0])
        src_ep = self.internet.public_endpoint(self, dial.port, dial.target)  # opens our pinhole
        lost = dial.port == LISTEN_PORT and self.internet.rng.random() < self.internet.punch_syn_loss
        if owner is not None and not lost:
            self._out.append(Outgoing(owner, ("syn", dial.id, src_ep, dial.target)))
        if sent < len(SYN_RETRIES_S):
            self.later(self._now + SYN_RETRIES_S[sent], lambda: self._send_syn(dial, sent + 1))

    def _dial_timeout(self, dial: Dial) -> None:
        if not dial.done:
            dial.done = True
            del self.dials[dial.id]
            dial.on_fail("no answer")

    def _syn(self, src: str, dial_id: int, src_ep: Endpoint, dst_ep: Endpoint) -> None:
        if not self.internet.admits(self, dst_ep[1], src_ep):
            return  # the NAT drops it, or nothing listens there
        key = frozenset((src_ep, dst_ep))
        if key in self.internet.tuples:
            return  # the SYNs crossed and the other one made the connection already
        link = self.internet.new_link(src, self.name, key)
        self._out.append(Outgoing(src, ("synack", dial_id, link.id, dst_ep)))
        self._up(src, "inbound", tcp(*src_ep), link=link.id)

    def _synack(self, src: str, dial_id: int, link_id: int, dst_ep: Endpoint) -> None:
        dial = self.dials.pop(dial_id, None)
        if dial is None or dial.done:
            self._out.append(Outgoing(src, ("f", link_id, ("close",))))
            return
        dial.done = True
        conn = self._up(src, "outbound", tcp(*dst_ep), link=link_id)
        dial.on_up(conn)

    def link_dead(self, link_id: int) -> None:
        conn_id = self.by_link.get(link_id)
        if conn_id is not None and conn_id in self.conns:
            self._down(self.conns[conn_id], "keep-alive timed out")

    # -- connections -----------------------------------------------------------------

    def _up(
        self,
        peer: str,
        direction: str,
        remote: Multiaddr,
        *,
        link: int | None = None,
        carrier: tuple[int, int] | None = None,
    ) -> Conn:
        self._next_conn += 1
        conn = Conn(self._next_conn, peer, direction, remote, link, carrier, opened_s=self._now)
        self.conns[conn.id] = conn
        if link is not None:
            self.by_link[link] = conn.id
        event = sw.ConnectionUp(
            conn=conn.id, peer=peer, direction=direction, remote=remote, relayed=carrier is not None
        )
        self._dispatch_all(event)
        if conn.id in self.conns and carrier is None and self.internet.hosts[peer].relay is not None:
            self._reserve_more()  # host: a hop-speaking peer identified over a direct connection
        return conn

    def _down(self, conn: Conn, reason: str) -> None:
        if self.conns.pop(conn.id, None) is None:
            return
        if conn.link is not None:
            self.by_link.pop(conn.link, None)
        if conn.carrier is not None:
            parent_id, stream_id = conn.carrier
            self.relay_client.circuit_closed(parent_id, stream_id)
            parent = self.conns.get(parent_id)
            if parent is not None and parent.streams.pop(stream_id, None) is not None:
                self._send(parent, ("reset", stream_id))
        for stream in conn.streams.values():
            if isinstance(stream.owner, int) and stream.owner in self.conns:
                self._down(self.conns[stream.owner], "the relay's connection closed")
        self._dispatch_all(sw.ConnectionDown(conn=conn.id, peer=conn.peer, reason=reason))

    def close(self, conn: Conn, reason: str) -> None:
        if conn.id in self.conns:
            self._send(conn, ("close",))
            self._down(conn, reason)

    def live_conn(self, peer: str) -> Conn | None:
        """host._live_conn: a direct connection before a relayed one."""
        live = sorted((c for c in self.conns.values() if c.peer == peer), key=lambda c: (c.relayed, c.id))
        return live[0] if live else None

    def _send(self, conn: Conn, frame: tuple[object, ...]) -> None:
        if conn.link is not None:
            self._out.append(Outgoing(conn.peer, ("f", conn.link, frame)))
            return
        assert conn.carrier is not None
        parent = self.conns.get(conn.carrier[0])
        if parent is None or conn.carrier[1] not in parent.streams:
            return
        body = pickle.dumps(frame)
        self._send(parent, ("data", conn.carrier[1], struct.pack(">I", len(body)) + body))

    def _frame(self, conn: Conn, frame: tuple[object, ...]) -> None:
        match frame:
            case ("close",):
                self._down(conn, "closed by the peer")
            case ("open", int() as sid, str() as protocol):
                handler = self.handlers.get(protocol)
                if handler is None:
                    self._send(conn, ("refuse", sid))
                    return
                conn.streams[sid] = Stream(owner=handler, protocol=protocol)
                self._send(conn, ("accept", sid))
                self._event(handler, sw.InboundStream(conn=conn.id, stream=sid, protocol=protocol))
            case ("accept", int() as sid):
                stream = conn.streams.get(sid)
                if stream is not None and stream.opening:
                    stream.opening = False
                    opened = sw.StreamOpened(
                        conn=conn.id, stream=sid, protocol=stream.protocol, tag=stream.tag
                    )
                    self._event(stream.owner, opened)
            case ("refuse", int() as sid):
                stream = conn.streams.pop(sid, None)
                if stream is not None:
                    gone = sw.StreamGone(conn=conn.id, stream=None, tag=stream.tag, reason="protocol refused")
                    self._event(stream.owner, gone)
            case ("data", int() as sid, bytes() as data):
                stream = conn.streams.get(sid)
                if stream is None or stream.remote_closed:
                    return
                if isinstance(stream.owner, int):
                    self._carried(stream.owner, data)
                else:
                    self._event(stream.owner, sw.StreamData(conn=conn.id, stream=sid, data=data))
            case ("end", int() as sid):
                stream = conn.streams.get(sid)
                if stream is None:
                    return
                stream.remote_closed = True
                if stream.local_closed:
                    del conn.streams[sid]
                if isinstance(stream.owner, int):
                    if stream.owner in self.conns:
                        self._down(self.conns[stream.owner], "the circuit closed")
                else:
                    self._event(stream.owner, sw.StreamEnded(conn=conn.id, stream=sid))
            case ("reset", int() as sid):
                stream = conn.streams.pop(sid, None)
                if stream is None:
                    return
                if isinstance(stream.owner, int):
                    if stream.owner in self.conns:
                        self._down(self.conns[stream.owner], "the circuit was reset")
                else:
                    self._event(
                        stream.owner, sw.StreamGone(conn=conn.id, stream=sid, tag=stream.tag, reason="reset")
                    )
            case _:
                raise AssertionError(f"unknown frame {frame!r}")

    def _carried(self, conn_id: int, data: bytes) -> None:
        conn = self.conns.get(conn_id)
        if conn is None:
            return
        conn.inbox += data
        while len(conn.inbox) >= 4:
            (size,) = struct.unpack(">I", conn.inbox[:4])
            if len(conn.inbox) < 4 + size:
                return
            frame = pickle.loads(bytes(conn.inbox[4 : 4 + size]))
            del conn.inbox[: 4 + size]
            self._frame(conn, frame)
            if conn.id not in self.conns:
                return

    # -- behaviours -----------------------------------------------------------------

    def _dispatch_all(self, event: sw.Event) -> None:
        for behaviour in self.behaviours:
            self._event(behaviour, event)

    def _event(self, behaviour: object, event: sw.Event) -> None:
        assert not isinstance(behaviour, int)
        self._apply(behaviour, behaviour.on_event(event, self._now))  # type: ignore[attr-defined]

    def _apply(self, behaviour: object, effects: Sequence[sw.Effect]) -> None:
        for effect in effects:
            conn = self.conns.get(effect.conn)
            match effect:
                case sw.Report(outcome=outcome):
                    self._report(conn, outcome)
                case sw.OpenStream(protocols=protocols, tag=tag):
                    if conn is None:
                        gone = sw.StreamGone(conn=effect.conn, stream=None, tag=tag, reason="no connection")
                        self._event(behaviour, gone)
                        continue
                    sid = conn.new_stream_id()
                    conn.streams[sid] = Stream(owner=behaviour, tag=tag, protocol=protocols[0], opening=True)
                    self._send(conn, ("open", sid, protocols[0]))
                case sw.Write(stream=sid, data=data):
                    if conn is not None and sid in conn.streams and not conn.streams[sid].local_closed:
                        self._send(conn, ("data", sid, data))
                case sw.CloseStream(stream=sid):
                    stream = conn.streams.get(sid) if conn is not None else None
                    if conn is not None and stream is not None and not stream.local_closed:
                        stream.local_closed = True
                        self._send(conn, ("end", sid))
                        if stream.remote_closed:
                            del conn.streams[sid]
                case sw.ResetStream(stream=sid):
                    if conn is not None and conn.streams.pop(sid, None) is not None:
                        self._send(conn, ("reset", sid))
                case sw.CloseConnection(reason=reason):
                    if conn is not None:
                        self.close(conn, reason)
                case _:
                    raise AssertionError(f"the simulated host does not do {effect!r}")

    def _report(self, conn: Conn | None, outcome: object) -> None:
        now = self._now
        match outcome:
            case relay_client.CircuitOpened(stream=stream, peer=peer, relay=relay, initiator=initiator):
                if conn is None or stream not in conn.streams:
                    return
                self.log.circuits_opened += 1
                if initiator:
                    self.circuit_dialing_until = 0.0
                remote = Multiaddr((*conn.remote.with_peer(relay).components, ("p2p-circuit", "")))
                carried = self._up(
                    peer, "outbound" if initiator else "inbound", remote, carrier=(conn.id, stream)
                )
                conn.streams[stream].owner = carried.id
                if outcome.initial:
                    self._carried(carried.id, outcome.initial)
            case relay_client.CircuitFailed():
                # Back off: every CONNECT counts against the relay's per-peer request rate,
                # which our own reservation renewals share.
                self.circuit_dialing_until = now + CIRCUIT_RETRY_S
            case relay_client.Reserved(relay=relay, addrs=addrs):
                self.reserving.discard(relay)
                self.circuit_addrs[relay] = addrs
                self.log.reserved.append((now, relay))
            case (
                relay_client.ReservationFailed(relay=relay, reason=reason)
                | relay_client.ReservationLost(relay=relay, reason=reason)
            ):
                self.reserving.discard(relay)
                self.reserve_resting[relay] = now + relay_client.RESERVE_REST_S
                self.circuit_addrs.pop(relay, None)
                self.log.lost.append((now, relay, reason))
                self._reserve_more(exclude=relay)
            case hop.ReservationEnded(peer=peer, reason=reason):
                if reason == "expired":
                    self.log.expired_at_relay.append((now, peer))
            case hop.ReservationGranted() | hop.CircuitRelayed() | autonat_server.DialBackServed():
                pass
            case autonat_server.DialBackRequested(address=address, tag=tag):
                self._dial_back(conn, address, tag)
            case autonat_client.ReachabilityChanged(reachability=reachability):
                if self.mode == "auto" and reachability != self.reachability:
                    self.reachability = reachability
                    self.log.reachability.append((now, reachability))
                    self._reserve_more()
            case autonat_client.ProbeResult(server=server, result=result):
                self.log.verdicts.append((now, server, result))
            case dcutr.PunchDial(at_s=at_s):
                self.log.punch_dials += 1
                self.later(at_s, lambda: self._punch(outcome))
            case dcutr.DirectConnection(peer=peer, relayed_conn=relayed_conn, attempts=attempts):
                self.log.direct.append((now, peer, attempts))
                self.later(now + DEFAULTS.relayed_grace_s, lambda: self._close_relayed(relayed_conn))
            case dcutr.PunchFailed(peer=peer, attempts=attempts, final=final):
                self.log.punch_failed.append((now, peer, attempts, final))
            case _:
                raise AssertionError(f"an outcome the simulated host does not know: {outcome!r}")

    # -- what the host does around the cores --------------------------------------------

    def _reserve_more(self, exclude: str = "") -> None:
        wanted = DEFAULTS.relay_reservations_wanted
        if self.reachability != "private" or len(self.circuit_addrs) + len(self.reserving) >= wanted:
            return
        self.reserve_resting = {r: until for r, until in self.reserve_resting.items() if until > self._now}
        hop_peers = sorted(
            {c.peer for c in self.conns.values() if self.internet.hosts[c.peer].relay is not None}
        )
        live = {peer: self.live_conn(peer) for peer in hop_peers}
        chosen = relay_client.relays_to_reserve(
            wanted=wanted,
            held=self.circuit_addrs.keys(),
            asking=self.reserving,
            candidates=[(peer, c is not None and not c.relayed) for peer, c in live.items()],
            resting=self.reserve_resting.keys(),
            exclude=exclude,
        )
        for relay in chosen:
            conn = live[relay]
            assert conn is not None
            if conn.relayed:
                self.log.reserve_asks_relayed += 1
            self.reserving.add(relay)
            self._apply(self.relay_client, self.relay_client.reserve(conn.id, self._now))

    def _dial_back(self, conn: Conn | None, address: Multiaddr, tag: autonat_server.DialBackTag) -> None:
        server = self.autonat_server
        if self.liar == "deny" or conn is None:
            self._apply(server, server.dial_back_failed(tag, "refused to dial", self._now))
            return
        if self.liar == "confirm":  # the nonce over the request's own connection, nothing dialled
            self._apply(server, server.dial_back_connected(tag, conn.id, self._now))
            return
        endpoint = address.tcp_endpoint()
        assert endpoint is not None

        def up(dialled: Conn) -> None:
            self._apply(server, server.dial_back_connected(tag, dialled.id, self._now))

        def failed(reason: str) -> None:
            self._apply(server, server.dial_back_failed(tag, reason, self._now))

        self.dial(endpoint, on_up=up, on_fail=failed)

    def _punch(self, punch: dcutr.PunchDial) -> None:
        live = self.live_conn(punch.peer)
        if live is not None and not live.relayed:
            return
        pending = {"left": len(punch.addrs)}

        def failed(reason: str) -> None:
            pending["left"] -= 1
            live = self.live_conn(punch.peer)
            if pending["left"] == 0 and (live is None or live.relayed):
                self._apply(self.dcutr, self.dcutr.dial_failed(punch.tag, reason, self._now))

        for address in punch.addrs:
            endpoint = address.tcp_endpoint()
            assert endpoint is not None
            self.dial(endpoint, punch=True, timeout_s=dcutr.DIAL_TIMEOUT_S, on_fail=failed)

    def _close_relayed(self, conn_id: int) -> None:
        conn = self.conns.get(conn_id)
        if conn is None or not conn.relayed:
            return
        direct = self.live_conn(conn.peer)
        if direct is not None and not direct.relayed:
            self.close(conn, "a direct connection replaced it")

    def _rounds(self) -> None:
        now = self._now
        if now >= self.redial_due:
            self.redial_due = now + REDIAL_S
            for peer in self.bootstrap:
                if self.live_conn(peer.name) is None:
                    self.dial((peer.public_ip, LISTEN_PORT))
        if self.mode == "auto" and now >= self.autonat_due:
            self._autonat_round(now)
        self._reserve_more()
        if self.echo_target is not None:
            self._echo_round(now)

    def _autonat_round(self, now: float) -> None:
        """host._autonat_round: up to 5 direct servers per interval, asked again every 5 s."""
        self.autonat_due = now + AUTONAT_RETRY_S
        interval_s = DEFAULTS.autonat_interval_s
        self.autonat_asked = {p: at for p, at in self.autonat_asked.items() if now - at < interval_s}
        room = AUTONAT_SERVERS_PER_ROUND_MAX - len(self.autonat_asked)
        for server in sorted({c.peer for c in self.conns.values()} - set(self.autonat_asked)):
            if room <= 0:
                break
            conn = self.live_conn(server)
            if conn is None or conn.relayed:
                continue
            room -= 1
            self.autonat_asked[server] = now
            self._apply(
                self.autonat_client, self.autonat_client.probe(conn.id, self._autonat_candidates(), now)
            )

    def _echo_round(self, now: float) -> None:
        target = self.echo_target
        assert target is not None
        if now < self.echo_due:
            return
        self.echo_due = now + ECHO_INTERVAL_S
        conn = self.live_conn(target.name)
        if conn is not None:
            self.echo_sent += 1
            self._apply(self.echo, self.echo.send(conn.id, self.echo_sent))
            return
        if now < self.circuit_dialing_until:
            return
        # No connection: dial through a relay the peer holds a reservation on (its circuit
        # addresses reach us by identify and the DHT; here straight from its host).
        relays = [r for r in target.circuit_addrs if (c := self.live_conn(r)) is not None and not c.relayed]
        if not relays:
            return
        relay_conn = self.live_conn(self.rng.choice(sorted(relays)))
        assert relay_conn is not None
        self.circuit_dialing_until = now + relay_client.REQUEST_TIMEOUT_S + TICK_S
        self._apply(self.relay_client, self.relay_client.connect(relay_conn.id, target.name, "app", now))


def public_ips(rng: random.Random, count: int, *, groups: int | None = None) -> list[str]:
    """`count` public IPv4 addresses, each in a /24 of its own or spread over `groups` /24s."""
    prefixes = [
        f"{a}.{rng.randrange(1, 250)}.{rng.randrange(1, 250)}"
        for a in rng.sample(range(20, 90), groups or count)
    ]
    return [f"{prefixes[i % len(prefixes)]}.{10 + i}" for i in range(count)]
