"""Upstream connections: HTTP/1.1 keep-alive over plain sockets, pooled per origin, under httpx.

httpx's own transport (httpcore) takes one pool lock per request and walks every
connection under it to assign requests; with a hundred connections and the node's
HTTP workers and verifiers fetching at once, that lock was the first item of the
pull-through profile. The upstream clients need much less: HTTP/1.1 (h11 does the
protocol), one request at a time per connection, and idle connections kept per
origin for reuse. So this transport keeps, per origin, a stack of idle connections
(the most recently used first, none idle longer than `idle_s_max`) behind a lock held
for a push or a pop, and opens a new connection when none is idle. Redirects, cookies,
auth, content decoding and the `httpx.Response` API stay httpx's
(`httpx.Client(transport=...)`).

Bounds, as `httpx.Limits` means them (the numbers come from one, so a proxy's httpx
transport keeps the same ones): at most `connections_max` connections open in all,
idle, busy or being opened, over every origin of the transport; a client's transport
serves one upstream (its registry, token realm and blob host), so this bounds what the
node asks of that upstream at once and the sockets it holds for it. A request that
finds the cap reached takes an idle connection of another origin, closing it to open
its own, or else waits for a connection to be released or closed, for at most its
pool timeout: then `httpx.PoolTimeout`, as httpx's own pool raises. Waiters are served
in the order they came, as in httpx's pool. At most `idle_max` connections are kept
idle in all; one released beyond that pushes out the one idle longest.

Deadlines. A request's read and write timeouts apply to each `recv` and `send`. On a
plain connection they are set on the socket itself (SO_RCVTIMEO, SO_SNDTIMEO), so a
blocking `recv` needs no `poll` before it; on TLS, where OpenSSL would retry past
such a timeout, the socket's own timeout is used. A timeout is `httpx.ReadTimeout`
(`WriteTimeout`, `ConnectTimeout`) and the connection is dropped.

Reuse. An idle connection the upstream closed (or wrote to) while idle is readable;
it is seen before reuse and closed. A GET or HEAD that fails on a reused connection
before any byte of its response arrived (the upstream closed it as the request left)
is sent once more on a new connection. Everything else fails as httpx's own
`TransportError` subclasses, which `upstream.http` maps like httpx's.

A proxy in the environment (`http_proxy`, `https_proxy`, `all_proxy`) is honoured by
httpx only with its own transport, so `pooled_transport` returns None then.
"""

from __future__ import annotations

import collections
import contextlib
import math
import socket
import ssl
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import h11
import httpx

from pyrsia.sockets import readable, timeval

IDLE_S_MAX = 30.0  # a connection idle longer is closed rather than reused
RECV_BYTES = 64 * 1024
_DEFAULT_PORTS = {"http": 80, "https": 443}
_RETRIED_METHODS = frozenset({"GET", "HEAD"})
_TIMED_OUT = (TimeoutError, BlockingIOError)  # a socket timeout; EAGAIN past SO_RCVTIMEO

Origin = tuple[str, str, int]


def pooled_transport(limits: httpx.Limits) -> httpx.BaseTransport | None:
    """This module's transport bounded by `limits`, or None (httpx's own, given the same
    limits) when the environment names a proxy."""
    proxies = urllib.request.getproxies()
    if any(proxies.get(scheme) for scheme in ("http", "https", "all")):
        return None
    return PooledTransport.bounded_by(limits)


@dataclass(frozen=True, slots=True)
class PoolStats:
    """A pool's connections at one moment, for `/metrics`."""

    open: int  # counted against the cap: idle, busy or being opened
    idle: int
    waiting: int  # requests waiting for a connection because the cap is reached


class _Stale(Exception):
    """A reused connection failed before any byte of the response arrived."""

    def __init__(self, error: httpx.TransportError) -> None:
        super().__init__(str(error))
        self.error = error


