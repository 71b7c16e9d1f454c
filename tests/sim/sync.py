"""The log-sync core as a simulation node over a toy hash chain, through the real codec.

A block here is `prev_hash ‖ height ‖ payload`, valid when it links to the tip; that
is all sync needs to know of blocks (the node checks real ones through the chain
core). Payloads on the fake network are `("msg", bytes)` for a status or a request,
`("reply", request_id, bytes)` for blocks. A `liar` answers every request with blocks
that do not link, and claims a height above everyone's.
"""

from __future__ import annotations

import hashlib

from pyrsia.p2p.behaviours.sync import core as sync
from pyrsia.p2p.behaviours.sync.core import (
    Blocks,
    Fetch,
    GetBlocks,
    Penalize,
    SendStatus,
    Status,
    SyncConfig,
    SyncCore,
)
from tests.sim.driver import Outgoing

ZERO = bytes(32)


def make_block(prev: bytes, height: int, payload: bytes = b"") -> bytes:
    return prev + height.to_bytes(8, "big") + payload


def block_hash(block: bytes) -> bytes:
    return hashlib.sha256(block).digest()


class SyncNode:
    def __init__(
        self, name: str, neighbours: list[str], chain: list[bytes], *, liar: bool = False, config: SyncConfig
    ) -> None:
        self.name = name
        self.neighbours = list(neighbours)
        self.chain = list(chain)
        self.liar = liar
        self.penalized: dict[str, str] = {}
        self.answered_by: set[str] = set()
        self.core = SyncCore(status=self.status(), config=config)
        self._fetches: dict[int, Fetch] = {}

    def status(self) -> Status:
        if not self.chain:
            return Status(genesis=b"", height=-1, tip=b"")
        if self.liar:
            return Status(genesis=block_hash(self.chain[0]), height=10**6, tip=bytes(32))
        return Status(
            genesis=block_hash(self.chain[0]), height=len(self.chain) - 1, tip=block_hash(self.chain[-1])
        )

    def connect(self, now_s: float) -> list[Outgoing]:
        out: list[Outgoing] = []
        for peer in self.neighbours:
            out += self.execute(self.core.peer_connected(peer, now_s))
        return out

    def produce(self, payload: bytes, now_s: float) -> list[Outgoing]:
        """The authority commits a block."""
        prev = block_hash(self.chain[-1]) if self.chain else ZERO
        self.chain.append(make_block(prev, len(self.chain), payload))
        return self.execute(self.core.committed(self.status(), now_s))

    def receive(self, src: str, payload: object, now_s: float) -> list[Outgoing]:
        assert isinstance(payload, tuple)
        if src in self.penalized:
            return []  # disconnected
        if payload[0] == "msg":
            message = sync.decode(payload[1])
            if isinstance(message, Status):
                return self.execute(self.core.status_received(src, message, now_s))
            assert isinstance(message, GetBlocks)
            return [Outgoing(src, ("reply", payload[2], sync.encode(self._answer(message))))]
        _, request_id, body = payload
        fetch = self._fetches.pop(request_id, None)
        if fetch is None:
            return []  # a late or duplicated reply: the request was already settled
        reply = sync.decode(body)
        assert isinstance(reply, Blocks)
        self.answered_by.add(src)
        return self.execute(self._apply(fetch, reply, now_s))

    def tick(self, now_s: float) -> list[Outgoing]:
        return self.execute(self.core.tick(now_s))

    def next_deadline_s(self) -> float | None:
        return self.core.next_deadline_s()

    def execute(self, effects: list[sync.Effect]) -> list[Outgoing]:
        out: list[Outgoing] = []
        for effect in effects:
            match effect:
                case SendStatus():
                    out.append(Outgoing(effect.peer, ("msg", sync.encode(effect.status), 0)))
                case Fetch():
                    self._fetches[effect.request_id] = effect
                    request = GetBlocks(start=effect.start, count=effect.count)
                    out.append(Outgoing(effect.peer, ("msg", sync.encode(request), effect.request_id)))
                case Penalize():
                    self.penalized[effect.peer] = effect.reason
        return out

    def _answer(self, request: GetBlocks) -> Blocks:
        if self.liar:
            return Blocks(blocks=tuple(b"\xff" * 40 for _ in range(min(request.count, 4))))
        return Blocks(blocks=tuple(self.chain[request.start : request.start + request.count]))

    def _apply(self, fetch: Fetch, reply: Blocks, now_s: float) -> list[sync.Effect]:
        if not reply.blocks:
            return self.core.request_failed(fetch.request_id, now_s)
        for block in reply.blocks:
            height = len(self.chain)
            prev = block_hash(self.chain[-1]) if self.chain else ZERO
            if block[:32] != prev or block[32:40] != height.to_bytes(8, "big"):
                return self.core.blocks_refused(
                    fetch.request_id, f"block {height} does not link", self.status(), now_s
                )
            self.chain.append(block)
        return self.core.blocks_applied(fetch.request_id, self.status(), now_s)
