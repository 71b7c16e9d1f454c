"""The peer-facing HTTP data plane: blobs the log vouches for, by digest, with Range.

    GET|HEAD /peer/v1/blobs/sha256:<64 hex>      200, or 206 for one Range

This is the only route on the peer listener (its own `HttpServer`, its own workers,
bound like the p2p listener), never the registry port: that one carries the node API
and pull-through, and a stranger must not make a node fetch from its upstreams. A
blob is served only when the log vouches for its digest and the store holds it intact
(`BlobStore.stored`); anything else is 404, whatever the path looks like (no path is
ever joined to a directory: the digest is matched whole and the file named by the
store). Bytes go out unencrypted: a downloader verifies every chunk against the chunk
list it got over the authenticated p2p exchange (DESIGN §3), so they need no secrecy.

Limits: admission is the pure `PeerGate` (per-address request rate → 429, requests in
progress per address and addresses served at once (`max_upload_peers`) → 503, each
with Retry-After); one token bucket (`max_upload_rate`) is shared with the p2p
exchange. With no rate cap a body leaves with `sendfile` in one go; with a cap it is
read and sent in slices, each after its tokens. A request holds its admission until
its body has been sent (or the connection failed). Range errors (malformed, past the
end) are 416 with `Content-Range: bytes */size`. Served bytes are counted per remote
address on the "http" path (`ExchangeStats`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pyrsia.artifacts.blobstore import BlobStore
from pyrsia.artifacts.exchange_service import LIMITED_PIECE_BYTES, ExchangeStats, SharedBucket
from pyrsia.errors import PyrsiaError, RangeNotSatisfiable, StorageError
from pyrsia.formats.digest import Digest
from pyrsia.http.message import FileBody, Request, Response, StreamBody
from pyrsia.http.ranges import parse_range
from pyrsia.registry.peer_gate import Admitted, GateConfig, PeerGate

log = logging.getLogger("pyrsia.peer_http")

PREFIX = "/peer/v1/blobs/"
_BLOB_PATH = re.compile(r"^/peer/v1/blobs/sha256:([0-9a-f]{64})$")


def blob_path(digest: Digest) -> str:
    return f"{PREFIX}{digest}"


class _Lease:
    """One admitted request; released once, when its answer is sent or dropped."""

    def __init__(self, release: Callable[[], None]) -> None:
        self._release: Callable[[], None] | None = release

    def release(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release()

    def __del__(self) -> None:
        # The server drops a response it never sent (the client left first): free the slot.
        self.release()


@dataclass(frozen=True, slots=True)
class _LeasedFile(FileBody):
    """A file slice sent with sendfile; the lease goes when the response is dropped."""

    lease: _Lease | None = None


class PeerBlobApp:
    """The peer listener's handler (`pyrsia.http.server.Handler`)."""

    def __init__(
        self,
        store: BlobStore,
        vouched: Callable[[Digest], bool],
        *,
        gate: GateConfig | None = None,
        upload: SharedBucket | None = None,
        stats: ExchangeStats | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._vouched = vouched
        self._gate = PeerGate(gate or GateConfig())
        # Reentrant: a lease may be dropped (and released) by the garbage collector
        # on a thread that holds this lock already.
        self._lock = threading.RLock()
        self._upload = upload or SharedBucket(0, clock, time.sleep)
        self.stats = stats or ExchangeStats()
        self._clock = clock

    @property
    def refused(self) -> dict[str, int]:
        with self._lock:
            return dict(self._gate.refused)

    def serving(self) -> int:
        with self._lock:
            return self._gate.serving

    def handle(self, request: Request) -> Response:
        address = request.peer.rpartition(":")[0] or request.peer
        with self._lock:
            decision = self._gate.admit(address, self._clock())
        if not isinstance(decision, Admitted):
            log.debug("peer http: refused %s (%s)", address, decision.reason)
            self.stats.refused(f"http_{decision.reason}")
            retry = ("Retry-After", str(decision.retry_after_s))
            return _error(decision.status, f"busy: {decision.reason}", retry)
        lease = _Lease(lambda: self._release(address))
        try:
            response = self._answer(request, address, lease)
        except BaseException:
            lease.release()
            raise
        if not isinstance(response.body, _LeasedFile | StreamBody) or request.method == "HEAD":
            lease.release()
        return response

    def render_error(self, request: Request | None, error: PyrsiaError) -> Response:
        status = getattr(error, "http_status", 500)
        return _error(status, error.message if status < 500 else "internal error")

    def _release(self, address: str) -> None:
        with self._lock:
            self._gate.release(address)

    def _answer(self, request: Request, address: str, lease: _Lease) -> Response:
        if request.method not in ("GET", "HEAD"):
            return _error(405, "only GET and HEAD", ("Allow", "GET, HEAD"))
        match = _BLOB_PATH.match(request.path)
        if match is None or request.target.split("?", 1)[0] != request.path:
            return _error(404, "no such blob")  # also an escaped or traversing path
        digest = Digest.parse(f"sha256:{match.group(1)}")
        if not self._vouched(digest):
            return _error(404, "no such blob")
        stored = self._store.stored(digest)
        if stored is None:
            return _error(404, "no such blob")
        size = stored.size
        headers: tuple[tuple[str, str], ...] = (
            ("Content-Type", "application/octet-stream"),
            ("Docker-Content-Digest", str(digest)),
            ("Accept-Ranges", "bytes"),
        )
        start, length, status = 0, size, 200
        ranges = [v for k, v in request.headers if k == "range"]
        if len(ranges) > 1:
            return _error(416, "one Range only", ("Content-Range", f"bytes */{size}"))
        if ranges:
            try:
                chosen = parse_range(ranges[0], size)
            except RangeNotSatisfiable as exc:
                return _error(416, exc.message, ("Content-Range", f"bytes */{size}"))
            if chosen is not None:  # None: several ranges or another unit; the whole (RFC 9110 §14.2)
                start, length, status = chosen.start, chosen.length, 206
                headers += (("Content-Range", chosen.content_range(size)),)
        if request.method == "HEAD" or length == 0:
            return Response(status=status, headers=headers, body=FileBody(stored.path, start, length))
        if self._upload.unlimited:
            self.stats.served(address, length, path="http")
            body = _LeasedFile(stored.path, start, length, lease)
            return Response(status=status, headers=headers, body=body)
        pieces = self._pieces(stored.path, digest, start, length, address, lease)
        return Response(status=status, headers=headers, body=StreamBody(length, pieces))

    def _pieces(
        self, path: Path, digest: Digest, start: int, length: int, address: str, lease: _Lease
    ) -> Callable[[], Iterator[bytes]]:
        def pieces() -> Iterator[bytes]:
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError as exc:
                lease.release()
                raise StorageError(f"cannot read blob {digest}: {exc.strerror}") from exc
            try:
                sent = 0
                while sent < length:
                    size = min(LIMITED_PIECE_BYTES, length - sent)
                    self._upload.take(size)
                    piece = os.pread(fd, size, start + sent)
                    if not piece:
                        raise StorageError(f"blob {digest} is shorter than it was")
                    yield piece
                    sent += len(piece)
                    self.stats.served(address, len(piece), path="http")
            except OSError as exc:
                raise StorageError(f"cannot read blob {digest}: {exc.strerror}") from exc
            finally:
                os.close(fd)
                lease.release()

        return pieces


def _error(status: int, message: str, *extra: tuple[str, str]) -> Response:
    body = json.dumps({"error": message}).encode()
    return Response(status=status, headers=(("Content-Type", "application/json"), *extra), body=body)
