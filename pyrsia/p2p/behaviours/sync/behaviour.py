"""The sync behaviour: the pure `SyncCore` driven on the swarm's selector thread.

What it owns: one `SyncCore` (attached by `start`, detached by `stop`), the sync
streams this node opens, and what other threads read of the core (`published`). It
maps the core's effects to the swarm's:

    `SendStatus`   open `/pyrsia/sync/1.0.0` to the peer, write our status (the newest,
                   from `status()`), read its status within `status_timeout_s`; at most
                   one exchange per peer at a time (one more is skipped and counted)
    `Fetch`        open a stream, write `get_blocks`, read one framed reply within
                   `fetch_timeout_s`, and report it as `Fetched` (still encoded): decoding
                   and the chain append (disk, verification) are the shell's, on a
                   worker, which feeds the reply's size back on arrival (`received`:
                   the core may pipeline the next fetch) and the outcome once stored
                   (`applied`, `refused`, `failed`)
    `Penalize`     log it, keep the newest `PENALTIES_KEPT`, and close every connection
                   to the peer when the core drops it

A peer enters the core when identify says it serves sync (`peer_identified`) and
leaves when its last connection goes. Inbound sync streams are not this behaviour's:
answering `get_blocks` reads up to 16 MiB of blocks from disk, and a behaviour's
write has no backpressure (the swarm resets a behaviour's stream whose backlog passes
8 MiB), so the shell serves them on a handler and feeds statuses in
(`status_received`). Bounds: replies (`sync.MESSAGE_BYTES_MAX`; a status reply
`STATUS_BYTES_MAX`), the core's fetches in flight and peers. Pure.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pyrsia.errors import ProtocolViolation
from pyrsia.p2p.behaviours.sync import core as sync
from pyrsia.p2p.behaviours.sync.core import Effect, Fetch, GetBlocks, Penalize, SendStatus, Status, SyncCore
from pyrsia.p2p.swarm import behaviour as sw
from pyrsia.p2p.wire import varint
from pyrsia.p2p.wire.varint import LengthPrefixedReader

log = logging.getLogger("pyrsia.p2p")

STATUS_TIMEOUT_S = 5.0
FETCH_TIMEOUT_S = 20.0
STATUS_BYTES_MAX = 64 * 1024
PENALTIES_KEPT = 100


@dataclass(frozen=True, slots=True, kw_only=True)
class SyncView:
    """What other threads read of the core, replaced whole after every input."""

    heights: dict[str, int] = field(default_factory=dict)
    banned: dict[str, float] = field(default_factory=dict)
    best_known_height: int = -1
    penalties: dict[str, int] = field(default_factory=dict)
    drops: dict[str, int] = field(default_factory=dict)
    status_exchanges_skipped: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Fetched:
    """A `Fetch`'s reply, still encoded: the shell decodes it and appends the blocks."""

    request_id: int
    peer: str
    count: int
    reply: bytes


@dataclass(slots=True)
class _Out:
    peer: str
    deadline_s: float
    fetch: Fetch | None  # None: a status exchange
    conn: int = 0
    stream: int | None = None
    reader: LengthPrefixedReader = field(default_factory=lambda: LengthPrefixedReader(STATUS_BYTES_MAX))


