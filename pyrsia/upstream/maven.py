"""Client for an upstream Maven repository (Maven Central by default).

A file is streamed into a sink (the blob store's writer) while every checksum Maven clients may ask
for is computed (sha1, md5, sha256, sha512). When the upstream publishes a checksum
for the file (`.sha256`, else `.sha1`), the bytes must match it or nothing is stored.
A directory's HTML listing (`listing`) is read, bounded, for the node's own listings.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from pyrsia.errors import DigestMismatch, MavenFileUnknown
from pyrsia.formats.digest import Digest
from pyrsia.upstream.http import UpstreamHttp
from pyrsia.upstream.sink import OpenSink

CHECKSUM_BYTES_MAX = 1024
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


class MavenClient:
    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 60.0,
        retries_max: int = 3,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._http = UpstreamHttp(
            base_url, timeout_s=timeout_s, retries_max=retries_max, transport=transport, sleep=sleep
        )
        self.base_url = self._http.base_url

    def close(self) -> None:
        self._http.close()

    def fetch(self, path: str, open_sink: OpenSink) -> FetchedFile:
        """Download one file of the repository into a sink, checked against its published checksum.

        The sink must compute every algorithm of `CHECKSUMS`; it is stored under its sha256.
        """
        published = self._published_checksum(path)
        url = f"{self.base_url}/{path}"

        def attempt() -> FetchedFile:
            sink = open_sink()
            try:
                with self._http.stream("GET", url, {}) as response:
                    if response.status_code == 404:
                        raise MavenFileUnknown(f"{self._http.where} has no {path}")
                    self._http.check_status(response, url)
                    for chunk in self._http.iter_body(response, url):
                        sink.write(chunk)
                    self._http.check_length(response, sink.size, url)
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
            )

        return self._http.with_retries(attempt)

    def listing(self, directory: str) -> tuple[str, str] | None:
        """The upstream's HTML listing of `directory` (ending in `/`) and the URL it came
        from after redirects; None when it has no such directory or lists it in another
        format. At most `LISTING_BYTES_MAX` bytes are read."""
        url = f"{self.base_url}/{directory}"

        def attempt() -> tuple[str, str] | None:
            with self._http.stream("GET", url, {"Accept": "text/html"}) as response:
                if response.status_code == 404:
                    return None
                self._http.check_status(response, url)
                if "html" not in response.headers.get("Content-Type", "text/html").lower():
                    return None
                body = self._http.read_bounded(response, LISTING_BYTES_MAX, url)
                self._http.check_length(response, len(body), url)
                # Entries are ASCII path segments; any other byte cannot make one valid.
                return body.decode("utf-8", "replace"), str(response.url)

        return self._http.with_retries(attempt)

    def _published_checksum(self, path: str) -> tuple[str, str] | None:
        for algorithm in PUBLISHED_CHECKSUMS:
            url = f"{self.base_url}/{path}.{algorithm}"

            def attempt(url: str = url) -> bytes | None:
                with self._http.stream("GET", url, {}) as response:
                    if response.status_code == 404:
                        return None
                    self._http.check_status(response, url)
                    return self._http.read_bounded(response, CHECKSUM_BYTES_MAX, url)

            body = self._http.with_retries(attempt)
            if body is not None:
                return algorithm, _parse_checksum(body, algorithm, url)
        return None


def _parse_checksum(body: bytes, algorithm: str, url: str) -> str:
    """The hex digest in a sidecar; tools write `hex`, `hex  filename` or `SHA1(file)= hex`."""
    text = body.decode("ascii", "replace").strip().lower()
    for token in re.split(r"[\s=]+", text):
        if len(token) == _HEX[algorithm] and all(c in "0123456789abcdef" for c in token):
            return token
    raise DigestMismatch(expected=f"{algorithm} sidecar", calculated=f"unreadable {text[:80]!r}", source=url)
