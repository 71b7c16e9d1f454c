"""Idle connections wait in the poller's selector, not in a worker.

Hundreds of keep-alive connections that went quiet after a request, and connections
that never said anything, must leave every worker free for the next client; they are
closed after the idle timeout, and past `idle_connections_max` the oldest one goes.
Real sockets on loopback against an in-process `HttpServer`; every wait polls a
condition with a deadline.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from pyrsia.errors import PyrsiaError
from pyrsia.http.message import Request, Response
from pyrsia.http.server import HttpServer, Limits

REQUEST = b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"


class Handler:
    def handle(self, request: Request) -> Response:
        return Response(body=b"hello")

    def render_error(self, request: Request | None, error: PyrsiaError) -> Response:
        return Response(status=error.http_status, body=error.code.encode())


def _serve(**limits: float) -> HttpServer:
    server = HttpServer(Handler(), "127.0.0.1", 0, Limits(**limits))  # type: ignore[arg-type]
    server.start()
    return server


@pytest.fixture
def opened() -> Iterator[list[socket.socket]]:
    sockets: list[socket.socket] = []
    yield sockets
    for sock in sockets:
        sock.close()


def wait_for(condition: Callable[[], bool], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def one_response(sock: socket.socket) -> bytes:
    """Reads one `hello` response (fixed length) off a keep-alive connection."""
    data = b""
    while not data.endswith(b"\r\n\r\nhello"):
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    return data


def connect(server: HttpServer, opened: list[socket.socket], *, request: bool = True) -> socket.socket:
    sock = socket.create_connection(server.address, timeout=10)
    opened.append(sock)
    if request:
        sock.sendall(REQUEST)
        assert one_response(sock).startswith(b"HTTP/1.1 200")
    return sock


def is_closed(sock: socket.socket) -> bool:
    sock.settimeout(10)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_hundreds_of_idle_keep_alive_connections_leave_every_worker_free(opened: list[socket.socket]) -> None:
    server = _serve(workers_max=4, idle_timeout_s=600)
    try:
        for _ in range(300):
            connect(server, opened)
        wait_for(lambda: server.stats().connections_idle == 300)
        assert server.stats().workers_busy == 0
        # A newcomer is answered, not queued behind idle connections or refused with 503.
        assert httpx.get(f"http://{server.address[0]}:{server.address[1]}/", timeout=10).text == "hello"
        # And every parked connection still serves its next request.
        for sock in opened[::30]:
            sock.sendall(REQUEST)
            assert one_response(sock).startswith(b"HTTP/1.1 200")
        wait_for(lambda: server.stats().workers_busy == 0 and server.stats().connections_idle == 300)
    finally:
        server.shutdown(5)


def test_connections_that_never_speak_hold_no_worker(opened: list[socket.socket]) -> None:
    server = _serve(workers_max=2, idle_timeout_s=600)
    try:
        for _ in range(50):
            connect(server, opened, request=False)
        wait_for(lambda: server.stats().connections_idle == 50)
        assert server.stats().workers_busy == 0
        assert httpx.get(f"http://{server.address[0]}:{server.address[1]}/", timeout=10).text == "hello"
        # The first of them speaks at last and is served.
        opened[0].sendall(REQUEST)
        assert one_response(opened[0]).startswith(b"HTTP/1.1 200")
    finally:
        server.shutdown(5)


def test_idle_connections_are_closed_after_the_idle_timeout(opened: list[socket.socket]) -> None:
    server = _serve(workers_max=2, idle_timeout_s=0.3)
    try:
        quiet = connect(server, opened)
        silent = connect(server, opened, request=False)
        assert is_closed(quiet) and is_closed(silent)
        wait_for(lambda: server.stats().connections_idle == 0)
    finally:
        server.shutdown(5)


def test_past_the_maximum_the_oldest_idle_connection_is_closed(opened: list[socket.socket]) -> None:
    server = _serve(workers_max=2, idle_timeout_s=600, idle_connections_max=5)
    try:
        for n in range(8):
            connect(server, opened)
            # Parked again before the next one connects (a worker hands a connection back
            # just after its response), so the order of parking is the order of opening.
            wait_for(
                lambda n=n: (
                    server.stats().workers_busy == 0 and server.stats().connections_idle == min(n + 1, 5)
                )
            )
        assert all(is_closed(sock) for sock in opened[:3])
        for sock in opened[3:]:
            sock.sendall(REQUEST)
            assert one_response(sock).startswith(b"HTTP/1.1 200")
    finally:
        server.shutdown(5)


def test_pipelined_requests_are_served_without_parking_in_between(opened: list[socket.socket]) -> None:
    server = _serve(workers_max=1, idle_timeout_s=600)
    try:
        sock = connect(server, opened, request=False)
        sock.sendall(REQUEST * 500 + b"GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        assert answer.count(b"HTTP/1.1 200 OK") == 501
        assert answer.endswith(b"\r\n\r\nhello")
        wait_for(lambda: server.stats().workers_busy == 0)
    finally:
        server.shutdown(5)


def test_shutdown_closes_parked_connections_and_stops_accepting(opened: list[socket.socket]) -> None:
    server = _serve(workers_max=2, idle_timeout_s=600)
    parked = [connect(server, opened) for _ in range(3)] + [connect(server, opened, request=False)]
    wait_for(lambda: server.stats().connections_idle == 4)
    server.shutdown(5)
    assert all(is_closed(sock) for sock in parked)
    with pytest.raises(OSError):
        socket.create_connection(server.address, timeout=5).close()


def test_error_replies_linger_in_the_poller_not_in_a_worker(opened: list[socket.socket]) -> None:
    server = _serve(workers_max=1, idle_timeout_s=600)
    try:
        # A client that sends garbage, then neither reads nor closes.
        rude = connect(server, opened, request=False)
        rude.sendall(b"\x16\x03\x01 not http\r\n\r\n")
        wait_for(lambda: server.stats().connections_lingering == 1 and server.stats().workers_busy == 0)
        assert httpx.get(f"http://{server.address[0]}:{server.address[1]}/", timeout=10).text == "hello"
        assert one_error(rude).startswith(b"HTTP/1.1 400")
    finally:
        server.shutdown(5)


def one_error(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


class Held(Handler):
    """Answers `/hold` only once released, keeping the one worker busy meanwhile."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def handle(self, request: Request) -> Response:
        if request.path == "/hold":
            self.release.wait(20)
        return super().handle(request)


