"""Log sync on `/pyrsia/sync/1.0.0`: which blocks to fetch, from whom — a pure core.

Every node keeps the same chain. Peers tell each other their `Status` (genesis hash,
height, tip hash) when they connect, whenever a block commits (the announcement), and
every `status_interval_s` (so a lost announcement costs one interval, not the sync).
When a peer is higher, the core fetches the missing blocks from it in batches of at
most `batch_blocks_max`, one request at a time and in order; the shell applies each
batch through the chain core (link, certificate by the authority set of that height,
Merkle roots) and reports back. A peer of another network (a different genesis), or
one that sent a block that does not verify, is penalized and disconnected; a peer
that fails or stalls a request is skipped for a back-off period and the next highest
peer is asked.

A node with no log yet has height -1 and no genesis: it adopts the genesis of the
first peer it hears from (or only `pinned_genesis`, when the operator gave one), by
fetching from height 0; once the shell stored that block, the genesis is pinned and a
peer of any other network is refused with one clear reason.

Messages are canonical msgpack behind an unsigned-varint length (DESIGN §3), decoded
with bounds: `{"type": "status", ...}`, `{"type": "get_blocks", "start", "count"}`,
`{"type": "blocks", "blocks": [bytes, ...]}`. One exchange per stream: the opener
sends one request, the responder answers once and closes.

Inputs return effects (etcd-raft style); time is an input; nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pyrsia.errors import ProtocolViolation, TxInvalid
from pyrsia.translog import codec

PROTOCOL_ID = "/pyrsia/sync/1.0.0"
HASH_BYTES = 32
MESSAGE_BYTES_MAX = 32 * 1024 * 1024
HEIGHT_MAX = 2**63 - 1


@dataclass(frozen=True, slots=True, kw_only=True)
class SyncConfig:
    batch_blocks_max: int = 512
    request_timeout_s: float = 30.0
    backoff_s: float = 10.0
    status_interval_s: float = 30.0
    peers_max: int = 4096


# -- messages ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Status:
    genesis: bytes  # the genesis block's hash; b"" while a node has no log
    height: int  # -1 while a node has no log
    tip: bytes  # the hash of the block at `height`; b"" while a node has no log

    @property
    def empty(self) -> bool:
        return self.height < 0


@dataclass(frozen=True, slots=True, kw_only=True)
class GetBlocks:
    start: int
    count: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Blocks:
    blocks: tuple[bytes, ...]


Message = Status | GetBlocks | Blocks


def encode(message: Message) -> bytes:
    doc: dict[str, Any]
    match message:
        case Status():
            doc = {"type": "status", "genesis": message.genesis, "height": message.height, "tip": message.tip}
        case GetBlocks():
            doc = {"type": "get_blocks", "start": message.start, "count": message.count}
        case Blocks():
            doc = {"type": "blocks", "blocks": list(message.blocks)}
    return codec.encode(doc)


def decode(data: bytes) -> Message:
    """A message from a peer; anything malformed is a `ProtocolViolation`."""
    if len(data) > MESSAGE_BYTES_MAX:
        raise ProtocolViolation(f"sync message of {len(data)} bytes exceeds {MESSAGE_BYTES_MAX}")
    try:
        doc = codec.decode(data)
        kind = codec.field(doc, "type", str)
        if kind == "status":
            status = Status(
                genesis=codec.field(doc, "genesis", bytes),
                height=codec.field(doc, "height", int),
                tip=codec.field(doc, "tip", bytes),
            )
            if not -1 <= status.height <= HEIGHT_MAX or len(status.genesis) not in (0, HASH_BYTES):
                raise ProtocolViolation("sync status out of range")
            if len(status.tip) not in (0, HASH_BYTES) or (status.height < 0) != (status.genesis == b""):
                raise ProtocolViolation("sync status is inconsistent")
            return status
        if kind == "get_blocks":
            request = GetBlocks(start=codec.field(doc, "start", int), count=codec.field(doc, "count", int))
            if not 0 <= request.start <= HEIGHT_MAX or not 1 <= request.count <= HEIGHT_MAX:
                raise ProtocolViolation("sync request out of range")
            return request
        if kind == "blocks":
            blocks = codec.field(doc, "blocks", list)
            if not all(isinstance(b, bytes) for b in blocks):
                raise ProtocolViolation("sync blocks must be byte strings")
            return Blocks(blocks=tuple(blocks))
    except TxInvalid as exc:
        raise ProtocolViolation(f"malformed sync message: {exc.message}") from exc
    raise ProtocolViolation(f"unknown sync message type {kind[:40]!r}")


# -- effects -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class SendStatus:
    peer: str
    status: Status


@dataclass(frozen=True, slots=True, kw_only=True)
class Fetch:
    """Ask `peer` for blocks `start .. start+count-1`; report with `blocks_applied` or a failure."""

    peer: str
    request_id: int
    start: int
    count: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Penalize:
    peer: str
    reason: str
    disconnect: bool


Effect = SendStatus | Fetch | Penalize


# -- the core ------------------------------------------------------------------------


@dataclass(slots=True)
class _Peer:
    status_sent_s: float
    status: Status | None = None
    backoff_until_s: float = 0.0


@dataclass(slots=True)
class _Request:
    peer: str
    request_id: int
    start: int
    count: int
    deadline_s: float


@dataclass(slots=True)
class SyncCore:
    status: Status
    pinned_genesis: bytes | None = None
    config: SyncConfig = field(default_factory=SyncConfig)
    _peers: dict[str, _Peer] = field(default_factory=dict)
    _inflight: _Request | None = None
    _next_id: int = 1

    @property
    def genesis(self) -> bytes | None:
        """The network we belong to: our log's genesis, else the pinned one, else None yet."""
        return self.status.genesis or self.pinned_genesis

    @property
    def best_known_height(self) -> int:
        heights = [p.status.height for p in self._peers.values() if p.status is not None]
        return max([self.status.height, *heights])

    @property
    def fetching(self) -> bool:
        return self._inflight is not None

    def peer_heights(self) -> dict[str, int]:
        return {name: p.status.height for name, p in self._peers.items() if p.status is not None}

    # -- inputs ----------------------------------------------------------------------

    def peer_connected(self, peer: str, now_s: float) -> list[Effect]:
        if peer not in self._peers and len(self._peers) >= self.config.peers_max:
            return []
        state = self._peers.setdefault(peer, _Peer(status_sent_s=now_s))
        state.status_sent_s = now_s
        return [SendStatus(peer=peer, status=self.status)]

    def peer_left(self, peer: str, now_s: float) -> list[Effect]:
        self._peers.pop(peer, None)
        if self._inflight is not None and self._inflight.peer == peer:
            self._inflight = None
            return self._maybe_fetch(now_s)
        return []

    def status_received(self, peer: str, status: Status, now_s: float) -> list[Effect]:
        genesis = self.genesis
        if not status.empty and genesis is not None and status.genesis != genesis:
            self._peers.pop(peer, None)
            return [
                Penalize(
                    peer=peer,
                    reason=f"peer is on another network (genesis {status.genesis.hex()[:16]}, "
                    f"ours {genesis.hex()[:16]})",
                    disconnect=True,
                )
            ]
        effects: list[Effect] = []
        state = self._peers.get(peer)
        if state is None:  # it found us first: it learns our status in turn
            if len(self._peers) >= self.config.peers_max:
                return []
            state = self._peers[peer] = _Peer(status_sent_s=now_s)
            effects.append(SendStatus(peer=peer, status=self.status))
        state.status = status
        return effects + self._maybe_fetch(now_s)

    def committed(self, status: Status, now_s: float) -> list[Effect]:
        """A block was stored here (committed locally or fetched): announce the new tip."""
        self.status = status
        effects: list[Effect] = []
        for name, state in self._peers.items():
            state.status_sent_s = now_s
            effects.append(SendStatus(peer=name, status=status))
        return effects + self._maybe_fetch(now_s)

    def blocks_applied(self, request_id: int, status: Status, now_s: float) -> list[Effect]:
        """Every block of the batch verified and stored; `status` is ours after them."""
        if self._inflight is None or self._inflight.request_id != request_id:
            return []
        self._inflight = None
        return self.committed(status, now_s)

    def blocks_refused(self, request_id: int, reason: str, status: Status, now_s: float) -> list[Effect]:
        """The peer sent a block that does not verify (blocks before it may have been stored)."""
        request, self._inflight = self._inflight, None
        if request is None or request.request_id != request_id:
            return []
        self._peers.pop(request.peer, None)
        effects: list[Effect] = [Penalize(peer=request.peer, reason=reason, disconnect=True)]
        if status != self.status:
            return effects + self.committed(status, now_s)
        return effects + self._maybe_fetch(now_s)

    def request_failed(self, request_id: int, now_s: float) -> list[Effect]:
        """The stream failed, timed out or the reply was malformed: try someone else for a while."""
        request, self._inflight = self._inflight, None
        if request is None or request.request_id != request_id:
            self._inflight = request
            return []
        if (state := self._peers.get(request.peer)) is not None:
            state.backoff_until_s = now_s + self.config.backoff_s
        return self._maybe_fetch(now_s)

    def tick(self, now_s: float) -> list[Effect]:
        effects: list[Effect] = []
        if self._inflight is not None and now_s >= self._inflight.deadline_s:
            effects += self.request_failed(self._inflight.request_id, now_s)
        for name, state in self._peers.items():
            if 0 < state.backoff_until_s <= now_s:
                state.backoff_until_s = 0.0  # served: the peer may be asked again
            # The same sum as in next_deadline_s: a difference can fall one ulp short of it.
            if now_s >= state.status_sent_s + self.config.status_interval_s:
                state.status_sent_s = now_s
                effects.append(SendStatus(peer=name, status=self.status))
        return effects + self._maybe_fetch(now_s)

    def next_deadline_s(self) -> float | None:
        deadlines = [s.status_sent_s + self.config.status_interval_s for s in self._peers.values()]
        deadlines += [s.backoff_until_s for s in self._peers.values() if s.backoff_until_s > 0]
        if self._inflight is not None:
            deadlines.append(self._inflight.deadline_s)
        return min(deadlines) if deadlines else None

    # -- internals -------------------------------------------------------------------

    def _maybe_fetch(self, now_s: float) -> list[Effect]:
        if self._inflight is not None:
            return []
        genesis = self.genesis
        candidates = [
            (state.status.height, name)
            for name, state in self._peers.items()
            if state.status is not None
            and state.status.height > self.status.height
            and state.backoff_until_s <= now_s
            and (genesis is None or state.status.genesis == genesis)
        ]
        if not candidates:
            return []
        height, peer = max(candidates)
        start = self.status.height + 1
        count = min(self.config.batch_blocks_max, height - self.status.height)
        request_id, self._next_id = self._next_id, self._next_id + 1
        self._inflight = _Request(peer, request_id, start, count, now_s + self.config.request_timeout_s)
        return [Fetch(peer=peer, request_id=request_id, start=start, count=count)]
