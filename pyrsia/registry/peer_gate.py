"""Who may be served by the peer HTTP data plane now — a pure admission core.

The peer listener is open to anyone who can reach it, so every limit is per remote
address, and one address that floods it is refused on its own while the others are
served:

- Request rate: each address has a bucket of `request_rate` requests per second
  (burst as many, at least one); a request with no token is refused with 429 and the
  seconds until the next token (`Retry-After`).
- Requests in progress: at most `requests_per_ip_max` per address (each holds one of
  the server's workers while its body is sent); beyond it 503.
- Addresses served at once: at most `peers_max` (`max_upload_peers`, as on the p2p
  exchange); an address already being served may add requests up to its own limit.
- Memory: at most `addresses_max` buckets are kept; the least recently seen address
  with nothing in progress is forgotten first (it then starts with a full bucket,
  which is no more than a new address gets).

Time is an input (`now_s`); the shell holds the lock and the clock.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

# Refusals, as counted (`pyrsia_peer_http_refused_total{reason=…}`).
RATE = "rate"
IN_PROGRESS = "in_progress"
PEERS = "peers_max"
REASONS = (RATE, IN_PROGRESS, PEERS)


@dataclass(frozen=True, slots=True, kw_only=True)
class GateConfig:
    request_rate: float = 500.0
    requests_per_ip_max: int = 16
    peers_max: int = 32
    addresses_max: int = 4096


@dataclass(frozen=True, slots=True, kw_only=True)
class Admitted:
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class Refused:
    status: int  # 429 or 503
    reason: str  # one of REASONS
    retry_after_s: int


Decision = Admitted | Refused


@dataclass(slots=True)
class _Address:
    tokens: float
    last_s: float
    in_progress: int = 0


class PeerGate:
    def __init__(self, config: GateConfig = GateConfig()) -> None:
        if config.request_rate <= 0 or config.requests_per_ip_max < 1 or config.addresses_max < 1:
            raise ValueError("peer gate limits must be positive")
        self.config = config
        self._burst = max(1.0, config.request_rate)
        self._addresses: OrderedDict[str, _Address] = OrderedDict()
        self._serving = 0  # addresses with a request in progress
        self.refused: dict[str, int] = dict.fromkeys(REASONS, 0)

    @property
    def serving(self) -> int:
        return self._serving

    def in_progress(self, address: str) -> int:
        state = self._addresses.get(address)
        return state.in_progress if state is not None else 0

    def admit(self, address: str, now_s: float) -> Decision:
        """Admit one request from `address` (then `release` it when its answer is sent)."""
        state = self._addresses.get(address)
        if state is None:
            state = _Address(tokens=self._burst, last_s=now_s)
            self._addresses[address] = state
            self._forget_idle(keep=address)
        else:
            self._addresses.move_to_end(address)
            if now_s > state.last_s:
                refill = (now_s - state.last_s) * self.config.request_rate
                state.tokens = min(self._burst, state.tokens + refill)
                state.last_s = now_s
        if state.tokens < 1.0:
            wait_s = (1.0 - state.tokens) / self.config.request_rate
            return self._refuse(429, RATE, wait_s)
        if state.in_progress >= self.config.requests_per_ip_max:
            return self._refuse(503, IN_PROGRESS, 1.0)
        if state.in_progress == 0 and 0 < self.config.peers_max <= self._serving:
            return self._refuse(503, PEERS, 1.0)
        state.tokens -= 1.0
        if state.in_progress == 0:
            self._serving += 1
        state.in_progress += 1
        return Admitted()

    def release(self, address: str) -> None:
        state = self._addresses.get(address)
        if state is None or state.in_progress == 0:
            raise ValueError(f"release of {address} without an admitted request")
        state.in_progress -= 1
        if state.in_progress == 0:
            self._serving -= 1

    def _refuse(self, status: int, reason: str, wait_s: float) -> Refused:
        self.refused[reason] += 1
        return Refused(status=status, reason=reason, retry_after_s=max(1, math.ceil(wait_s)))

    def _forget_idle(self, *, keep: str) -> None:
        excess = len(self._addresses) - self.config.addresses_max
        if excess <= 0:
            return
        idle = [a for a, s in self._addresses.items() if s.in_progress == 0 and a != keep]
        for address in idle[:excess]:
            del self._addresses[address]
