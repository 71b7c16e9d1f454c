"""Log sync over the Host: the shell around the `Sync` behaviour (`/pyrsia/sync/1.0.0`).

The core lives in the `Sync` behaviour (`sync/behaviour.py`) on the Host's selector
thread: every peer whose identify lists the sync protocol is told our status; a
status exchange is one stream (we send ours, it answers with its own), so both sides
learn each other's height from one round trip. A fetch is one stream too: `get_blocks`
out, one `blocks` message back, bounded in count and bytes. The behaviour hands the
reply, still encoded, to this shell, and one worker thread (`pyrsia-sync-append`,
started with the first batch, fed by a queue of `APPEND_QUEUE_MAX`; the core has at
most `fetches_max + 1` fetches in flight, or `pipeline_depth` to one proven peer, and a
reply that finds the queue full fails its request) decodes it, tells the core how
many blocks came (`received`: it may ask for the next range at once) and hands the
batch to the chain
(`SyncedChain.submit_encoded`: signatures checked on this worker, each block then
through the chain core and the batch stored with one fsync pass by the log's writer).
While the writer stores one batch the worker prepares the next; the outcome of each —
how many blocks came and where our log stands after them — goes back to the core
through `Host.run`, in the order the batches were stored, and the core judges the
peer. A peer the core drops is disconnected, and while its ban lasts it is asked
nothing, served no blocks, and its statuses are answered but ignored.

Inbound sync streams (a peer's status, or its `get_blocks`, answered with up to
`BLOCKS_REPLY_BYTES_MAX` read from disk) are served on the Host's handler pool for
the protocol (4 workers, started on demand, 2 streams per peer): a behaviour's write
has no backpressure, and the disk read must not run on the selector thread.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Protocol

from pyrsia.errors import PeerError, PyrsiaError, TranslogError
from pyrsia.p2p.behaviours.sync import core as sync
from pyrsia.p2p.behaviours.sync.behaviour import Fetched, Sync
from pyrsia.p2p.behaviours.sync.core import Blocks, GetBlocks, Status, SyncConfig, SyncCore
from pyrsia.p2p.swarm import behaviour as sw
from pyrsia.p2p.swarm.host import Host, PeerEvent, PeerIdentified, Stream

log = logging.getLogger("pyrsia.p2p")
BLOCKS_REPLY_BYTES_MAX = 16 * 1024 * 1024
STREAM_TIMEOUT_S = 20.0
APPEND_QUEUE_MAX = 8


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

    def lookup_height(self) -> int:
        """The height up to which lookups see the blocks (the status may run ahead)."""
        ...

    def encoded_blocks(self, start: int, count: int, bytes_max: int) -> list[bytes]:
        """Stored blocks from `start`, as many as fit in `bytes_max` (at least one if any)."""
        ...

    def submit_encoded(self, blocks: Sequence[bytes]) -> Future[int]:
        """Decode the blocks and queue them to be verified and stored in order; the future
        resolves once they are durable, or fails with the first bad block's error (a
        `TranslogError`) after those before it are stored. May raise that error at once
        when nothing can be stored."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class _Storing:
    job: Fetched
    received: int
    full: bool
    future: Future[int]


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
        self._clock = clock  # the Host's clock: bans are judged in its time
        self._config = config or SyncConfig()
        self._core = SyncCore(
            status=chain.sync_status(),
            rng=random.Random(),
            pinned_genesis=pinned_genesis,
            config=self._config,
        )
        self._behaviour = Sync(chain.sync_status)
        self._jobs: queue.Queue[Fetched | None] = queue.Queue(APPEND_QUEUE_MAX)
        self._worker: threading.Thread | None = None
        self._running = False
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._announce_pending = False

    @property
    def penalties(self) -> list[tuple[str, str]]:
        """(peer, reason) of the newest penalties, newest last."""
        return list(self._behaviour.penalties)

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        if self._running:
            return
        self._running = True
        self._behaviour.start(self._core)  # before the Host drives it
        self._host.add_behaviour(self._behaviour, self._on_report)
        self._host.set_handler(sync.PROTOCOL_ID, self._serve, workers=4, streams_per_peer_max=2)
        self._host.subscribe(self._on_peer_event)
        for peer_id, info in self._host.peers().items():
            if sync.PROTOCOL_ID in info.protocols:
                self._identified(peer_id, info.direction == "outbound")

    def stop(self) -> None:
        if not self._running:
            return
        self._running = False
        self._host.remove_handler(sync.PROTOCOL_ID)
        behaviour = self._behaviour
        self._host.run(behaviour, lambda _now: behaviour.stop())
        with self._lock:
            worker = self._worker
        if worker is None:
            return
        while True:  # the worker ends after the appends already queued
            try:
                self._jobs.put(None, timeout=1.0)
                break
            except queue.Full:
                if not worker.is_alive():
                    break
        if threading.current_thread() is not worker:
            worker.join(5.0)

    # -- what the node tells us and asks ---------------------------------------------

    def committed(self) -> None:
        """A block was stored locally: announce the new tip to every peer.

        Announcements coalesce: blocks stored while one is pending are covered by it (it
        reads the tip when it runs), and blocks a fetch brings in are announced once, by
        the core, when the batch is applied — never one status exchange per block.
        """
        with self._changed:
            self._changed.notify_all()
            if self._announce_pending or not self._running:
                return
            self._announce_pending = True
        behaviour = self._behaviour

        def announce(now: float) -> Sequence[sw.Effect]:
            with self._lock:
                self._announce_pending = False
            return behaviour.committed(now)

        self._host.run(behaviour, announce)

    def peer_heights(self) -> dict[str, int]:
        """Each peer's claimed height (what it says, not what it proved)."""
        return dict(self._behaviour.published.heights)

    def best_known_height(self) -> int:
        """Our height, or a higher one claimed by a peer that delivered verified blocks."""
        ours = self._chain.sync_status().height
        return max(self._behaviour.published.best_known_height, ours)

    def counters(self) -> SyncCounters:
        view = self._behaviour.published
        return SyncCounters(
            best_known_height=view.best_known_height,
            penalties=dict(view.penalties),
            drops=dict(view.drops),
            banned_peers=len(view.banned),
            status_exchanges_skipped=view.status_exchanges_skipped,
        )

    def wait_for_height(self, height: int, timeout_s: float) -> bool:
        """Block until the local log reaches `height` and lookups see it; False on timeout."""
        deadline = self._clock() + timeout_s
        with self._changed:
            while self._chain.lookup_height() < height:
                left = deadline - self._clock()
                if left <= 0:
                    return False
                self._changed.wait(min(left, 0.5))
        return True

    # -- the selector thread -----------------------------------------------------------

    def _on_report(self, _peer: str | None, outcome: object) -> None:
        if not isinstance(outcome, Fetched):
            return
        with self._lock:  # started with the first batch: a node that never syncs never has it
            if self._worker is None and self._running:
                self._worker = threading.Thread(
                    target=self._append_loop, name="pyrsia-sync-append", daemon=True
                )
                self._worker.start()
        try:
            self._jobs.put_nowait(outcome)
        except queue.Full:
            log.warning("sync: %d batches already wait to be stored; asking again later", APPEND_QUEUE_MAX)
            self._post(_failed(self._behaviour, outcome.request_id))

    def _post(self, action: Callable[[float], Sequence[sw.Effect]]) -> None:
        self._host.run(self._behaviour, action)

    # -- the Host's event pool -------------------------------------------------------

    def _on_peer_event(self, event: PeerEvent) -> None:
        if isinstance(event, PeerIdentified) and sync.PROTOCOL_ID in event.info.protocols:
            self._identified(event.peer_id, event.info.direction == "outbound")

    def _identified(self, peer: str, outbound: bool) -> None:
        if self._running:
            behaviour = self._behaviour
            self._post(lambda now: behaviour.peer_identified(peer, outbound, now))

    # -- the append worker -------------------------------------------------------------

    def _append_loop(self) -> None:
        """Prepare batch n+1 (decode, signatures) while the log's writer stores batch n;
        outcomes are reported in order."""
        storing: _Storing | None = None
        while True:
            if storing is None:
                job = self._jobs.get()
            else:
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:  # nothing to prepare meanwhile: wait for this one
                    self._settle(storing)
                    storing = None
                    continue
            if job is None:
                self._settle(storing)
                return
            try:
                started = self._start(job)
            except Exception:  # a bug in one batch must not stop sync
                log.exception("sync: storing a batch from %s failed", job.peer)
                self._post(_failed(self._behaviour, job.request_id))
                started = None
            self._settle(storing)
            storing = started

    def _start(self, job: Fetched) -> _Storing | None:
        behaviour, request_id = self._behaviour, job.request_id
        try:
            reply = sync.decode(job.reply)
            if not isinstance(reply, Blocks) or len(reply.blocks) > job.count:
                raise PeerError(f"{job.peer} answered get_blocks with {type(reply).__name__}")
        except PeerError as exc:
            log.info("sync: fetching blocks from %s failed: %s", job.peer, exc.message)
            self._post(_failed(behaviour, request_id))
            return None
        received = len(reply.blocks)
        full = sum(len(b) for b in reply.blocks) >= BLOCKS_REPLY_BYTES_MAX // 2
        self._post(lambda now: behaviour.received(request_id, received, now))
        future: Future[int] = Future()
        if not received:
            future.set_result(self._chain.sync_status().height)
        else:
            try:
                future = self._chain.submit_encoded(reply.blocks)
            except PyrsiaError as exc:
                future.set_exception(exc)
        return _Storing(job=job, received=received, full=full, future=future)

    def _settle(self, storing: _Storing | None) -> None:
        """Wait for a batch to be stored and report how it went."""
        if storing is None:
            return
        behaviour, request_id = self._behaviour, storing.job.request_id
        received, full = storing.received, storing.full
        try:
            storing.future.result()
        except TranslogError as exc:
            reason = f"sent a block that does not verify: {exc.message}"
            status = self._chain.sync_status()
            self._post(lambda now: behaviour.refused(request_id, reason, status, now))
        except PyrsiaError as exc:  # our disk, not the peer: try again later
            log.warning("sync: storing blocks failed: %s", exc.message)
            self._post(_failed(behaviour, request_id))
        except Exception:  # a bug in one batch must not stop sync
            log.exception("sync: storing a batch from %s failed", storing.job.peer)
            self._post(_failed(behaviour, request_id))
        else:
            status = self._chain.sync_status()
            self._post(lambda now: behaviour.applied(request_id, status, now, received=received, full=full))
        with self._changed:
            self._changed.notify_all()

    # -- inbound streams (the Host's handler pool) ---------------------------------------

    def _serve(self, stream: Stream) -> None:
        """An inbound sync stream: a status to answer with ours, or a request for blocks."""
        peer = stream.peer_id
        banned = self._behaviour.is_banned(peer, self._clock())
        behaviour = self._behaviour
        try:
            raw = stream.read_message(sync.MESSAGE_BYTES_MAX, STREAM_TIMEOUT_S)
            if raw is None:
                return
            message = sync.decode(raw)
            match message:
                case Status():
                    stream.write_message(sync.encode(self._chain.sync_status()), STREAM_TIMEOUT_S)
                    if not banned:  # it still learns ours, so a peer of another network reads why
                        status = message
                        self._post(lambda now: behaviour.status_received(peer, status, now))
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


def _failed(behaviour: Sync, request_id: int) -> Callable[[float], Sequence[sw.Effect]]:
    return lambda now: behaviour.failed(request_id, now)
