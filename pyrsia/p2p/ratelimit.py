"""Bandwidth and peer limits for the exchange — pure: time is an input, waiting is the caller's.

`TokenBucket` enforces `max_upload_rate` / `max_download_rate` (bytes per second, 0 =
unlimited). A sender reserves the bytes it is about to send and is told how long to
wait first; the bucket may go into debt, so a piece larger than the burst still goes
out, just later. Whatever the reservations, the bytes released in any interval of T
seconds are at most `burst_bytes + rate_bytes_s * T` (the classic token-bucket bound),
so with a burst of a fraction of a second a 5-second window stays within a few
percent of the cap.

`PeerSlots` enforces `max_upload_peers`: how many distinct peers are served at once
(0 = unlimited). A peer holding a slot may open more streams without taking another.

`prune_window` keeps a sliding window of event times (requests per minute and the
like), as every per-peer request rate of the behaviours counts them.

Neither class locks; the shell that shares one between threads does.
"""

from __future__ import annotations

from collections import deque

BURST_S = 0.1  # default burst: a tenth of a second of traffic
BURST_BYTES_MIN = 64 * 1024


def prune_window(stamps: deque[float], now_s: float, window_s: float) -> deque[float]:
    """Drop the times older than `window_s` from the left of `stamps` (oldest first); returns it."""
    while stamps and now_s - stamps[0] > window_s:
        stamps.popleft()
    return stamps


class TokenBucket:
    def __init__(self, *, rate_bytes_s: int, burst_bytes: int | None = None) -> None:
        if rate_bytes_s < 0:
            raise ValueError("a rate cannot be negative")
        self.rate_bytes_s = rate_bytes_s
        self.burst_bytes = (
            burst_bytes if burst_bytes is not None else max(BURST_BYTES_MIN, int(rate_bytes_s * BURST_S))
        )
        self._tokens = float(self.burst_bytes)
        self._last_s: float | None = None

    @property
    def unlimited(self) -> bool:
        return self.rate_bytes_s == 0

    def reserve(self, size: int, now_s: float) -> float:
        """Take `size` bytes' worth of tokens; the seconds to wait before sending them."""
        if self.rate_bytes_s == 0:
            return 0.0
        if self._last_s is not None and now_s > self._last_s:
            refill = (now_s - self._last_s) * self.rate_bytes_s
            self._tokens = min(float(self.burst_bytes), self._tokens + refill)
        if self._last_s is None or now_s > self._last_s:
            self._last_s = now_s  # a clock read late on another thread never moves time back
        self._tokens -= size
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate_bytes_s


class PeerSlots:
    def __init__(self, peers_max: int) -> None:
        if peers_max < 0:
            raise ValueError("a peer limit cannot be negative")
        self.peers_max = peers_max
        self._streams: dict[str, int] = {}

    def acquire(self, peer: str) -> bool:
        """True if `peer` may be served now (it holds a slot already, or one is free)."""
        if peer not in self._streams and 0 < self.peers_max <= len(self._streams):
            return False
        self._streams[peer] = self._streams.get(peer, 0) + 1
        return True

    def release(self, peer: str) -> None:
        left = self._streams.get(peer, 0) - 1
        if left > 0:
            self._streams[peer] = left
        else:
            self._streams.pop(peer, None)

    @property
    def serving(self) -> int:
        return len(self._streams)
