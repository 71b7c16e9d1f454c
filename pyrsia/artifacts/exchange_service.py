"""The artifact exchange on `/pyrsia/exchange/1.0.0`: serving chunks, and `PeerSource` fetching them.

Serving (`ExchangeServer`): a Host handler answers chunk lists and chunk ranges of
blobs the log vouches for (`vouched(digest)`) and the store holds, verified. A chunk
list is computed from the stored file once and cached by digest (bounded); chunk
bytes are read with `os.pread`, one piece at a time, never the whole blob. Uploads
honour `max_upload_rate` (one token bucket for every stream) and `max_upload_peers`
(distinct peers served at once; a request beyond it is `Refused`), and at most
`streams_max` streams are served at once, since each holds a Host handler worker, of
which one peer holds at most `streams_per_peer_max` (`max_upload_streams_per_peer`),
so one peer cannot take every upload slot. Each request must be answered in full
within `request_deadline_s` (`upload_request_deadline_s`) and the next must come
within the idle timeout: a slow or silent reader loses its stream, not the node its
slot. Each refusal is counted by reason (`ExchangeSnapshot.refused`). With
`serve_artifacts = false` the handler is never registered, so peers cannot even
open the protocol.

Downloading (`PeerSource`, a `BlobSource` labelled "peers"): ask one provider for the
chunk list and check it against the logged size and chunk root (`expect_chunks`); a
list that disagrees is that provider's fault, and the next is asked. Then the pure
scheduler (`p2p.exchange.ExchangeCore`) runs on this thread, with one reader per
provider. Each further provider is asked for its chunk list too (it must equal the
checked one) to learn its `http_port`. Two paths, chosen per provider:

- HTTP (DESIGN §3): the provider advertises a peer HTTP port and our connection to it
  is direct. The port is taken at the IP of that connection (no address is ever
  taken from the provider's word), and each run the core asks for becomes one `Range`
  GET on one of `http_connections_per_peer` keep-alive connections. The bytes need no
  transport security: each chunk is checked against the list that came over the
  authenticated p2p stream. A wrong status or `Content-Range`, a short body, a
  refusal (429/503) or a reset is that provider's failure.
- p2p: relayed connections (the address is the relay's) and providers with no HTTP
  port get `GetChunks` requests pipelined on their exchange stream.

Either way readers only read: each chunk goes to a bounded queue
(`verify_queue_chunks_max` chunks; a full queue stops the reader, so its socket
applies backpressure) served by `verify_workers` threads that hash it against the
list and `pwrite` it at its offset (`write_chunk`; hashlib and pwrite release the
GIL, so chunks are verified in parallel), then report. HTTP readers receive into
kept chunk-sized buffers (`readinto`), given back once the writer is done with them
(which, for a chunk ahead of the whole-blob hash, is when that hash takes it). A bad chunk, a refusal, a
failed stream or connection, or a stall evicts that provider for this blob (logged
with its peer id, counted) and its chunks go elsewhere. `commit()` checks the whole
digest. Progress survives a stop or a kill (`ResumableBlobWriter`): the next attempt
starts from the chunks that still verify. `max_download_rate` is one token bucket
shared by every download and both paths.

Counters (`ExchangeStats`): bytes served and received per peer (and per peer and
path, "p2p" or "http"; on the serving side an HTTP client is its address), bytes
obtained per source (local, peer, upstream), peers being served, transfers in progress.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import logging
import os
import queue
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pyrsia.artifacts.blobstore import AHEAD_CHUNKS_MAX, BlobStore, Buffer, ResumableBlobWriter
from pyrsia.artifacts.sources import Wanted
from pyrsia.errors import (
    BlobUnknown,
    DigestMismatch,
    ExchangeFailed,
    PeerError,
    PeerTimeout,
    ProtocolViolation,
    StorageError,
)
from pyrsia.formats.digest import Digest
from pyrsia.p2p.behaviours.exchange import wire
from pyrsia.p2p.behaviours.exchange.scheduler import (
    Cancel,
    Done,
    Effect,
    Evict,
    ExchangeConfig,
    ExchangeCore,
    Failed,
    Request,
)
from pyrsia.p2p.ratelimit import PeerSlots, TokenBucket
from pyrsia.p2p.swarm.host import Host, Stream
from pyrsia.translog.chunks import CHUNK_BYTES, ChunkHasher, chunk_count
from pyrsia.upstream.sink import OpenSink

log = logging.getLogger("pyrsia.exchange")

SEND_PIECE_BYTES = 256 * 1024
LIMITED_PIECE_BYTES = 64 * 1024  # smaller pieces when a rate cap is set, so the cap is smooth
SOURCES = ("local", "peer", "upstream")
# How chunk bytes moved: the p2p exchange protocol, or the peer HTTP data plane.
P2P = "p2p"
HTTP = "http"
PATHS = (P2P, HTTP)
# The first connect to a provider's HTTP port waits this many round trips of our p2p
# connection to it, and at least HTTP_CONNECT_S_MIN: a dropped SYN falls back quickly.
HTTP_CONNECT_RTTS = 4
HTTP_CONNECT_S_MIN = 1.0
# Serving refusals, as counted (`pyrsia_exchange_refused_total{reason=…}`).
STREAMS_BUSY = "streams_max"
PEERS_BUSY = "peers_max"
PEER_STREAMS = "peer_streams"
DEADLINE = "deadline"
IDLE = "idle"
REFUSAL_REASONS = (STREAMS_BUSY, PEERS_BUSY, PEER_STREAMS, DEADLINE, IDLE)


# -- counters ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Transfer:
    digest: str
    size: int
    chunks: int
    verified: int
    providers: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ExchangeSnapshot:
    served_bytes_by_peer: dict[str, int]
    received_bytes_by_peer: dict[str, int]
    bytes_by_source: dict[str, int]  # local | peer | upstream
    serving_peers: int
    evictions: int
    transfers: tuple[Transfer, ...]
    refused: dict[str, int] = field(default_factory=dict)  # serving refusals by reason
    # The same bytes by (peer, path): path is "p2p" or "http"; an HTTP client is its address.
    served_bytes_by_peer_path: dict[tuple[str, str], int] = field(default_factory=dict)
    received_bytes_by_peer_path: dict[tuple[str, str], int] = field(default_factory=dict)


@dataclass(slots=True)
class _Transfer:
    size: int
    chunks: int
    verified: int
    providers: tuple[str, ...]


class ExchangeStats:
    """Thread-safe counters; `snapshot()` is what `/metrics` and `pyrsia status` read."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._served: dict[str, int] = {}
        self._received: dict[str, int] = {}
        self._served_paths: dict[tuple[str, str], int] = {}
        self._received_paths: dict[tuple[str, str], int] = {}
        self._sources: dict[str, int] = dict.fromkeys(SOURCES, 0)
        self._serving = 0
        self._evictions = 0
        self._transfers: dict[str, _Transfer] = {}
        self._refused: dict[str, int] = dict.fromkeys(REFUSAL_REASONS, 0)

    def refused(self, reason: str) -> None:
        with self._lock:
            self._refused[reason] = self._refused.get(reason, 0) + 1

    def served(self, peer: str, size: int, *, path: str = P2P) -> None:
        with self._lock:
            self._served[peer] = self._served.get(peer, 0) + size
            self._served_paths[peer, path] = self._served_paths.get((peer, path), 0) + size

    def received(self, peer: str, size: int, *, path: str = P2P) -> None:
        with self._lock:
            self._received[peer] = self._received.get(peer, 0) + size
            self._received_paths[peer, path] = self._received_paths.get((peer, path), 0) + size
            self._sources["peer"] += size

    def obtained(self, source: str, size: int) -> None:
        """Bytes of a blob that came from `source` ("local" or "upstream"; peers count themselves)."""
        with self._lock:
            self._sources[source] = self._sources.get(source, 0) + size

    def evicted(self) -> None:
        with self._lock:
            self._evictions += 1

    def set_serving(self, peers: int) -> None:
        with self._lock:
            self._serving = peers

    def transfer(
        self, digest: Digest, size: int, chunks: int, verified: int, providers: Sequence[str]
    ) -> None:
        with self._lock:
            self._transfers[str(digest)] = _Transfer(size, chunks, verified, tuple(providers))

    def transfer_progress(self, digest: Digest, verified: int) -> None:
        with self._lock:
            current = self._transfers.get(str(digest))
            if current is not None:
                current.verified = verified

    def transfer_ended(self, digest: Digest) -> None:
        with self._lock:
            self._transfers.pop(str(digest), None)

    def snapshot(self) -> ExchangeSnapshot:
        with self._lock:
            return ExchangeSnapshot(
                served_bytes_by_peer=dict(self._served),
                received_bytes_by_peer=dict(self._received),
                bytes_by_source=dict(self._sources),
                serving_peers=self._serving,
                evictions=self._evictions,
                transfers=tuple(
                    Transfer(
                        digest=d, size=t.size, chunks=t.chunks, verified=t.verified, providers=t.providers
                    )
                    for d, t in sorted(self._transfers.items())
                ),
                refused=dict(self._refused),
                served_bytes_by_peer_path=dict(self._served_paths),
                received_bytes_by_peer_path=dict(self._received_paths),
            )


