"""Threaded HTTP/1.1 server: h11 for the protocol, a bounded pool of worker threads.

Rules it keeps:
- A fixed number of workers serve connections; when all are busy and the short
  backlog queue is full, a new connection gets 503 and is closed, so load cannot
  grow threads or memory without bound.
- Every read has a deadline: the first byte of a request must come within the idle
  timeout, the rest of its head within the header timeout (a slowloris client that
  trickles bytes loses its worker), the head may not exceed the header limit (h11's
  `max_incomplete_event_size`), and a body may not exceed the body limit.
- File bodies go out with `socket.sendfile` through h11's
  `send_with_data_passthrough`, so blob bytes never pass through Python.
- `shutdown()` stops accepting, closes idle keep-alive connections, lets in-flight
  responses finish, then joins the workers.
- The handler maps its own errors to responses (`render_error`); the server only maps
  protocol-level failures, and never lets one connection's failure touch another.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import Protocol, cast
from urllib.parse import parse_qsl, unquote, urlsplit

import h11

from pyrsia import __version__
from pyrsia.errors import (
    BadRequest,
    HeadersTooLarge,
    HttpError,
    ListenError,
    PayloadTooLarge,
    PyrsiaError,
    RequestTimeout,
    ServerBusy,
)
from pyrsia.http.message import FileBody, Request, Response
from pyrsia.http.ranges import parse_range

log = logging.getLogger("pyrsia.http")

RECV_BYTES = 64 * 1024
SEND_TIMEOUT_S = 60.0
BACKLOG = 128
LINGER_S = 1.0
LINGER_BYTES_MAX = 1024 * 1024


class Handler(Protocol):
    def handle(self, request: Request) -> Response: ...

    def render_error(self, request: Request | None, error: PyrsiaError) -> Response: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    workers_max: int = 64
    header_bytes_max: int = 64 * 1024
    body_bytes_max: int = 1024 * 1024
    header_timeout_s: float = 10.0
    idle_timeout_s: float = 60.0


class _Closed(Exception):
    """The peer went away or we decided to drop the connection; nothing more to send."""


class _Connection:
    """One client connection and whether it is between requests (safe to close)."""

    def __init__(self, sock: socket.socket, peer: str) -> None:
        self.sock = sock
        self.peer = peer
        self.idle = True


class HttpServer:
    def __init__(self, handler: Handler, host: str, port: int, limits: Limits) -> None:
        self._handler = handler
        self._limits = limits
        try:
            self._listener = socket.create_server((host, port), backlog=BACKLOG)
        except OSError as exc:
            raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
        self._queue: queue.Queue[_Connection | None] = queue.Queue(maxsize=limits.workers_max)
        self._connections: set[_Connection] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._listener.getsockname()[:2]
        return str(host), int(port)

    def start(self) -> None:
        for i in range(self._limits.workers_max):
            worker = threading.Thread(target=self._work, name=f"http-{i}", daemon=True)
            worker.start()
            self._threads.append(worker)
        acceptor = threading.Thread(target=self._accept, name="http-accept", daemon=True)
        acceptor.start()
        self._threads.append(acceptor)

    def shutdown(self, grace_s: float = 30.0) -> None:
        """Stop accepting, drop idle connections, let in-flight responses finish."""
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() on Linux
        with self._lock:
            for conn in self._connections:
                if conn.idle:
                    with contextlib.suppress(OSError):
                        conn.sock.shutdown(socket.SHUT_RDWR)
        for _ in range(self._limits.workers_max):
            with contextlib.suppress(queue.Full):
                self._queue.put(None, timeout=0.1)
        deadline = time.monotonic() + grace_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._listener.close()
        # Connections accepted while we were stopping never reached a worker: close them.
        while True:
            try:
                leftover = self._queue.get_nowait()
            except queue.Empty:
                break
            if leftover is not None:
                with contextlib.suppress(OSError):
                    leftover.sock.close()

    # -- accepting ------------------------------------------------------------------

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                sock, addr = self._listener.accept()
            except OSError:
                if self._stopping.is_set():
                    return
                log.exception("accept failed")
                continue
            if self._stopping.is_set():
                sock.close()
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Connection(sock, f"{addr[0]}:{addr[1]}")
            try:
                self._queue.put_nowait(conn)
            except queue.Full:
                self._refuse_busy(conn)

    def _refuse_busy(self, conn: _Connection) -> None:
        conn.sock.settimeout(1.0)
        h11conn = h11.Connection(h11.SERVER)
        response = self._handler.render_error(None, ServerBusy("every worker is busy"))
        with contextlib.suppress(OSError, h11.LocalProtocolError, _Closed):
            self._send(h11conn, conn, "GET", response.with_headers(("Retry-After", "1")))
        _linger_close(conn.sock, 0.05)

    # -- serving --------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            conn = self._queue.get()
            if conn is None:
                return
            with self._lock:
                self._connections.add(conn)
            try:
                self._serve(conn)
            except Exception:
                log.exception("connection %s failed", conn.peer)
            finally:
                with self._lock:
                    self._connections.discard(conn)
                with contextlib.suppress(OSError):
                    conn.sock.close()

    def _serve(self, conn: _Connection) -> None:
        h11conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self._limits.header_bytes_max)
        while not self._stopping.is_set():
            try:
                request = self._read_request(h11conn, conn)
            except _Closed:
                return
            except HttpError as error:
                self._fail(h11conn, conn, error)
                return
            conn.idle = False
            response = self._respond(request)
            try:
                self._send(h11conn, conn, request.method, response)
            except (_Closed, OSError) as exc:
                log.debug("%s went away while sending: %s", conn.peer, exc)
                return
            self._log_access(conn, request, response)
            if h11conn.our_state is not h11.DONE or h11conn.their_state is not h11.DONE:
                return
            h11conn.start_next_cycle()
            with self._lock:
                conn.idle = True
                if self._stopping.is_set():
                    return

    def _respond(self, request: Request) -> Response:
        try:
            response = self._handler.handle(request)
            return _apply_range(request, response)
        except PyrsiaError as error:
            return self._handler.render_error(request, error)
        except Exception:
            log.exception("handler failed on %s %s", request.method, request.target)
            return self._handler.render_error(request, PyrsiaError("internal server error"))

    def _fail(self, h11conn: h11.Connection, conn: _Connection, error: HttpError) -> None:
        """Answer a protocol-level failure if the connection still allows it, then close."""
        log.info("%s: %s", conn.peer, error.message)
        if h11conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        response = self._handler.render_error(None, error).with_headers(("Connection", "close"))
        with contextlib.suppress(OSError, _Closed, h11.LocalProtocolError):
            self._send(h11conn, conn, "GET", response)
        _linger_close(conn.sock, LINGER_S)

    # -- reading --------------------------------------------------------------------

    def _read_request(self, h11conn: h11.Connection, conn: _Connection) -> Request:
        deadline = time.monotonic() + self._limits.idle_timeout_s
        started = False
        received = len(h11conn.trailing_data[0])  # pipelined bytes left from the last request
        while True:
            event = self._next_event(h11conn)
            if isinstance(event, h11.Request):
                # h11 bounds only an incomplete head; a whole oversized head in one read passes it.
                if received - len(h11conn.trailing_data[0]) > self._limits.header_bytes_max:
                    raise HeadersTooLarge("request head too large")
                break
            if isinstance(event, h11.ConnectionClosed):
                raise _Closed()
            if event is not h11.NEED_DATA:  # pragma: no cover - h11 yields nothing else here
                raise BadRequest(f"unexpected {type(event).__name__}")
            data = self._recv(conn, deadline, "request head" if started else None)
            if not started:
                # Some bytes of a request arrived: the rest of its head has a tighter clock.
                started = True
                with self._lock:
                    conn.idle = False
                deadline = time.monotonic() + self._limits.header_timeout_s
            received += len(data)
            h11conn.receive_data(data)
        body = self._read_body(h11conn, conn, event)
        try:
            return _to_request(event, body, conn.peer)
        except UnicodeDecodeError as exc:
            raise BadRequest("request path is not valid UTF-8 after percent-decoding") from exc

    def _read_body(self, h11conn: h11.Connection, conn: _Connection, head: h11.Request) -> bytes:
        limit = self._limits.body_bytes_max
        for name, value in head.headers:
            if name == b"content-length" and int(value) > limit:
                raise PayloadTooLarge(f"request body over {limit} bytes")
        deadline = time.monotonic() + self._limits.header_timeout_s
        chunks: list[bytes] = []
        size = 0
        while True:
            event = self._next_event(h11conn)
            if isinstance(event, h11.EndOfMessage):
                return b"".join(chunks)
            if isinstance(event, h11.Data):
                size += len(event.data)
                if size > limit:
                    raise PayloadTooLarge(f"request body over {limit} bytes")
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.ConnectionClosed):
                raise _Closed()
            else:
                h11conn.receive_data(self._recv(conn, deadline, "request body"))

    def _next_event(self, h11conn: h11.Connection) -> object:
        try:
            return h11conn.next_event()
        except h11.RemoteProtocolError as exc:
            if exc.error_status_hint == 431:
                raise HeadersTooLarge("request head too large") from exc
            raise BadRequest(f"malformed request: {exc}") from exc

    def _recv(self, conn: _Connection, deadline: float, waiting_for: str | None) -> bytes:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise self._timeout(waiting_for)
        conn.sock.settimeout(remaining)
        try:
            return conn.sock.recv(RECV_BYTES)
        except TimeoutError:
            raise self._timeout(waiting_for) from None
        except OSError as exc:
            raise _Closed() from exc

    @staticmethod
    def _timeout(waiting_for: str | None) -> Exception:
        # An idle keep-alive connection is closed silently; a half-sent request is told why.
        return RequestTimeout(f"{waiting_for} not received in time") if waiting_for else _Closed()

    # -- writing --------------------------------------------------------------------

    def _send(self, h11conn: h11.Connection, conn: _Connection, method: str, response: Response) -> None:
        sock = conn.sock
        sock.settimeout(SEND_TIMEOUT_S)
        headers = [
            *response.headers,
            ("Content-Length", str(len(response.body))),
            ("Date", formatdate(usegmt=True)),
            ("Server", f"pyrsia/{__version__}"),
        ]
        if self._stopping.is_set():
            headers.append(("Connection", "close"))
        write: Callable[[bytes], None] = sock.sendall
        try:
            head = h11.Response(status_code=response.status, headers=headers, reason=_reason(response.status))
            write(h11conn.send(head) or b"")
            if method != "HEAD" and len(response.body):
                if isinstance(response.body, FileBody):
                    self._send_file(h11conn, sock, response.body)
                else:
                    write(h11conn.send(h11.Data(data=response.body)) or b"")
            write(h11conn.send(h11.EndOfMessage()) or b"")
        except (BrokenPipeError, ConnectionResetError, TimeoutError) as exc:
            raise _Closed() from exc

    @staticmethod
    def _send_file(h11conn: h11.Connection, sock: socket.socket, body: FileBody) -> None:
        with body.path.open("rb") as file:
            # h11 hands our FileBody back untouched where the body bytes belong.
            pieces: list[object] = list(h11conn.send_with_data_passthrough(h11.Data(data=body)) or ())  # type: ignore[arg-type]
            for piece in pieces:
                if isinstance(piece, FileBody):
                    sent = sock.sendfile(file, piece.offset, piece.length)
                    if sent != piece.length:
                        raise _Closed()
                else:
                    sock.sendall(cast(bytes, piece))

    def _log_access(self, conn: _Connection, request: Request, response: Response) -> None:
        log.info(
            '%s "%s %s" %d %d',
            conn.peer,
            request.method,
            request.target,
            response.status,
            len(response.body),
        )


def _linger_close(sock: socket.socket, linger_s: float) -> None:
    """Close after an error without losing our reply.

    Closing a socket that still holds unread request bytes makes the kernel send RST,
    which can destroy the error response before the client reads it. So: stop
    writing, discard what the client already sent (bounded in bytes and time), close.
    """
    deadline = time.monotonic() + linger_s
    drained = 0
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)
        while drained < LINGER_BYTES_MAX and (remaining := deadline - time.monotonic()) > 0:
            sock.settimeout(remaining)
            chunk = sock.recv(RECV_BYTES)
            if not chunk:
                break
            drained += len(chunk)
    sock.close()


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b""


def _to_request(event: h11.Request, body: bytes, peer: str) -> Request:
    target = event.target.decode("ascii", "replace")
    parts = urlsplit(target)
    return Request(
        method=event.method.decode("ascii", "replace").upper(),
        target=target,
        path=unquote(parts.path, errors="strict") if "%" in parts.path else parts.path,
        query=dict(parse_qsl(parts.query, keep_blank_values=True)),
        headers=tuple(
            (name.decode("latin-1").lower(), value.decode("latin-1")) for name, value in event.headers
        ),
        body=body,
        peer=peer,
    )


def _apply_range(request: Request, response: Response) -> Response:
    """Turn a 200 into a 206 (or 416) when a range-capable GET asked for one range."""
    header = request.header("range")
    if header is None or not response.ranges or response.status != 200 or request.method != "GET":
        return response
    size = len(response.body)
    chosen = parse_range(header, size)
    if chosen is None:
        return response
    body = response.body
    sliced = (
        FileBody(body.path, body.offset + chosen.start, chosen.length)
        if isinstance(body, FileBody)
        else body[chosen.start : chosen.end + 1]
    )
    return Response(
        status=206,
        headers=(*response.headers, ("Content-Range", chosen.content_range(size))),
        body=sliced,
    )
