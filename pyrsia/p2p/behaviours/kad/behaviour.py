"""The Kademlia behaviour: the pure kad core driven on the swarm's selector thread.

What it owns: one `Kademlia` core (attached by `start`, detached by `stop`), the kad
streams of every connection, and the requests the core asked for. It maps the swarm's
events to the core's inputs and the core's effects to the swarm's (libp2p/specs
kad-dht; rust-libp2p's `kad` behaviour has the same shape):

    core `Send`           open `/pyrsia/kad/1.0.0` on a connection to the peer (a direct
                          one before a relayed one), or `Dial` it first at the addresses
                          `dial_addrs` gives (the request's and those the node knows);
                          write one framed message; unless it is an ADD_PROVIDER, read one
                          framed reply within `request_timeout_s` (checked on `tick`),
                          then feed `response_received` (and `add_peer`, when identify
                          says the peer serves kad) or `request_failed`
    core `Reply`          write the framed answer on the inbound stream; read the next
    core `Refuse`         reset the inbound stream
    neither               (an accepted ADD_PROVIDER) close the inbound stream
    `LookupDone`/`ProvideDone`  a `Report(NO_CONN, Finished(tag, done))` for whoever
                          started the lookup with that `tag`

Inbound streams follow libp2p/specs kad-dht and js-libp2p: a stream may carry several
requests in sequence, each answered before the next is read; a stream idle for
`stream_idle_timeout_s` between requests is closed (reset when a request is half
read). The asker's listen addrs go to the core only when identify lists kad
(`kad_addrs`), so clients are answered but kept out of the table; its `remote_ip` is
that of the connection, never an address it advertises.

Bounds, each refusal counted by name in `refusals` (the host adds them to
`pyrsia_p2p_refusals_total`, named as its resource manager names them): inbound kad
streams per peer (`inbound_streams_per_peer_max`, `streams_per_peer:…`) and in all
(`inbound_streams_max`, `handlers_busy:…`), both also in `counts["requests_dropped"]`;
outbound requests in flight (`outbound_streams_max`, `requests_out:…`; one more fails
at once); one message's size (`messages.MESSAGE_BYTES_MAX`, checked by the framing
before it is buffered; `malformed:…` with undecodable ones); and the core's own
limits. Every `snapshot_interval_s` it reports `SnapshotDue` with the
table as plain data, for the shell to write off this thread. Pure: no sockets,
threads, clocks or files.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pyrsia.errors import ProtocolViolation
from pyrsia.p2p.behaviours.kad import messages as dm
from pyrsia.p2p.behaviours.kad.core import (
    Effect,
    Kademlia,
    LookupDone,
    LookupEnd,
    ProvideDone,
    Refuse,
    Reply,
    Send,
)
from pyrsia.p2p.swarm import behaviour as sw
from pyrsia.p2p.wire.multiaddr import Multiaddr
from pyrsia.p2p.wire.varint import LengthPrefixedReader

log = logging.getLogger("pyrsia.p2p.kad")

PROTOCOL_ID = dm.PROTOCOL_ID
_DIAL = "kad-dial"
# Refusal names as the swarm's resource manager writes them (`limit:protocol`), so
# `pyrsia_p2p_refusals_total` reads as it did while kad ran on a handler pool.
STREAMS_PER_PEER = f"streams_per_peer:{PROTOCOL_ID}"
STREAMS = f"handlers_busy:{PROTOCOL_ID}"
MALFORMED = f"malformed:{PROTOCOL_ID}"
REQUESTS_OUT = f"requests_out:{PROTOCOL_ID}"


@dataclass(frozen=True, slots=True, kw_only=True)
class KadLimits:
    inbound_streams_per_peer_max: int = 4
    inbound_streams_max: int = 64
    outbound_streams_max: int = 256
    # A stream's first request, and each next one, must arrive within this time.
    stream_idle_timeout_s: float = 10.0
    snapshot_interval_s: float = 300.0


@dataclass(frozen=True, slots=True, kw_only=True)
class KadStats:
    table_peers: int = 0
    provider_records: int = 0
    provided_keys: int = 0
    active_lookups: int = 0
    pending_requests: int = 0
    requests_in: int = 0  # inbound requests handed to the core
    requests_refused: int = 0  # answered with Refuse (rate limit, bad key, unsupported)
    requests_dropped: int = 0  # inbound streams refused: too many for the peer or in all
    requests_out: int = 0  # Send effects executed
    requests_failed: int = 0  # of those, dial, stream, timeout or decode failures
    lookups_done: int = 0
    # Refused by peer diversity: the peer's IP group was at its bound in the bucket / table.
    table_refused_bucket_group: int = 0
    table_refused_table_group: int = 0
    # ADD_PROVIDER records refused: store full, the sender's quota, its IP group's quota.
    provider_refused_store_full: int = 0
    provider_refused_peer_quota: int = 0
    provider_refused_group_quota: int = 0
    # Addresses left out of answers and out of replies taken in (loopback, link-local,
    # unspecified, port 0, not a multiaddr).
    addrs_withheld: int = 0


COUNTS = (
    "requests_in",
    "requests_refused",
    "requests_dropped",
    "requests_out",
    "requests_failed",
    "lookups_done",
)


# -- outcomes reported to the shell ------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Finished:
    """The lookup started with `tag` ended."""

    tag: object
    done: LookupDone | ProvideDone


@dataclass(frozen=True, slots=True, kw_only=True)
class SnapshotDue:
    """The routing table as plain data (`Kademlia.snapshot`), to be saved off the selector thread."""

    snapshot: dict[str, object]


# -- what the behaviour holds per stream -------------------------------------------------


@dataclass(slots=True)
class _Out:
    send: Send
    deadline_s: float
    conn: int = 0
    stream: int | None = None
    reader: LengthPrefixedReader = field(default_factory=dm.reader)


@dataclass(slots=True)
class _In:
    peer: str
    deadline_s: float
    reader: LengthPrefixedReader = field(default_factory=dm.reader)


@dataclass(frozen=True, slots=True)
class _Conn:
    peer: str
    remote_ip: str
    relayed: bool


class Kad:
    """The kad behaviour; `kad_addrs(peer)` are a peer's identify listen addrs if it lists
    kad (else empty); `dial_addrs(peer, addrs)` remembers `addrs` for `peer` and returns
    every address to dial it at."""

    protocols = (PROTOCOL_ID,)
    application = True  # its streams keep a connection from counting as idle

    def __init__(
        self,
        *,
        kad_addrs: Callable[[str], tuple[bytes, ...]],
        dial_addrs: Callable[[str, tuple[bytes, ...]], tuple[Multiaddr, ...]],
        limits: KadLimits | None = None,
    ) -> None:
        self._kad_addrs = kad_addrs
        self._dial_addrs = dial_addrs
        self.limits = limits or KadLimits()
        self.core: Kademlia | None = None
        self._conns: dict[int, _Conn] = {}
        self._inbound: dict[tuple[int, int], _In] = {}
        self._out: dict[int, _Out] = {}  # by request id
        self._out_streams: dict[tuple[int, int], int] = {}  # (conn, stream) -> request id
        self._dialling: dict[str, list[int]] = {}  # peer -> request ids waiting for a connection
        self._tags: dict[int, object] = {}  # lookup id -> the caller's tag
        self._next_inbound_id = 1
        self._next_snapshot_s = 0.0
        self.counts: dict[str, int] = dict.fromkeys(COUNTS, 0)
        self.refusals: Counter[str] = Counter()
        self.published = KadStats()

    # -- lifecycle and calls (selector thread, through `Host.run`) --------------------------

    def start(self, core: Kademlia, now_s: float) -> None:
        """Serve with `core` from now on."""
        self.core = core
        self._next_snapshot_s = now_s + self.limits.snapshot_interval_s
        self.publish()

    def bootstrap(self, now_s: float) -> list[sw.Effect]:
        """Look ourselves up through the table (libp2p/specs kad-dht bootstrap)."""
        return self._map(self._core().bootstrap(now_s), now_s)

    def stop(self, now_s: float) -> tuple[list[sw.Effect], list[object]]:
        """Detach the core: reset every kad stream; the tags of lookups that never ended."""
        effects: list[sw.Effect] = []
        for conn, stream in [*self._inbound, *self._out_streams]:
            effects.append(sw.ResetStream(conn=conn, stream=stream))
        self._inbound.clear()
        self._out.clear()
        self._out_streams.clear()
        self._dialling.clear()
        tags = list(self._tags.values())
        self._tags.clear()
        if self.core is not None:
            self.publish()
        self.core = None
        return effects, tags

    def add_peer(self, peer: str, addrs: tuple[bytes, ...], now_s: float) -> list[sw.Effect]:
        """A peer known to serve kad (identify, bootstrap) at its advertised `addrs`."""
        if self.core is None:
            return []
        return self._map(self.core.add_peer(peer, addrs, now_s, remote_ip=self.remote_ip(peer)), now_s)

    def find_node(self, key: bytes, tag: object, now_s: float) -> list[sw.Effect]:
        return self._begin(tag, self._core().find_node(key, now_s), now_s)

    def find_providers(self, key: bytes, tag: object, now_s: float, *, wanted: int | None) -> list[sw.Effect]:
        return self._begin(tag, self._core().find_providers(key, now_s, wanted=wanted), now_s)

    def provide(self, key: bytes, tag: object, now_s: float) -> list[sw.Effect]:
        """ValueError: the core's bound on provided keys."""
        lookup_id, effects = self._core().provide(key, now_s)
        if not effects:
            # Only a provide the core could not start (every lookup slot taken) returns
            # nothing: it is scheduled for a later tick, sent nowhere yet.
            done = ProvideDone(lookup_id=lookup_id, key=b"", stored_at=())
            return [sw.Report(conn=sw.NO_CONN, outcome=Finished(tag=tag, done=done))]
        return self._begin(tag, (lookup_id, effects), now_s)

    def remote_ip(self, peer: str) -> str:
        """The IP at the far end of the peer's connection (a direct one first): its IP group."""
        found = [c for c in self._conns.values() if c.peer == peer]
        found.sort(key=lambda c: c.relayed)
        return found[0].remote_ip if found else ""

    def publish(self) -> None:
        """Refresh `published`, the snapshot other threads read (`counts` are read live).

        Cheap (lengths and the core's refusal counts), so it runs after every input."""
        core = self.core
        if core is None:
            return
        refused = core.refusals()
        self.published = KadStats(
            table_peers=len(core.table),
            provider_records=len(core.providers),
            provided_keys=core.provided_count,
            active_lookups=core.active_lookups,
            pending_requests=core.pending_requests,
            table_refused_bucket_group=refused["table_bucket_group"],
            table_refused_table_group=refused["table_group"],
            provider_refused_store_full=refused["provider_store_full"],
            provider_refused_peer_quota=refused["provider_peer_quota"],
            provider_refused_group_quota=refused["provider_group_quota"],
            addrs_withheld=refused["addrs_withheld"],
        )

    # -- the seam ----------------------------------------------------------------------------

    def tick(self, now_s: float) -> Sequence[sw.Effect]:
        core = self.core
        if core is None:
            return ()
        effects: list[sw.Effect] = []
        for request_id in [r for r, out in self._out.items() if out.deadline_s <= now_s]:
            effects += self._fail(request_id, "no reply in time", now_s, reset=True)
        for key in [k for k, held in self._inbound.items() if held.deadline_s <= now_s]:
            held = self._inbound.pop(key)
            # Idle between requests: close our side; inside one: the peer is trickling.
            done = sw.ResetStream if held.reader.buffered else sw.CloseStream
            effects.append(done(conn=key[0], stream=key[1]))
        deadline = core.next_deadline_s()
        if deadline is not None and now_s >= deadline:
            effects += self._map(core.tick(now_s), now_s)
        if now_s >= self._next_snapshot_s:
            self._next_snapshot_s = now_s + self.limits.snapshot_interval_s
            effects.append(sw.Report(conn=sw.NO_CONN, outcome=SnapshotDue(snapshot=core.snapshot())))
        self.publish()
        return effects

    def on_event(self, event: sw.Event, now_s: float) -> Sequence[sw.Effect]:
        effects = self._on_event(event, now_s)
        self.publish()  # a few lengths: readers see every input's outcome at once
        return effects

    def _on_event(self, event: sw.Event, now_s: float) -> Sequence[sw.Effect]:
        match event:
            case sw.ConnectionUp(conn=conn, peer=peer, remote=remote, relayed=relayed):
                self._conns[conn] = _Conn(peer=peer, remote_ip=_ip_of(remote), relayed=relayed)
                waiting = self._dialling.pop(peer, [])
                return [e for request_id in waiting for e in self._open(request_id, conn, now_s)]
            case sw.ConnectionDown(conn=conn):
                return self._connection_down(conn, now_s)
            case sw.DialFailed(peer=peer, reason=reason):
                effects: list[sw.Effect] = []
                for request_id in self._dialling.pop(peer, []):
                    effects += self._fail(request_id, f"cannot reach {peer}: {reason}", now_s, reset=False)
                return effects
            case sw.InboundStream(conn=conn, stream=stream):
                return self._accept(conn, stream, now_s)
            case sw.StreamOpened(conn=conn, stream=stream, tag=tag):
                return self._opened(conn, stream, tag, now_s)
            case sw.StreamData(conn=conn, stream=stream, data=data):
                if (conn, stream) in self._inbound:
                    return self._inbound_data(conn, stream, data, now_s)
                return self._reply_data(conn, stream, data, now_s)
            case sw.StreamEnded(conn=conn, stream=stream):
                held = self._inbound.pop((conn, stream), None)
                if held is not None:
                    # The asker is done; half a request left in the buffer is a violation.
                    done = sw.ResetStream if held.reader.buffered else sw.CloseStream
                    return [done(conn=conn, stream=stream)]
                ended = self._out_streams.get((conn, stream))
                if ended is not None:
                    return self._fail(ended, "closed without a reply", now_s, reset=True)
            case sw.StreamGone(conn=conn, stream=stream, tag=tag, reason=reason):
                if stream is not None and self._inbound.pop((conn, stream), None) is not None:
                    return ()
                gone = self._out_streams.get((conn, stream)) if stream is not None else None
                if gone is None and isinstance(tag, int) and tag in self._out:
                    gone = tag
                if gone is not None:
                    return self._fail(gone, reason, now_s, reset=False)
        return ()

    # -- inbound requests ----------------------------------------------------------------------

    def _accept(self, conn: int, stream: int, now_s: float) -> list[sw.Effect]:
        known = self._conns.get(conn)
        if self.core is None or known is None:
            return [sw.ResetStream(conn=conn, stream=stream)]
        limits = self.limits
        refusal = None
        if len(self._inbound) >= limits.inbound_streams_max:
            refusal = STREAMS
        elif sum(1 for held in self._inbound.values() if held.peer == known.peer) >= (
            limits.inbound_streams_per_peer_max
        ):
            refusal = STREAMS_PER_PEER
        if refusal is not None:
            self.refusals[refusal] += 1
            self.counts["requests_dropped"] += 1
            return [sw.ResetStream(conn=conn, stream=stream)]
        self._inbound[(conn, stream)] = _In(peer=known.peer, deadline_s=now_s + limits.stream_idle_timeout_s)
        return []

    def _inbound_data(self, conn: int, stream: int, data: bytes, now_s: float) -> list[sw.Effect]:
        held = self._inbound[(conn, stream)]
        held.reader.feed(data)
        effects: list[sw.Effect] = []
        while True:
            try:
                raw = held.reader.next_message()
                message = None if raw is None else dm.decode(raw)
            except ProtocolViolation as exc:
                log.debug("kad: malformed request from %s: %s", held.peer, exc)
                self.refusals[MALFORMED] += 1
                del self._inbound[(conn, stream)]
                return [*effects, sw.ResetStream(conn=conn, stream=stream)]
            if message is None:
                held.deadline_s = now_s + self.limits.stream_idle_timeout_s
                return effects
            answered, open_ = self._request(conn, stream, held.peer, message, now_s)
            effects += answered
            if not open_:
                return effects

    def _request(
        self, conn: int, stream: int, peer: str, message: dm.Message, now_s: float
    ) -> tuple[list[sw.Effect], bool]:
        """Hand one request to the core; whether the stream stays open for the next."""
        core = self._core()
        inbound_id = self._next_inbound_id
        self._next_inbound_id += 1
        self.counts["requests_in"] += 1
        addrs = self._kad_addrs(peer)
        results = core.request_received(
            peer, inbound_id, message, now_s, addrs, remote_ip=self._conns[conn].remote_ip
        )
        effects: list[sw.Effect] = []
        answer: Reply | Refuse | None = None
        rest: list[Effect] = []
        for result in results:
            if isinstance(result, Reply | Refuse) and result.inbound_id == inbound_id:
                answer = result
            else:
                rest.append(result)
        effects += self._map(rest, now_s)
        match answer:
            case Reply(message=reply):
                effects.append(sw.Write(conn=conn, stream=stream, data=dm.encode_framed(reply)))
                return effects, True
            case Refuse(reason=reason):
                self.counts["requests_refused"] += 1
                log.debug("kad: refused %s from %s: %s", message.type.name, peer, reason)
                del self._inbound[(conn, stream)]
                return [*effects, sw.ResetStream(conn=conn, stream=stream)], False
        # Accepted and never answered (ADD_PROVIDER): close the stream.
        del self._inbound[(conn, stream)]
        return [*effects, sw.CloseStream(conn=conn, stream=stream)], False

    # -- outbound requests ---------------------------------------------------------------------

    def _send(self, send: Send, now_s: float) -> list[sw.Effect]:
        self.counts["requests_out"] += 1
        if len(self._out) >= self.limits.outbound_streams_max:
            self.refusals[REQUESTS_OUT] += 1
            return self._failed_send(send, "too many kad requests in flight", now_s)
        request_id = send.request_id
        if request_id in self._out:  # the core never reuses an id; a stale one is replaced
            self._out.pop(request_id)
        self._out[request_id] = _Out(send=send, deadline_s=now_s + self._core().config.request_timeout_s)
        conn = self._conn_to(send.peer)
        if conn is not None:
            return self._open(request_id, conn, now_s)
        addrs = self._dial_addrs(send.peer, send.addrs)
        if not addrs:
            return self._fail(
                request_id, f"not connected to {send.peer} and no address known", now_s, reset=False
            )
        waiting = self._dialling.setdefault(send.peer, [])
        waiting.append(request_id)
        if len(waiting) > 1:
            return []  # a dial to that peer is under way
        return [sw.Dial(peer=send.peer, addrs=addrs, tag=_DIAL)]

    def _open(self, request_id: int, conn: int, now_s: float) -> list[sw.Effect]:
        out = self._out.get(request_id)
        if out is None:
            return []
        out.conn = conn
        return [sw.OpenStream(conn=conn, protocols=(PROTOCOL_ID,), tag=request_id)]

    def _opened(self, conn: int, stream: int, tag: object, now_s: float) -> list[sw.Effect]:
        out = self._out.get(tag) if isinstance(tag, int) else None
        if out is None or self.core is None:  # it timed out while the stream was opening
            return [sw.ResetStream(conn=conn, stream=stream)]
        write = sw.Write(conn=conn, stream=stream, data=dm.encode_framed(out.send.message))
        if not out.send.expects_reply:
            del self._out[out.send.request_id]
            return [write, sw.CloseStream(conn=conn, stream=stream)]
        out.stream = stream
        self._out_streams[(conn, stream)] = out.send.request_id
        return [write]

    def _reply_data(self, conn: int, stream: int, data: bytes, now_s: float) -> list[sw.Effect]:
        request_id = self._out_streams.get((conn, stream))
        out = None if request_id is None else self._out.get(request_id)
        if request_id is None or out is None:
            return []
        out.reader.feed(data)
        try:
            raw = out.reader.next_message()
            reply = None if raw is None else dm.decode(raw)
        except ProtocolViolation as exc:
            return self._fail(request_id, str(exc), now_s, reset=True)
        if reply is None:
            return []
        self._forget(request_id)
        peer = out.send.peer
        remote_ip = self._conns[conn].remote_ip if conn in self._conns else ""
        core = self._core()
        effects: list[sw.Effect] = [sw.CloseStream(conn=conn, stream=stream)]
        effects += self._map(core.response_received(request_id, reply, now_s, remote_ip=remote_ip), now_s)
        # The core learns where the peer listens now (identify), not only where it was sought.
        addrs = self._kad_addrs(peer)
        if addrs:
            effects += self._map(core.add_peer(peer, addrs, now_s, remote_ip=remote_ip), now_s)
        return effects

    def _fail(self, request_id: int, reason: str, now_s: float, *, reset: bool) -> list[sw.Effect]:
        out = self._forget(request_id)
        if out is None:
            return []
        effects: list[sw.Effect] = []
        if reset and out.stream is not None:
            effects.append(sw.ResetStream(conn=out.conn, stream=out.stream))
        return effects + self._failed_send(out.send, reason, now_s)

    def _failed_send(self, send: Send, reason: str, now_s: float) -> list[sw.Effect]:
        if not send.expects_reply or self.core is None:
            log.debug("kad: %s to %s failed: %s", send.message.type.name, send.peer, reason)
            return []
        self.counts["requests_failed"] += 1
        log.debug("kad: request %d to %s failed: %s", send.request_id, send.peer, reason)
        return self._map(self.core.request_failed(send.request_id, now_s), now_s)

    def _forget(self, request_id: int) -> _Out | None:
        out = self._out.pop(request_id, None)
        if out is None:
            return None
        if out.stream is not None:
            self._out_streams.pop((out.conn, out.stream), None)
        waiting = self._dialling.get(out.send.peer)
        if waiting is not None and request_id in waiting:
            waiting.remove(request_id)
            if not waiting:
                del self._dialling[out.send.peer]
        return out

    def _connection_down(self, conn: int, now_s: float) -> list[sw.Effect]:
        self._conns.pop(conn, None)
        for key in [k for k in self._inbound if k[0] == conn]:
            del self._inbound[key]
        effects: list[sw.Effect] = []
        for request_id in [r for r, out in self._out.items() if out.conn == conn]:
            effects += self._fail(request_id, "connection closed", now_s, reset=False)
        return effects

    def _conn_to(self, peer: str) -> int | None:
        found = [(c.relayed, conn) for conn, c in self._conns.items() if c.peer == peer]
        return min(found)[1] if found else None

    # -- the core's effects ----------------------------------------------------------------------

    def _begin(self, tag: object, started: tuple[int, list[Effect]], now_s: float) -> list[sw.Effect]:
        lookup_id, effects = started
        self._tags[lookup_id] = tag
        return self._map(effects, now_s)

    def _map(self, effects: list[Effect], now_s: float) -> list[sw.Effect]:
        out: list[sw.Effect] = []
        for effect in effects:
            match effect:
                case Send():
                    out += self._send(effect, now_s)
                case Reply() | Refuse():
                    pass  # only for an inbound request, taken by `_request` as it is made
                case LookupDone(lookup_id=lookup_id) | ProvideDone(lookup_id=lookup_id):
                    self.counts["lookups_done"] += 1
                    tag = self._tags.pop(lookup_id, None)
                    if tag is not None:
                        out.append(sw.Report(conn=sw.NO_CONN, outcome=Finished(tag=tag, done=effect)))
        return out

    def _core(self) -> Kademlia:
        if self.core is None:
            raise RuntimeError("the kad behaviour is stopped")
        return self.core


def _ip_of(remote: Multiaddr) -> str:
    if not remote.components:
        return ""
    name, value = remote.components[0]
    return value if name in ("ip4", "ip6") else ""


def busy(done: LookupDone | ProvideDone) -> bool:
    """The core refused to start it: `lookups_active_max` lookups were already running."""
    return isinstance(done, LookupDone) and done.end is LookupEnd.BUSY


__all__ = [
    "MALFORMED",
    "PROTOCOL_ID",
    "REQUESTS_OUT",
    "STREAMS",
    "STREAMS_PER_PEER",
    "Finished",
    "Kad",
    "KadLimits",
    "KadStats",
    "SnapshotDue",
    "busy",
]