class SharedBucket:
    """A token bucket behind a lock, with the clock and the sleep of the shell."""

    def __init__(self, rate_bytes_s: int, clock: Callable[[], float], sleep: Callable[[float], None]) -> None:
        self._bucket = TokenBucket(rate_bytes_s=rate_bytes_s)
        self._lock = threading.Lock()
        self._clock = clock
        self._sleep = sleep

    @property
    def unlimited(self) -> bool:
        return self._bucket.unlimited

    def take(self, size: int) -> None:
        if self._bucket.unlimited:
            return
        with self._lock:
            wait_s = self._bucket.reserve(size, self._clock())
        if wait_s > 0:
            self._sleep(wait_s)


# -- serving -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ServeConfig:
    serve_artifacts: bool = True
    max_upload_rate: int = 0  # bytes per second over all peers; 0 = unlimited
    max_upload_peers: int = 0  # distinct peers served at once; 0 = unlimited
    http_port: int = 0  # advertised in chunk lists for an HTTP Range data path; 0 = none
    # Streams served at once, whoever asks: each holds one of the Host's handler workers
    # for a whole download, and kad and sync answer from the same pool.
    streams_max: int = 8
    streams_per_peer_max: int = 4
    request_deadline_s: float = 120.0
    chunk_lists_cached_max: int = 256
    idle_timeout_s: float = 60.0


