"""Log sync over the Host: the shell around `sync.SyncCore` (`/pyrsia/sync/1.0.0`).

The core lives on a `CoreLoop`. Every peer whose identify lists the sync protocol is
told our status; a status exchange is one stream (we send ours, it answers with its
own), so both sides learn each other's height from one round trip. A fetch is one
stream too: `get_blocks` out, one `blocks` message back, bounded in count and bytes;
the batch goes to the chain (`SyncedChain.append_encoded`: each block verified by the
chain core before it is stored), and the outcome — how many blocks came and where our
log stands after them — goes back to the core, which judges the peer. A peer the core
drops is disconnected, and while its ban lasts it is asked nothing, served no blocks,
and its statuses are answered but ignored.

Streams run on worker pools, never on the loop thread, and in two lanes: fetches on
`fetches_max + 1` workers of their own, status exchanges on `STATUS_WORKERS` others with a
short timeout and at most one pending per peer. So hundreds of peers that never
answer a status cost a bounded queue and a few seconds each, and never hold up a fetch.
"""

from __future__ import annotations

import functools
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from pyrsia.errors import PeerError, PyrsiaError, TranslogError
from pyrsia.p2p.behaviours.sync import core as sync
from pyrsia.p2p.behaviours.sync.core import (
    Blocks,
    Effect,
    Fetch,
    GetBlocks,
    Penalize,
    SendStatus,
    Status,
    SyncConfig,
    SyncCore,
)
from pyrsia.p2p.swarm.host import Host, PeerDisconnected, PeerEvent, PeerIdentified, Stream
from pyrsia.p2p.swarm.loop import CoreLoop

log = logging.getLogger("pyrsia.p2p")
BLOCKS_REPLY_BYTES_MAX = 16 * 1024 * 1024
STREAM_TIMEOUT_S = 20.0
STATUS_TIMEOUT_S = 5.0
STATUS_WORKERS = 2
PENALTIES_KEPT = 100


@dataclass(frozen=True, slots=True, kw_only=True)
class SyncCounters:
    """What `/metrics` and `pyrsia status` read of sync."""

    best_known_height: int
    penalties: dict[str, int]  # by kind (`sync.core` names them), strikes included
    drops: dict[str, int]  # peers dropped and banned, by kind
    banned_peers: int
    status_exchanges_skipped: int  # one was already pending for that peer


class SyncedChain(Protocol):
    """What sync needs of the local log; thread-safe."""

    def sync_status(self) -> Status: ...

    def encoded_blocks(self, start: int, count: int, bytes_max: int) -> list[bytes]:
        """Stored blocks from `start`, as many as fit in `bytes_max` (at least one if any)."""
        ...

    def append_encoded(self, blocks: Sequence[bytes]) -> None:
        """Verify and store each block in order; a bad one raises (those before it stay)."""
        ...


