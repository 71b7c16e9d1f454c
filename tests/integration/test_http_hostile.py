"""What attackers and sloppy clients send, against an in-process `HttpServer` over
loopback: every request gets a 4xx or a clean close — never a 500, a traceback or a
dropped reply — and the server goes on serving everyone else with every worker free.

Each case here was once a defect: a request smuggled behind Content-Length plus
Transfer-Encoding, a Range with thousands of digits (a 500), a target urlsplit cannot
parse (a traceback and no answer), `Expect: 100-continue` never answered, a handler
header h11 refuses (a traceback and no answer), If-Range ignored, no 304.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from email.utils import formatdate
from pathlib import Path

import httpx
import pytest

from pyrsia.errors import PyrsiaError
from pyrsia.http.message import FileBody, Request, Response, json_response
from pyrsia.http.server import HttpServer, Limits

BLOB_BYTES = 8 * 1024 * 1024
ETAG = '"sha256:0123"'
LAST_MODIFIED = formatdate(1_700_000_000, usegmt=True)


class Handler:
    def __init__(self, blob: Path) -> None:
        self.blob = blob
        self.seen: list[str] = []

    def handle(self, request: Request) -> Response:
        self.seen.append(f"{request.method} {request.path}")
        if request.path == "/blob":
            return Response(
                headers=(("ETag", ETAG), ("Last-Modified", LAST_MODIFIED), ("Cache-Control", "max-age=60")),
                body=FileBody(self.blob, 0, self.blob.stat().st_size),
                ranges=True,
            )
        if request.path == "/bad-header":
            return Response(headers=(("X-Echo", "caf\u00e9\r\nSet-Cookie: x=1"),), body=b"never sent")
        return json_response(200, json.dumps({"method": request.method, "body": len(request.body)}).encode())

    def render_error(self, request: Request | None, error: PyrsiaError) -> Response:
        return json_response(error.http_status, json.dumps({"code": error.code}).encode())


@pytest.fixture(scope="module")
def blob(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("blob") / "blob"
    path.write_bytes(bytes(range(256)) * (BLOB_BYTES // 256))
    return path


@pytest.fixture
def served(blob: Path, caplog: pytest.LogCaptureFixture) -> Iterator[tuple[HttpServer, Handler]]:
    handler = Handler(blob)
    server = HttpServer(
        handler,
        "127.0.0.1",
        0,
        Limits(workers_max=4, header_timeout_s=1, body_bytes_max=1000, header_bytes_max=8192),
    )
    server.start()
    with caplog.at_level(logging.INFO, logger="pyrsia.http"):
        yield server, handler
    server.shutdown(5)
    # Nothing a client sent may end in a traceback.
    assert not [r for r in caplog.records if r.exc_info], [
        r.getMessage() for r in caplog.records if r.exc_info
    ]


def url(server: HttpServer, path: str) -> str:
    return f"http://{server.address[0]}:{server.address[1]}{path}"


def raw(server: HttpServer, data: bytes, timeout_s: float = 10) -> bytes:
    """Sends bytes and returns everything the server answers until it closes."""
    with socket.create_connection(server.address, timeout=timeout_s) as sock:
        sock.sendall(data)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
    return received


def statuses(answer: bytes) -> list[int]:
    """Status codes of every response in the answer (our bodies never contain one)."""
    return [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)]


def wait_for(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def healthy(server: HttpServer) -> None:
    assert httpx.get(url(server, "/echo"), timeout=10).status_code == 200
    wait_for(lambda: server.stats().workers_busy == 0)


# --- request smuggling (RFC 9112 §6.3) -------------------------------------------------


@pytest.mark.parametrize(
    "head",
    [
        b"POST /first HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST /first HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
        b"POST /first HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nTransfer-Encoding: CHUNKED\r\n\r\n",
    ],
    ids=["cl-then-te", "te-then-cl", "te-upper-case"],
)
def test_content_length_with_transfer_encoding_is_refused_and_nothing_smuggled(
    served: tuple[HttpServer, Handler], head: bytes
) -> None:
    server, handler = served
    smuggled = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
    answer = raw(server, head + b"0\r\n\r\n" + smuggled)
    assert statuses(answer) == [400]
    assert b"connection: close" in answer.lower()
    assert handler.seen == []
    healthy(server)


# --- Range -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "status", "content_range"),
    [
        ("bytes=" + "9" * 5000 + "-", 416, f"bytes */{BLOB_BYTES}"),
        ("bytes=0-" + "9" * 5000, 206, f"bytes 0-{BLOB_BYTES - 1}/{BLOB_BYTES}"),
        ("bytes=-" + "9" * 5000, 206, f"bytes 0-{BLOB_BYTES - 1}/{BLOB_BYTES}"),
        ("bytes=" + "0" * 4000 + "10-" + "0" * 4000 + "19", 206, f"bytes 10-19/{BLOB_BYTES}"),
    ],
    ids=["huge-first", "huge-last", "huge-suffix", "leading-zeros"],
)
def test_ranges_with_thousands_of_digits(
    served: tuple[HttpServer, Handler], blob: Path, header: str, status: int, content_range: str
) -> None:
    server, _ = served
    got = httpx.get(url(server, "/blob"), headers={"Range": header}, timeout=10)
    assert got.status_code == status
    if status == 206:
        assert got.headers["content-range"] == content_range
        start, end = (int(n) for n in content_range.split()[1].split("/")[0].split("-"))
        assert got.content == blob.read_bytes()[start : end + 1]


def test_two_range_fields_are_ignored(served: tuple[HttpServer, Handler], blob: Path) -> None:
    server, _ = served
    answer = raw(
        server,
        b"GET /blob HTTP/1.1\r\nHost: x\r\nRange: bytes=0-1\r\nRange: bytes=2-3\r\nConnection: close\r\n\r\n",
    )
    assert statuses(answer[:200]) == [200]
    assert answer.endswith(blob.read_bytes()[-1000:])


# --- conditional requests (RFC 9110 §13) -------------------------------------------------


def test_if_range_with_a_stale_validator_sends_the_whole_body(
    served: tuple[HttpServer, Handler], blob: Path
) -> None:
    server, _ = served
    for stale in ('"sha256:old"', 'W/"sha256:0123"', formatdate(1_600_000_000, usegmt=True)):
        got = httpx.get(url(server, "/blob"), headers={"Range": "bytes=100-", "If-Range": stale}, timeout=10)
        assert got.status_code == 200 and got.content == blob.read_bytes()
    for current in (ETAG, LAST_MODIFIED):
        got = httpx.get(
            url(server, "/blob"), headers={"Range": "bytes=100-", "If-Range": current}, timeout=10
        )
        assert got.status_code == 206 and got.content == blob.read_bytes()[100:]


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize(
    "headers",
    [
        {"If-None-Match": ETAG},
        {"If-None-Match": f'"a", W/{ETAG}'},
        {"If-None-Match": "*"},
        {"If-Modified-Since": LAST_MODIFIED},
        {"If-Modified-Since": formatdate(1_800_000_000, usegmt=True), "Range": "bytes=0-1"},
    ],
    ids=["etag", "weak-in-list", "star", "not-modified-since", "with-range"],
)
def test_not_modified(served: tuple[HttpServer, Handler], method: str, headers: dict[str, str]) -> None:
    server, _ = served
    answer = raw(
        server,
        f"{method} /blob HTTP/1.1\r\nHost: x\r\nConnection: close\r\n".encode()
        + b"".join(f"{k}: {v}\r\n".encode() for k, v in headers.items())
        + b"\r\n",
    )
    head, _, body = answer.partition(b"\r\n\r\n")
    assert statuses(head) == [304] and body == b""
    fields = {line.split(b":")[0].lower() for line in head.split(b"\r\n")[1:]}
    assert {b"etag", b"last-modified", b"cache-control", b"date"} <= fields
    assert b"content-length" not in fields  # RFC 9110 §8.6: not unless it is the 200's length


@pytest.mark.parametrize(
    "headers",
    [
        {"If-None-Match": '"other"'},
        {"If-None-Match": '"other"', "If-Modified-Since": LAST_MODIFIED},  # §13.2.2: INM wins
        {"If-Modified-Since": formatdate(1_600_000_000, usegmt=True)},
        {"If-Modified-Since": "Mon, 99 Foo 99999 99:99:99 GMT"},
        {"If-Modified-Since": "x" * 4000},
        {"If-None-Match": '"unterminated'},
    ],
)
def test_modified_or_unparsable_conditions_send_the_body(
    served: tuple[HttpServer, Handler], blob: Path, headers: dict[str, str]
) -> None:
    server, _ = served
    got = httpx.get(url(server, "/blob"), headers=headers, timeout=10)
    assert got.status_code == 200 and got.content == blob.read_bytes()


def test_if_match_failure_is_412(served: tuple[HttpServer, Handler]) -> None:
    server, _ = served
    assert httpx.get(url(server, "/blob"), headers={"If-Match": '"other"'}).status_code == 412
    assert httpx.head(url(server, "/blob"), headers={"If-Match": ETAG}).status_code == 200


# --- Expect: 100-continue (RFC 9110 §10.1.1) ---------------------------------------------


def test_expect_100_continue_is_answered_before_the_body(served: tuple[HttpServer, Handler]) -> None:
    server, _ = served
    with socket.create_connection(server.address, timeout=5) as sock:
        sock.sendall(b"PUT /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
        interim = b""
        while b"\r\n\r\n" not in interim:
            interim += sock.recv(65536)
        assert interim.startswith(b"HTTP/1.1 100 ")
        sock.sendall(b"abc")
        final = interim.partition(b"\r\n\r\n")[2]
        while not final.endswith(b"}"):
            final += sock.recv(65536)
    assert statuses(final) == [200] and json.loads(final.partition(b"\r\n\r\n")[2])["body"] == 3


def test_expect_100_continue_for_a_body_too_large_gets_413_at_once(
    served: tuple[HttpServer, Handler],
) -> None:
    server, _ = served
    answer = raw(
        server, b"PUT /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5000\r\n\r\n"
    )
    assert statuses(answer) == [413]


# --- malformed requests -------------------------------------------------------------------

GET_TAIL = b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


@pytest.mark.parametrize(
    ("request_bytes", "allowed"),
    [
        (b"GET http://[::1/echo" + GET_TAIL, {400}),
        (b"GET //[x/echo" + GET_TAIL, {400}),
        (b"GET http://x/echo" + GET_TAIL, {200}),
        (b"OPTIONS *" + GET_TAIL, {200}),
        (b"CONNECT [::1:443" + GET_TAIL, {200, 400}),
        (b"GET /echo\x00" + GET_TAIL, {400}),
        (b"GET /\xe9\xff" + GET_TAIL, {400}),
        (b"GET /%ff" + GET_TAIL, {400}),
        (b"GET /echo HTTP/1.1\r\nHost: x\r\nX-A: caf\xe9\xff\r\nConnection: close\r\n\r\n", {200}),
        (b"GET /echo HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\nConnection: close\r\n\r\n", {400}),
        (b"GET /echo HTTP/1.1\r\nHost: x\r\nX-\xe9: a\r\nConnection: close\r\n\r\n", {400}),
        (b"X" * 5000 + b" /echo" + GET_TAIL, {200}),
        (b"G\xc3\x89T /echo" + GET_TAIL, {400}),
        (b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 20000 + b"\r\n\r\n", {431}),
        (b"GET /" + b"a" * 20000 + GET_TAIL, {431}),
        (b"GET /echo\r\n\r\n", {400}),
        (b"GET /echo HTTP/2.0\r\nHost: x\r\n\r\n", {505}),
        (b"GET /echo HTTP/0.9\r\nHost: x\r\n\r\n", {505}),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", {505}),
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n", {413}),
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999999999999999\r\n\r\n", {400}),
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", {400}),
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", {400}),
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", {400, 501}),
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n", {400}),
        (
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + b"F" * 21 + b"\r\n",
            {400},
        ),
        (
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + b"F" * 20 + b"\r\nabc",
            {408, 413},
        ),
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1;" + b"e" * 20000, {431}),
        (b"GET /echo HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", {400}),
        (b"GET /echo HTTP/1.1\r\n\r\n", {400}),
        (
            b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, close, upgrade\r\n"
            b"Upgrade: h2c\r\n\r\n",
            {200},
        ),
        (b"GET /echo HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", {200}),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)) * 4, {400}),
        (struct.pack(">I", 0xFFFFFFFF) * 1000 + b"\r\n\r\n", {400, 431}),
    ],
)
def test_malformed_requests_get_a_4xx_or_an_answer_never_a_500(
    served: tuple[HttpServer, Handler], request_bytes: bytes, allowed: set[int]
) -> None:
    server, _ = served
    answer = raw(server, request_bytes)
    got = statuses(answer[: answer.find(b"\r\n") + 2])
    assert got and got[0] in allowed, answer[:300]
    healthy(server)


def test_a_response_header_h11_refuses_becomes_a_500_not_a_dropped_connection(
    served: tuple[HttpServer, Handler],
) -> None:
    server, _ = served
    with httpx.Client() as client:
        got = client.get(url(server, "/bad-header"))
        assert got.status_code == 500 and "set-cookie" not in got.headers
        assert client.get(url(server, "/echo")).status_code == 200  # the same connection goes on


def test_client_gone_mid_response_frees_its_worker(served: tuple[HttpServer, Handler]) -> None:
    server, _ = served
    for _ in range(4 * 3):  # three times the workers
        with socket.create_connection(server.address, timeout=10) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.sendall(b"GET /blob HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(1024).startswith(b"HTTP/1.1 200")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # reset on close
    healthy(server)


def test_a_pipelining_flood_is_answered_in_order(served: tuple[HttpServer, Handler]) -> None:
    server, handler = served
    requests = b"".join(f"GET /echo/{i} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for i in range(2000))
    requests += b"GET /echo/last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with socket.create_connection(server.address, timeout=10) as sock:
        # Send while reading, so neither side's buffers fill up and stall the other.
        sender = threading.Thread(target=sock.sendall, args=(requests,))
        sender.start()
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        sender.join(10)
    assert statuses(answer) == [200] * 2001
    assert handler.seen == [f"GET /echo/{i}" for i in range(2000)] + ["GET /echo/last"]
    healthy(server)


def test_a_request_after_connection_close_is_not_answered(served: tuple[HttpServer, Handler]) -> None:
    server, handler = served
    answer = raw(
        server, b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    assert statuses(answer) == [200] and handler.seen == ["GET /a"]
