"""The upstream transport against a scripted HTTP/1.1 server on real sockets: connections
kept and reused, dropped when the server closes or cuts them, deadlines on each read."""

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
    transport = PooledTransport(idle_max=4)
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
    assert transport.opened == 2 and transport.idle() == 1


def test_a_stalled_body_is_a_read_timeout_and_a_cut_one_a_protocol_error(serve: Serve) -> None:
    def stalls(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nsome")
        time.sleep(3)

    def cuts(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nsome")

    transport = PooledTransport(idle_max=4)
    with httpx.Client(transport=transport, timeout=0.3) as c:
        with pytest.raises(httpx.ReadTimeout):
            c.get(f"{serve(stalls).url}/slow")
        with pytest.raises(httpx.RemoteProtocolError, match="complete message body"):
            c.get(f"{serve(cuts).url}/cut")
        assert transport.idle() == 0


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
    assert transport.opened == 2 and transport.idle() == 0


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
    transport = PooledTransport(idle_max=4, ssl_context=ssl.create_default_context(cafile=str(cert)))
    try:
        with httpx.Client(transport=transport, timeout=httpx.Timeout(10.0, read=0.5)) as c:
            assert c.get(f"{server.url}/a").content == b"secret"
            assert c.get(f"{server.url}/b").content == b"secret"
            assert server.accepted == 1 and transport.opened == 1
            with pytest.raises(httpx.ReadTimeout):
                c.get(f"{server.url}/c")
        untrusted = PooledTransport(idle_max=4, ssl_context=ssl.create_default_context())
        with httpx.Client(transport=untrusted) as c, pytest.raises(httpx.ConnectError, match="CERTIFICATE"):
            c.get(f"{server.url}/d")
    finally:
        server.close()
