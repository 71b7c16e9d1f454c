"""Stream bodies over the real h11 server: pieces go out as they are produced, and a
stream that fails mid-way closes the connection, so the client sees a short body."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import httpx
import pytest

from pyrsia.errors import ExchangeFailed, PyrsiaError
from pyrsia.http.message import Request, Response, StreamBody, json_response
from pyrsia.http.server import HttpServer, Limits

PIECE = b"x" * 65536


class Handler:
    def __init__(self) -> None:
        self.more = threading.Event()

    def handle(self, request: Request) -> Response:
        if request.path == "/stream":
            return Response(body=StreamBody(3 * len(PIECE), self._gated), ranges=True)
        if request.path == "/broken":
            return Response(body=StreamBody(3 * len(PIECE), self._broken))
        if request.path == "/short":
            return Response(body=StreamBody(3 * len(PIECE), lambda: iter([PIECE])))
        raise PyrsiaError("boom")

    def _gated(self) -> Iterator[bytes]:
        yield PIECE
        if not self.more.wait(30):
            raise ExchangeFailed("never released")
        yield PIECE
        yield PIECE

    @staticmethod
    def _broken() -> Iterator[bytes]:
        yield PIECE
        raise ExchangeFailed("the download failed")

    def render_error(self, request: Request | None, error: PyrsiaError) -> Response:
        return json_response(error.http_status, json.dumps({"code": error.code}).encode())


@pytest.fixture
def served() -> Iterator[tuple[str, Handler]]:
    handler = Handler()
    server = HttpServer(handler, "127.0.0.1", 0, Limits(workers_max=4))
    server.start()
    host, port = server.address
    yield f"http://{host}:{port}", handler
    handler.more.set()
    server.shutdown(5)


def test_the_first_piece_arrives_before_the_rest_is_produced(served: tuple[str, Handler]) -> None:
    base, handler = served
    with httpx.Client(timeout=30) as client, client.stream("GET", f"{base}/stream") as response:
        assert response.status_code == 200
        assert response.headers["content-length"] == str(3 * len(PIECE))
        pieces = response.iter_raw()
        got = b""
        while len(got) < len(PIECE):
            got += next(pieces)
        assert got == PIECE  # arrived while the stream still waits for `more`
        handler.more.set()
        got += b"".join(pieces)
    assert got == 3 * PIECE


def test_a_range_on_a_stream_is_served_whole(served: tuple[str, Handler]) -> None:
    base, handler = served
    handler.more.set()
    response = httpx.get(f"{base}/stream", headers={"Range": "bytes=0-9"}, timeout=30)
    assert response.status_code == 200 and response.content == 3 * PIECE


def test_head_of_a_stream_sends_no_body(served: tuple[str, Handler]) -> None:
    base, _ = served
    response = httpx.head(f"{base}/stream", timeout=30)
    assert response.status_code == 200 and response.headers["content-length"] == str(3 * len(PIECE))


@pytest.mark.parametrize("path", ["/broken", "/short"])
def test_a_stream_that_fails_or_ends_short_closes_the_connection(
    served: tuple[str, Handler], path: str
) -> None:
    base, _ = served
    got = b""
    with httpx.Client(timeout=30) as client:
        with pytest.raises(httpx.RemoteProtocolError), client.stream("GET", f"{base}{path}") as response:
            for data in response.iter_raw():
                got += data
        assert got == PIECE  # the bytes produced, nothing more