def test_idle_clients_leaving_at_once_never_turn_a_new_client_away(opened: list[socket.socket]) -> None:
    """Each departure is an EOF the poller closes itself, never a job queued for a worker."""
    handler = Held()
    server = HttpServer(handler, "127.0.0.1", 0, Limits(workers_max=1))
    server.start()
    try:
        leaving = [connect(server, opened) for _ in range(60)]
        busy = connect(server, opened, request=False)
        busy.sendall(b"GET /hold HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_for(lambda: server.stats().workers_busy == 1)
        for sock in leaving:
            sock.close()
        wait_for(lambda: server.stats().connections_idle == 0)
        assert server.stats().connections_queued == 0
        newcomer = connect(server, opened, request=False)
        newcomer.sendall(REQUEST)
        wait_for(lambda: server.stats().connections_queued == 1)
        handler.release.set()
        assert one_response(newcomer).startswith(b"HTTP/1.1 200")
    finally:
        handler.release.set()
        server.shutdown(5)


def test_a_request_waiting_when_a_response_is_done_is_served_and_others_still_are(
    opened: list[socket.socket],
) -> None:
    """The next request on a keep-alive connection arrives while the one before it is
    still being answered (so it waits in the socket, unread): the same worker answers
    it at once, and a client queued meanwhile is answered too."""
    handler = Held()
    server = HttpServer(handler, "127.0.0.1", 0, Limits(workers_max=1))
    server.start()
    try:
        busy = connect(server, opened, request=False)
        busy.sendall(b"GET /hold HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_for(lambda: server.stats().workers_busy == 1)
        busy.sendall(REQUEST)  # unread by the server until /hold is answered
        other = connect(server, opened, request=False)
        other.sendall(REQUEST)
        wait_for(lambda: server.stats().connections_queued == 1)
        handler.release.set()
        both = b""
        while both.count(b"\r\n\r\nhello") < 2:
            chunk = busy.recv(65536)
            assert chunk, f"connection closed after {both!r}"
            both += chunk
        assert both.startswith(b"HTTP/1.1 200") and both.count(b"HTTP/1.1 200") == 2
        assert one_response(other).startswith(b"HTTP/1.1 200")
        busy.sendall(REQUEST)  # and the connection is still kept alive after both
        assert one_response(busy).startswith(b"HTTP/1.1 200")
        wait_for(lambda: server.stats().workers_busy == 0 and server.stats().connections_idle == 2)
    finally:
        handler.release.set()
        server.shutdown(5)
