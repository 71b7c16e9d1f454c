"""The upstream transport against a scripted HTTP/1.1 server on real sockets: connections
kept and reused, dropped when the server closes or cuts them, deadlines on each read, and
the pool's bounds: open connections capped (a request past the cap waits, up to its pool
timeout), idle ones capped."""

from __future__ import annotations

import contextlib
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from pyrsia.upstream.transport import PooledTransport

# What the server does with one accepted connection.
Script = Callable[[socket.socket], None]
Pooled = tuple[httpx.Client, PooledTransport]


class ScriptedServer:
    def __init__(self, script: Script, tls: ssl.SSLContext | None = None) -> None:
        self.script = script
        self.tls = tls
        self.listener = socket.create_server(("127.0.0.1", 0))
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self.listener.getsockname()[1]}"
        self.accepted = 0
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
            with conn:
                self.script(conn)

    def close(self) -> None:
        self.listener.close()


def read_request(conn: socket.socket) -> bytes:
    """One request head (the client's GETs carry no body); b"" once the client closed."""
    data = b""
    while b"\r\n\r\n" not in data:
        more = conn.recv(4096)
        if not more:
            return b""
        data += more
    return data


def ok(body: bytes, *extra: str) -> bytes:
    head = [f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n", *(f"{h}\r\n" for h in extra), "\r\n"]
    return "".join(head).encode() + body


Serve = Callable[[Script], "ScriptedServer"]


@pytest.fixture
def serve() -> Iterator[Serve]:
    servers: list[ScriptedServer] = []

    def start(script: Script) -> ScriptedServer:
        servers.append(ScriptedServer(script))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def client() -> Iterator[Pooled]:
    transport = PooledTransport(connections_max=8, idle_max=4)
    with httpx.Client(transport=transport, timeout=5.0) as c:
        yield c, transport


def keep_alive(conn: socket.socket) -> None:
    while request := read_request(conn):
        body = b"HEAD" if request.startswith(b"HEAD") else request.split(b" ")[1]
        if request.startswith(b"HEAD"):
            conn.sendall(ok(body)[: -len(body)])  # the head alone, Content-Length of the GET
        else:
            conn.sendall(ok(body))


def test_requests_in_turn_ride_one_connection(serve: Serve, client: Pooled) -> None:
    server = serve(keep_alive)
    c, transport = client
    for i in range(5):
        assert c.get(f"{server.url}/file-{i}").content == f"/file-{i}".encode()
    head = c.head(f"{server.url}/x")  # no body read, still reusable
    assert head.status_code == 200 and head.headers["content-length"] == "4"
    assert c.get(f"{server.url}/last").content == b"/last"
    assert server.accepted == 1 and transport.opened == 1


def test_a_connection_the_server_closed_while_idle_is_not_reused(serve: Serve, client: Pooled) -> None:
    closed = threading.Event()

    def one_then_close(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(ok(b"once"))  # says keep-alive, then closes anyway (an idle timeout)
        conn.close()
        closed.set()

    server = serve(one_then_close)
    c, transport = client
    assert c.get(f"{server.url}/a").content == b"once"
    assert closed.wait(10)
    assert c.get(f"{server.url}/b").content == b"once"
    assert server.accepted == 2 and transport.opened == 2


def test_a_request_the_server_drops_unanswered_on_a_kept_connection_is_sent_again(
    serve: Serve, client: Pooled
) -> None:
    answered: list[int] = []

    def drops_the_second(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(ok(b"first"))
        answered.append(1)
        read_request(conn)  # the next request arrives, and the server closes instead of answering
        conn.shutdown(socket.SHUT_RDWR)

    def fresh_then_drop(conn: socket.socket) -> None:
        if len(answered) < 2:
            drops_the_second(conn)

    server = serve(fresh_then_drop)
    c, transport = client
    assert c.get(f"{server.url}/a").content == b"first"
    assert c.get(f"{server.url}/b").content == b"first"  # on a new connection
    assert transport.opened == 2


def test_a_response_that_is_not_read_to_its_end_closes_its_connection(serve: Serve, client: Pooled) -> None:
    server = serve(keep_alive)
    c, transport = client
    with c.stream("GET", f"{server.url}/partial") as response:
        assert response.status_code == 200  # body never read
    assert c.get(f"{server.url}/next").content == b"/next"
    assert transport.opened == 2 and transport.stats().idle == 1


def test_a_stalled_body_is_a_read_timeout_and_a_cut_one_a_protocol_error(serve: Serve) -> None:
    def stalls(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nsome")
        time.sleep(3)

    def cuts(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nsome")

    transport = PooledTransport(connections_max=8, idle_max=4)
    with httpx.Client(transport=transport, timeout=0.3) as c:
        with pytest.raises(httpx.ReadTimeout):
            c.get(f"{serve(stalls).url}/slow")
        with pytest.raises(httpx.RemoteProtocolError, match="complete message body"):
            c.get(f"{serve(cuts).url}/cut")
        assert transport.stats().idle == 0


def test_nothing_listening_is_a_connect_error(client: Pooled) -> None:
    c, _ = client
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: refused
        with pytest.raises(httpx.ConnectError):
            c.get(f"http://127.0.0.1:{port}/")


def test_connection_close_is_honoured(serve: Serve, client: Pooled) -> None:
    def closing(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(ok(b"bye", "Connection: close"))

    server = serve(closing)
    c, transport = client
    assert c.get(f"{server.url}/a").content == b"bye"
    assert c.get(f"{server.url}/b").content == b"bye"
    assert transport.opened == 2 and transport.stats().idle == 0


class HeldServer:
    """Answers each request only once `answer` is set; counts the connections it holds open."""

    def __init__(self, serve: Serve) -> None:
        self.answer = threading.Event()
        self._lock = threading.Lock()
        self.in_flight = 0  # requests read and not yet answered
        self.open = 0
        self.open_peak = 0
        self.closed = 0  # connections the client closed
        self.paths: list[bytes] = []  # in the order they were read
        self.server = serve(self._script)
        self.url = self.server.url

    def _script(self, conn: socket.socket) -> None:
        with self._lock:
            self.open += 1
            self.open_peak = max(self.open_peak, self.open)
        try:
            while request := read_request(conn):
                with self._lock:
                    self.in_flight += 1
                    self.paths.append(request.split(b" ")[1])
                self.answer.wait(HELD_S_MAX)  # released by the test, long before this
                with self._lock:
                    self.in_flight -= 1
                conn.sendall(ok(request.split(b" ")[1]))
        finally:
            with self._lock:
                self.open -= 1
                self.closed += 1


HELD_S_MAX = 30.0
POLL_S = 10.0


def poll(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + POLL_S
    while not condition():
        assert time.monotonic() < deadline, f"not within {POLL_S} s: {what}"
        time.sleep(0.01)


class Fetches:
    """GETs on threads of their own; `join` gives each one's body or error, in order."""

    def __init__(self, client: httpx.Client, urls: list[str], timeout: httpx.Timeout | None = None) -> None:
        self.results: list[bytes | Exception | None] = [None] * len(urls)
        self._threads = [
            threading.Thread(target=self._fetch, args=(client, i, url, timeout), daemon=True)
            for i, url in enumerate(urls)
        ]
        for thread in self._threads:
            thread.start()

    def _fetch(self, client: httpx.Client, i: int, url: str, timeout: httpx.Timeout | None) -> None:
        try:
            self.results[i] = client.get(url, timeout=timeout or 10.0).content
        except Exception as exc:
            self.results[i] = exc

    def join(self) -> list[bytes | Exception | None]:
        for thread in self._threads:
            thread.join(POLL_S)
            assert not thread.is_alive()
        return self.results


def capped(connections_max: int, idle_max: int | None = None) -> PooledTransport:
    return PooledTransport(
        connections_max=connections_max, idle_max=connections_max if idle_max is None else idle_max
    )


def test_concurrent_requests_past_the_cap_wait_and_never_open_more_connections(serve: Serve) -> None:
    held = HeldServer(serve)
    transport = capped(2)
    with httpx.Client(transport=transport) as c:
        fetches = Fetches(c, [f"{held.url}/slow-{i}" for i in range(5)])
        # Two requests at the server, three waiting in the pool: without the cap all five
        # would be at the server, each on a connection of its own.
        poll(lambda: held.in_flight == 2 and transport.stats().waiting == 3, "2 at the server, 3 waiting")
        held.answer.set()
        assert fetches.join() == [f"/slow-{i}".encode() for i in range(5)]
    assert held.server.accepted == 2 and held.open_peak == 2 and transport.opened == 2


def test_a_request_waiting_past_its_pool_timeout_fails_with_pool_timeout(serve: Serve) -> None:
    held = HeldServer(serve)
    transport = capped(2)
    with httpx.Client(transport=transport) as c:
        holders = Fetches(c, [f"{held.url}/held-{i}" for i in range(2)])
        poll(lambda: held.in_flight == 2, "both connections held at the server")
        with pytest.raises(httpx.PoolTimeout, match="all 2 of the pool are busy"):
            c.get(f"{held.url}/late", timeout=httpx.Timeout(10.0, pool=0.2))
        assert transport.stats().waiting == 0
        held.answer.set()
        assert holders.join() == [b"/held-0", b"/held-1"]
        assert c.get(f"{held.url}/after").content == b"/after"  # the cap's places all came back
    assert held.server.accepted == 2


def test_a_released_connection_serves_the_waiting_request(serve: Serve) -> None:
    held = HeldServer(serve)
    transport = capped(1)
    with httpx.Client(transport=transport) as c:
        first = Fetches(c, [f"{held.url}/first"])
        poll(lambda: held.in_flight == 1, "the first request at the server")
        second = Fetches(c, [f"{held.url}/second"])
        poll(lambda: transport.stats().waiting == 1, "the second request waiting for the pool")
        held.answer.set()
        assert first.join() == [b"/first"] and second.join() == [b"/second"]
    assert held.server.accepted == 1 and transport.opened == 1  # the waiter rode the released one


def test_waiting_requests_are_served_in_the_order_they_came(serve: Serve) -> None:
    held = HeldServer(serve)
    transport = capped(1)
    with httpx.Client(transport=transport) as c:
        fetches = [Fetches(c, [f"{held.url}/0"])]
        poll(lambda: held.in_flight == 1, "the first request at the server")
        for n in range(1, 6):
            fetches.append(Fetches(c, [f"{held.url}/{n}"]))
            poll(lambda n=n: transport.stats().waiting == n, f"{n} requests waiting for the pool")
        held.answer.set()
        assert [f.join() for f in fetches] == [[f"/{n}".encode()] for n in range(6)]
    assert held.paths == [f"/{n}".encode() for n in range(6)]  # one connection, in arrival order
    assert held.server.accepted == 1


def test_a_closed_connection_makes_room_for_the_waiting_request(serve: Serve) -> None:
    held = HeldServer(serve)
    held.answer.set()
    transport = capped(1)
    with httpx.Client(transport=transport) as c:
        with c.stream("GET", f"{held.url}/partial") as response:
            assert response.status_code == 200  # its body never read: the connection stays busy
            waiter = Fetches(c, [f"{held.url}/next"])
            poll(lambda: transport.stats().waiting == 1, "the next request waiting for the pool")
        # Closed unread, its connection is in an unknown state: closed, and its place taken.
        assert waiter.join() == [b"/next"]
    assert held.server.accepted == 2 and transport.opened == 2


def test_idle_connections_past_the_keep_alive_cap_are_closed(serve: Serve) -> None:
    held = HeldServer(serve)
    transport = capped(3, idle_max=1)
    with httpx.Client(transport=transport) as c:
        fetches = Fetches(c, [f"{held.url}/a", f"{held.url}/b", f"{held.url}/c"])
        poll(lambda: held.in_flight == 3, "three requests at the server")
        held.answer.set()
        assert fetches.join() == [b"/a", b"/b", b"/c"]
        assert transport.stats().idle == 1
        poll(lambda: held.closed == 2, "two of the three connections closed by the client")
        assert c.get(f"{held.url}/d").content == b"/d"  # on the one kept
    assert held.server.accepted == 3 and transport.opened == 3


def test_at_the_cap_an_idle_connection_to_another_origin_is_closed_for_a_new_one(serve: Serve) -> None:
    one, other = HeldServer(serve), HeldServer(serve)
    one.answer.set()
    other.answer.set()
    transport = capped(1)
    with httpx.Client(transport=transport, timeout=httpx.Timeout(10.0, pool=0.5)) as c:
        assert c.get(f"{one.url}/x").content == b"/x"
        assert transport.stats().idle == 1
        assert c.get(f"{other.url}/y").content == b"/y"  # no wait for the pool timeout
        poll(lambda: one.closed == 1, "the idle connection to the first origin closed")
        assert transport.stats().idle == 1 and transport.opened == 2


def test_the_client_takes_its_bounds_from_the_limits_httpx_would_apply() -> None:
    limits = httpx.Limits(max_connections=7, max_keepalive_connections=3, keepalive_expiry=12.0)
    transport = PooledTransport.bounded_by(limits)
    assert (transport.connections_max, transport.idle_max, transport.idle_s_max) == (7, 3, 12.0)
    with pytest.raises(ValueError, match="bounded"):
        PooledTransport.bounded_by(httpx.Limits(max_connections=None))
    with pytest.raises(ValueError, match="idle_max <= connections_max"):
        PooledTransport(connections_max=2, idle_max=3)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key."""
    root = tmp_path_factory.mktemp("tls")
    cert, key = root / "cert.pem", root / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def test_tls_connections_are_kept_and_a_stalled_tls_body_times_out(
    serve: Serve, certificate: tuple[Path, Path]
) -> None:
    cert, key = certificate
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)

    def stalls_on_the_third(conn: socket.socket) -> None:
        for _ in range(2):
            read_request(conn)
            conn.sendall(ok(b"secret"))
        read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nsome")
        time.sleep(3)

    server = ScriptedServer(stalls_on_the_third, tls=server_context)
    transport = PooledTransport(
        connections_max=8, idle_max=4, ssl_context=ssl.create_default_context(cafile=str(cert))
    )
    try:
        with httpx.Client(transport=transport, timeout=httpx.Timeout(10.0, read=0.5)) as c:
            assert c.get(f"{server.url}/a").content == b"secret"
            assert c.get(f"{server.url}/b").content == b"secret"
            assert server.accepted == 1 and transport.opened == 1
            with pytest.raises(httpx.ReadTimeout):
                c.get(f"{server.url}/c")
        untrusted = PooledTransport(connections_max=8, idle_max=4, ssl_context=ssl.create_default_context())
        with httpx.Client(transport=untrusted) as c, pytest.raises(httpx.ConnectError, match="CERTIFICATE"):
            c.get(f"{server.url}/d")
    finally:
        server.close()
