"""The threaded h11 server over real loopback sockets, with a tiny in-test handler.

Exercises what every front end relies on: keep-alive, HEAD, sendfile bodies and
ranges, limits (header size, body size, head timeout, worker pool) and graceful
shutdown that lets an in-flight response finish.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from pyrsia.errors import PyrsiaError
from pyrsia.http import server as server_module
from pyrsia.http.message import FileBody, Request, Response, json_response
from pyrsia.http.server import HttpServer, Limits


class Handler:
    def __init__(self, blob: Path) -> None:
        self.blob = blob
        self.release = threading.Event()
        self.entered = threading.Event()

    def handle(self, request: Request) -> Response:
        if request.path == "/blob":
            return Response(body=FileBody(self.blob, 0, self.blob.stat().st_size), ranges=True)
        if request.path == "/bytes":  # the same bytes from memory: written, not sendfile'd
            return Response(body=self.blob.read_bytes())
        if request.path == "/slow":
            self.entered.set()
            self.release.wait(10)
            return Response(body=b"finished")
        if request.path == "/echo":
            return json_response(
                200,
                json.dumps({"len": len(request.body), "accept": request.header_values("accept")}).encode(),
            )
        raise PyrsiaError("boom")

    def render_error(self, request: Request | None, error: PyrsiaError) -> Response:
        return json_response(error.http_status, json.dumps({"code": error.code}).encode())


@pytest.fixture
def blob(tmp_path: Path) -> Path:
    path = tmp_path / "blob"
    path.write_bytes(bytes(range(256)) * 8)  # 2048 bytes
    return path


def _serve(handler: Handler, **limits: float) -> HttpServer:
    server = HttpServer(handler, "127.0.0.1", 0, Limits(**limits))  # type: ignore[arg-type]
    server.start()
    return server


@pytest.fixture
def server(blob: Path) -> Iterator[tuple[HttpServer, Handler]]:
    handler = Handler(blob)
    server = _serve(handler, header_timeout_s=0.5, body_bytes_max=1000, header_bytes_max=4096, workers_max=4)
    yield server, handler
    handler.release.set()
    server.shutdown(5)


def _url(server: HttpServer, path: str) -> str:
    host, port = server.address
    return f"http://{host}:{port}{path}"


def _raw(server: HttpServer, data: bytes, timeout: float = 5.0) -> bytes:
    with socket.create_connection(server.address, timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _wait_for(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def test_keep_alive_head_and_sendfile(server: tuple[HttpServer, Handler], blob: Path) -> None:
    srv, _ = server
    with httpx.Client() as client:
        full = client.get(_url(srv, "/blob"))
        head = client.head(_url(srv, "/blob"))
        part = client.get(_url(srv, "/blob"), headers={"Range": "bytes=500-1499"})
    assert full.content == blob.read_bytes() and full.headers["content-length"] == "2048"
    assert head.content == b"" and head.headers["content-length"] == "2048"
    assert part.status_code == 206 and part.content == blob.read_bytes()[500:1500]
    assert part.headers["content-range"] == "bytes 500-1499/2048"
    assert full.extensions["network_stream"] is not None


def test_one_connection_serves_many_requests(server: tuple[HttpServer, Handler]) -> None:
    srv, _ = server
    request = b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n"
    reply = _raw(srv, request * 3 + b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert reply.count(b"HTTP/1.1 200 OK") == 4


def test_repeated_accept_lines_are_all_read(server: tuple[HttpServer, Handler]) -> None:
    srv, _ = server
    reply = _raw(
        srv, b"GET /echo HTTP/1.1\r\nHost: x\r\nAccept: a/b\r\nAccept: c/d, e/f\r\nConnection: close\r\n\r\n"
    )
    assert json.loads(reply.split(b"\r\n\r\n", 1)[1])["accept"] == ["a/b", "c/d", "e/f"]


def test_unsatisfiable_range_goes_through_the_error_renderer(server: tuple[HttpServer, Handler]) -> None:
    srv, _ = server
    response = httpx.get(_url(srv, "/blob"), headers={"Range": "bytes=5000-10000"})
    assert response.status_code == 416 and response.json() == {"code": "RANGE_NOT_SATISFIABLE"}


def test_handler_errors_are_rendered(server: tuple[HttpServer, Handler]) -> None:
    srv, _ = server
    assert httpx.get(_url(srv, "/other")).status_code == 500


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 8000 + b"\r\n\r\n", b"431"),
        (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1garbage\r\n\r\n", b"400"),
        (b"GET /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n" + b"x" * 5000, b"413"),
        (b"GET /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc", b"408"),
        (b"GET /%ff%fe HTTP/1.1\r\nHost: x\r\n\r\n", b"400"),
    ],
    ids=["header-too-large", "garbage", "body-too-large", "body-never-finishes", "bad-utf8-path"],
)
def test_protocol_violations_get_an_error_and_a_close(
    server: tuple[HttpServer, Handler], request_bytes: bytes, status: bytes
) -> None:
    srv, _ = server
    reply = _raw(srv, request_bytes)
    assert reply.split(b"\r\n", 1)[0].split(b" ")[1] == status
    assert httpx.get(_url(srv, "/echo")).status_code == 200


def test_slowloris_loses_its_worker(server: tuple[HttpServer, Handler]) -> None:
    srv, _ = server
    with socket.create_connection(srv.address, timeout=5) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /echo HTTP/1.1\r\n")
        reply = b""
        while time.monotonic() - started < 5:
            try:
                sock.sendall(b"X-a: b\r\n")
                sock.settimeout(0.1)
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if not chunk:
                break
            reply += chunk
        assert reply.startswith(b"HTTP/1.1 408"), reply[:100]
        assert time.monotonic() - started < 4


def test_a_head_that_arrives_in_two_parts_within_the_timeout_is_served(
    server: tuple[HttpServer, Handler],
) -> None:
    """The worker reads what is at hand, then waits for the rest (up to the header timeout)."""
    srv, _ = server
    with socket.create_connection(srv.address, timeout=5) as sock:
        sock.sendall(b"GET /echo HTTP/1.1\r\n")
        _wait_for(lambda: srv.stats().workers_busy == 1)  # a worker holds the half head
        time.sleep(0.2)  # the pause is the point: well within the 0.5 s header timeout
        sock.sendall(b"Host: x\r\nAccept: a/b\r\n\r\n")
        head = sock.recv(65536)
        assert head.startswith(b"HTTP/1.1 200 "), head[:100]
        sock.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")  # and the connection lives on
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")


def test_busy_server_answers_503_instead_of_queueing_forever(blob: Path) -> None:
    handler = Handler(blob)
    srv = _serve(handler, workers_max=1, header_timeout_s=5)
    try:
        holder = threading.Thread(target=lambda: httpx.get(_url(srv, "/slow"), timeout=10))
        holder.start()
        assert handler.entered.wait(5)
        # One request may wait in the backlog queue (its size is the worker count)...
        waiting = socket.create_connection(srv.address, timeout=10)
        waiting.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        _wait_for(lambda: srv.stats().connections_queued == 1)
        # ...the next one finds it full.
        assert _raw(srv, b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 503")
        handler.release.set()
        holder.join(10)
        assert _read_all(waiting).startswith(b"HTTP/1.1 200")
        waiting.close()
    finally:
        handler.release.set()
        srv.shutdown(5)


def test_shutdown_lets_in_flight_response_finish(blob: Path) -> None:
    handler = Handler(blob)
    srv = _serve(handler)
    slow_url, echo_url = _url(srv, "/slow"), _url(srv, "/echo")
    result: dict[str, httpx.Response] = {}
    client = threading.Thread(target=lambda: result.update(r=httpx.get(slow_url, timeout=10)))
    client.start()
    assert handler.entered.wait(5)
    # A keep-alive connection that finished a request and waits for the next is closed.
    idle = socket.create_connection(srv.address, timeout=15)
    idle.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        head += idle.recv(65536)
    length = int(
        next(
            line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
        )
    )
    body = head.partition(b"\r\n\r\n")[2]
    while len(body) < length:
        body += idle.recv(65536)
    stopper = threading.Thread(target=srv.shutdown, args=(10,))
    stopper.start()
    handler.release.set()
    stopper.join(10)
    client.join(10)
    assert result["r"].status_code == 200 and result["r"].content == b"finished"
    assert idle.recv(10) == b""
    idle.close()
    with pytest.raises(httpx.ConnectError):
        httpx.get(echo_url)


def _read_response(sock: socket.socket, data: bytes = b"") -> tuple[bytes, bytes]:
    """One response with a Content-Length body off a keep-alive connection: (head, body)."""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "connection closed before the head"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(
        next(
            line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
        )
    )
    parts = [body]
    got = len(body)
    while got < length:
        chunk = sock.recv(1 << 20)
        assert chunk, f"connection closed after {got} of {length} body bytes"
        parts.append(chunk)
        got += len(chunk)
    return head, b"".join(parts)


def test_large_file_to_a_reader_that_pauses_arrives_whole_on_a_kept_connection(tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.write_bytes(os.urandom(24 << 20))  # well past what the socket buffers hold
    handler = Handler(big)
    srv = _serve(handler)
    try:
        with socket.create_connection(srv.address, timeout=30) as sock:
            sock.sendall(b"GET /blob HTTP/1.1\r\nHost: x\r\n\r\n")
            first = sock.recv(65536)
            # The reader stops: the worker sits in a blocked sendfile until it reads again.
            _wait_for(lambda: srv.stats().workers_busy == 1)
            time.sleep(0.5)  # the pause under test, not a wait for readiness
            assert srv.stats().workers_busy == 1
            head, body = _read_response(sock, first)
            assert head.startswith(b"HTTP/1.1 200") and body == big.read_bytes()
            sock.sendall(b"GET /blob HTTP/1.1\r\nHost: x\r\nRange: bytes=100-199\r\n\r\n")
            head, body = _read_response(sock)
            assert head.startswith(b"HTTP/1.1 206") and body == big.read_bytes()[100:200]
    finally:
        srv.shutdown(5)


@pytest.mark.parametrize("path", ["/blob", "/bytes"])
def test_a_stuck_reader_loses_its_worker_after_the_send_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    """Whether the body goes out by sendfile or from memory, one send timeout bounds it."""
    monkeypatch.setattr(server_module, "_SEND_TIMEVAL", struct.pack("@ll", 0, 300_000))
    big = tmp_path / "big"
    big.write_bytes(b"\x00" * (32 << 20))
    handler = Handler(big)
    srv = _serve(handler)
    try:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.settimeout(10)
            sock.connect(srv.address)
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            _wait_for(lambda: srv.stats().workers_busy == 1)
            # Never reads: the send times out and the worker is free again.
            _wait_for(lambda: srv.stats().workers_busy == 0)
            assert httpx.get(_url(srv, "/echo")).status_code == 200
            received = 0
            with contextlib.suppress(ConnectionResetError):
                while chunk := sock.recv(1 << 20):
                    received += len(chunk)
            assert received < big.stat().st_size  # the connection was dropped mid-body
    finally:
        srv.shutdown(5)
