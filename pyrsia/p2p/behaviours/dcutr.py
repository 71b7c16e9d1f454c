"""DCUtR: turning a relayed connection into a direct one by hole punching (`/libp2p/dcutr`).

libp2p/specs relay/DCUtR.md. Two peers, A and B, share a connection through a relay: A
dialled B through it, B accepted it. B, the inbound side, runs the protocol:

1. B opens a `/libp2p/dcutr` stream on the relayed connection and writes
   `HolePunch{CONNECT, ObsAddrs=B's addresses}`, noting the time;
2. A answers `HolePunch{CONNECT, ObsAddrs=A's addresses}`;
3. B measures the round trip, writes `HolePunch{SYNC}` and closes its side;
4. A dials B's addresses as soon as SYNC arrives; B dials A's half a round trip after
   sending SYNC, so both SYNs cross and the NATs see a TCP simultaneous open. For the
   protocols above TCP, A is the client and B the server;
5. the first direct connection replaces the relayed one; if none comes, B starts over
   at (1), up to `attempts_max` times in all (the spec's 3), waiting `retry_backoff_s`,
   then twice that, between attempts.

Messages are varint-length-prefixed protobuf, `type` (1, CONNECT=100 or SYNC=300) and
`ObsAddrs` (2, repeated binary multiaddr), at most `MESSAGE_BYTES_MAX` (the spec's 4 KiB).

Hostile input. A message over 4 KiB, with more than `obs_addrs_max` addresses, with
one longer than `ADDRESS_BYTES_MAX`, with a type other than CONNECT or SYNC, or out of
order (SYNC before CONNECT, a second CONNECT) ends that punch, resets its stream and is
counted by name in `refusals`. An address we cannot parse is skipped (peers speak
transports we do not), and so is one we would not dial: only IP-literal TCP addresses
(a name would have us resolve whatever the peer chose), never our own, never one that
names another peer, and only in the peer's reach as the relay shows it: through a relay
at a public address only public addresses are dialled (a peer on the internet has no
business making us dial into our LAN or loopback), through a private relay private ones
too, through a loopback relay (a test bed) loopback too. At most `DIAL_ADDRS_MAX` are
dialled. A `/libp2p/dcutr` stream on a direct connection, or on a relayed one we
accepted (where we are B, and B never answers), is reset and counted; so is one more
stream while a punch with that peer is under way, more than `attempts_max` punches
answered for one peer in `ATTEMPT_WINDOW_S`, and more than `punches_max` punches at once.

What the swarm seam does not have yet, and how this module stands in for it:

* *Which connections are relayed.* Read from `ConnectionUp.remote`: the host gives a
  connection over a circuit stream the relay's circuit address as its remote
  (`/ip4/R/tcp/P/p2p/RELAY/p2p-circuit`), as every libp2p does. Proposed seam change:
  `ConnectionUp.relayed: bool`.
* *Dials at a time, from the listen port.* `PunchDial` is reported (`sw.Report`) on the
  relayed connection: the host dials every address in it at `at_s` (now, or later),
  from a socket bound to its listen address and port (SO_REUSEADDR/SO_REUSEPORT), so the
  NAT maps it to the address the peer observed, and runs the upgrade as the TCP
  client when `client` (A), else as the server (B). A dial that found no connection
  comes back through `dial_failed(tag, reason, now_s)`; a connection that came up
  arrives as an ordinary `ConnectionUp` for that peer, which is how success is seen
  (whichever side's SYN won).
* *Timers.* `tick(now_s)` fails attempts whose deadline passed and starts due retries;
  the host calls it from its timer (every 0.25 s is plenty).

We offer the TCP addresses `local_addrs()` gives (observed and listen; names from the
`announce` setting too), in the same reach as the peer's, at most `DIAL_ADDRS_MAX`. An
empty list is still sent: the peer's dial to us cannot work then, but ours to it may.
B keeps no memory of a peer between relayed connections; A's per-peer window is what
bounds how often one peer can make us punch.

Outcomes reported: `PunchDial`, `DirectConnection(peer, conn, relayed_conn)` (the host
prefers `conn` for new streams and closes the relayed connection after a grace period,
spec step 6), `PunchFailed(peer, reason, attempts, final)` (`final` when B gives up or a
punch was refused or broken; A's own attempts end with `final=False`, since B may retry).
Pure: time is an input; nothing here is random.
"""

from __future__ import annotations

