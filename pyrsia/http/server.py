"""Threaded HTTP/1.1 server: h11 for the protocol, one poller thread, a bounded worker pool.

Rules it keeps:
- An idle connection costs no thread. Between requests, and before the first byte
  of the first one, a connection is parked in a selector watched by one poller
  thread (which also accepts), and is handed to a worker only when it has bytes to
  read (a next request that has already arrived when a response is done is served by
  the same worker, without the round trip through the poller). Parked connections
  are closed after the idle timeout, and there are at most
  `idle_connections_max` of them (further capped by the process's file-descriptor
  limit): past that the oldest idle one is closed.
- A fixed number of workers serve requests; when all are busy and the short queue is
  full, a connection with a request to read gets 503 and is closed, so load cannot
  grow threads or memory without bound.
- A worker's socket stays blocking, with a kernel send timeout (SO_SNDTIMEO) set once
  when it is accepted: a request's bytes are read with one `recv` when they are at hand
  (they usually are: the poller hands a connection over once readable), a reply leaves
  with one `send`, and a file body with one `sendfile`, with no `poll` before each call
  and no change of the socket's mode between them. Every system call lets go of the
  interpreter lock, and with dozens of busy workers each one costs a hand-over; a send
  that moves nothing for the send timeout fails, and the connection is dropped.
- Every read has a deadline: once a request has begun, the rest of its head must come
  within the header timeout (a slowloris client that trickles bytes loses its
  worker), the head may not exceed the header limit (h11's
  `max_incomplete_event_size`, and measured by us too), and a body may not exceed
  the body limit nor take longer than the header timeout.
- A request framed two ways (Content-Length and Transfer-Encoding) is refused with
  400 and the connection closed (RFC 9112 §6.3), so nothing smuggled after it runs.
- File bodies go out with `os.sendfile` through h11's
  `send_with_data_passthrough`, so blob bytes never pass through Python: one call
  moves the whole body while the reader keeps up.
- A 200 answer to GET or HEAD goes through the conditional-request rules
  (`pyrsia.http.conditional`: 304, 412, If-Range) and then a single Range
  (`pyrsia.http.ranges`) when the front end marked it range-capable.
- After an error reply the server stops writing and the poller drains what the
  client still sends before closing ("lingering close"), so the client reads the
  error instead of a reset and no worker waits on it.
- `shutdown()` stops accepting, closes idle connections, lets in-flight responses
  finish (with `Connection: close`), then joins the workers.
- The handler maps its own errors to responses (`render_error`); the server only maps
  protocol-level failures, and never lets one connection's failure touch another.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import queue
import resource
import selectors
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import Protocol, cast
from urllib.parse import parse_qsl, unquote, urlsplit

import h11

from pyrsia import __version__
from pyrsia.config import default_of
from pyrsia.errors import (
    BadRequest,
    HeadersTooLarge,
    HttpError,
    ListenError,
    PayloadTooLarge,
    PreconditionFailed,
    PyrsiaError,
    RequestTimeout,
    ServerBusy,
    VersionNotSupported,
)
from pyrsia.http import conditional
from pyrsia.http.message import FileBody, Request, Response, StreamBody
from pyrsia.http.ranges import parse_range
from pyrsia.sockets import readable, timeval

log = logging.getLogger("pyrsia.http")

RECV_BYTES = 64 * 1024
SEND_TIMEOUT_S = 60.0
# SO_SNDTIMEO of every accepted connection, a struct timeval: a blocking send or
# sendfile that moves no byte for this long fails with EAGAIN.
_SEND_TIMEVAL = timeval(SEND_TIMEOUT_S)
BACKLOG = 128
LINGER_S = 1.0
LINGER_BYTES_MAX = 1024 * 1024
# Requests one connection may have served in a row by one worker when each has
# arrived by the time the last is answered; then it goes back to the poller's queue.
TURN_REQUESTS_MAX = 32
# Bodies up to this size are sent with the response head in one write.
COALESCE_BYTES_MAX = 64 * 1024
# Connections accepted per wake-up of the poller, so a connect flood cannot starve
# parked connections that have requests to hand over.
ACCEPT_BATCH_MAX = 64
# Out of file descriptors with no idle connection to close: stop accepting this long.
ACCEPT_PAUSE_S = 0.1
# File descriptors kept for everything but parked connections: blob files, the
# store, peers, logs. Each worker and each queued connection holds one or two more.
FDS_RESERVED = 128
# RFC 9110 §15.4.5 / §15.3.5 / §15.2: these responses carry no content, so no length.
_NO_CONTENT_STATUSES = frozenset({204, 304})


class Handler(Protocol):
    def handle(self, request: Request) -> Response: ...

    def render_error(self, request: Request | None, error: PyrsiaError) -> Response: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """Each field `x` is the node setting `http_x`; its default is declared there, once."""

    workers_max: int = default_of("http_workers_max")
    header_bytes_max: int = default_of("http_header_bytes_max")
    body_bytes_max: int = default_of("http_body_bytes_max")
    header_timeout_s: float = default_of("http_header_timeout_s")
    idle_timeout_s: float = default_of("http_idle_timeout_s")
    # Parked (idle keep-alive or not yet speaking) connections; also capped by RLIMIT_NOFILE.
    idle_connections_max: int = default_of("http_idle_connections_max")


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerStats:
    """A moment's view of the server, for tests and the node's status."""

    workers_busy: int
    connections_idle: int
    connections_queued: int
    connections_lingering: int


class _Closed(Exception):
    """The peer went away or we decided to drop the connection; nothing more to send."""


class _Connection:
    """One client connection. Parked only between requests, so it carries no h11 state:
    an idle connection costs a socket and a few dictionary entries, nothing more."""

    def __init__(self, sock: socket.socket, peer: str) -> None:
        self.sock = sock
        self.peer = peer


class _Lingering:
    """A connection answered with an error, drained by the poller until the client closes."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.drained = 0


