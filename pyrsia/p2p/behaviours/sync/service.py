"""Log sync over the Host: the shell around `sync.SyncCore` (`/pyrsia/sync/1.0.0`).

The core lives on a `CoreLoop`. Every peer whose identify lists the sync protocol is
told our status; a status exchange is one stream (we send ours, it answers with its
own), so both sides learn each other's height from one round trip. A fetch is one
stream too: `get_blocks` out, one `blocks` message back, bounded in count and bytes;
the batch goes to the chain (`SyncedChain.append_encoded`: each block verified by the
chain core before it is stored), and the outcome goes back to the core. A peer the
core penalizes is disconnected and its statuses are ignored for `ban_s`.

Streams run on a small worker pool, never on the loop thread, so a slow peer delays
only its own request (which the core times out).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
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
BAN_S = 600.0


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
        workers: int = 4,
    ) -> None:
        self._host = host
        self._chain = chain
        self._clock = clock
        self._core = SyncCore(
            status=chain.sync_status(), pinned_genesis=pinned_genesis, config=config or SyncConfig()
        )
        self._loop: CoreLoop[Effect] = CoreLoop("pyrsia-sync", self._core, self._execute, clock)
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="pyrsia-sync")
        self._banned: dict[str, float] = {}
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._heights: dict[str, int] = {}
        self._announce_pending = False
        self.penalties: list[tuple[str, str]] = []  # (peer, reason), newest last, bounded

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        self._loop.start()
        self._host.set_handler(sync.PROTOCOL_ID, self._serve, workers=4, streams_per_peer_max=2)
        self._host.subscribe(self._on_peer_event)
        for peer_id, info in self._host.peers().items():
            if sync.PROTOCOL_ID in info.protocols:
                self._loop.post(functools.partial(self._connected, peer_id))

    def _connected(self, peer: str, now: float) -> list[Effect]:
        return self._core.peer_connected(peer, now)

    def stop(self) -> None:
        self._loop.stop()
        self._pool.shutdown(wait=False, cancel_futures=True)

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
        with self._lock:
            return dict(self._heights)

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
                    self._pool.submit(self._exchange_status, effect.peer, effect.status)
                case Fetch():
                    self._pool.submit(self._fetch, effect)
                case Penalize():
                    self._penalize(effect)
        with self._changed:
            self._heights = self._core.peer_heights()
            self._changed.notify_all()

    def _penalize(self, effect: Penalize) -> None:
        log.warning(
            "sync: peer %s: %s%s", effect.peer, effect.reason, "; disconnecting" if effect.disconnect else ""
        )
        self.penalties = [*self.penalties[-99:], (effect.peer, effect.reason)]
        if effect.disconnect:
            self._banned[effect.peer] = self._clock() + BAN_S
            self._host.disconnect(effect.peer)

    def _is_banned(self, peer: str) -> bool:
        until = self._banned.get(peer)
        return until is not None and until > self._clock()

    # -- worker threads --------------------------------------------------------------

    def _on_peer_event(self, event: PeerEvent) -> None:
        peer = event.peer_id
        match event:
            case PeerIdentified() if sync.PROTOCOL_ID in event.info.protocols and not self._is_banned(peer):
                self._loop.post(functools.partial(self._connected, peer))
            case PeerDisconnected():
                self._loop.post(lambda now: self._core.peer_left(peer, now))

    def _exchange_status(self, peer: str, ours: Status) -> None:
        try:
            stream = self._host.open_stream(peer, [sync.PROTOCOL_ID], timeout=STREAM_TIMEOUT_S)
            try:
                stream.write_message(sync.encode(ours), STREAM_TIMEOUT_S)
                theirs = self._read(stream)
            finally:
                stream.close()
        except PeerError as exc:
            log.debug("sync: status exchange with %s failed: %s", peer, exc.message)
            return
        if isinstance(theirs, Status) and not self._is_banned(peer):
            self._loop.post(lambda now: self._core.status_received(peer, theirs, now))

    def _fetch(self, fetch: Fetch) -> None:
        try:
            stream = self._host.open_stream(fetch.peer, [sync.PROTOCOL_ID], timeout=STREAM_TIMEOUT_S)
            try:
                stream.write_message(
                    sync.encode(GetBlocks(start=fetch.start, count=fetch.count)), STREAM_TIMEOUT_S
                )
                reply = self._read(stream)
            finally:
                stream.close()
            if not isinstance(reply, Blocks) or not 0 < len(reply.blocks) <= fetch.count:
                raise PeerError(f"{fetch.peer} answered get_blocks with {type(reply).__name__}")
        except PeerError as exc:
            log.info("sync: fetching blocks from %s failed: %s", fetch.peer, exc.message)
            self._loop.post(lambda now: self._core.request_failed(fetch.request_id, now))
            return
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
        self._loop.post(lambda now: self._core.blocks_applied(fetch.request_id, status, now))

    def _serve(self, stream: Stream) -> None:
        """An inbound sync stream: a status to answer with ours, or a request for blocks."""
        peer = stream.peer_id
        try:
            raw = stream.read_message(sync.MESSAGE_BYTES_MAX, STREAM_TIMEOUT_S)
            if raw is None:
                return
            message = sync.decode(raw)
            match message:
                case Status():
                    stream.write_message(sync.encode(self._chain.sync_status()), STREAM_TIMEOUT_S)
                    if not self._is_banned(peer):
                        self._loop.post(lambda now: self._core.status_received(peer, message, now))
                case GetBlocks():
                    count = min(message.count, self._core.config.batch_blocks_max)
                    blocks = self._chain.encoded_blocks(message.start, count, BLOCKS_REPLY_BYTES_MAX)
                    stream.write_message(sync.encode(Blocks(blocks=tuple(blocks))), STREAM_TIMEOUT_S)
                case Blocks():
                    raise PeerError(f"{peer} sent blocks nobody asked for")
        except PeerError as exc:
            log.info("sync: stream from %s: %s", peer, exc.message)
            stream.reset()
            return
        stream.close()

    def _read(self, stream: Stream) -> sync.Message:
        raw = stream.read_message(sync.MESSAGE_BYTES_MAX, STREAM_TIMEOUT_S)
        if raw is None:
            raise PeerError(f"{stream.peer_id} closed the sync stream without answering")
        return sync.decode(raw)