from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from pyrsia.errors import ProtocolViolation
from pyrsia.p2p.ratelimit import prune_window
from pyrsia.p2p.swarm import behaviour as sw
from pyrsia.p2p.swarm.addresses import kind_of
from pyrsia.p2p.wire import protobuf, varint
from pyrsia.p2p.wire.multiaddr import Multiaddr

PROTOCOL_ID = "/libp2p/dcutr"
CONNECT = 100
SYNC = 300
MESSAGE_BYTES_MAX = 4096  # libp2p/specs relay/DCUtR.md: SHOULD refuse messages over 4 KiB
OBS_ADDRS_MAX = 32  # go-libp2p sends every observed address, TCP, QUIC and WebTransport alike
ADDRESS_BYTES_MAX = 256  # an ip6/tcp/p2p address is 61 bytes; a certhash-laden one ~150
DIAL_ADDRS_MAX = 8  # addresses one punch dials: a peer cannot make us spray SYNs
ATTEMPTS_MAX = 3  # libp2p/specs relay/DCUtR.md: B SHOULD retry twice, 3 attempts in all
PUNCHES_MAX = 8  # punches under way at once, either role
RETRY_BACKOFF_S = 2.0  # before the second attempt; doubled before the third
EXCHANGE_TIMEOUT_S = 10.0  # for the stream to open and CONNECT (or SYNC) to arrive
DIAL_TIMEOUT_S = 10.0  # for a direct connection after the dial starts
ATTEMPT_WINDOW_S = 300.0  # A answers at most `attempts_max` punches per peer in it
PEERS_REMEMBERED_MAX = 1024  # peers whose recent attempts A remembers (least recent evicted)

# How far a peer reaches, from the kind of its relay's address: the kinds of address we
# dial for it.
_REACH = {
    "public": frozenset({"public"}),
    "dns": frozenset({"public"}),
    "private": frozenset({"public", "private"}),
    "loopback": frozenset({"public", "private", "loopback"}),
}

# -- the codec ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class HolePunch:
    """One DCUtR message; addresses stay raw bytes until `dialable` judges them."""

    kind: int  # CONNECT | SYNC
    obs_addrs: tuple[bytes, ...] = ()

    def encode(self) -> bytes:
        return protobuf.encode([(1, self.kind), *((2, raw) for raw in self.obs_addrs)])

    @classmethod
    def decode(cls, data: bytes) -> HolePunch:
        fields = protobuf.decode(data)
        kind = protobuf.first(fields, 1, int)
        if not isinstance(kind, int):
            raise ProtocolViolation("dcutr message without a type")
        if kind not in (CONNECT, SYNC):
            raise ProtocolViolation(f"dcutr message of unknown type {kind}")
        return cls(kind=kind, obs_addrs=tuple(protobuf.every(fields, 2)))


def encode_message(message: HolePunch) -> bytes:
    return varint.prefixed(message.encode())


def dialable(
    raw_addrs: Iterable[bytes],
    *,
    peer: str,
    reach: str,
    ours: Iterable[Multiaddr] = (),
    refusals: Counter[str] | None = None,
) -> tuple[Multiaddr, ...]:
    """The addresses of `peer` we would dial, from its `ObsAddrs`, deduplicated, in order.

    `reach` is the kind of the relay's address (`kind_of`): it bounds the kinds we dial.
    Each address left out is counted in `refusals` under why.
    """
    counted: Counter[str] = refusals if refusals is not None else Counter()
    allowed = _REACH.get(reach, frozenset())
    own = {address.without_peer() for address in ours}
    out: list[Multiaddr] = []
    for raw in raw_addrs:
        try:
            address = Multiaddr.from_bytes(raw)
        except ProtocolViolation:
            counted["dcutr_addr_unparsed"] += 1
            continue
        named = address.peer_id
        if not address.is_relayed and named is not None and named != peer:
            counted["dcutr_addr_other_peer"] += 1
            continue
        address = address.without_peer()
        if address.is_relayed or address.tcp_endpoint() is None or address.value_of("tcp") == "0":
            counted["dcutr_addr_not_tcp"] += 1
            continue
        kind = kind_of(address)
        if kind == "dns":
            counted["dcutr_addr_name"] += 1
            continue
        if kind not in allowed:
            counted["dcutr_addr_out_of_reach"] += 1
            continue
        if address in own:
            counted["dcutr_addr_ours"] += 1
            continue
        if address in out:
            continue
        if len(out) >= DIAL_ADDRS_MAX:
            counted["dcutr_addr_over_max"] += 1
            continue
        out.append(address)
    return tuple(out)