@dataclass(frozen=True, slots=True)
class _Listed:
    path: str
    size: int
    hashes: tuple[bytes, ...]


class ExchangeServer:
    def __init__(
        self,
        store: BlobStore,
        vouched: Callable[[Digest], bool],
        *,
        config: ServeConfig = ServeConfig(),
        stats: ExchangeStats | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        upload: SharedBucket | None = None,
    ) -> None:
        self._store = store
        self._vouched = vouched
        self.config = config
        self.stats = stats or ExchangeStats()
        # `max_upload_rate`: one bucket, shared with the peer HTTP data plane when given.
        self._upload = upload or SharedBucket(config.max_upload_rate, clock, sleep)
        self._slots = PeerSlots(config.max_upload_peers)
        self._slots_lock = threading.Lock()
        self._streams = 0
        self._peer_streams: dict[str, int] = {}
        self._clock = clock
        self._lists: OrderedDict[Digest, _Listed] = OrderedDict()
        self._lists_lock = threading.Lock()

    def register(self, host: Host) -> None:
        """Serve the protocol on `host`, unless `serve_artifacts` is off."""
        if self.config.serve_artifacts:
            # Room beyond `streams_max` for the workers that answer `Refused` when it is full.
            workers = self.config.streams_max + 2
            host.set_handler(wire.PROTOCOL_ID, self.handle, workers=workers, pending_max=2 * workers)

    def handle(self, stream: Stream) -> None:
        """One peer's stream: answer its requests in order until it closes."""
        peer = stream.peer_id
        config = self.config
        with self._slots_lock:
            held = self._peer_streams.get(peer, 0)
            if self._streams >= config.streams_max:
                refusal: tuple[str, str] | None = (STREAMS_BUSY, f"{self._streams} streams")
            elif held >= config.streams_per_peer_max:
                refusal = (PEER_STREAMS, f"{held} streams for {peer}")
            elif not self._slots.acquire(peer):
                refusal = (PEERS_BUSY, f"{self._slots.peers_max} peers")
            else:
                refusal = None
                self._streams += 1
                self._peer_streams[peer] = held + 1
            self.stats.set_serving(self._slots.serving)
        if refusal is not None:
            self.stats.refused(refusal[0])
            log.debug("exchange: refused a stream of %s: busy serving %s", peer, refusal[1])
            stream.write(wire.encode(wire.Refused(reason=f"busy: serving {refusal[1]}")))
            return
        idle_s = min(config.idle_timeout_s, config.request_deadline_s)
        try:
            reader = wire.RequestReader()
            while data := stream.read(65_536, timeout=idle_s):
                reader.receive_data(data)
                while (request := reader.next_request()) is not None:
                    self._answer(stream, request, self._clock() + config.request_deadline_s)
        except StorageError as exc:
            log.warning("exchange: cannot serve %s: %s", peer, exc.message)
            stream.reset()
        except _Late:
            self.stats.refused(DEADLINE)
            log.info("exchange: %s did not take an answer within %g s; stream reset", peer,
                     config.request_deadline_s)  # fmt: skip
            stream.reset()
        except PeerTimeout:
            self.stats.refused(IDLE)
            log.info("exchange: %s sent no request within %g s; stream reset", peer, idle_s)
            stream.reset()
        finally:
            with self._slots_lock:
                self._slots.release(peer)
                self._streams -= 1
                left = self._peer_streams.pop(peer, 1) - 1
                if left > 0:
                    self._peer_streams[peer] = left
                self.stats.set_serving(self._slots.serving)

    def _left(self, deadline_s: float) -> float:
        """Seconds left before the request's deadline; `_Late` once it passed."""
        left = deadline_s - self._clock()
        if left <= 0:
            raise _Late()
        return left

    def _write(self, stream: Stream, data: bytes, deadline_s: float) -> None:
        try:
            stream.write(data, timeout=self._left(deadline_s))
        except PeerTimeout as exc:
            raise _Late() from exc

    def _answer(self, stream: Stream, request: wire.Request, deadline_s: float) -> None:
        listed = self._listed(request.digest)
        if listed is None:
            self._write(stream, wire.encode(wire.NotFound(digest=request.digest)), deadline_s)
            return
        match request:
            case wire.GetChunkList():
                reply = wire.ChunkList(
                    digest=request.digest,
                    size=listed.size,
                    chunk_size=CHUNK_BYTES,
                    hashes=listed.hashes,
                    http_port=self.config.http_port,
                )
                self._write(stream, wire.encode(reply), deadline_s)
            case wire.GetChunks():
                if request.first + request.count > len(listed.hashes):
                    reason = f"chunks {request.first}+{request.count} beyond {len(listed.hashes)}"
                    self._write(stream, wire.encode(wire.Refused(reason=reason)), deadline_s)
                    return
                self._send_chunks(stream, request, listed, deadline_s)

    def _send_chunks(
        self, stream: Stream, request: wire.GetChunks, listed: _Listed, deadline_s: float
    ) -> None:
        piece_max = SEND_PIECE_BYTES if self._upload.unlimited else LIMITED_PIECE_BYTES
        try:
            fd = os.open(listed.path, os.O_RDONLY)
        except FileNotFoundError:
            self._forget(request.digest)
            self._write(stream, wire.encode(wire.NotFound(digest=request.digest)), deadline_s)
            return
        except OSError as exc:
            raise StorageError(f"cannot read blob {request.digest}: {exc.strerror}") from exc
        try:
            self._write(
                stream,
                wire.encode(wire.Chunks(digest=request.digest, first=request.first, count=request.count)),
                deadline_s,
            )
            for index in range(request.first, request.first + request.count):
                offset = index * CHUNK_BYTES
                length = min(CHUNK_BYTES, listed.size - offset)
                self._write(stream, wire.chunk_frame_head(length), deadline_s)
                sent = 0
                while sent < length:
                    piece = os.pread(fd, min(piece_max, length - sent), offset + sent)
                    if not piece:
                        raise StorageError(f"blob {request.digest} is shorter than its chunk list")
                    self._upload.take(len(piece))
                    self._write(stream, piece, deadline_s)
                    sent += len(piece)
                    self.stats.served(stream.peer_id, len(piece))
        except OSError as exc:
            raise StorageError(f"cannot read blob {request.digest}: {exc.strerror}") from exc
        finally:
            os.close(fd)

    def _listed(self, digest: Digest) -> _Listed | None:
        """The blob's chunk list if it is vouched for and held intact; computed once."""
        if not self._vouched(digest):
            return None
        stored = self._store.stored(digest)  # re-verified when the file changed
        if stored is None:
            self._forget(digest)
            return None
        with self._lists_lock:
            listed = self._lists.get(digest)
            if listed is not None and listed.size == stored.size:
                self._lists.move_to_end(digest)
                return listed
        hasher = ChunkHasher()
        try:
            with stored.path.open("rb") as file:
                while block := file.read(CHUNK_BYTES):
                    hasher.update(block)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(f"cannot read blob {digest}: {exc.strerror}") from exc
        listed = _Listed(path=str(stored.path), size=stored.size, hashes=tuple(hasher.finish()))
        with self._lists_lock:
            self._lists[digest] = listed
            while len(self._lists) > self.config.chunk_lists_cached_max:
                self._lists.popitem(last=False)
        return listed

    def _forget(self, digest: Digest) -> None:
        with self._lists_lock:
            self._lists.pop(digest, None)