class _Connection:
    """One socket and its h11 state machine; used by one request at a time."""

    __slots__ = ("closed", "h11", "idle_since", "origin", "received", "sock", "timeouts", "tls", "used")

    def __init__(self, sock: socket.socket, origin: Origin, tls: bool) -> None:
        self.sock = sock
        self.h11 = h11.Connection(h11.CLIENT)
        self.origin = origin
        self.tls = tls
        self.timeouts: tuple[float | None, float | None] | None = None
        self.idle_since = 0.0
        self.used = False  # carried a request before: a failure may be its staleness
        self.received = 0  # bytes of the current response read so far
        self.closed = False  # its place under the pool's cap was given back

    def set_timeouts(self, read_s: float | None, write_s: float | None) -> None:
        if (read_s, write_s) == self.timeouts:
            return
        if self.tls:
            self.sock.settimeout(read_s)  # one timeout for both: the clients give them equal
        else:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval(read_s))
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval(write_s))
        self.timeouts = (read_s, write_s)

    def idle_and_open(self, now: float, idle_s_max: float) -> bool:
        """Fit for another request: not idle too long, and nothing (an EOF) waiting to be read."""
        if now - self.idle_since > idle_s_max:
            return False
        return not readable(self.sock, 0)

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except _TIMED_OUT as exc:
            raise httpx.WriteTimeout(f"write timed out: {exc}") from exc
        except OSError as exc:
            raise httpx.WriteError(f"write failed: {exc}") from exc

    def next_event(self) -> Any:
        while True:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as exc:
                raise httpx.RemoteProtocolError(str(exc)) from exc
            if event is not h11.NEED_DATA:
                return event
            try:
                data = self.sock.recv(RECV_BYTES)
            except _TIMED_OUT as exc:
                raise httpx.ReadTimeout(f"read timed out: {exc}") from exc
            except OSError as exc:
                raise httpx.ReadError(f"read failed: {exc}") from exc
            self.received += len(data)
            try:
                self.h11.receive_data(data)
            except h11.RemoteProtocolError as exc:
                raise httpx.RemoteProtocolError(str(exc)) from exc

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class _Body(httpx.SyncByteStream):
    """A response's body; the connection goes back to the pool once it was read to its end."""

    def __init__(self, pool: PooledTransport, connection: _Connection) -> None:
        self._pool = pool
        self._connection: _Connection | None = connection

    def __iter__(self) -> Iterator[bytes]:
        connection = self._connection
        if connection is None:
            return
        try:
            while True:
                event = connection.next_event()
                if isinstance(event, h11.Data):
                    yield bytes(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    break
                else:  # a ConnectionClosed before the end, or something h11 should not produce
                    raise httpx.RemoteProtocolError(f"response body ended with {type(event).__name__}")
        except BaseException:
            self.close()
            raise
        self._connection = None
        self._pool.release(connection)

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:  # not read to its end: the connection is in an unknown state
            self._pool.discard(connection)


class PooledTransport(httpx.BaseTransport):
    def __init__(
        self,
        *,
        connections_max: int,
        idle_max: int,
        idle_s_max: float = IDLE_S_MAX,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if connections_max < 1 or not 0 <= idle_max <= connections_max:
            raise ValueError(
                f"need 1 <= connections_max and 0 <= idle_max <= connections_max, "
                f"not {connections_max} and {idle_max}"
            )
        self.connections_max = connections_max
        self.idle_max = idle_max
        self.idle_s_max = idle_s_max
        self._ssl_context = ssl_context
        self._idle: dict[Origin, list[_Connection]] = {}
        self._idle_count = 0
        self._counted = 0  # connections counted against the cap: idle, busy, or being opened
        self._queue: collections.deque[object] = collections.deque()  # requests waiting, in order
        # Held for a push, a pop or a count; notified whenever a place or an idle connection
        # frees (to all: only the first in line may take it).
        self._changed = threading.Condition(threading.Lock())
        self._closed = False
        self.opened = 0  # connections opened in all (for tests and metrics)

    @classmethod
    def bounded_by(cls, limits: httpx.Limits, ssl_context: ssl.SSLContext | None = None) -> PooledTransport:
        """The transport under the bounds httpx's own would keep with `limits`."""
        if limits.max_connections is None or limits.max_keepalive_connections is None:
            raise ValueError(f"the upstream pool needs bounded limits, not {limits}")
        return cls(
            connections_max=limits.max_connections,
            idle_max=limits.max_keepalive_connections,
            idle_s_max=math.inf if limits.keepalive_expiry is None else limits.keepalive_expiry,
            ssl_context=ssl_context,
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        scheme = url.scheme
        if scheme not in _DEFAULT_PORTS:
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {scheme!r}")
        origin = (scheme, url.host, url.port or _DEFAULT_PORTS[scheme])
        timeouts = request.extensions.get("timeout", {})
        body = request.read()  # the upstream clients send small bodies at most: a token request
        for attempt in range(2):
            connection = self._acquire(origin, timeouts.get("pool"), timeouts.get("connect"))
            try:
                connection.set_timeouts(timeouts.get("read"), timeouts.get("write"))
                return self._exchange(connection, request, body)
            except _Stale as exc:
                self.discard(connection)
                if attempt or request.method not in _RETRIED_METHODS:
                    raise exc.error from exc
            except BaseException:
                self.discard(connection)
                raise
        raise AssertionError("unreachable")

    def _exchange(self, connection: _Connection, request: httpx.Request, body: bytes) -> httpx.Response:
        reused = connection.used
        connection.used = True
        connection.received = 0
        h = connection.h11
        try:
            head = h.send(
                h11.Request(method=request.method, target=request.url.raw_path, headers=request.headers.raw)
            )
            data = (head or b"") + ((h.send(h11.Data(data=body)) or b"") if body else b"")
            data += h.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError as exc:
            raise httpx.LocalProtocolError(str(exc)) from exc
        try:
            connection.send(data)  # the whole request in one write
            event = connection.next_event()
        except httpx.TransportError as exc:
            if reused and not connection.received:
                raise _Stale(exc) from exc
            raise
        while isinstance(event, h11.InformationalResponse):
            event = connection.next_event()
        if isinstance(event, h11.ConnectionClosed):
            error = httpx.RemoteProtocolError("the upstream closed the connection without a response")
            if reused:
                raise _Stale(error)
            raise error
        if not isinstance(event, h11.Response):
            raise httpx.RemoteProtocolError(f"expected a response, got {type(event).__name__}")
        return httpx.Response(
            event.status_code,
            headers=event.headers.raw_items(),
            stream=_Body(self, connection),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": event.reason},
        )

    def _acquire(self, origin: Origin, pool_s: float | None, connect_s: float | None) -> _Connection:
        """An idle connection to `origin` fit for reuse, else a new one under the cap."""
        deadline = None if pool_s is None else time.monotonic() + pool_s
        while True:
            connection, evicted = self._claim(origin, deadline)
            if evicted is not None:  # another origin's idle connection: its place is ours now
                evicted.close()
            if connection is None:
                return self._open(origin, connect_s)
            if connection.idle_and_open(time.monotonic(), self.idle_s_max):
                return connection
            self.discard(connection)

    def _claim(self, origin: Origin, deadline: float | None) -> tuple[_Connection | None, _Connection | None]:
        """(an idle connection to `origin`, None), or (None, a connection to close or None)
        with a place under the cap taken for a new connection; waits until `deadline`.

        Waiters are served in the order they came, and a request that finds others waiting
        queues behind them: a connection freed while the first in line wakes goes to it, not
        to a request that arrived later, so under load no request starves to its timeout."""
        with self._changed:
            ticket: object | None = None
            try:
                while True:
                    if not self._queue or self._queue[0] is ticket:
                        claimed = self._take(origin)
                        if claimed is not None:
                            return claimed
                    # Checked after the state, so a wakeup that came with the timeout is not lost.
                    wait_s = None if deadline is None else deadline - time.monotonic()
                    if wait_s is not None and wait_s <= 0:
                        _, host, port = origin
                        raise httpx.PoolTimeout(
                            f"no connection to {host}:{port} came free in time: "
                            f"all {self.connections_max} of the pool are busy"
                        )
                    if ticket is None:
                        ticket = object()
                        self._queue.append(ticket)
                    self._changed.wait(wait_s)
            finally:
                if ticket is not None:
                    self._queue.remove(ticket)
                    if self._queue:  # the next in line looks again: more may have come free
                        self._changed.notify_all()

    def _take(self, origin: Origin) -> tuple[_Connection | None, _Connection | None] | None:
        """What `_claim` returns, if the pool has it now (lock held)."""
        stack = self._idle.get(origin)
        if stack:
            self._idle_count -= 1
            connection = stack.pop()
            if not stack:
                del self._idle[origin]  # the map holds only origins with idle connections
            return connection, None
        if self._counted < self.connections_max:
            self._counted += 1
            return None, None
        evicted = self._pop_oldest_idle()
        if evicted is not None:
            evicted.closed = True  # its place passes to the new connection; _counted unchanged
            return None, evicted
        return None

    def _pop_oldest_idle(self) -> _Connection | None:
        """The connection idle longest over every origin, out of the pool (lock held)."""
        oldest: list[_Connection] | None = None
        for stack in self._idle.values():
            if oldest is None or stack[0].idle_since < oldest[0].idle_since:
                oldest = stack
        if oldest is None:
            return None
        self._idle_count -= 1
        connection = oldest.pop(0)
        if not oldest:
            del self._idle[connection.origin]
        return connection

    def _open(self, origin: Origin, connect_s: float | None) -> _Connection:
        """A new connection in the place under the cap the caller took; the place is given
        back when this fails."""
        try:
            connection = self._connect(origin, connect_s)
        except BaseException:
            with self._changed:
                self._counted -= 1
                self._changed.notify_all()
            raise
        with self._changed:
            self.opened += 1
        return connection

    def _connect(self, origin: Origin, connect_s: float | None) -> _Connection:
        scheme, host, port = origin
        try:
            sock = socket.create_connection((host, port), timeout=connect_s)
        except _TIMED_OUT as exc:
            raise httpx.ConnectTimeout(f"connecting to {host}:{port} timed out") from exc
        except OSError as exc:
            raise httpx.ConnectError(f"cannot connect to {host}:{port}: {exc}") from exc
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if scheme == "https":
                sock = self._context().wrap_socket(sock, server_hostname=host)  # handshake, connect timeout
            sock.settimeout(None)  # blocking; each request sets its own read and write timeouts
        except _TIMED_OUT as exc:
            sock.close()
            raise httpx.ConnectTimeout(f"TLS handshake with {host}:{port} timed out") from exc
        except OSError as exc:  # ssl.SSLError included
            sock.close()
            raise httpx.ConnectError(f"TLS with {host}:{port} failed: {exc}") from exc
        return _Connection(sock, origin, tls=scheme == "https")

    def _context(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            self._ssl_context = httpx.create_ssl_context()
        return self._ssl_context

    def release(self, connection: _Connection) -> None:
        """A connection whose response was read whole: kept for the next request, or closed."""
        h = connection.h11
        if h.our_state is not h11.DONE or h.their_state is not h11.DONE:
            self.discard(connection)
            return
        h.start_next_cycle()
        connection.idle_since = time.monotonic()
        evicted: _Connection | None = None
        with self._changed:
            if self._closed or self.idle_max == 0:
                kept = False
            else:
                if self._idle_count >= self.idle_max:
                    evicted = self._pop_oldest_idle()
                    if evicted is not None:
                        self._forget(evicted)
                self._idle.setdefault(connection.origin, []).append(connection)
                self._idle_count += 1
                self._changed.notify_all()
                kept = True
        if evicted is not None:
            evicted.close()
        if not kept:
            self.discard(connection)

    def discard(self, connection: _Connection) -> None:
        """Closes a connection taken from the pool and gives its place under the cap back."""
        with self._changed:
            self._forget(connection)
        connection.close()

    def _forget(self, connection: _Connection) -> None:
        """Gives a connection's place back, once (lock held); a waiter may take it."""
        if not connection.closed:
            connection.closed = True
            self._counted -= 1
            self._changed.notify_all()

    def stats(self) -> PoolStats:
        with self._changed:
            return PoolStats(open=self._counted, idle=self._idle_count, waiting=len(self._queue))

    def close(self) -> None:
        with self._changed:
            self._closed = True
            stacks, self._idle, self._idle_count = list(self._idle.values()), {}, 0
            for stack in stacks:
                for connection in stack:
                    self._forget(connection)
        for stack in stacks:
            for connection in stack:
                connection.close()