# -- outcomes ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class PunchDial:
    """Dial `addrs` of `peer` at `at_s`, from our listen port, as TCP client or server."""

    peer: str
    relayed_conn: int
    addrs: tuple[Multiaddr, ...]
    at_s: float
    client: bool  # A (answered CONNECT) is the client; B (sent SYNC) the server
    attempt: int
    tag: object  # hand back to `dial_failed`


@dataclass(frozen=True, slots=True, kw_only=True)
class DirectConnection:
    """`conn` reaches `peer` directly: prefer it, and close `relayed_conn` after a grace."""

    peer: str
    conn: int
    relayed_conn: int
    attempts: int


@dataclass(frozen=True, slots=True, kw_only=True)
class PunchFailed:
    peer: str
    reason: str
    attempts: int
    final: bool  # B gave up, or the punch was refused or broken; A's ends are never final


# -- the behaviour -----------------------------------------------------------------------

_B = "initiator"  # inbound on the relayed connection: sends CONNECT first, retries
_A = "responder"  # dialled through the relay: answers CONNECT


@dataclass(frozen=True, slots=True)
class _StreamTag:
    peer: str
    attempt: int


@dataclass(frozen=True, slots=True)
class _DialTag:
    peer: str
    attempt: int


@dataclass(frozen=True, slots=True, kw_only=True)
class _Conn:
    peer: str
    relayed: bool
    inbound: bool
    reach: str  # kind of the remote address: for a relayed connection, the relay's


@dataclass(slots=True, kw_only=True)
class _Punch:
    peer: str
    conn: int  # the relayed connection
    role: str
    attempt: int
    # B: opening -> connect_sent -> dialing [-> backoff -> opening ...]
    # A: await_connect -> await_sync -> dialing
    phase: str
    deadline_s: float
    stream: int | None = None
    reader: varint.LengthPrefixedReader = field(
        default_factory=lambda: varint.LengthPrefixedReader(size_max=MESSAGE_BYTES_MAX)
    )
    sent_s: float = 0.0
    theirs: tuple[Multiaddr, ...] = ()


_READING = ("connect_sent", "await_connect", "await_sync")


