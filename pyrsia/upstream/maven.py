"""Client for an upstream Maven repository (Maven Central by default).

A file is streamed into a sink (the blob store's writer) while every checksum Maven clients may ask
for is computed (sha1, md5, sha256, sha512). When the upstream publishes a checksum
for the file (`.sha256`, else `.sha1`), the bytes must match it or nothing is stored.
A file is cut off past `file_bytes_max` (refused before reading when its
`Content-Length` already says more), and its download has a deadline and a rate floor
like every upstream fetch (`upstream.http`). The upstream's `Last-Modified` comes back
with the file, as epoch seconds, for the node to serve on.
A directory's HTML listing (`listing`) is read, bounded, for the node's own listings.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime

import httpx

from pyrsia.errors import DigestMismatch, MavenFileUnknown
from pyrsia.formats.digest import Digest
from pyrsia.upstream.http import (
    DEADLINE_S,
    RATE_MIN_BYTES_S,
    RETRIES_MAX,
    TIMEOUT_S,
    Clock,
    Deadline,
    UpstreamHttp,
)
from pyrsia.upstream.sink import OpenSink

CHECKSUM_BYTES_MAX = 1024
FILE_BYTES_MAX = 4 * 1024**3
LISTING_BYTES_MAX = 8 * 1024 * 1024
# Checked in order; the first one the upstream publishes decides.
PUBLISHED_CHECKSUMS = ("sha256", "sha1")
_HEX = {"sha1": 40, "md5": 32, "sha256": 64, "sha512": 128}


@dataclass(frozen=True, slots=True)
class FetchedFile:
    digest: Digest
    size: int
    checksums: dict[str, str]
    verified_with: str | None
    committed: object  # what the sink's commit() returned
    last_modified: float | None = None  # epoch seconds of the upstream's Last-Modified, if it sent one


class MavenClient:
    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = TIMEOUT_S,
        retries_max: int = RETRIES_MAX,
        deadline_s: float = DEADLINE_S,
        request_deadline_s: float | None = None,
        rate_min_bytes_s: float = RATE_MIN_BYTES_S,
        rate_window_s: float | None = None,
        file_bytes_max: int = FILE_BYTES_MAX,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Clock = time.monotonic,
    ) -> None:
        self._http = UpstreamHttp(
            base_url,
            timeout_s=timeout_s,
            retries_max=retries_max,
            deadline_s=deadline_s,
            request_deadline_s=request_deadline_s,
            rate_min_bytes_s=rate_min_bytes_s,
            rate_window_s=rate_window_s,
            transport=transport,
            sleep=sleep,
            clock=clock,
        )
        self.base_url = self._http.base_url
        self.file_bytes_max = file_bytes_max

    def close(self) -> None:
        self._http.close()

    def fetch(self, path: str, open_sink: OpenSink) -> FetchedFile:
        """Download one file of the repository into a sink, checked against its published checksum.

        The sink must compute every algorithm of `CHECKSUMS`; it is stored under its sha256.
        """
        published = self._published_checksum(path)
        url = f"{self.base_url}/{path}"
        deadline = self._http.transfer_deadline(f"{self._http.where}: {path}", None)

        def attempt() -> FetchedFile:
            sink = open_sink()
            try:
                with self._http.stream("GET", url, {}, deadline) as response:
                    if response.status_code == 404:
                        raise MavenFileUnknown(f"{self._http.where} has no {path}")
                    self._http.check_status(response, url)
                    length = response.headers.get("Content-Length", "")
                    if length.isascii() and length.isdigit():  # a big file gets the time its size needs
                        deadline.stretch(
                            self._http.deadline_s + min(int(length), self.file_bytes_max) / 2**20
                        )
                    for chunk in self._http.iter_body(
                        response, url, limit_bytes=self.file_bytes_max, deadline=deadline
                    ):
                        sink.write(chunk)
                    self._http.check_length(response, sink.size, url)
                    modified = last_modified(response.headers.get("Last-Modified"))
                sums = sink.hexdigests()
                if published is not None:
                    algorithm, expected = published
                    if sums[algorithm] != expected:
                        raise DigestMismatch(
                            expected=f"{algorithm}:{expected}",
                            calculated=f"{algorithm}:{sums[algorithm]}",
                            source=f"{self._http.where} ({path})",
                        )
                committed = sink.commit()
            except BaseException:
                sink.abort()
                raise
            return FetchedFile(
                Digest("sha256", sums["sha256"]),
                sink.size,
                sums,
                published[0] if published else None,
                committed,
                modified,
            )

        return self._http.with_retries(attempt, deadline)

    def listing(self, directory: str) -> tuple[str, str] | None:
        """The upstream's HTML listing of `directory` (ending in `/`) and the URL it came
        from after redirects; None when it has no such directory or lists it in another
        format. At most `LISTING_BYTES_MAX` bytes are read."""
        url = f"{self.base_url}/{directory}"
        deadline = self._http.request_deadline(f"{self._http.where}: listing of {directory}")

        def attempt() -> tuple[str, str] | None:
            with self._http.stream("GET", url, {"Accept": "text/html"}, deadline) as response:
                if response.status_code == 404:
                    return None
                self._http.check_status(response, url)
                if "html" not in response.headers.get("Content-Type", "text/html").lower():
                    return None
                body = self._http.read_bounded(response, LISTING_BYTES_MAX, url, deadline)
                # Entries are ASCII path segments; any other byte cannot make one valid.
                return body.decode("utf-8", "replace"), str(response.url)

        return self._http.with_retries(attempt, deadline)

    def _published_checksum(self, path: str) -> tuple[str, str] | None:
        for algorithm in PUBLISHED_CHECKSUMS:
            url = f"{self.base_url}/{path}.{algorithm}"
            deadline = self._http.request_deadline(f"{self._http.where}: {path}.{algorithm}")

            def attempt(url: str = url, deadline: Deadline = deadline) -> bytes | None:
                with self._http.stream("GET", url, {}, deadline) as response:
                    if response.status_code == 404:
                        return None
                    self._http.check_status(response, url)
                    return self._http.read_bounded(response, CHECKSUM_BYTES_MAX, url, deadline)

            body = self._http.with_retries(attempt, deadline)
            if body is not None:
                return algorithm, _parse_checksum(body, algorithm, url)
        return None


def last_modified(header: str | None) -> float | None:
    """RFC 9110 §8.8.2 `Last-Modified` as epoch seconds; None when absent or unreadable."""
    if not header:
        return None
    try:
        when = parsedate_to_datetime(header)
        if when.tzinfo is None:  # RFC 5322's "-0000": UTC, origin unknown
            when = when.replace(tzinfo=UTC)
        return when.timestamp()
    except (ValueError, TypeError, IndexError, OverflowError):
        return None


def _parse_checksum(body: bytes, algorithm: str, url: str) -> str:
    """The hex digest in a sidecar; tools write `hex`, `hex  filename` or `SHA1(file)= hex`."""
    text = body.decode("ascii", "replace").strip().lower()
    for token in re.split(r"[\s=]+", text):
        if len(token) == _HEX[algorithm] and all(c in "0123456789abcdef" for c in token):
            return token
    raise DigestMismatch(expected=f"{algorithm} sidecar", calculated=f"unreadable {text[:80]!r}", source=url)