class Sync:
    """The sync behaviour; `status()` is our log's status now (cheap, no I/O)."""

    protocols: tuple[str, ...] = ()  # inbound sync streams go to the shell's handler
    application = True  # its streams keep a connection from counting as idle

    def __init__(self, status: Callable[[], Status]) -> None:
        self._status = status
        self.core: SyncCore | None = None
        self._conns: dict[int, tuple[str, bool]] = {}  # conn -> (peer, relayed)
        self._out: dict[int, _Out] = {}  # by tag
        self._by_stream: dict[tuple[int, int], int] = {}  # (conn, stream) -> tag
        self._status_pending: set[str] = set()
        self._next_tag = 1
        self._skipped = 0
        self.penalties: list[tuple[str, str]] = []  # (peer, reason), newest last, bounded
        self.published = SyncView()

    # -- calls (selector thread, through `Host.run`) -----------------------------------------

    def start(self, core: SyncCore) -> None:
        self.core = core
        self.publish(0.0)

    def stop(self) -> list[sw.Effect]:
        effects: list[sw.Effect] = [sw.ResetStream(conn=c, stream=s) for c, s in self._by_stream]
        self._out.clear()
        self._by_stream.clear()
        self._status_pending.clear()
        self.core = None
        return effects

    def peer_identified(self, peer: str, outbound: bool, now_s: float) -> list[sw.Effect]:
        if self.core is None:
            return []
        return self._run(self.core.peer_connected(peer, now_s, outbound=outbound), now_s)

    def status_received(self, peer: str, status: Status, now_s: float) -> list[sw.Effect]:
        """A peer's status, read by the shell's handler from a stream the peer opened."""
        if self.core is None or self.is_banned(peer, now_s):
            return []
        return self._run(self.core.status_received(peer, status, now_s), now_s)

    def committed(self, now_s: float) -> list[sw.Effect]:
        """A block was stored locally; blocks a fetch brought are announced when applied."""
        if self.core is None or self.core.fetching:
            return []
        return self._run(self.core.committed(self._status(), now_s), now_s)

    def applied(
        self, request_id: int, status: Status, now_s: float, *, received: int, full: bool
    ) -> list[sw.Effect]:
        if self.core is None:
            return []
        effects = self.core.blocks_applied(request_id, status, now_s, received=received, full=full)
        return self._run(effects, now_s)

    def received(self, request_id: int, count: int, now_s: float) -> list[sw.Effect]:
        """A fetch's reply held `count` blocks; the shell is storing them."""
        if self.core is None:
            return []
        return self._run(self.core.blocks_received(request_id, count, now_s), now_s)

    def refused(self, request_id: int, reason: str, status: Status, now_s: float) -> list[sw.Effect]:
        if self.core is None:
            return []
        return self._run(self.core.blocks_refused(request_id, reason, status, now_s), now_s)

    def failed(self, request_id: int, now_s: float) -> list[sw.Effect]:
        if self.core is None:
            return []
        return self._run(self.core.request_failed(request_id, now_s), now_s)

    def is_banned(self, peer: str, now_s: float) -> bool:
        until = self.published.banned.get(peer)
        return until is not None and until > now_s

    def publish(self, now_s: float) -> None:
        core = self.core
        if core is None:
            return
        self.published = SyncView(
            heights=core.peer_heights(),
            banned=core.banned(now_s),
            best_known_height=core.best_known_height,
            penalties=dict(core.penalties),
            drops=dict(core.drops),
            status_exchanges_skipped=self._skipped,
        )

    # -- the seam ------------------------------------------------------------------------------

    def tick(self, now_s: float) -> Sequence[sw.Effect]:
        core = self.core
        if core is None:
            return ()
        effects: list[sw.Effect] = []
        for tag in [t for t, out in self._out.items() if out.deadline_s <= now_s]:
            effects += self._fail(tag, "no answer in time", now_s, reset=True)
        deadline = core.next_deadline_s()
        if deadline is not None and now_s >= deadline:
            effects += self._run(core.tick(now_s), now_s)
        return effects

    def on_event(self, event: sw.Event, now_s: float) -> Sequence[sw.Effect]:
        effects = self._on_event(event, now_s)
        self.publish(now_s)
        return effects

    def _on_event(self, event: sw.Event, now_s: float) -> Sequence[sw.Effect]:
        match event:
            case sw.ConnectionUp(conn=conn, peer=peer, relayed=relayed):
                self._conns[conn] = (peer, relayed)
            case sw.ConnectionDown(conn=conn, peer=peer):
                self._conns.pop(conn, None)
                effects: list[sw.Effect] = []
                for tag in [t for t, out in self._out.items() if out.conn == conn]:
                    effects += self._fail(tag, "connection closed", now_s, reset=False)
                if self.core is not None and self._conn_to(peer) is None:
                    effects += self._run(self.core.peer_left(peer, now_s), now_s)
                return effects
            case sw.InboundStream(conn=conn, stream=stream):
                return [sw.ResetStream(conn=conn, stream=stream)]  # never ours: the shell's handler
            case sw.StreamOpened(conn=conn, stream=stream, tag=tag):
                return self._opened(conn, stream, tag, now_s)
            case sw.StreamData(conn=conn, stream=stream, data=data):
                return self._data(conn, stream, data, now_s)
            case sw.StreamEnded(conn=conn, stream=stream):
                ended = self._by_stream.get((conn, stream))
                if ended is not None:
                    return self._fail(ended, "closed the sync stream without answering", now_s, reset=True)
            case sw.StreamGone(conn=conn, stream=stream, tag=tag, reason=reason):
                gone = self._by_stream.get((conn, stream)) if stream is not None else None
                if gone is None and isinstance(tag, int) and tag in self._out:
                    gone = tag
                if gone is not None:
                    return self._fail(gone, reason, now_s, reset=False)
        return ()

    # -- our streams -----------------------------------------------------------------------------

    def _opened(self, conn: int, stream: int, tag: object, now_s: float) -> list[sw.Effect]:
        out = self._out.get(tag) if isinstance(tag, int) else None
        if out is None or self.core is None:
            return [sw.ResetStream(conn=conn, stream=stream)]
        assert isinstance(tag, int)
        out.stream = stream
        self._by_stream[(conn, stream)] = tag
        if out.fetch is None:
            request: sync.Message = self._status()  # the newest, even if the exchange waited
        else:
            request = GetBlocks(start=out.fetch.start, count=out.fetch.count)
        return [sw.Write(conn=conn, stream=stream, data=_framed(request))]

    def _data(self, conn: int, stream: int, data: bytes, now_s: float) -> list[sw.Effect]:
        tag = self._by_stream.get((conn, stream))
        out = None if tag is None else self._out.get(tag)
        if tag is None or out is None:
            return []
        out.reader.feed(data)
        try:
            raw = out.reader.next_message()
        except ProtocolViolation as exc:
            return self._fail(tag, str(exc), now_s, reset=True)
        if raw is None:
            return []
        self._forget(tag)
        effects: list[sw.Effect] = [sw.CloseStream(conn=conn, stream=stream)]
        fetch = out.fetch
        if fetch is not None:
            fetched = Fetched(request_id=fetch.request_id, peer=out.peer, count=fetch.count, reply=raw)
            return [*effects, sw.Report(conn=sw.NO_CONN, outcome=fetched)]
        try:
            theirs = sync.decode(raw)
        except ProtocolViolation as exc:
            log.debug("sync: status exchange with %s failed: %s", out.peer, exc)
            return effects
        if isinstance(theirs, Status) and self.core is not None and not self.is_banned(out.peer, now_s):
            effects += self._run(self.core.status_received(out.peer, theirs, now_s), now_s)
        return effects

    def _fail(self, tag: int, reason: str, now_s: float, *, reset: bool) -> list[sw.Effect]:
        out = self._forget(tag)
        if out is None:
            return []
        effects: list[sw.Effect] = []
        if reset and out.stream is not None:
            effects.append(sw.ResetStream(conn=out.conn, stream=out.stream))
        if out.fetch is None:
            log.debug("sync: status exchange with %s failed: %s", out.peer, reason)
            return effects
        log.info("sync: fetching blocks from %s failed: %s", out.peer, reason)
        if self.core is not None:
            effects += self._run(self.core.request_failed(out.fetch.request_id, now_s), now_s)
        return effects

    def _forget(self, tag: int) -> _Out | None:
        out = self._out.pop(tag, None)
        if out is None:
            return None
        if out.stream is not None:
            self._by_stream.pop((out.conn, out.stream), None)
        if out.fetch is None:
            self._status_pending.discard(out.peer)
        return out

    def _open(self, out: _Out, now_s: float) -> list[sw.Effect]:
        conn = self._conn_to(out.peer)
        tag = self._next_tag
        self._next_tag += 1
        self._out[tag] = out
        if conn is None:
            return self._fail(tag, f"not connected to {out.peer}", now_s, reset=False)
        out.conn = conn
        return [sw.OpenStream(conn=conn, protocols=(sync.PROTOCOL_ID,), tag=tag)]

    def _conn_to(self, peer: str) -> int | None:
        found = [(relayed, conn) for conn, (p, relayed) in self._conns.items() if p == peer]
        return min(found)[1] if found else None

    # -- the core's effects --------------------------------------------------------------------

    def _run(self, effects: list[Effect], now_s: float) -> list[sw.Effect]:
        out: list[sw.Effect] = []
        for effect in effects:
            match effect:
                case SendStatus(peer=peer):
                    if peer in self._status_pending:
                        self._skipped += 1
                        continue
                    self._status_pending.add(peer)
                    pending = _Out(peer=peer, deadline_s=now_s + STATUS_TIMEOUT_S, fetch=None)
                    out += self._open(pending, now_s)
                case Fetch(peer=peer):
                    reader = LengthPrefixedReader(sync.MESSAGE_BYTES_MAX)
                    pending = _Out(peer=peer, deadline_s=now_s + FETCH_TIMEOUT_S, fetch=effect, reader=reader)
                    out += self._open(pending, now_s)
                case Penalize():
                    out += self._penalize(effect)
        self.publish(now_s)  # a ban is seen by the shell's handler at once
        return out

    def _penalize(self, effect: Penalize) -> list[sw.Effect]:
        if effect.kind == sync.BANNED:
            log.info("sync: peer %s: %s; disconnecting", effect.peer, effect.reason)
        else:
            log.warning(
                "sync: peer %s: %s%s",
                effect.peer,
                effect.reason,
                "; disconnecting" if effect.disconnect else "",
            )
            self.penalties = [*self.penalties[1 - PENALTIES_KEPT :], (effect.peer, effect.reason)]
        if not effect.disconnect:
            return []
        return [
            sw.CloseConnection(conn=conn, reason=f"sync: {effect.reason}")
            for conn, (peer, _) in self._conns.items()
            if peer == effect.peer
        ]


def _framed(message: sync.Message) -> bytes:
    return varint.prefixed(sync.encode(message))


__all__ = ["FETCH_TIMEOUT_S", "STATUS_TIMEOUT_S", "Fetched", "Sync", "SyncView"]
