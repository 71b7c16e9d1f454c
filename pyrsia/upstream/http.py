"""HTTP plumbing shared by the upstream clients: deadlines, rate floor, bounded retries and reads.

Every fetch has an overall `Deadline`, all attempts and backoff sleeps included:
`deadline_s` (scaled by the expected size) for a blob or file, `request_deadline_s`
for the small things (manifests, tokens, tag pages, checksum sidecars). Each read
waits at most `timeout_s`, and never past the deadline. A body that arrives slower
than `rate_min_bytes_s`, averaged over each `rate_window_s` once the headers are in,
is cut (`RateFloor`), so a dripping upstream holds a worker for seconds, not hours.
Both end in `UpstreamTimeout` (504).

Failures worth another attempt (connection errors, read timeouts, truncated bodies,
408, 429 and 5xx) are retried a bounded number of times with capped exponential
backoff; anything else fails at once. Bodies are read with a byte limit
(`UpstreamSizeInvalid` past it, before reading when `Content-Length` already says so).
httpx errors never leave the `upstream` package: every `httpx.HTTPError` (and
`httpx.InvalidURL`) is mapped here, at the edge, to `UpstreamUnavailable` (retries
exhausted) or `UpstreamError` (redirect loops, undecodable bodies, bad URLs).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import httpx

from pyrsia import __version__
from pyrsia.errors import UpstreamError, UpstreamSizeInvalid, UpstreamTimeout, UpstreamUnavailable
from pyrsia.upstream.transport import IDLE_S_MAX, PooledTransport, PoolStats, pooled_transport

log = logging.getLogger("pyrsia.upstream")

T = TypeVar("T")
Clock = Callable[[], float]
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
DENIAL_BYTES_MAX = 4096  # a refusal's error JSON worth reading; a longer one is not shown
DENIAL_CHARS_MAX = 300
BACKOFF_S_FIRST = 0.2
BACKOFF_S_MAX = 2.0
CONNECT_TIMEOUT_S_MAX = 10.0
# Connections to one upstream, open at once and kept idle for reuse: as many as the node's
# HTTP workers and verifiers fetch through at once (httpx keeps 20 idle by default, so under
# load most fetches paid a new TCP connection, and the upstream a closed one). A fetch past
# the cap waits for a connection, at most its read timeout. `transport.py` keeps these
# bounds; httpx's own transport (with a proxy) is given the same.
UPSTREAM_CONNECTIONS_MAX = 100
UPSTREAM_LIMITS = httpx.Limits(
    max_connections=UPSTREAM_CONNECTIONS_MAX,
    max_keepalive_connections=UPSTREAM_CONNECTIONS_MAX,
    keepalive_expiry=IDLE_S_MAX,
)
# Defaults of the limits every client takes as constructor parameters (and a node as settings).
TIMEOUT_S = 60.0
RETRIES_MAX = 3
DEADLINE_S = 600.0
RATE_MIN_BYTES_S = 10 * 1024
RATE_WINDOW_S_MAX = 30.0
# A blob's deadline grows past `deadline_s` by its size at this rate, so big layers get time.
DEADLINE_GRANT_BYTES_S = 1024 * 1024


class Retryable(Exception):
    """A failure worth another attempt."""


class Deadline:
    """The moment one fetch, every attempt included, must be done by."""

    def __init__(self, seconds: float, what: str, clock: Clock) -> None:
        self._clock = clock
        self._start = clock()
        self._at = self._start + seconds
        self.what = what

    def remaining(self) -> float:
        return self._at - self._clock()

    def left(self) -> float:
        """Seconds left; `UpstreamTimeout` when none are."""
        left = self.remaining()
        if left <= 0:
            raise UpstreamTimeout(f"{self.what}: deadline passed")
        return left

    def stretch(self, seconds: float) -> None:
        """Allow up to `seconds` from the start, if that is later (a size became known)."""
        self._at = max(self._at, self._start + seconds)


class RateFloor:
    """Fails a transfer whose average rate over a window drops below the floor.

    Windows are consecutive: each closes at the first chunk that arrives `window_s` or
    more after it opened, and must have averaged `rate_min_bytes_s`. A body that stops
    altogether is the read timeout's business.
    """

    def __init__(self, rate_min_bytes_s: float, window_s: float, now: float) -> None:
        self._rate_min = rate_min_bytes_s
        self._window_s = window_s
        self._opened = now
        self._opened_bytes = 0

    def observe(self, total_bytes: int, now: float, what: str) -> None:
        elapsed = now - self._opened
        if elapsed < self._window_s or self._rate_min <= 0:
            return
        rate = (total_bytes - self._opened_bytes) / elapsed
        if rate < self._rate_min:
            raise UpstreamTimeout(
                f"{what}: {rate:.0f} bytes/s over {elapsed:.1f} s, below the floor of {self._rate_min:.0f}",
                detail={"rate_bytes_s": round(rate), "rate_min_bytes_s": self._rate_min},
            )
        self._opened, self._opened_bytes = now, total_bytes


class UpstreamHttp:
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
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Clock = time.monotonic,
        role: str = "upstream",
    ) -> None:
        self.base_url = base_url.rstrip("/")
        # Errors name what was asked: the node's upstream, or (from the CLI) the node itself.
        self.where = f"{role} {self.base_url}"
        self.timeout_s = timeout_s
        self.retries_max = retries_max
        self.deadline_s = deadline_s
        # Unset, both follow the read timeout: a small fetch gets one read timeout in all,
        # and the rate is judged no sooner than a silent upstream would be given up on.
        self.request_deadline_s = timeout_s if request_deadline_s is None else request_deadline_s
        self.rate_min_bytes_s = rate_min_bytes_s
        self.rate_window_s = min(RATE_WINDOW_S_MAX, timeout_s) if rate_window_s is None else rate_window_s
        self._sleep = sleep
        self.clock = clock
        if transport is None:
            transport = pooled_transport(UPSTREAM_LIMITS)
        self._pool = transport if isinstance(transport, PooledTransport) else None
        self.client = httpx.Client(
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, CONNECT_TIMEOUT_S_MAX)),
            follow_redirects=True,
            headers={"User-Agent": f"pyrsia/{__version__}"},
            # Ours unless a test gives one, or a proxy in the environment needs httpx's own.
            transport=transport,
            limits=UPSTREAM_LIMITS,  # binds httpx's own transport, when a proxy needs it
        )

    def close(self) -> None:
        self.client.close()

    def pool_stats(self) -> PoolStats | None:
        """The connections to this upstream; None when httpx's own pool holds them (a proxy)."""
        return None if self._pool is None else self._pool.stats()

    def request_deadline(self, what: str) -> Deadline:
        return Deadline(self.request_deadline_s, what, self.clock)

    def transfer_seconds(self, size_bytes: int | None) -> float:
        """The deadline of a blob or file transfer of this size (unknown: the base alone)."""
        return self.deadline_s + (size_bytes or 0) / DEADLINE_GRANT_BYTES_S

    def transfer_deadline(self, what: str, size_bytes: int | None) -> Deadline:
        return Deadline(self.transfer_seconds(size_bytes), what, self.clock)

    @contextmanager
    def stream(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        deadline: Deadline,
        content: bytes | None = None,
    ) -> Iterator[httpx.Response]:
        """One request; httpx errors raised while it (or its body) is read are mapped here."""
        wait_s = min(self.timeout_s, deadline.left())
        timeout = httpx.Timeout(wait_s, connect=min(wait_s, CONNECT_TIMEOUT_S_MAX))
        try:
            with self.client.stream(
                method, url, headers=headers, content=content, timeout=timeout
            ) as response:
                yield response
        except httpx.TransportError as exc:  # connect, timeouts, resets, truncation, bad Location
            raise Retryable(f"{url}: {type(exc).__name__}: {exc}") from exc
        except httpx.HTTPError as exc:  # TooManyRedirects, DecodingError: the upstream's doing
            raise UpstreamError(f"{self.where}: {url}: {type(exc).__name__}: {exc}") from exc
        except httpx.InvalidURL as exc:
            raise UpstreamError(f"{self.where}: {url}: invalid URL: {exc}") from exc

    def check_status(self, response: httpx.Response, url: str) -> None:
        if response.status_code in RETRY_STATUSES:
            raise Retryable(f"{url}: HTTP {response.status_code}")
        if response.status_code == 401:
            raise UpstreamError(f"{url}: upstream refused anonymous access (401)")
        if response.status_code == 403:  # DENIED: the spec's error JSON says why, in one line
            raise UpstreamError(f"{url}: refused (403){_denial_reason(response)}")
        if response.status_code != 200:
            raise UpstreamError(f"{url}: unexpected HTTP {response.status_code}")

    def iter_body(
        self, response: httpx.Response, url: str, *, limit_bytes: int | None, deadline: Deadline
    ) -> Iterator[bytes]:
        """The decoded body as it arrives, cut at `limit_bytes`, the deadline or the rate floor."""
        declared = _content_length(response)
        if (
            limit_bytes is not None
            and declared is not None
            and declared > limit_bytes
            and not _encoded(response)
        ):
            raise UpstreamSizeInvalid(
                f"{url}: Content-Length {declared} is more than the {limit_bytes} bytes allowed",
                detail={"declared": declared, "limit": limit_bytes},
            )
        floor = RateFloor(self.rate_min_bytes_s, self.rate_window_s, self.clock())
        total = 0
        # No chunk size: httpx then yields bytes as they arrive, so every check below runs
        # even when an upstream drips a byte at a time.
        for chunk in response.iter_bytes():
            total += len(chunk)
            if limit_bytes is not None and total > limit_bytes:
                raise UpstreamSizeInvalid(
                    f"{url}: body is more than the {limit_bytes} bytes allowed", detail={"limit": limit_bytes}
                )
            deadline.left()
            if declared is None or max(total, response.num_bytes_downloaded) < declared:
                floor.observe(total, self.clock(), url)  # a body that is all in needs no rate
            yield chunk

    def read_bounded(self, response: httpx.Response, limit_bytes: int, url: str, deadline: Deadline) -> bytes:
        body = b"".join(self.iter_body(response, url, limit_bytes=limit_bytes, deadline=deadline))
        self.check_length(response, len(body), url)
        return body

    def check_length(self, response: httpx.Response, received: int, url: str) -> None:
        """A body shorter than its Content-Length was cut off: worth another try.

        `received` counts decoded bytes; with a Content-Encoding the length is of the
        encoded body, which httpx counts as it downloads.
        """
        expected = _content_length(response)
        if expected is not None and _encoded(response):
            received = response.num_bytes_downloaded
        if expected is not None and expected != received:
            raise Retryable(f"{url}: body ended after {received} of {expected} bytes")

    def with_retries(self, attempt: Callable[[], T], deadline: Deadline) -> T:
        failures: list[str] = []
        for tries in range(self.retries_max + 1):
            try:
                deadline.left()
                return attempt()
            except Retryable as exc:
                failures.append(str(exc))
                log.warning("%s (attempt %d of %d)", exc, tries + 1, self.retries_max + 1)
                if tries < self.retries_max:
                    self._sleep(
                        max(0.0, min(BACKOFF_S_FIRST * 2**tries, BACKOFF_S_MAX, deadline.remaining()))
                    )
            except UpstreamTimeout as exc:
                if failures:
                    exc.detail = failures
                raise
        raise UpstreamUnavailable(f"{self.where} failed: {failures[-1]}", detail=failures)


def _content_length(response: httpx.Response) -> int | None:
    raw = response.headers.get("Content-Length", "").strip()
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 20 else None


def _encoded(response: httpx.Response) -> bool:
    return response.headers.get("Content-Encoding", "").strip().lower() not in ("", "identity")


def _denial_reason(response: httpx.Response) -> str:
    """`: MESSAGE` from a refusal's distribution-spec error JSON (`{"errors": [{"message"}]}`),
    read no further than `DENIAL_BYTES_MAX` and flattened to one line; else nothing."""
    body = b""
    try:
        for chunk in response.iter_bytes():
            body += chunk
            if len(body) > DENIAL_BYTES_MAX:
                return ""
        message = json.loads(body)["errors"][0]["message"]
    except (httpx.HTTPError, httpx.StreamError, ValueError, KeyError, IndexError, TypeError):
        return ""
    text = " ".join(str(message).split())[:DENIAL_CHARS_MAX]
    return f": {text}" if text else ""
