"""The upstream transport against a scripted HTTP/1.1 server on real sockets: connections
kept and reused, dropped when the server closes or cuts them, deadlines on each read."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from pyrsia.upstream.transport import PooledTransport

# What the server does with one accepted connection.
Script = Callable[[socket.socket], None]
Pooled = tuple[httpx.Client, PooledTransport]


class ScriptedServer:
    def __init__(self, script: Script) -> None:
        self.script = script
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
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
        with conn, contextlib.suppress(OSError):
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
