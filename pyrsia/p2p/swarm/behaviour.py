"""The seam between the swarm and its behaviours: events in, effects out.

A behaviour (identify, ping, and next autonat, relay, dcutr) is a pure object that
never touches a socket, a thread or a clock. The swarm (`host.py`) tells it what
happened on the connections it owns — a connection came up or went away, a stream for
one of its protocols was opened by the peer or by us, data arrived, a stream ended —
and executes what it answers: open a stream, write, close, reset, close a connection,
run a new connection over one of its streams (`Upgrade`: a relay's circuit), or
report an outcome to the swarm (`Report`), which turns it into peer state and events
for the rest of the node. A relayed connection is a connection like any other to the
behaviours (`ConnectionUp.relayed` says which). Time reaches a behaviour as `now_s` on every call.

Connections are named by a number the swarm gives them (`conn`), so one peer may
have several; streams by their yamux id on that connection. A stream a behaviour
opens carries a `tag` of its choosing, returned with the outcome. Every stream the
swarm hands a behaviour is the behaviour's until it ends or is reset; the swarm
forgets it after that. Rules: a behaviour answers only for the streams it owns, and
its bounds (message sizes, streams at once, rates) are its own to enforce, refusing
with `ResetStream` or `CloseConnection` and counting the refusal.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from pyrsia.p2p.wire.multiaddr import Multiaddr

# -- events: what the swarm tells a behaviour ------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionUp:
    conn: int
    peer: str
    direction: str  # "inbound" | "outbound"
    remote: Multiaddr  # the socket's remote address (for inbound, an ephemeral port)
    relayed: bool = False  # it rides a relay's circuit, not a socket of its own


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionDown:
    conn: int
    peer: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class InboundStream:
    conn: int
    stream: int
    protocol: str


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamOpened:
    """A stream this behaviour asked for was accepted by the peer."""

    conn: int
    stream: int
    protocol: str
    tag: object


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamData:
    conn: int
    stream: int
    data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamEnded:
    """The peer closed its side; we may still write until we close ours."""

    conn: int
    stream: int


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamGone:
    """Reset by the peer, refused, or its connection closed: the stream is forgotten."""

    conn: int
    stream: int | None  # None when it was never opened
    tag: object
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class DialFailed:
    """A `Dial` this behaviour asked for reached none of the addresses."""

    peer: str
    tag: object
    reason: str


Event = (
    ConnectionUp
    | ConnectionDown
    | InboundStream
    | StreamOpened
    | StreamData
    | StreamEnded
    | StreamGone
    | DialFailed
)

# -- effects: what a behaviour asks of the swarm ----------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class OpenStream:
    conn: int
    protocols: tuple[str, ...]
    tag: object


@dataclass(frozen=True, slots=True, kw_only=True)
class Write:
    """Write `data` on a stream the behaviour owns.

    `source` (conn, stream), another stream of the behaviour, says the bytes were read
    from there (a relay's splice): while this stream's backlog beyond the peer's window
    is high, the swarm stops granting the source's sender yamux credit, so a fast
    sender slows to the pace of a slow receiver instead of filling our memory.
    """

    conn: int
    stream: int
    data: bytes
    source: tuple[int, int] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CloseStream:
    conn: int
    stream: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ResetStream:
    conn: int
    stream: int


@dataclass(frozen=True, slots=True, kw_only=True)
class CloseConnection:
    conn: int
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Dial:
    """Connect to `peer` at one of `addrs` (in order) unless a direct connection exists.

    Success arrives as a `ConnectionUp` for that peer (to every behaviour, as any
    connection does); failure as `DialFailed` with `tag`, to this behaviour only.
    `conn` is ignored: a dial has no connection yet.
    """

    peer: str
    addrs: tuple[Multiaddr, ...]
    tag: object
    conn: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Upgrade:
    """Run a new connection (Noise, yamux) over this stream: a relay's circuit.

    The stream stops being the behaviour's: its bytes are the new connection's. The
    side that dialled through the relay is the `initiator`; `peer` is who must answer
    at the far end (checked by the handshake), `relay` the peer carrying it.
    """

    conn: int
    stream: int
    initiator: bool
    peer: str
    relay: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Report:
    """An outcome for the swarm (a peer identified, a ping's round trip, …).

    `conn` may be `NO_CONN` for an outcome of no one connection (a timer's).
    """

    conn: int
    outcome: object


NO_CONN = 0  # connection numbers start at 1


@dataclass(frozen=True, slots=True, kw_only=True)
class Misbehaved:
    """A `Report` outcome the swarm acts on itself: close the connection and refuse the
    peer for `ban_s` seconds, so a peer that floods cannot simply reconnect and go on."""

    reason: str
    ban_s: float


Effect = OpenStream | Write | CloseStream | ResetStream | CloseConnection | Dial | Upgrade | Report


class Behaviour(Protocol):
    """What the swarm drives. `protocols` are the inbound protocols it answers.

    `tick` is called about every `TICK_S` seconds: deadlines, renewals and retries.
    A behaviour whose class sets `application = True` (kad, sync) carries the node's own
    traffic: its streams keep a connection from counting as idle, as handlers' streams do.
    """

    @property
    def protocols(self) -> tuple[str, ...]: ...

    def on_event(self, event: Event, now_s: float) -> Sequence[Effect]: ...

    def tick(self, now_s: float) -> Sequence[Effect]: ...


TICK_S = 0.25