class _Late(Exception):
    """A served request passed its deadline (the peer reads too slowly, or not at all)."""


# -- downloading -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class DownloadConfig:
    exchange: ExchangeConfig = field(default_factory=ExchangeConfig)
    providers_max: int = 8
    max_download_rate: int = 0  # bytes per second over all downloads; 0 = unlimited
    open_timeout_s: float = 10.0
    chunk_list_timeout_s: float = 15.0
    read_timeout_s: float = 60.0  # a reader's own bound; the core's stall deadline is shorter
    # The peer HTTP data plane: used for a provider that advertises a port and is
    # connected directly (never through a relay).
    http: bool = True
    http_connections_per_peer: int = 2  # keep-alive connections, one run outstanding on each
    # ... and per download: with many providers each gets fewer (never none), since the
    # receiver, not the providers, is the limit and every connection costs it wake-ups.
    http_connections_max: int = 4
    # Chunks are hashed and written by a small pool, off the threads that read sockets;
    # at most this many received chunks wait for it (memory: that many MiB).
    verify_workers: int = 3
    verify_queue_chunks_max: int = 16


@dataclass(frozen=True, slots=True)
class _Opened:
    peer: str
    stream: Stream | None  # the p2p path
    http: _HttpPeer | None = None  # or the HTTP path


@dataclass(frozen=True, slots=True)
class _Verified:
    peer: str
    index: int
    size: int


@dataclass(frozen=True, slots=True)
class _Bad:
    peer: str
    index: int
    reason: str


@dataclass(frozen=True, slots=True)
class _Gone:
    peer: str
    reason: str


@dataclass(frozen=True, slots=True)
class _Broken:
    error: StorageError


_Event = _Opened | _Verified | _Bad | _Gone | _Broken


