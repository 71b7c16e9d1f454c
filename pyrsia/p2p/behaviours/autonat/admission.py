"""Who may open one more AutoNAT request: the admission rule the v1 and v2 servers share.

A server dials strangers on request, so requests are bounded at once (per peer and
overall) and per sliding minute (per peer and overall). The per-peer windows are
pruned only when more peers are remembered than the overall rate allows, so memory
stays bounded by the rate, not by how many peers ever asked. Pure.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from pyrsia.p2p.ratelimit import prune_window

WINDOW_S = 60.0


def prune(stamps: deque[float], now_s: float) -> None:
    prune_window(stamps, now_s, WINDOW_S)


@dataclass(slots=True, kw_only=True)
class RequestAdmission:
    rate_max: int
    peer_rate_max: int
    concurrent_max: int
    peer_concurrent_max: int = 1
    _accepted: deque[float] = field(default_factory=deque)
    _by_peer: dict[str, deque[float]] = field(default_factory=dict)

    def refusal(self, peer: str, live_peers: Sequence[str], now_s: float) -> str | None:
        """Why `peer` may not start a request now, with `live_peers` holding the open ones.

        One of `peer_concurrent`, `concurrent`, `peer_rate`, `rate`; None to admit.
        """
        prune(self._accepted, now_s)
        if len(self._by_peer) > self.rate_max:
            for stale, stamps in list(self._by_peer.items()):
                prune(stamps, now_s)
                if not stamps:
                    del self._by_peer[stale]
        recent = self._by_peer.get(peer)
        if recent is not None:
            prune(recent, now_s)
        if sum(1 for p in live_peers if p == peer) >= self.peer_concurrent_max:
            return "peer_concurrent"
        if len(live_peers) >= self.concurrent_max:
            return "concurrent"
        if recent is not None and len(recent) >= self.peer_rate_max:
            return "peer_rate"
        if len(self._accepted) >= self.rate_max:
            return "rate"
        return None

    def accept(self, peer: str, now_s: float) -> None:
        self._accepted.append(now_s)
        self._by_peer.setdefault(peer, deque()).append(now_s)
