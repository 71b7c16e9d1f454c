"""The log-sync core as a simulation node over a toy hash chain, through the real codec.

A block here is `prev_hash ‖ height ‖ payload`, valid when it links to the tip; that
is all sync needs to know of blocks (the node checks real ones through the chain
core). Payloads on the fake network are `("msg", bytes)` for a status or a request,
`("reply", request_id, bytes)` for blocks. Roles:

- `honest`; `slow`: honest, but each answer waits 0.5 to 3 s (past the requester's timeout
  at times);
- `liar`: answers with blocks that do not link; `repeater`: answers with block 0 again
  and again; `claimer`: answers with what it has (its genesis) — all three claim a
  height far above everyone's;
- `sybil`: claims 10^12 and never answers a request for blocks.

Storing is pipelined as in the node: a reply is reported on arrival
(`blocks_received`, so a proven peer is asked for the next range at once), then
stored after a random delay, replies in the order they arrived, and reported again
(`blocks_applied` / `blocks_refused`).
"""

from __future__ import annotations

import hashlib
import random

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


HONEST_ROLES = ("honest", "slow")
LYING_ROLES = ("liar", "repeater", "claimer")
ROLES = (*HONEST_ROLES, *LYING_ROLES, "sybil")


class SyncNode:
    def __init__(
        self,
        name: str,
        neighbours: list[str],
        chain: list[bytes],
        *,
        role: str = "honest",
        config: SyncConfig,
        rng: random.Random | None = None,
        dials: frozenset[str] = frozenset(),
    ) -> None:
        assert role in ROLES, role
        self.name = name
        self.neighbours = list(neighbours)
        self.dials = dials  # the neighbours this node dialled (outbound to it)
        self.chain = list(chain)
        self.role = role
        self.rng = rng or random.Random(0)
        self.penalized: dict[str, str] = {}  # peers dropped (disconnected), with the reason
        self.strikes: dict[str, int] = {}
        self.answered_by: set[str] = set()
        self.core = SyncCore(status=self.status(), config=config, rng=random.Random(self.rng.random()))
        self._fetches: dict[int, Fetch] = {}
        self._delayed: list[tuple[float, Outgoing]] = []
        self._storing: list[tuple[float, Fetch, Blocks]] = []  # FIFO, due times non-decreasing

    @property
    def honest(self) -> bool:
        return self.role in HONEST_ROLES

    def status(self) -> Status:
        if not self.chain:
            return Status(genesis=b"", height=-1, tip=b"")
        if self.role == "sybil":
            return Status(genesis=block_hash(self.chain[0]), height=10**12, tip=bytes(32))
        if not self.honest:
            return Status(genesis=block_hash(self.chain[0]), height=10**6, tip=bytes(32))
        return Status(
            genesis=block_hash(self.chain[0]), height=len(self.chain) - 1, tip=block_hash(self.chain[-1])
        )

    def connect(self, now_s: float) -> list[Outgoing]:
        out: list[Outgoing] = []
        for peer in self.neighbours:
            out += self.execute(self.core.peer_connected(peer, now_s, outbound=peer in self.dials))
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
            if self.role == "sybil":
                return []
            reply = Outgoing(src, ("reply", payload[2], sync.encode(self._answer(message))))
            if self.role == "slow":
                self._delayed.append((now_s + self.rng.uniform(0.5, 3.0), reply))
                return []
            return [reply]
        _, request_id, body = payload
        fetch = self._fetches.pop(request_id, None)
        if fetch is None:
            return []  # a late or duplicated reply: the request was already settled
        reply = sync.decode(body)
        assert isinstance(reply, Blocks)
        self.answered_by.add(src)
        after = self._storing[-1][0] if self._storing else now_s
        self._storing.append((max(after, now_s + self.rng.uniform(0.0, 0.3)), fetch, reply))
        return self.execute(self.core.blocks_received(fetch.request_id, len(reply.blocks), now_s))

    def tick(self, now_s: float) -> list[Outgoing]:
        due = [out for when, out in self._delayed if when <= now_s]
        self._delayed = [(when, out) for when, out in self._delayed if when > now_s]
        while self._storing and self._storing[0][0] <= now_s:
            _, fetch, reply = self._storing.pop(0)
            due += self.execute(self._apply(fetch, reply, now_s))
        return due + self.execute(self.core.tick(now_s))

    def next_deadline_s(self) -> float | None:
        deadlines = [when for when, _ in self._delayed] + [when for when, _, _ in self._storing[:1]]
        if (core_deadline := self.core.next_deadline_s()) is not None:
            deadlines.append(core_deadline)
        return min(deadlines) if deadlines else None

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
                case Penalize() if effect.disconnect:
                    self.penalized[effect.peer] = effect.reason
                case Penalize():
                    self.strikes[effect.peer] = self.strikes.get(effect.peer, 0) + 1
        return out

    def _answer(self, request: GetBlocks) -> Blocks:
        if self.role == "liar":
            return Blocks(blocks=tuple(b"\xff" * 40 for _ in range(min(request.count, 4))))
        if self.role == "repeater":
            return Blocks(blocks=(self.chain[0],))
        return Blocks(blocks=tuple(self.chain[request.start : request.start + request.count]))

    def _apply(self, fetch: Fetch, reply: Blocks, now_s: float) -> list[sync.Effect]:
        """As the ledger does: a block held already is a no-op, the next one must link."""
        for block in reply.blocks:
            height = int.from_bytes(block[32:40], "big") if len(block) >= 40 else -1
            if 0 <= height < len(self.chain) and self.chain[height] == block:
                continue
            prev = block_hash(self.chain[-1]) if self.chain else ZERO
            if block[:32] != prev or height != len(self.chain):
                return self.core.blocks_refused(
                    fetch.request_id, f"block {len(self.chain)} does not link", self.status(), now_s
                )
            self.chain.append(block)
        return self.core.blocks_applied(fetch.request_id, self.status(), now_s, received=len(reply.blocks))