class SyncService:
    def __init__(
        self,
        host: Host,
        chain: SyncedChain,
        *,
        config: SyncConfig | None = None,
        pinned_genesis: bytes | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._host = host
        self._chain = chain
        self._clock = clock
        self._config = config or SyncConfig()
        self._core = SyncCore(
            status=chain.sync_status(),
            rng=random.Random(),
            pinned_genesis=pinned_genesis,
            config=self._config,
        )
        self._loop: CoreLoop[Effect] = CoreLoop("pyrsia-sync", self._core, self._execute, clock)
        self._fetch_pool = ThreadPoolExecutor(
            self._config.fetches_max + 1, thread_name_prefix="pyrsia-sync-fetch"
        )
        self._status_pool = ThreadPoolExecutor(STATUS_WORKERS, thread_name_prefix="pyrsia-sync-status")
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._append_lock = threading.Lock()  # an append and the status read after it are one step
        self._heights: dict[str, int] = {}
        self._banned: dict[str, float] = {}
        self._status_pending: set[str] = set()
        self._status_skipped = 0
        self._counters = SyncCounters(
            best_known_height=self._core.status.height, penalties={}, drops={}, banned_peers=0,
            status_exchanges_skipped=0,
        )  # fmt: skip
        self._announce_pending = False
        self.penalties: list[tuple[str, str]] = []  # (peer, reason), newest last, bounded

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        self._loop.start()
        self._host.set_handler(sync.PROTOCOL_ID, self._serve, workers=4, streams_per_peer_max=2)
        self._host.subscribe(self._on_peer_event)
        for peer_id, info in self._host.peers().items():
            if sync.PROTOCOL_ID in info.protocols:
                self._loop.post(functools.partial(self._connected, peer_id, info.direction == "outbound"))

    def _connected(self, peer: str, outbound: bool, now: float) -> list[Effect]:
        return self._core.peer_connected(peer, now, outbound=outbound)

    def stop(self) -> None:
        self._loop.stop()
        self._fetch_pool.shutdown(wait=False, cancel_futures=True)
        self._status_pool.shutdown(wait=False, cancel_futures=True)

    # -- what the node tells us and asks ---------------------------------------------

    def committed(self) -> None:
        """A block was stored locally: announce the new tip to every peer.

        Announcements coalesce: blocks stored while one is pending are covered by it (it
        reads the tip when it runs), and blocks a fetch brings in are announced once, by
        the core, when the batch is applied — never one status exchange per block.
        """
        with self._lock:
            if self._announce_pending:
                return
            self._announce_pending = True

        def announce(now: float) -> list[Effect]:
            with self._lock:
                self._announce_pending = False
            if self._core.fetching:
                return []
            return self._core.committed(self._chain.sync_status(), now)

        if not self._loop.post(announce):
            with self._lock:
                self._announce_pending = False

    def peer_heights(self) -> dict[str, int]:
        """Each peer's claimed height (what it says, not what it proved)."""
        with self._lock:
            return dict(self._heights)

    def best_known_height(self) -> int:
        """Our height, or a higher one claimed by a peer that delivered verified blocks."""
        ours = self._chain.sync_status().height
        with self._lock:
            return max(self._counters.best_known_height, ours)

    def counters(self) -> SyncCounters:
        with self._lock:
            return self._counters

    def wait_for_height(self, height: int, timeout_s: float) -> bool:
        """Block until the local log reaches `height`; False on timeout."""
        deadline = self._clock() + timeout_s
        with self._changed:
            while self._chain.sync_status().height < height:
                left = deadline - self._clock()
                if left <= 0:
                    return False
                self._changed.wait(min(left, 0.5))
        return True

    # -- the loop thread -------------------------------------------------------------

    def _execute(self, effects: Sequence[Effect]) -> None:
        for effect in effects:
            match effect:
                case SendStatus():
                    self._send_status(effect)
                case Fetch():
                    self._fetch_pool.submit(self._fetch, effect)
                case Penalize():
                    self._penalize(effect)
        now = self._clock()
        with self._changed:
            self._heights = self._core.peer_heights()
            self._banned = self._core.banned(now)
            self._counters = SyncCounters(
                best_known_height=self._core.best_known_height,
                penalties=dict(self._core.penalties),
                drops=dict(self._core.drops),
                banned_peers=len(self._banned),
                status_exchanges_skipped=self._status_skipped,
            )
            self._changed.notify_all()

    def _send_status(self, effect: SendStatus) -> None:
        with self._lock:
            if effect.peer in self._status_pending:
                self._status_skipped += 1
                return
            self._status_pending.add(effect.peer)
        self._status_pool.submit(self._exchange_status, effect.peer)

    def _penalize(self, effect: Penalize) -> None:
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
        if effect.disconnect:
            self._host.disconnect(effect.peer)

    def _is_banned(self, peer: str) -> bool:
        with self._lock:
            until = self._banned.get(peer)
        return until is not None and until > self._clock()

    # -- worker threads --------------------------------------------------------------

    def _on_peer_event(self, event: PeerEvent) -> None:
        peer = event.peer_id
        match event:
            case PeerIdentified() if sync.PROTOCOL_ID in event.info.protocols:
                outbound = event.info.direction == "outbound"
                self._loop.post(functools.partial(self._connected, peer, outbound))
            case PeerDisconnected():
                self._loop.post(lambda now: self._core.peer_left(peer, now))

    def _exchange_status(self, peer: str) -> None:
        try:
            ours = self._chain.sync_status()  # the newest, even if the exchange waited
            stream = self._host.open_stream(peer, [sync.PROTOCOL_ID], timeout=STATUS_TIMEOUT_S)
            try:
                stream.write_message(sync.encode(ours), STATUS_TIMEOUT_S)
                theirs = self._read(stream, STATUS_TIMEOUT_S)
            finally:
                stream.close()
        except PeerError as exc:
            log.debug("sync: status exchange with %s failed: %s", peer, exc.message)
            return
        finally:
            with self._lock:
                self._status_pending.discard(peer)
        if isinstance(theirs, Status) and not self._is_banned(peer):
            self._loop.post(lambda now: self._core.status_received(peer, theirs, now))

    def _fetch(self, fetch: Fetch) -> None:
        try:
            stream = self._host.open_stream(fetch.peer, [sync.PROTOCOL_ID], timeout=STREAM_TIMEOUT_S)
            try:
                stream.write_message(
                    sync.encode(GetBlocks(start=fetch.start, count=fetch.count)), STREAM_TIMEOUT_S
                )
                reply = self._read(stream, STREAM_TIMEOUT_S)
            finally:
                stream.close()
            if not isinstance(reply, Blocks) or len(reply.blocks) > fetch.count:
                raise PeerError(f"{fetch.peer} answered get_blocks with {type(reply).__name__}")
        except PeerError as exc:
            log.info("sync: fetching blocks from %s failed: %s", fetch.peer, exc.message)
            self._loop.post(lambda now: self._core.request_failed(fetch.request_id, now))
            return
        received = len(reply.blocks)
        full = sum(len(b) for b in reply.blocks) >= BLOCKS_REPLY_BYTES_MAX // 2
        with self._append_lock:  # reports reach the core in the order the appends happened
            try:
                self._chain.append_encoded(reply.blocks)
            except TranslogError as exc:
                reason = f"sent a block that does not verify: {exc.message}"
                status = self._chain.sync_status()
                self._loop.post(lambda now: self._core.blocks_refused(fetch.request_id, reason, status, now))
                return
            except PyrsiaError as exc:  # our disk, not the peer: try again later
                log.warning("sync: storing blocks failed: %s", exc.message)
                self._loop.post(lambda now: self._core.request_failed(fetch.request_id, now))
                return
            status = self._chain.sync_status()
            self._loop.post(
                lambda now: self._core.blocks_applied(
                    fetch.request_id, status, now, received=received, full=full
                )
            )

    def _serve(self, stream: Stream) -> None:
        """An inbound sync stream: a status to answer with ours, or a request for blocks."""
        peer = stream.peer_id
        banned = self._is_banned(peer)
        try:
            raw = stream.read_message(sync.MESSAGE_BYTES_MAX, STREAM_TIMEOUT_S)
            if raw is None:
                return
            message = sync.decode(raw)
            match message:
                case Status():
                    stream.write_message(sync.encode(self._chain.sync_status()), STREAM_TIMEOUT_S)
                    if not banned:  # it still learns ours, so a peer of another network reads why
                        self._loop.post(lambda now: self._core.status_received(peer, message, now))
                case GetBlocks() if banned:
                    raise PeerError(f"{peer} is banned from sync")
                case GetBlocks():
                    count = min(message.count, self._config.batch_blocks_max)
                    blocks = self._chain.encoded_blocks(message.start, count, BLOCKS_REPLY_BYTES_MAX)
                    stream.write_message(sync.encode(Blocks(blocks=tuple(blocks))), STREAM_TIMEOUT_S)
                case Blocks():
                    raise PeerError(f"{peer} sent blocks nobody asked for")
        except PeerError as exc:
            log.info("sync: stream from %s: %s", peer, exc.message)
            stream.reset()
            return
        stream.close()

    def _read(self, stream: Stream, timeout_s: float) -> sync.Message:
        raw = stream.read_message(sync.MESSAGE_BYTES_MAX, timeout_s)
        if raw is None:
            raise PeerError(f"{stream.peer_id} closed the sync stream without answering")
        return sync.decode(raw)