class _Listener:
    """Selector key data marking the listening socket."""


class _Wake:
    """Selector key data marking the socket workers use to wake the poller."""


class HttpServer:
    def __init__(self, handler: Handler, host: str, port: int, limits: Limits) -> None:
        self._handler = handler
        self._limits = limits
        self._parked_max = _parked_max(limits)
        try:
            self._listener = socket.create_server((host, port), backlog=BACKLOG)
        except OSError as exc:
            raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
        host_bound, port_bound = self._listener.getsockname()[:2]
        self._address = (str(host_bound), int(port_bound))
        self._listener.setblocking(False)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, _Listener())
        self._selector.register(self._wake_r, selectors.EVENT_READ, _Wake())
        # Owned by the poller thread: parked connections, oldest first, with deadlines.
        self._idle: OrderedDict[_Connection, float] = OrderedDict()
        self._lingering: OrderedDict[_Lingering, float] = OrderedDict()
        self._accept_paused_until: float | None = None
        # Shared: the worker queue, connections workers hand back, and counters.
        # Connections with a request to read, for the workers: at most `workers_max` wait.
        # A SimpleQueue (its put and get are a few C calls, no Python condition) bounded
        # by the poller, its one producer, which checks the length before each put.
        self._queue: queue.SimpleQueue[_Connection | None] = queue.SimpleQueue()
        self._returned: queue.SimpleQueue[_Connection | _Lingering] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._poller_open = True
        # A wake-up byte is on its way to the poller and the poller has not yet taken
        # back what was returned: a worker handing a connection back need not send another.
        self._wake_pending = False
        self._busy = 0
        self._stopping = threading.Event()
        self._poller: threading.Thread | None = None
        self._workers: list[threading.Thread] = []

    @property
    def address(self) -> tuple[str, int]:
        return self._address

    def stats(self) -> ServerStats:
        with self._lock:
            busy = self._busy
        return ServerStats(
            workers_busy=busy,
            connections_idle=len(self._idle),
            connections_queued=self._queue.qsize(),
            connections_lingering=len(self._lingering),
        )

    def start(self) -> None:
        for i in range(self._limits.workers_max):
            worker = threading.Thread(target=self._work, name=f"http-{i}", daemon=True)
            worker.start()
            self._workers.append(worker)
        self._poller = threading.Thread(target=self._poll, name="http-poll", daemon=True)
        self._poller.start()

    def shutdown(self, grace_s: float = 30.0) -> None:
        """Stop accepting, drop idle connections, let in-flight responses finish."""
        deadline = time.monotonic() + grace_s
        self._stopping.set()
        if self._poller is None:
            self._close_poller()
        else:
            self._wake_poller()
            self._poller.join(max(0.0, deadline - time.monotonic()))
        for _ in self._workers:  # after the connections already queued: those are closed unserved
            self._queue.put(None)
        for worker in self._workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        # Connections that had a request ready as we stopped never reached a worker.
        while True:
            try:
                leftover = self._queue.get_nowait()
            except queue.Empty:
                break
            if leftover is not None:
                _close(leftover.sock)

    # -- the poller: accepting and parked connections -------------------------------

    def _poll(self) -> None:
        try:
            while not self._stopping.is_set():
                for key, _ in self._selector.select(self._poll_timeout_s()):
                    try:
                        self._ready(key.data)
                    except Exception:  # pragma: no cover - a bug must cost one connection, not all
                        log.exception("HTTP poller failed on %r", key.data)
                        self._drop(key.data)
                self._take_back()
                self._expire(time.monotonic())
        finally:
            self._close_poller()

    def _ready(self, data: object) -> None:
        if isinstance(data, _Connection):
            self._unpark(data)
        elif isinstance(data, _Lingering):
            self._drain(data)
        elif isinstance(data, _Listener):
            self._accept_batch()
        else:
            self._drain_wake()

    def _drop(self, data: object) -> None:  # pragma: no cover - only after a bug
        if isinstance(data, _Connection):
            self._forget(data)
        elif isinstance(data, _Lingering):
            self._stop_lingering(data)

    def _poll_timeout_s(self) -> float | None:
        deadlines = [d for d in (_first(self._idle), _first(self._lingering)) if d is not None]
        if self._accept_paused_until is not None:
            deadlines.append(self._accept_paused_until)
        return max(0.0, min(deadlines) - time.monotonic()) if deadlines else None

    def _accept_batch(self) -> None:
        for _ in range(ACCEPT_BATCH_MAX):
            try:
                sock, addr = self._listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    continue  # e.g. ECONNABORTED: that client already left
                if self._idle:
                    log.warning("out of file descriptors: closing the oldest idle connection")
                    self._forget(next(iter(self._idle)))
                    continue
                log.warning("out of file descriptors: not accepting for %.1fs", ACCEPT_PAUSE_S)
                self._selector.unregister(self._listener)
                self._accept_paused_until = time.monotonic() + ACCEPT_PAUSE_S
                return
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _SEND_TIMEVAL)
            except OSError:
                _close(sock)
                continue
            self._park(_Connection(sock, f"{addr[0]}:{addr[1]}"))

    def _take_back(self) -> None:
        # Cleared before the queue is read: a connection returned after this line sends a
        # new wake-up; one returned before it is taken below.
        self._wake_pending = False
        while True:
            try:
                returned = self._returned.get_nowait()
            except queue.Empty:
                return
            if isinstance(returned, _Lingering):
                self._linger(returned)
            else:
                self._park(returned)

    def _park(self, conn: _Connection) -> None:
        if self._stopping.is_set():
            _close(conn.sock)
            return
        try:
            self._selector.register(conn.sock, selectors.EVENT_READ, conn)
        except (OSError, ValueError, KeyError):
            _close(conn.sock)
            return
        self._idle[conn] = time.monotonic() + self._limits.idle_timeout_s
        self._enforce_parked_max()

    def _enforce_parked_max(self) -> None:
        while len(self._idle) + len(self._lingering) > self._parked_max:
            if self._lingering:
                self._stop_lingering(next(iter(self._lingering)))
            else:
                self._forget(next(iter(self._idle)))

    def _unpark(self, conn: _Connection) -> None:
        """The connection has bytes (or EOF) to read: a worker takes it from here.

        A client that closed (EOF, or a reset) is closed here: hundreds of idle clients
        leaving at once must not fill the workers' queue and turn new clients away.
        """
        self._selector.unregister(conn.sock)
        del self._idle[conn]
        try:
            if conn.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"":
                _close(conn.sock)
                return
        except BlockingIOError:
            pass  # readable but nothing yet after all: let a worker wait for it
        except OSError:
            _close(conn.sock)
            return
        if self._queue.qsize() >= self._limits.workers_max:
            self._refuse_busy(conn.sock)
        else:
            self._queue.put(conn)

    def _forget(self, conn: _Connection) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(conn.sock)
        self._idle.pop(conn, None)
        _close(conn.sock)

    def _refuse_busy(self, sock: socket.socket) -> None:
        response = self._handler.render_error(None, ServerBusy("every worker is busy"))
        data = _serialize(
            self._head(response.with_headers(("Retry-After", "1"), ("Connection", "close"))), response
        )
        try:
            sock.setblocking(False)
            # A fresh connection's send buffer holds a short error whole; if not, the client is gone.
            sock.send(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            _close(sock)
            return
        self._linger(_Lingering(sock))

    def _linger(self, lingering: _Lingering) -> None:
        """Drain what the client still sends after our error reply, then close.

        Closing a socket that holds unread request bytes makes the kernel send RST,
        which can destroy the error response before the client reads it. So the
        write side is shut and the poller discards what arrives (bounded in bytes and
        time) until the client closes: no worker waits for a slow or silent client.
        """
        try:
            lingering.sock.setblocking(False)
            self._selector.register(lingering.sock, selectors.EVENT_READ, lingering)
        except (OSError, ValueError, KeyError):
            _close(lingering.sock)
            return
        self._lingering[lingering] = time.monotonic() + LINGER_S
        self._enforce_parked_max()

    def _drain(self, lingering: _Lingering) -> None:
        try:
            chunk = lingering.sock.recv(RECV_BYTES)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        lingering.drained += len(chunk)
        if not chunk or lingering.drained > LINGER_BYTES_MAX:
            self._stop_lingering(lingering)

    def _stop_lingering(self, lingering: _Lingering) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(lingering.sock)
        self._lingering.pop(lingering, None)
        _close(lingering.sock)

    def _expire(self, now: float) -> None:
        # Deadlines grow with insertion order (one timeout per kind), so the oldest come first.
        while (deadline := _first(self._idle)) is not None and deadline <= now:
            self._forget(next(iter(self._idle)))
        while (deadline := _first(self._lingering)) is not None and deadline <= now:
            self._stop_lingering(next(iter(self._lingering)))
        if self._accept_paused_until is not None and self._accept_paused_until <= now:
            self._accept_paused_until = None
            self._selector.register(self._listener, selectors.EVENT_READ, _Listener())

    def _wake_poller(self) -> None:
        with contextlib.suppress(OSError):  # a full pipe already means "wake up"
            self._wake_w.send(b"\0")

    def _drain_wake(self) -> None:
        with contextlib.suppress(OSError):
            while self._wake_r.recv(4096):
                pass

    def _close_poller(self) -> None:
        with self._lock:
            self._poller_open = False
        _close(self._listener)
        for conn in list(self._idle):
            self._forget(conn)
        for lingering in list(self._lingering):
            self._stop_lingering(lingering)
        while True:
            try:
                returned = self._returned.get_nowait()
            except queue.Empty:
                break
            _close(returned.sock)
        self._selector.close()
        _close(self._wake_r)
        _close(self._wake_w)

    # -- the workers ----------------------------------------------------------------

    def _work(self) -> None:
        while True:
            conn = self._queue.get()
            if conn is None:
                return
            with self._lock:
                self._busy += 1
            then: _Connection | _Lingering | None = None
            try:
                then = self._serve(conn)
            except Exception:
                log.exception("connection %s failed", conn.peer)
            finally:
                self._hand_back(conn, then)

    def _hand_back(self, conn: _Connection, then: _Connection | _Lingering | None) -> None:
        """Park a connection between requests (or after an error reply): the poller
        watches it from now on. Closed instead when there is nothing more to do on it
        or the poller has stopped.

        Per request, so kept cheap: one lock taken (never held across a system call,
        so workers do not queue behind one that is), and a wake-up sent only when
        none is pending already."""
        with self._lock:
            self._busy -= 1
            parked = then is not None and self._poller_open
            if parked:
                self._returned.put(cast(_Connection | _Lingering, then))
        if not parked:
            _close(conn.sock)
        elif not self._wake_pending:
            self._wake_pending = True
            self._wake_poller()

    def _serve(self, conn: _Connection) -> _Connection | _Lingering | None:
        """Serve requests while their bytes are at hand.

        Returns what the poller should watch next: the connection itself (parked for
        its next request), a lingering close after an error reply, or None to close.
        """
        h11conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self._limits.header_bytes_max)
        served = 0
        while not self._stopping.is_set():
            try:
                request = self._read_request(h11conn, conn)
            except _Closed:
                return None
            except HttpError as error:
                return self._fail(h11conn, conn, error)
            response = self._respond(request)
            try:
                head = self._head(response)
            except (h11.LocalProtocolError, UnicodeError) as exc:
                log.error("invalid response head for %s %s: %s", request.method, request.target[:200], exc)
                response = self._handler.render_error(request, PyrsiaError("internal server error"))
                head = self._head(response)
            try:
                self._send(h11conn, conn, request.method, head, response)
            except (_Closed, OSError) as exc:
                log.debug("%s went away while sending: %s", conn.peer, exc)
                return None
            self._log_access(conn, request, response)
            if h11conn.our_state is not h11.DONE or h11conn.their_state is not h11.DONE:
                return None
            h11conn.start_next_cycle()
            served += 1
            if not h11conn.trailing_data[0] and (served >= TURN_REQUESTS_MAX or not _readable_now(conn.sock)):
                # Nothing pipelined or arrived yet: wait for the next request in the
                # poller, not here. One that is already here is served at once, up to a
                # turn's worth, so a busy client cannot keep a worker from the others.
                return None if self._stopping.is_set() else conn
        return None

    def _respond(self, request: Request) -> Response:
        try:
            response = self._handler.handle(request)
            return _conditional(request, response)
        except PyrsiaError as error:
            return self._handler.render_error(request, error)
        except Exception:
            log.exception("handler failed on %s %s", request.method, request.target[:200])
            return self._handler.render_error(request, PyrsiaError("internal server error"))

    def _fail(self, h11conn: h11.Connection, conn: _Connection, error: HttpError) -> _Lingering | None:
        """Answer a protocol-level failure if the connection still allows it; linger, then close."""
        log.info("%s: %s", conn.peer, error.message)
        if h11conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return None
        response = self._handler.render_error(None, error).with_headers(("Connection", "close"))
        try:
            self._send(h11conn, conn, "GET", self._head(response), response)
            conn.sock.shutdown(socket.SHUT_WR)
        except (OSError, _Closed, h11.LocalProtocolError):
            return None
        return _Lingering(conn.sock)

    # -- reading --------------------------------------------------------------------

    def _read_request(self, h11conn: h11.Connection, conn: _Connection) -> Request:
        # The poller hands a connection over once it is readable, so the first bytes are
        # at hand; if none come after all (a spurious wake-up) it closes silently.
        deadline = time.monotonic() + self._limits.header_timeout_s
        received = len(h11conn.trailing_data[0])  # pipelined bytes left from the last request
        started = received > 0
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
                # Some bytes of a request arrived: the rest of its head has its own clock.
                started = True
                deadline = time.monotonic() + self._limits.header_timeout_s
            received += len(data)
            h11conn.receive_data(data)
        _check_head(event)
        body = self._read_body(h11conn, conn, event)
        try:
            return _to_request(event, body, conn.peer)
        except UnicodeDecodeError as exc:
            raise BadRequest("request path is not valid UTF-8 after percent-decoding") from exc
        except ValueError as exc:  # urlsplit: e.g. an unbalanced "[" in the authority
            raise BadRequest(f"malformed request target: {exc}") from exc

    def _read_body(self, h11conn: h11.Connection, conn: _Connection, head: h11.Request) -> bytes:
        limit = self._limits.body_bytes_max
        for name, value in head.headers:
            # h11 has checked the value: at most 20 digits.
            if name == b"content-length" and int(value) > limit:
                raise PayloadTooLarge(f"request body over {limit} bytes")
        if h11conn.they_are_waiting_for_100_continue:
            # RFC 9110 §10.1.1: the client holds its body until we say we will read it.
            try:
                conn.sock.sendall(
                    h11conn.send(h11.InformationalResponse(status_code=100, headers=[], reason=b"Continue"))
                    or b""
                )
            except OSError as exc:
                raise _Closed() from exc
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
        """The next bytes, by `deadline`: one `recv` when they are at hand, else a `poll`
        for them first."""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._timeout(waiting_for)
            try:
                return conn.sock.recv(RECV_BYTES, socket.MSG_DONTWAIT)
            except BlockingIOError:
                pass
            except OSError as exc:
                raise _Closed() from exc
            if not _wait_readable(conn.sock, remaining):
                raise self._timeout(waiting_for)

    @staticmethod
    def _timeout(waiting_for: str | None) -> Exception:
        # A connection that never started a request is closed silently; a half-sent one is told why.
        return RequestTimeout(f"{waiting_for} not received in time") if waiting_for else _Closed()

    # -- writing --------------------------------------------------------------------

    def _head(self, response: Response) -> h11.Response:
        """The status line and headers; h11 validates them here, before anything is sent."""
        headers = list(response.headers)
        if response.status not in _NO_CONTENT_STATUSES:
            headers.append(("Content-Length", str(len(response.body))))
        headers += [("Date", _http_date()), ("Server", _SERVER)]
        if self._stopping.is_set() and not any(name.lower() == "connection" for name, _ in headers):
            headers.append(("Connection", "close"))
        return h11.Response(status_code=response.status, headers=headers, reason=_reason(response.status))

    def _send(
        self, h11conn: h11.Connection, conn: _Connection, method: str, head: h11.Response, response: Response
    ) -> None:
        sock = conn.sock
        write: Callable[[bytes], None] = sock.sendall
        try:
            out = h11conn.send(head) or b""
            body = response.body
            if method != "HEAD" and response.status not in _NO_CONTENT_STATUSES and len(body):
                if isinstance(body, FileBody):
                    write(out)
                    out = b""
                    self._send_file(h11conn, sock, body)
                elif isinstance(body, StreamBody):
                    write(out)
                    out = b""
                    self._send_stream(h11conn, sock, body)
                elif len(body) <= COALESCE_BYTES_MAX and h11conn.our_state is h11.SEND_BODY:
                    # A small answer (a manifest, an error) leaves in one write: one segment
                    # (TCP_NODELAY sends each write at once) and one wake-up of the client.
                    out += h11conn.send(h11.Data(data=body)) or b""
                else:
                    write(out)
                    out = h11conn.send(h11.Data(data=body)) or b""
            out += h11conn.send(h11.EndOfMessage()) or b""
            if out:
                write(out)
        except (BrokenPipeError, ConnectionResetError, BlockingIOError) as exc:
            raise _Closed() from exc  # BlockingIOError: the send timeout passed with nothing sent

    @staticmethod
    def _send_file(h11conn: h11.Connection, sock: socket.socket, body: FileBody) -> None:
        # A bare descriptor: a file object would ask the kernel three more things (stat,
        # whether it is a terminal, its offset) that sendfile needs none of.
        fd = os.open(body.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            # h11 hands our FileBody back untouched where the body bytes belong.
            pieces: list[object] = list(h11conn.send_with_data_passthrough(h11.Data(data=body)) or ())  # type: ignore[arg-type]
            for piece in pieces:
                if isinstance(piece, FileBody):
                    _send_file_blocking(sock, fd, piece.offset, piece.length)
                else:
                    sock.sendall(cast(bytes, piece))
        finally:
            os.close(fd)

    @staticmethod
    def _send_stream(h11conn: h11.Connection, sock: socket.socket, body: StreamBody) -> None:
        """Each piece as it is produced; a stream that fails or ends short closes the connection."""
        pieces = body.pieces()
        sent = 0
        try:
            for piece in pieces:
                sock.sendall(h11conn.send(h11.Data(data=piece)) or b"")
                sent += len(piece)
            if sent != body.length:
                raise _Closed()
        except (PyrsiaError, h11.LocalProtocolError) as exc:
            log.warning("response body stream ended early: %s", exc)
            raise _Closed() from exc
        finally:
            close = getattr(pieces, "close", None)
            if close is not None:
                close()  # a generator left early releases what it holds now

    def _log_access(self, conn: _Connection, request: Request, response: Response) -> None:
        log.info(
            '%s "%s %s" %d %d',
            conn.peer,
            request.method[:50],
            request.target[:500],
            response.status,
            len(response.body),
        )


_SERVER = f"pyrsia/{__version__}"
_date_cache: tuple[int, str] = (0, "")


def _http_date() -> str:
    """RFC 9110 §6.6.1 Date, formatted once per second rather than once per response."""
    global _date_cache
    now = int(time.time())
    second, text = _date_cache
    if second != now:
        text = formatdate(now, usegmt=True)
        _date_cache = (now, text)
    return text


def _send_file_blocking(sock: socket.socket, fd: int, offset: int, length: int) -> None:
    """`length` bytes of `fd` from `offset` with sendfile on the blocking socket.

    A blocking sendfile returns when the whole count is sent (or the send timeout cut
    it short), so a fast reader costs a few system calls per body, not one sendfile and
    one poll per socket buffer's worth. SO_SNDTIMEO bounds each call: one that sends
    nothing for the send timeout fails (EAGAIN), and the connection is dropped.
    """
    while length > 0:
        try:
            sent = os.sendfile(sock.fileno(), fd, offset, length)
        except BlockingIOError as exc:  # the send timeout passed with nothing sent
            raise _Closed() from exc
        if sent == 0:  # the file is shorter than the response said
            raise _Closed()
        offset += sent
        length -= sent


def _readable_now(sock: socket.socket) -> bool:
    """Whether bytes (or EOF) wait on `sock`, without waiting for any."""
    return _wait_readable(sock, 0.0)


def _wait_readable(sock: socket.socket, timeout_s: float) -> bool:
    """Whether bytes (or EOF) arrive on `sock` within `timeout_s`; not for a closed socket."""
    try:
        return readable(sock, timeout_s)
    except (OSError, ValueError):
        return False


def _parked_max(limits: Limits) -> int:
    """`idle_connections_max`, lowered to fit the process's file-descriptor limit."""
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        return limits.idle_connections_max
    if soft == resource.RLIM_INFINITY:
        return limits.idle_connections_max
    room = soft - FDS_RESERVED - 3 * limits.workers_max
    return max(1, min(limits.idle_connections_max, room))


def _first(deadlines: OrderedDict[_Connection, float] | OrderedDict[_Lingering, float]) -> float | None:
    return next(iter(deadlines.values()), None)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.close()


def _serialize(head: h11.Response, response: Response) -> bytes:
    """A whole response as bytes, for answers written without a worker (503)."""
    h11conn = h11.Connection(h11.SERVER)
    body = response.body if isinstance(response.body, bytes) else b""
    return b"".join(h11conn.send(event) or b"" for event in (head, h11.Data(data=body), h11.EndOfMessage()))


def _check_head(head: h11.Request) -> None:
    """Refuse what h11 lets through but this server must not act on.

    RFC 9112 §6.3: Content-Length with Transfer-Encoding is how requests get
    smuggled. h11 would frame such a request by Transfer-Encoding and keep the
    connection; a proxy in front may have framed it by Content-Length. Refusing it
    (and closing) means no two parties can disagree about where the next request
    starts. RFC 9112 §2.3: h11 parses any `HTTP/d.d`; only 1.x is spoken here.
    """
    if not head.http_version.startswith(b"1."):
        raise VersionNotSupported(f"HTTP/{head.http_version.decode('ascii', 'replace')} is not supported")
    names = {name for name, _ in head.headers}
    if b"content-length" in names and b"transfer-encoding" in names:
        raise BadRequest("request has both Content-Length and Transfer-Encoding")


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


def _conditional(request: Request, response: Response) -> Response:
    """RFC 9110 §13.2: preconditions on a 200 answer to GET/HEAD, then a single Range."""
    if response.status != 200 or request.method not in ("GET", "HEAD"):
        return response
    if not any(name.startswith("if-") for name, _ in request.headers):
        return _apply_range(request, response)
    validators = conditional.Validators.of(response.headers)
    match conditional.evaluate(request.method, request.headers, validators):
        case conditional.Outcome.NOT_MODIFIED:
            kept = tuple(h for h in response.headers if h[0].lower() in conditional.NOT_MODIFIED_HEADERS)
            return Response(status=304, headers=kept)
        case conditional.Outcome.PRECONDITION_FAILED:
            raise PreconditionFailed("a precondition in If-Match or If-Unmodified-Since is false")
        case conditional.Outcome.IGNORE_RANGE:
            return response
        case conditional.Outcome.PROCEED:
            return _apply_range(request, response)


def _apply_range(request: Request, response: Response) -> Response:
    """Turn a 200 into a 206 (or 416) when a range-capable GET asked for one range."""
    if not response.ranges or response.status != 200 or request.method != "GET":
        return response
    if isinstance(response.body, StreamBody):
        return response  # a body still being produced is served whole (RFC 9110 §14.2 allows it)
    fields = [value for name, value in request.headers if name == "range"]
    # Range is a single value (RFC 9110 §14.2); several fields make it invalid: ignore it.
    if len(fields) != 1:
        return response
    size = len(response.body)
    chosen = parse_range(fields[0], size)
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
