"""Request and response values passed between the HTTP server and the front ends.

Front ends (Docker registry, Maven, node API) are functions from `Request` to
`Response` and never see a socket. A response body is bytes, a `FileBody`
(a slice of a file on disk that the server sends with `socket.sendfile`, so blob
serving costs no Python-level copying and memory stays flat whatever the size), or a
`StreamBody`: a known length whose bytes are produced piece by piece while the
response is sent (a blob still downloading). A stream that raises, or ends short,
makes the server close the connection: the client sees a short body, never a wrong one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path


@dataclass(frozen=True, slots=True)
class FileBody:
    path: Path
    offset: int
    length: int

    def __len__(self) -> int:
        return self.length


@dataclass(frozen=True, slots=True)
class StreamBody:
    """`length` bytes from `pieces()`, called once when the body is sent (not for HEAD, 304)."""

    length: int
    pieces: Callable[[], Iterator[bytes]]

    def __len__(self) -> int:
        return self.length


Body = bytes | FileBody | StreamBody


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    method: str
    target: str
    path: str
    query: dict[str, str] = field(default_factory=dict)
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    peer: str = ""

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k == name), None)

    def header_values(self, name: str) -> list[str]:
        """Every value of a header, split on commas.

        Go clients send `Accept` as several header lines; keeping only one of them
        breaks content negotiation, so all lines are read.
        """
        name = name.lower()
        return [part.strip() for k, v in self.headers if k == name for part in v.split(",") if part.strip()]


@dataclass(frozen=True, slots=True, kw_only=True)
class Response:
    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    body: Body = b""
    # The body may be served partially when the request carries a single Range.
    ranges: bool = False

    def with_headers(self, *extra: tuple[str, str]) -> Response:
        return replace(self, headers=self.headers + extra)


def json_response(status: int, body: bytes, *extra: tuple[str, str]) -> Response:
    return Response(status=status, headers=(("Content-Type", "application/json"), *extra), body=body)
