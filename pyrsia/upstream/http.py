"""HTTP plumbing shared by the upstream clients: timeouts, bounded retries, bounded reads.

Failures worth another attempt (connection errors, timeouts, truncated bodies, 408,
429 and 5xx) are retried a bounded number of times with capped exponential backoff;
anything else fails at once. httpx errors never leave the `upstream` package: callers
see `UpstreamUnavailable` (retries exhausted) or `UpstreamError`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import httpx

from pyrsia import __version__
from pyrsia.errors import UpstreamError, UpstreamUnavailable

log = logging.getLogger("pyrsia.upstream")

T = TypeVar("T")
CHUNK_BYTES = 1024 * 1024
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
BACKOFF_S_FIRST = 0.2
BACKOFF_S_MAX = 2.0


class Retryable(Exception):
    """A failure worth another attempt."""


class UpstreamHttp:
    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 60.0,
        retries_max: int = 3,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.where = f"upstream {self.base_url}"
        self._retries_max = retries_max
        self._sleep = sleep
        self.client = httpx.Client(
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0)),
            follow_redirects=True,
            headers={"User-Agent": f"pyrsia/{__version__}"},
            transport=transport,
        )

    def close(self) -> None:
        self.client.close()

    @contextmanager
    def stream(self, method: str, url: str, headers: dict[str, str]) -> Iterator[httpx.Response]:
        try:
            with self.client.stream(method, url, headers=headers) as response:
                yield response
        except httpx.TransportError as exc:
            raise Retryable(f"{url}: {type(exc).__name__}: {exc}") from exc

    def check_status(self, response: httpx.Response, url: str) -> None:
        if response.status_code in RETRY_STATUSES:
            raise Retryable(f"{url}: HTTP {response.status_code}")
        if response.status_code == 401:
            raise UpstreamError(f"{url}: upstream refused anonymous access (401)")
        if response.status_code != 200:
            raise UpstreamError(f"{url}: unexpected HTTP {response.status_code}")

    def iter_body(self, response: httpx.Response, url: str) -> Iterator[bytes]:
        try:
            yield from response.iter_bytes(CHUNK_BYTES)
        except httpx.TransportError as exc:
            raise Retryable(f"{url}: body interrupted: {exc}") from exc

    def read_bounded(self, response: httpx.Response, limit: int, url: str) -> bytes:
        chunks: list[bytes] = []
        size = 0
        for chunk in self.iter_body(response, url):
            size += len(chunk)
            if size > limit:
                raise UpstreamError(f"{url}: response larger than {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def check_length(self, response: httpx.Response, received: int, url: str) -> None:
        """A body shorter than its Content-Length was cut off: worth another try."""
        expected = response.headers.get("Content-Length")
        if expected is not None and expected.isdigit() and int(expected) != received:
            raise Retryable(f"{url}: body ended after {received} of {expected} bytes")

    def with_retries(self, attempt: Callable[[], T]) -> T:
        failures: list[str] = []
        for tries in range(self._retries_max + 1):
            try:
                return attempt()
            except Retryable as exc:
                failures.append(str(exc))
                log.warning("%s (attempt %d of %d)", exc, tries + 1, self._retries_max + 1)
                if tries < self._retries_max:
                    self._sleep(min(BACKOFF_S_FIRST * 2**tries, BACKOFF_S_MAX))
        raise UpstreamUnavailable(f"{self.where} failed: {failures[-1]}", detail=failures)