class Dcutr:
    """The DCUtR behaviour; `local_addrs()` gives the addresses we offer (observed, listen).

    As B it starts on every relayed connection it accepts, unless `start_on_connect` is
    off; then the host calls `upgrade(conn)` when it chooses (after identify, say, as
    go-libp2p does, once the peer is known to speak dcutr and a unilateral dial failed).
    """

    protocols = (PROTOCOL_ID,)

    def __init__(
        self,
        local_addrs: Callable[[], Sequence[Multiaddr]],
        *,
        attempts_max: int = ATTEMPTS_MAX,
        punches_max: int = PUNCHES_MAX,
        obs_addrs_max: int = OBS_ADDRS_MAX,
        retry_backoff_s: float = RETRY_BACKOFF_S,
        exchange_timeout_s: float = EXCHANGE_TIMEOUT_S,
        dial_timeout_s: float = DIAL_TIMEOUT_S,
        start_on_connect: bool = True,
    ) -> None:
        self._local = local_addrs
        self._start_on_connect = start_on_connect
        self._attempts_max = attempts_max
        self._punches_max = punches_max
        self._obs_addrs_max = obs_addrs_max
        self._backoff_s = retry_backoff_s
        self._exchange_s = exchange_timeout_s
        self._dial_s = dial_timeout_s
        self._conns: dict[int, _Conn] = {}
        self._punches: dict[str, _Punch] = {}
        self._answered: OrderedDict[str, deque[float]] = OrderedDict()
        self.refusals: Counter[str] = Counter()

    # -- inputs ---------------------------------------------------------------------

    def on_event(self, event: sw.Event, now_s: float) -> Sequence[sw.Effect]:
        match event:
            case sw.ConnectionUp(conn=conn, peer=peer, direction=direction, remote=remote):
                return self._up(conn, peer, direction == "inbound", remote, now_s)
            case sw.ConnectionDown(conn=conn):
                return self._down(conn)
            case sw.InboundStream(conn=conn, stream=stream):
                return self._inbound(conn, stream, now_s)
            case sw.StreamOpened(conn=conn, stream=stream, tag=tag):
                return self._opened(conn, stream, tag, now_s)
            case sw.StreamData(conn=conn, stream=stream, data=data):
                punch = self._reading(conn, stream)
                if punch is not None:
                    return self._data(punch, data, now_s)
            case sw.StreamEnded(conn=conn, stream=stream):
                punch = self._reading(conn, stream)
                if punch is not None:
                    return self._attempt_failed(
                        punch, "peer closed the dcutr stream early", now_s, reset=True
                    )
            case sw.StreamGone(conn=conn, stream=stream, tag=tag):
                return self._gone(conn, stream, tag, now_s)
        return ()

    def upgrade(self, conn: int, now_s: float) -> list[sw.Effect]:
        """Start hole punching over `conn` if it is relayed and we accepted it (we are B)."""
        known = self._conns.get(conn)
        if known is None or not known.relayed or not known.inbound:
            return []
        if known.peer in self._punches or self._has_direct(known.peer):
            return []
        if len(self._punches) >= self._punches_max:
            self.refusals["dcutr_punches"] += 1
            failed = PunchFailed(
                peer=known.peer, reason="too many hole punches at once", attempts=0, final=True
            )
            return [sw.Report(conn=conn, outcome=failed)]
        punch = _Punch(peer=known.peer, conn=conn, role=_B, attempt=0, phase="backoff", deadline_s=now_s)
        self._punches[known.peer] = punch
        return self._open(punch, now_s)

    def dial_failed(self, tag: object, reason: str, now_s: float) -> list[sw.Effect]:
        """The host's dial for a `PunchDial` found no connection."""
        if not isinstance(tag, _DialTag):
            return []
        punch = self._punches.get(tag.peer)
        if punch is None or punch.attempt != tag.attempt or punch.phase != "dialing":
            return []
        return self._attempt_failed(punch, f"hole punch dial failed: {reason}", now_s)

    def tick(self, now_s: float) -> list[sw.Effect]:
        """Fail attempts past their deadline; start retries that are due."""
        effects: list[sw.Effect] = []
        for punch in list(self._punches.values()):
            if now_s < punch.deadline_s:
                continue
            if punch.phase == "backoff":
                effects += self._open(punch, now_s)
            elif punch.phase == "dialing":
                effects += self._attempt_failed(punch, "no direct connection came", now_s)
            else:
                effects += self._attempt_failed(punch, f"timed out in {punch.phase}", now_s, reset=True)
        return effects

    @property
    def punching(self) -> tuple[str, ...]:
        """Peers with a punch under way."""
        return tuple(self._punches)

    # -- connections ----------------------------------------------------------------

    def _up(self, conn: int, peer: str, inbound: bool, remote: Multiaddr, now_s: float) -> list[sw.Effect]:
        relayed = remote.is_relayed
        self._conns[conn] = _Conn(peer=peer, relayed=relayed, inbound=inbound, reach=kind_of(remote))
        if relayed:
            return self.upgrade(conn, now_s) if self._start_on_connect else []
        punch = self._punches.pop(peer, None)
        if punch is None:
            return []
        effects: list[sw.Effect] = []
        if punch.stream is not None and punch.phase in _READING:
            effects.append(sw.ResetStream(conn=punch.conn, stream=punch.stream))
        done = DirectConnection(peer=peer, conn=conn, relayed_conn=punch.conn, attempts=punch.attempt)
        effects.append(sw.Report(conn=punch.conn, outcome=done))
        return effects

    def _down(self, conn: int) -> list[sw.Effect]:
        known = self._conns.pop(conn, None)
        if known is None:
            return []
        punch = self._punches.get(known.peer)
        if punch is None or punch.conn != conn:
            return []
        del self._punches[known.peer]
        failed = PunchFailed(
            peer=known.peer, reason="relayed connection closed", attempts=punch.attempt, final=True
        )
        return [sw.Report(conn=conn, outcome=failed)]

    def _has_direct(self, peer: str) -> bool:
        return any(c.peer == peer and not c.relayed for c in self._conns.values())

    # -- streams --------------------------------------------------------------------

    def _inbound(self, conn: int, stream: int, now_s: float) -> list[sw.Effect]:
        known = self._conns.get(conn)
        refusal = ""
        if known is None:
            refusal = "dcutr_unknown_connection"
        elif not known.relayed:
            refusal = "dcutr_direct_connection"  # there is nothing to upgrade
        elif known.inbound:
            refusal = "dcutr_wrong_role"  # we are B here: B opens, A answers
        if refusal or known is None:
            self.refusals[refusal] += 1
            return [sw.ResetStream(conn=conn, stream=stream)]
        current = self._punches.get(known.peer)
        if current is not None and (current.role == _B or current.phase != "dialing"):
            self.refusals["dcutr_concurrent"] += 1
            return [sw.ResetStream(conn=conn, stream=stream)]
        if current is None and len(self._punches) >= self._punches_max:
            self.refusals["dcutr_punches"] += 1
            return [sw.ResetStream(conn=conn, stream=stream)]
        answered = self._recent_answers(known.peer, now_s)
        if len(answered) >= self._attempts_max:
            self.refusals["dcutr_attempts"] += 1
            return [sw.ResetStream(conn=conn, stream=stream)]
        answered.append(now_s)
        # A new CONNECT from B while our last dial is still out: B gave up on it.
        self._punches[known.peer] = _Punch(
            peer=known.peer,
            conn=conn,
            role=_A,
            attempt=len(answered),
            phase="await_connect",
            deadline_s=now_s + self._exchange_s,
            stream=stream,
        )
        return []

    def _recent_answers(self, peer: str, now_s: float) -> deque[float]:
        answered = self._answered.get(peer)
        if answered is None:
            answered = self._answered[peer] = deque()
            while len(self._answered) > PEERS_REMEMBERED_MAX:
                self._answered.popitem(last=False)
        self._answered.move_to_end(peer)
        return prune_window(answered, now_s, ATTEMPT_WINDOW_S)

    def _open(self, punch: _Punch, now_s: float) -> list[sw.Effect]:
        punch.attempt += 1
        punch.phase = "opening"
        punch.stream = None
        punch.reader = varint.LengthPrefixedReader(size_max=MESSAGE_BYTES_MAX)
        punch.deadline_s = now_s + self._exchange_s
        tag = _StreamTag(peer=punch.peer, attempt=punch.attempt)
        return [sw.OpenStream(conn=punch.conn, protocols=(PROTOCOL_ID,), tag=tag)]

    def _opened(self, conn: int, stream: int, tag: object, now_s: float) -> list[sw.Effect]:
        punch = self._punches.get(tag.peer) if isinstance(tag, _StreamTag) else None
        if punch is None or not isinstance(tag, _StreamTag) or punch.phase != "opening":
            return [sw.ResetStream(conn=conn, stream=stream)]
        if punch.attempt != tag.attempt or punch.conn != conn:
            return [sw.ResetStream(conn=conn, stream=stream)]
        punch.stream = stream
        punch.phase = "connect_sent"
        # libp2p/specs relay/DCUtR.md step 2: the RTT timer starts as CONNECT goes out.
        punch.sent_s = now_s
        punch.deadline_s = now_s + self._exchange_s
        return [sw.Write(conn=conn, stream=stream, data=self._connect(punch))]

    def _gone(self, conn: int, stream: int | None, tag: object, now_s: float) -> list[sw.Effect]:
        if stream is None:
            if not isinstance(tag, _StreamTag):
                return []
            punch = self._punches.get(tag.peer)
            if punch is None or punch.phase != "opening" or punch.attempt != tag.attempt:
                return []
            # The peer does not speak dcutr (or refused the stream): retrying cannot help.
            return self._end(punch, "peer refused the dcutr stream", final=True)
        punch = self._reading(conn, stream)
        if punch is None:
            return []
        punch.stream = None
        return self._attempt_failed(punch, "dcutr stream reset", now_s)

    def _reading(self, conn: int, stream: int) -> _Punch | None:
        known = self._conns.get(conn)
        punch = self._punches.get(known.peer) if known is not None else None
        if punch is None or punch.conn != conn or punch.stream != stream or punch.phase not in _READING:
            return None
        return punch

    def _data(self, punch: _Punch, data: bytes, now_s: float) -> list[sw.Effect]:
        punch.reader.feed(data)
        effects: list[sw.Effect] = []
        while punch.phase in _READING:
            try:
                raw = punch.reader.next_message()
            except ProtocolViolation as exc:
                return self._refuse(punch, "dcutr_message_size", str(exc))
            if raw is None:
                break
            try:
                message = HolePunch.decode(raw)
            except ProtocolViolation as exc:
                return self._refuse(punch, "dcutr_malformed", str(exc))
            if len(message.obs_addrs) > self._obs_addrs_max:
                return self._refuse(punch, "dcutr_addrs_count", f"{len(message.obs_addrs)} addresses")
            if any(len(raw_addr) > ADDRESS_BYTES_MAX for raw_addr in message.obs_addrs):
                return self._refuse(punch, "dcutr_addr_size", f"an address over {ADDRESS_BYTES_MAX} bytes")
            effects += self._step(punch, message, now_s)
        return effects

    def _step(self, punch: _Punch, message: HolePunch, now_s: float) -> list[sw.Effect]:
        assert punch.stream is not None
        expected = SYNC if punch.phase == "await_sync" else CONNECT
        if message.kind != expected:
            return self._refuse(punch, "dcutr_unexpected", f"type {message.kind} in {punch.phase}")
        conn, stream = punch.conn, punch.stream
        if punch.phase == "await_connect":
            punch.theirs = self._theirs(punch, message)
            punch.phase = "await_sync"
            punch.deadline_s = now_s + self._exchange_s
            return [sw.Write(conn=conn, stream=stream, data=self._connect(punch))]
        if punch.phase == "await_sync":
            # libp2p/specs relay/DCUtR.md step 5: upon receiving SYNC, A dials at once.
            return [sw.CloseStream(conn=conn, stream=stream), *self._dial(punch, now_s, now_s, client=True)]
        # B got A's CONNECT: step 4, SYNC now and dial half a round trip later.
        rtt_s = max(0.0, now_s - punch.sent_s)
        punch.theirs = self._theirs(punch, message)
        sync = encode_message(HolePunch(kind=SYNC))
        return [
            sw.Write(conn=conn, stream=stream, data=sync),
            sw.CloseStream(conn=conn, stream=stream),
            *self._dial(punch, now_s + rtt_s / 2, now_s, client=False),
        ]

    def _dial(self, punch: _Punch, at_s: float, now_s: float, *, client: bool) -> list[sw.Effect]:
        punch.phase = "dialing"
        punch.stream = None
        punch.deadline_s = at_s + self._dial_s
        if not punch.theirs:
            return []  # nothing of theirs we would dial: the peer's dial to us may still land
        dial = PunchDial(
            peer=punch.peer,
            relayed_conn=punch.conn,
            addrs=punch.theirs,
            at_s=at_s,
            client=client,
            attempt=punch.attempt,
            tag=_DialTag(peer=punch.peer, attempt=punch.attempt),
        )
        return [sw.Report(conn=punch.conn, outcome=dial)]

    def _connect(self, punch: _Punch) -> bytes:
        known = self._conns[punch.conn]
        allowed = _REACH.get(known.reach, frozenset()) | {"dns"}
        ours: list[bytes] = []
        for address in self._local():
            address = address.without_peer()
            if address.is_relayed or address.tcp_endpoint() is None or kind_of(address) not in allowed:
                continue
            raw = address.to_bytes()
            if raw not in ours and len(ours) < DIAL_ADDRS_MAX:
                ours.append(raw)
        return encode_message(HolePunch(kind=CONNECT, obs_addrs=tuple(ours)))

    def _theirs(self, punch: _Punch, message: HolePunch) -> tuple[Multiaddr, ...]:
        reach = self._conns[punch.conn].reach
        return dialable(
            message.obs_addrs, peer=punch.peer, reach=reach, ours=self._local(), refusals=self.refusals
        )

    # -- endings --------------------------------------------------------------------

    def _refuse(self, punch: _Punch, name: str, detail: str) -> list[sw.Effect]:
        self.refusals[name] += 1
        effects: list[sw.Effect] = []
        if punch.stream is not None:
            effects.append(sw.ResetStream(conn=punch.conn, stream=punch.stream))
        # A peer that breaks the protocol once will not do better on a retry.
        return effects + self._end(punch, f"dcutr: {detail}", final=True)

    def _attempt_failed(
        self, punch: _Punch, reason: str, now_s: float, *, reset: bool = False
    ) -> list[sw.Effect]:
        effects: list[sw.Effect] = []
        if reset and punch.stream is not None:
            effects.append(sw.ResetStream(conn=punch.conn, stream=punch.stream))
        punch.stream = None
        if punch.role == _A:
            return effects + self._end(punch, reason, final=False)
        if punch.attempt >= self._attempts_max:
            return effects + self._end(punch, reason, final=True)
        punch.phase = "backoff"
        punch.deadline_s = now_s + self._backoff_s * 2 ** (punch.attempt - 1)
        return effects

    def _end(self, punch: _Punch, reason: str, *, final: bool) -> list[sw.Effect]:
        self._punches.pop(punch.peer, None)
        failed = PunchFailed(peer=punch.peer, reason=reason, attempts=punch.attempt, final=final)
        return [sw.Report(conn=punch.conn, outcome=failed)]