class PeerSource:
    """Blobs from the peers that provide them, verified chunk by chunk (a `BlobSource`)."""

    label = "peers"

    def __init__(
        self,
        host: Host,
        store: BlobStore,
        providers: Callable[[Digest], Sequence[str]],
        *,
        config: DownloadConfig = DownloadConfig(),
        stats: ExchangeStats | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._host = host
        self._store = store
        self._providers = providers
        self.config = config
        self.stats = stats or ExchangeStats()
        self._clock = clock
        self._download = SharedBucket(config.max_download_rate, clock, sleep)
        # Kept across downloads: one download's worth (every chunk it may hold at once).
        in_use = config.verify_queue_chunks_max + config.verify_workers + config.http_connections_max
        self._buffers = _Buffers(in_use + AHEAD_CHUNKS_MAX)

    def origin(self, wanted: Wanted) -> str:
        return self.label

    def fetch(self, wanted: Wanted, open_sink: OpenSink) -> None:
        """Download, verify and commit `wanted` from its providers, or raise (progress is kept)."""
        del open_sink  # chunks go to a resumable writer of our own, checked the same way
        if wanted.size is None or wanted.chunk_root is None:
            raise BlobUnknown(
                f"blob {wanted.digest} has no logged size and chunk root to check peers against"
            )
        peers = [p for p in self._providers(wanted.digest) if p != self._host.peer_id]
        peers = list(dict.fromkeys(peers))[: self.config.providers_max]
        if not peers:
            raise BlobUnknown(f"no peer provides blob {wanted.digest}")
        writer = self._store.resumable_writer(
            wanted.digest, self.label, size=wanted.size, chunk_root=wanted.chunk_root
        )
        try:
            _Download(self, wanted, writer, peers).run()
        except StorageError:
            writer.abort()
            raise
        except DigestMismatch:
            raise  # the whole did not verify: commit() already threw the chunks away
        except BaseException:
            writer.suspend()
            raise

    # for _Download
    def _open(self, peer: str) -> Stream:
        return self._host.open_stream(peer, [wire.PROTOCOL_ID], timeout=self.config.open_timeout_s)

    def _rtt_s(self, peer: str) -> float | None:
        info = self._host.peer_info(peer)
        return info.rtt_s if info is not None else None

    def _http_endpoint(self, peer: str, http_port: int) -> tuple[str, int] | None:
        """The provider's HTTP data plane: the IP of our direct connection to it, its port.

        None when it offers none, or every connection to it rides a relay (the relay's
        address is not the provider's, and a NATed provider cannot be reached anyway).
        """
        if not self.config.http or not 0 < http_port <= 65535:
            return None
        info = self._host.peer_info(peer)
        if info is None or info.relayed:
            return None
        endpoint = info.address.tcp_endpoint()
        return None if endpoint is None else (endpoint[0], http_port)


class _HttpPeer:
    """One provider's HTTP endpoint for one blob: the runs asked of it, its connections."""

    def __init__(self, peer: str, host: str, port: int, connections: int) -> None:
        self.peer = peer
        self.host = host
        self.port = port
        self.connections = connections
        self.requests: queue.SimpleQueue[Request | None] = queue.SimpleQueue()
        self.closed = threading.Event()
        self._open: set[http.client.HTTPConnection] = set()
        self._lock = threading.Lock()

    def ask(self, request: Request) -> None:
        self.requests.put(request)

    def connect(
        self, timeout_s: float, conn: http.client.HTTPConnection | None = None
    ) -> http.client.HTTPConnection | None:
        """A keep-alive connection of this provider's (`conn` when one is open already)."""
        conn = conn or http.client.HTTPConnection(self.host, self.port, timeout=timeout_s)
        with self._lock:
            if self.closed.is_set():
                return None
            self._open.add(conn)
        return conn

    def close(self) -> None:
        """Wake and end its connections (a thread blocked in a read gets an error)."""
        self.closed.set()
        with self._lock:
            conns = list(self._open)
        for conn in conns:
            if conn.sock is not None:
                with contextlib.suppress(OSError):
                    conn.sock.shutdown(socket.SHUT_RDWR)
        for _ in range(self.connections):
            self.requests.put(None)


class _Buffers:
    """Chunk-sized buffers the HTTP readers receive into, given back once a chunk is written.

    Reading into a kept buffer (`readinto`) spares a chunk's allocation and a copy of
    its bytes on every chunk; at most `kept_max` free buffers are kept, shared by the
    downloads of one `PeerSource` (a pull of several layers reuses them too).
    """

    def __init__(self, kept_max: int) -> None:
        self._free: list[bytearray] = []
        self._kept_max = kept_max
        self._lock = threading.Lock()

    def take(self) -> bytearray:
        with self._lock:
            if self._free:
                return self._free.pop()
        return bytearray(CHUNK_BYTES)

    def give(self, buffer: bytearray) -> None:
        with self._lock:
            if len(self._free) < self._kept_max:
                self._free.append(buffer)


_Item = tuple[str, int, Buffer, str, Callable[[], None] | None]


class _Verifier:
    """Hashes and writes received chunks on a few threads, off the socket readers.

    The queue is bounded: a reader whose chunks cannot be taken waits (and stops
    reading its socket), so memory stays at `verify_queue_chunks_max` chunks (plus
    those the writer holds ahead of its whole-blob hash, `AHEAD_CHUNKS_MAX`).
    """

    def __init__(self, download: _Download, workers: int, queued_max: int) -> None:
        self._download = download
        self._queue: queue.Queue[_Item | None] = queue.Queue(maxsize=max(1, queued_max))
        self._threads = [
            threading.Thread(target=self._work, name=f"exchange-verify-{i}", daemon=True)
            for i in range(max(1, workers))
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def submit(
        self, peer: str, index: int, data: Buffer, path: str, release: Callable[[], None] | None = None
    ) -> bool:
        """Queue a chunk (`release` is called once it is written or dropped); False once stopping."""
        stopping = self._download.stopping
        while not stopping.is_set():
            try:
                self._queue.put((peer, index, data, path, release), timeout=0.25)
                return True
            except queue.Full:
                continue
        if release is not None:
            release()
        return False

    def drain(self) -> None:
        """Drop the queued chunks, which wakes a reader waiting for room (it sees the stop)."""
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not None and item[4] is not None:
                item[4]()

    def stop(self) -> None:
        for _ in self._threads:
            while True:
                try:
                    self._queue.put(None, timeout=0.25)
                    break
                except queue.Full:
                    self._drop_one()
        for thread in self._threads:
            thread.join(timeout=10.0)

    def _drop_one(self) -> None:
        with contextlib.suppress(queue.Empty):
            self._queue.get_nowait()

    def _work(self) -> None:
        download = self._download
        while (item := self._queue.get()) is not None:
            peer, index, data, path, release = item
            if download.stopping.is_set() or peer in download.evicted or index in download.done:
                if release is not None:
                    release()
                continue  # a copy that lost the race (cancelled, resumed), or a dropped peer's
            size = len(data)
            download.source._download.take(size)
            try:
                download.writer.write_chunk(index, data, release)
            except DigestMismatch as exc:
                download.events.put(_Bad(peer, index, exc.calculated))
                continue
            except StorageError as exc:
                download.events.put(_Broken(exc))
                continue
            with download.counted_lock:
                first_copy = index not in download.counted
                download.counted.add(index)
            if first_copy:
                download.source.stats.received(peer, size, path=path)
            download.events.put(_Verified(peer, index, size))


class _HttpRefused(Exception):
    """A provider's HTTP answer was not the range asked for."""


class _Download:
    """One blob: the chunk list, then the core on this thread and a reader per provider."""

    def __init__(
        self, source: PeerSource, wanted: Wanted, writer: ResumableBlobWriter, peers: list[str]
    ) -> None:
        self.source = source
        self.wanted = wanted
        self.digest = wanted.digest
        self.writer = writer
        self.peers = peers
        self.hashes: tuple[bytes, ...] = ()
        self.events: queue.SimpleQueue[_Event] = queue.SimpleQueue()
        self.streams: dict[str, Stream] = {}
        self.http_peers: dict[str, _HttpPeer] = {}
        self.pending: dict[str, list[Request]] = {p: [] for p in peers}
        self.done: set[int] = set()
        # Chunks whose bytes were counted: two copies can both be written before `done`
        # (main thread) learns of either (the end game asks two peers); counted once.
        self.counted: set[int] = set()
        self.counted_lock = threading.Lock()
        self.evicted: set[str] = set()
        self.stopping = threading.Event()
        self.readers: list[threading.Thread] = []
        config = source.config
        self.verifier = _Verifier(self, config.verify_workers, config.verify_queue_chunks_max)
        self.buffers = source._buffers

    def run(self) -> None:
        source, size = self.source, self.wanted.size or 0
        first = self._chunk_list()
        resumed = self.writer.verified_chunks()
        self.done |= resumed
        count = chunk_count(size)
        core = ExchangeCore(
            chunk_count=count, chunk_bytes=CHUNK_BYTES, size=size, have=resumed, config=source.config.exchange
        )
        source.stats.transfer(self.digest, size, count, len(resumed), self.peers)
        self.verifier.start()
        try:
            for peer in self.peers:
                if first[0] == peer:
                    self._start_reader(peer, first[1], first[2])
                else:
                    self._start_reader(peer, None, None)
            effects = core.add_peers([(p, source._rtt_s(p)) for p in self.peers], source._clock())
            outcome = self._execute(core, effects)
            while outcome is None:
                outcome = self._step(core)
        finally:
            self._stop()
            source.stats.transfer_ended(self.digest)
        if isinstance(outcome, Failed):
            raise ExchangeFailed(f"blob {self.digest} from peers: {outcome.reason}")
        self.writer.commit()
        log.info(
            "exchange: blob %s from %d peers (%d chunks resumed; over http: %s)",
            self.digest,
            len(self.peers),
            len(resumed),
            ", ".join(sorted(self.http_peers)) or "none",
        )

    def _chunk_list(self) -> tuple[str, Stream, int]:
        """Ask providers in turn until one's chunk list matches the logged root; keep its stream."""
        failures: list[str] = []
        for peer in list(self.peers):
            stream: Stream | None = None
            try:
                stream = self.source._open(peer)
                stream.write(wire.encode(wire.GetChunkList(digest=self.digest)))
                reply = self._read_reply(stream)
                if (
                    isinstance(reply, wire.ChunkList)
                    and reply.digest == self.digest
                    and reply.size == self.wanted.size
                ):
                    self.writer.expect_chunks(reply.hashes)
                    self.hashes = reply.hashes
                    return peer, stream, reply.http_port
                reason = f"answered {_describe(reply)}"
            except DigestMismatch as exc:
                reason = f"its chunk list disagrees with the logged chunk root: {exc.message}"
            except PeerError as exc:
                reason = exc.message
            log.warning("exchange: peer %s has no usable chunk list for %s: %s", peer, self.digest, reason)
            failures.append(f"{peer}: {reason}")
            self.peers.remove(peer)
            if stream is not None:
                stream.reset()
        raise ExchangeFailed(f"no usable chunk list for blob {self.digest} ({'; '.join(failures)})")

    def _read_reply(self, stream: Stream) -> wire.Reply | wire.ChunkData:
        reader = wire.ReplyReader()
        deadline = time.monotonic() + self.source.config.chunk_list_timeout_s
        while (event := reader.next_event()) is None:
            data = stream.read(reader.wanted_bytes, timeout=max(0.0, deadline - time.monotonic()))
            if not data:
                raise ProtocolViolation(f"{stream.peer_id} closed the stream without a reply")
            reader.receive_data(data)
        return event

    def _start_reader(self, peer: str, stream: Stream | None, http_port: int | None) -> None:
        thread = threading.Thread(
            target=self._read, args=(peer, stream, http_port), name=f"exchange-{peer[-6:]}", daemon=True
        )
        self.readers.append(thread)
        thread.start()

    def _http_port_of(self, stream: Stream) -> int:
        """A further provider's advertised HTTP port, from its chunk list (which must be ours)."""
        stream.write(wire.encode(wire.GetChunkList(digest=self.digest)))
        reply = self._read_reply(stream)
        if not isinstance(reply, wire.ChunkList) or reply.digest != self.digest:
            raise ProtocolViolation(f"answered {_describe(reply)}")
        if reply.hashes != self.hashes or reply.size != self.wanted.size:
            raise ProtocolViolation("its chunk list disagrees with the one checked against the log")
        return reply.http_port

    def _read(self, peer: str, stream: Stream | None, http_port: int | None) -> None:
        """A provider's replies, handed to the verifier as they arrive; runs on its own thread."""
        try:
            if stream is None:
                stream = self.source._open(peer)
            if http_port is None:
                http_port = self._http_port_of(stream) if self.source.config.http else 0
            endpoint = self.source._http_endpoint(peer, http_port)
            first = self._http_connect(peer, endpoint) if endpoint is not None else None
            if endpoint is not None and first is not None:
                stream.close()
                http_peer = _HttpPeer(peer, *endpoint, self._http_connections())
                self._serve_http(http_peer, first)
                return
            self.events.put(_Opened(peer, stream))
            reader = wire.ReplyReader()
            timeout = self.source.config.read_timeout_s
            while not self.stopping.is_set():
                data = stream.read(reader.wanted_bytes, timeout=timeout)
                if not data:
                    self.events.put(_Gone(peer, "closed the stream"))
                    return
                reader.receive_data(data)
                while (event := reader.next_event()) is not None:
                    if not self._take(peer, event):
                        return
        except PeerError as exc:
            self.events.put(_Gone(peer, exc.message))

    def _take(self, peer: str, event: wire.Reply | wire.ChunkData) -> bool:
        match event:
            case wire.ChunkData(index=index, data=data):
                return self.verifier.submit(peer, index, data, P2P)
            case wire.Chunks(digest=digest):
                if digest != self.digest:
                    self.events.put(_Gone(peer, f"answered with chunks of {digest}"))
                    return False
                return True
            case _:
                self.events.put(_Gone(peer, f"answered {_describe(event)}"))
                return False

    # -- the HTTP path ---------------------------------------------------------------

    def _http_connections(self) -> int:
        config = self.source.config
        share = config.http_connections_max // max(1, len(self.peers))
        return max(1, min(config.http_connections_per_peer, share))

    def _http_connect(self, peer: str, endpoint: tuple[str, int]) -> http.client.HTTPConnection | None:
        """A first connection to the provider's HTTP port, or None to stay on the p2p path.

        The IP is that of our connection to it, which may be a NAT's that forwards only
        its p2p port (it dialled us): then the p2p exchange serves, nothing is evicted.
        """
        config = self.source.config
        # A NAT that forwards only the p2p port (or a punched hole) drops the SYN: waiting the
        # whole open timeout would stall a download whose only provider sits behind one, so
        # the connect gets a few round trips of the p2p connection, not seconds.
        rtt_s = self.source._rtt_s(peer)
        connect_s = min(config.open_timeout_s, max(HTTP_CONNECT_S_MIN, HTTP_CONNECT_RTTS * (rtt_s or 0.0)))
        conn = http.client.HTTPConnection(*endpoint, timeout=connect_s)
        try:
            conn.connect()
        except OSError as exc:
            conn.close()
            log.info(
                "exchange: peer %s's HTTP port %s:%d cannot be reached (%s); using the p2p exchange",
                peer, endpoint[0], endpoint[1], exc,
            )  # fmt: skip
            return None
        if conn.sock is not None:
            conn.sock.settimeout(config.read_timeout_s)
        return conn

    def _serve_http(self, peer: _HttpPeer, first: http.client.HTTPConnection) -> None:
        """Announce the provider's HTTP path, then fetch its runs on its connections."""
        self.events.put(_Opened(peer.peer, None, peer))
        others = [
            threading.Thread(target=self._http_loop, args=(peer,), name=f"exchange-http-{i}", daemon=True)
            for i in range(1, peer.connections)
        ]
        for thread in others:
            thread.start()
        self._http_loop(peer, first)
        for thread in others:
            thread.join()

    def _http_loop(self, peer: _HttpPeer, first: http.client.HTTPConnection | None = None) -> None:
        """One keep-alive connection: runs of chunks by Range, each chunk to the verifier."""
        config = self.source.config
        size = self.wanted.size or 0
        target = f"/peer/v1/blobs/{self.digest}"
        conn: http.client.HTTPConnection | None = None
        try:
            while not self.stopping.is_set() and not peer.closed.is_set():
                request = peer.requests.get()
                if request is None:
                    return
                if conn is None:
                    conn = peer.connect(config.read_timeout_s, first)
                    if conn is None:
                        return
                    first = None
                start = request.first * CHUNK_BYTES
                end = min(size, (request.first + request.count) * CHUNK_BYTES) - 1
                conn.request("GET", target, headers={"Range": f"bytes={start}-{end}"})
                response = conn.getresponse()
                if response.status != 206:
                    raise _HttpRefused(f"answered {response.status} {response.reason}"[:200])
                content_range = response.getheader("Content-Range", "")
                if content_range != f"bytes {start}-{end}/{size}":
                    raise _HttpRefused(f"answered the range {content_range[:100]!r}")
                for index in range(request.first, request.first + request.count):
                    length = min(CHUNK_BYTES, size - index * CHUNK_BYTES)
                    buffer = self.buffers.take()
                    view = memoryview(buffer)[:length]
                    got = 0
                    while got < length and (n := response.readinto(view[got:])):
                        got += n
                    if got != length:
                        raise _HttpRefused(f"sent {got} of chunk {index}'s {length} bytes")
                    give = functools.partial(self.buffers.give, buffer)
                    if not self.verifier.submit(peer.peer, index, view, HTTP, give):
                        return
                if response.read(1):
                    raise _HttpRefused("sent more than the range")
        except (OSError, http.client.HTTPException, _HttpRefused) as exc:
            if not self.stopping.is_set() and not peer.closed.is_set():
                reason = str(exc) or type(exc).__name__
                self.events.put(_Gone(peer.peer, f"http {peer.host}:{peer.port}: {reason}"))
        finally:
            for opened in (conn, first):
                if opened is not None:
                    opened.close()

    # -- the core's loop -------------------------------------------------------------

    def _step(self, core: ExchangeCore) -> Done | Failed | None:
        clock = self.source._clock
        deadline = core.next_deadline_s()
        timeout = 1.0 if deadline is None else min(1.0, max(0.0, deadline - clock()))
        try:
            event = self.events.get(timeout=timeout)
        except queue.Empty:
            return self._execute(core, core.tick(clock()))
        now = clock()
        match event:
            case _Opened(peer=peer, stream=stream, http=http_peer):
                if peer in self.evicted:
                    if stream is not None:
                        stream.reset()
                    if http_peer is not None:
                        http_peer.close()
                    return None
                if http_peer is not None:
                    self.http_peers[peer] = http_peer
                elif stream is not None:
                    self.streams[peer] = stream
                effects: list[Effect] = []
                for request in self.pending.pop(peer, []):
                    effects += self._send(core, request)
                return self._execute(core, effects)
            case _Verified(peer=peer, index=index):
                self.done.add(index)
                outcome = self._execute(core, core.chunk_verified(peer, index, now))
                self.source.stats.transfer_progress(self.digest, len(self.done))
                return outcome
            case _Bad(peer=peer, index=index, reason=reason):
                return self._execute(core, core.chunk_refused(peer, index, reason, now))
            case _Gone(peer=peer, reason=reason):
                return self._execute(core, core.peer_failed(peer, reason, now))
            case _Broken(error=error):
                raise error

    def _execute(self, core: ExchangeCore, effects: list[Effect]) -> Done | Failed | None:
        outcome: Done | Failed | None = None
        while effects:
            effect, effects = effects[0], effects[1:]
            match effect:
                case Request(peer=peer):
                    if peer in self.streams or peer in self.http_peers:
                        effects += self._send(core, effect)
                    else:
                        self.pending.setdefault(peer, []).append(effect)
                case Cancel():
                    pass  # answers come in order: the copy is dropped when it arrives
                case Evict(peer=peer, reason=reason):
                    log.warning("exchange: evicting peer %s for blob %s: %s", peer, self.digest, reason)
                    self.source.stats.evicted()
                    self.evicted.add(peer)
                    self.pending.pop(peer, None)
                    stream = self.streams.pop(peer, None)
                    if stream is not None:
                        stream.reset()
                    http_peer = self.http_peers.pop(peer, None)
                    if http_peer is not None:
                        http_peer.close()
                case Done() | Failed():
                    outcome = effect
        return outcome

    def _send(self, core: ExchangeCore, request: Request) -> list[Effect]:
        http_peer = self.http_peers.get(request.peer)
        if http_peer is not None:
            http_peer.ask(request)
            return []
        message = wire.GetChunks(digest=self.digest, first=request.first, count=request.count)
        try:
            self.streams[request.peer].write(wire.encode(message), timeout=self.source.config.open_timeout_s)
        except PeerError as exc:
            return core.peer_failed(request.peer, exc.message, self.source._clock())
        return []

    def _stop(self) -> None:
        """Reset every stream and close every HTTP path (blocked readers wake with an error),
        then join the readers and the verifier."""
        self.stopping.set()
        self.verifier.drain()
        self._reset_unclaimed()
        for stream in self.streams.values():
            stream.reset()
        for http_peer in self.http_peers.values():
            http_peer.close()
        for thread in self.readers:
            thread.join(timeout=5.0)
        self._reset_unclaimed()
        self.verifier.stop()

    def _reset_unclaimed(self) -> None:
        """Streams and HTTP paths whose readers opened them after the last event we took."""
        while True:
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                return
            if isinstance(event, _Opened):
                if event.stream is not None:
                    event.stream.reset()
                if event.http is not None:
                    event.http.close()


def _describe(reply: object) -> str:
    match reply:
        case wire.NotFound():
            return "not found"
        case wire.Refused(reason=reason):
            return f"refused: {reason}"
        case wire.ChunkList(digest=digest, size=size):
            return f"a chunk list of {digest} ({size} bytes)"
        case _:
            return type(reply).__name__
