"""The chunk scheduler as a simulation node, and providers with a bandwidth and a character.

A provider answers `("get", first, count)` with one `("chunk", index, tag)` message
per chunk, in order, one chunk every `chunk_bytes / rate` seconds (its upload link).
It ignores cancels, as a real provider answering a pipelined stream does. A chunk's
`tag` stands for its bytes: the downloader "verifies" a chunk when the tag is
`("blob", index)`. Characters:

- honest: sends what was asked;
- corrupt: from its `bad_from`-th chunk on, sends garbage tags (a hash mismatch);
- other_blob: sends chunks of another blob (tags that never verify);
- staller: after `stall_after` chunks it stops answering, without closing anything;
- leaver: the scenario crashes it at some time (the downloader may or may not hear of it).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from pyrsia.p2p.behaviours.exchange.scheduler import (
    Cancel,
    Done,
    Evict,
    ExchangeConfig,
    ExchangeCore,
    Failed,
    Request,
)
from tests.sim.driver import Outgoing

MIB = 1 << 20


@dataclass(slots=True)
class Provider:
    name: str
    rate_bytes_s: float
    chunk_bytes: int = MIB
    character: str = "honest"
    bad_from: int = 0
    stall_after: int = 0
    sent: int = 0
    _src: str = ""
    _queue: deque[int] = field(default_factory=deque)
    _busy_until_s: float = 0.0

    def receive(self, src: str, payload: object, now_s: float) -> list[Outgoing]:
        assert isinstance(payload, tuple)
        if payload[0] == "get":
            _, first, count = payload
            if not self._queue:
                self._busy_until_s = now_s + self.chunk_bytes / self.rate_bytes_s
            self._queue.extend(range(first, first + count))
            self._src = src
        return []

    def tick(self, now_s: float) -> list[Outgoing]:
        out: list[Outgoing] = []
        while self._queue and now_s >= self._busy_until_s:
            index = self._queue.popleft()
            self._busy_until_s += self.chunk_bytes / self.rate_bytes_s
            if self.character == "staller" and self.sent >= self.stall_after:
                self._queue.clear()
                return out
            self.sent += 1
            tag: tuple[str, int] = ("blob", index)
            if self.character == "corrupt" and self.sent > self.bad_from:
                tag = ("garbage", index)
            elif self.character == "other_blob":
                tag = ("other", index)
            out.append(Outgoing(self._src, ("chunk", index, tag)))
        return out

    def next_deadline_s(self) -> float | None:
        return self._busy_until_s if self._queue else None


class Downloader:
    """Runs the core; verifies tags; counts where each verified chunk came from."""

    def __init__(
        self, *, chunk_count: int, size: int, have: set[int], config: ExchangeConfig, chunk_bytes: int = MIB
    ) -> None:
        self.core = ExchangeCore(
            chunk_count=chunk_count, chunk_bytes=chunk_bytes, size=size, have=have, config=config
        )
        self.resumed = set(have)
        self.evicted: dict[str, str] = {}
        self.refused_from: set[str] = set()
        self.result: Done | Failed | None = None
        self.finished_s: float | None = None
        self.requested: dict[str, int] = {}
        self.received: dict[str, int] = {}

    def start(self, providers: list[tuple[str, float | None]], now_s: float) -> list[Outgoing]:
        return self.execute(self.core.add_peers(providers, now_s), now_s)

    def receive(self, src: str, payload: object, now_s: float) -> list[Outgoing]:
        assert isinstance(payload, tuple) and payload[0] == "chunk"
        _, index, tag = payload
        if src in self.evicted or self.result is not None:
            return []  # the shell closed that stream, or every stream
        self.received[src] = self.received.get(src, 0) + 1
        if tag == ("blob", index):
            return self.execute(self.core.chunk_verified(src, index, now_s), now_s)
        self.refused_from.add(src)
        return self.execute(self.core.chunk_refused(src, index, "hash mismatch", now_s), now_s)

    def peer_left(self, peer: str, now_s: float) -> list[Outgoing]:
        return self.execute(self.core.peer_failed(peer, "disconnected", now_s), now_s)

    def tick(self, now_s: float) -> list[Outgoing]:
        return self.execute(self.core.tick(now_s), now_s)

    def next_deadline_s(self) -> float | None:
        return self.core.next_deadline_s()

    def execute(self, effects: list[object], now_s: float) -> list[Outgoing]:
        out: list[Outgoing] = []
        for effect in effects:
            match effect:
                case Request(peer=peer, first=first, count=count):
                    self.requested[peer] = self.requested.get(peer, 0) + count
                    out.append(Outgoing(peer, ("get", first, count)))
                case Cancel(peer=peer, first=first, count=count):
                    out.append(Outgoing(peer, ("cancel", first, count)))
                case Evict(peer=peer, reason=reason):
                    self.evicted[peer] = reason
                case Done() | Failed():
                    assert self.result is None, "the core finished twice"
                    self.result = effect
                    self.finished_s = now_s
        return out
