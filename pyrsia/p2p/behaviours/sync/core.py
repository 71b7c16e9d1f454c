"""Log sync on `/pyrsia/sync/1.0.0`: which blocks to fetch, from whom — a pure core.

Every node keeps the same chain. Peers tell each other their `Status` (genesis hash,
height, tip hash) when they connect, whenever a block commits (the announcement), and
every `status_interval_s` (so a lost announcement costs one interval, not the sync).
When a peer is higher, the core fetches the missing blocks, in batches of at most
`batch_blocks_max` starting at our next height; the shell applies each batch through
the chain core (link, certificate by the authority set of that height, Merkle roots)
and reports back how many blocks the peer sent and where our log stands after them.

Pipelining. A fetch's reply is reported twice: when it arrives (`blocks_received`,
how many blocks it holds) and when the shell has stored it (`blocks_applied`). On
arrival, a proven peer is asked at once for the range after it, so the next batch
crosses the network while this one is verified and written; at most
`pipeline_depth` requests to one peer are in flight, and only one of them is on the
wire. An answer that arrives for a range our log can no longer reach (an earlier batch
failed to store) is stale: neither credited nor struck.

A node with no log yet has height -1 and no genesis: it adopts the genesis of the
first peer it hears from (or only `pinned_genesis`, when the operator gave one), by
fetching from height 0; once the shell stored that block, the genesis is pinned and a
peer of any other network is refused with one clear reason.

Defence. A claimed height is only a claim; verified blocks are the one thing a peer
cannot forge (each carries a commit certificate), so:

- A peer that sends a block that does not verify, or is of another network, is
  dropped at once. A peer whose answer does not advance our log — blocks we hold
  already (block 0 again), blocks not starting where we asked, no blocks while it
  claims the height we asked for, a short batch below its claim — earns a strike;
  `strikes_max` strikes drop it. A good batch clears its strikes.
- A dropped peer is banned: ignored and (unless only of another network, which
  cannot harm us and should learn why) disconnected again if it comes back, for
  `ban_s`, doubled on each repeat up to `BAN_GROWTH_MAX` times that (`bans_max` kept).
- `best_known_height` believes only claims of *proven* peers (they delivered verified
  blocks that advanced our log). Counting peers that agree would not do: a sybil
  attacker has as many identities as it wants, so agreement proves nothing.
- Candidates to fetch from are ranked: fewest strikes and failures, proven, outbound (we chose to
  dial them; sybils arrive inbound), not the lone highest claim, then at random (an
  injected `rng`, so peer ids cannot be ground to win ties). While no proven peer is
  being asked, up to `fetches_max` unproven peers are asked for the same batch at once
  (one request each), so stalling sybils cannot hold sync up; the first good answer
  wins, and answers overtaken by it are neither credited nor struck. One request to a
  proven peer is allowed beside those, so at most `fetches_max + 1` are in flight.
- At most `peers_max` peers are tracked; when full, an outbound peer displaces an
  unproven inbound one. A failed or stalled request backs its peer off for `backoff_s`,
  doubled per consecutive failure up to `BACKOFF_GROWTH_MAX` times.

Every penalty and drop is counted by kind (`penalties`, `drops`) for `/metrics`.

Messages are canonical msgpack behind an unsigned-varint length (DESIGN §3), decoded
with bounds: `{"type": "status", ...}`, `{"type": "get_blocks", "start", "count"}`,
`{"type": "blocks", "blocks": [bytes, ...]}`. One exchange per stream: the opener
sends one request, the responder answers once and closes.

Inputs return effects (etcd-raft style); time and randomness are inputs; nothing here
does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from pyrsia.errors import ProtocolViolation, TxInvalid
from pyrsia.translog import codec

PROTOCOL_ID = "/pyrsia/sync/1.0.0"
HASH_BYTES = 32
MESSAGE_BYTES_MAX = 32 * 1024 * 1024
HEIGHT_MAX = 2**63 - 1
BACKOFF_GROWTH_MAX = 8
BAN_GROWTH_MAX = 16


@dataclass(frozen=True, slots=True, kw_only=True)
class SyncConfig:
    batch_blocks_max: int = 2048
    pipeline_depth: int = 3
    request_timeout_s: float = 30.0
    backoff_s: float = 10.0
    status_interval_s: float = 30.0
    peers_max: int = 1024
    fetches_max: int = 3
    strikes_max: int = 3
    ban_s: float = 600.0
    bans_max: int = 4096
    # A node that gets blocks another way as well (an authority: consensus hands it each
    # block it helped decide) waits `near_wait_s` at one height before fetching, while the
    # peers ahead are at most `near_gap_blocks` ahead; 0 fetches at once (regular nodes).
    near_gap_blocks: int = 0
    near_wait_s: float = 0.0


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
    """`kind` names the offence for counters; `disconnect` when the peer is dropped (banned)."""

    peer: str
    kind: str
    reason: str
    disconnect: bool


Effect = SendStatus | Fetch | Penalize

# Kinds of penalty. A strike is one of the first five; the rest drop at once.
NO_PROGRESS = "no_progress"  # only blocks we hold already (block 0 again and again)
MISPLACED = "misplaced_blocks"  # blocks that do not start where we asked
EMPTY = "empty_reply"  # no blocks for a height it claims to have
SHORT = "short_reply"  # fewer blocks than asked, though it claims more and had room
BAD_BLOCK = "bad_block"
OTHER_NETWORK = "other_network"
BANNED = "banned"  # a banned peer came back
STRIKES = "strikes"  # the drop that `strikes_max` strikes earn


# -- the core ------------------------------------------------------------------------


@dataclass(slots=True)
class _Peer:
    status_sent_s: float
    outbound: bool = False
    status: Status | None = None
    backoff_until_s: float = 0.0
    failures: int = 0  # consecutive failed or stalled requests
    strikes: int = 0
    proven: bool = False  # it delivered verified blocks that advanced our log


@dataclass(slots=True)
class _Request:
    peer: str
    request_id: int
    start: int
    count: int
    deadline_s: float
    received: int = -1  # blocks its reply held, once it arrived (being stored)


@dataclass(slots=True)
class _Ban:
    until_s: float
    times: int
    kind: str


class Rng(Protocol):
    """The randomness the core needs; `random.Random(seed)` satisfies it."""

    def random(self) -> float: ...


@dataclass(slots=True)
class SyncCore:
    status: Status
    rng: Rng
    pinned_genesis: bytes | None = None
    config: SyncConfig = field(default_factory=SyncConfig)
    penalties: dict[str, int] = field(default_factory=dict)  # by kind, strikes included
    drops: dict[str, int] = field(default_factory=dict)  # by kind
    _peers: dict[str, _Peer] = field(default_factory=dict)
    _inflight: dict[int, _Request] = field(default_factory=dict)
    _bans: dict[str, _Ban] = field(default_factory=dict)
    _next_id: int = 1
    _near_height: int = -2  # the height at which the wait for near blocks last began
    _near_until_s: float | None = None  # while waiting: when the wait ends

    @property
    def genesis(self) -> bytes | None:
        """The network we belong to: our log's genesis, else the pinned one, else None yet."""
        return self.status.genesis or self.pinned_genesis

    @property
    def best_known_height(self) -> int:
        """Our height, or the highest claim of a peer that has delivered verified blocks."""
        proven = [p.status.height for p in self._peers.values() if p.proven and p.status is not None]
        return max([self.status.height, *proven])

    @property
    def fetching(self) -> bool:
        return bool(self._inflight)

    def peer_heights(self) -> dict[str, int]:
        """Each tracked peer's claimed height (a claim, not a fact: see `best_known_height`)."""
        return {name: p.status.height for name, p in self._peers.items() if p.status is not None}

    def banned(self, now_s: float) -> dict[str, float]:
        """Banned peers and when each ban ends."""
        return {name: ban.until_s for name, ban in self._bans.items() if ban.until_s > now_s}

    # -- inputs ----------------------------------------------------------------------

    def peer_connected(self, peer: str, now_s: float, *, outbound: bool = False) -> list[Effect]:
        if self._is_banned(peer, now_s):
            if self._bans[peer].kind == OTHER_NETWORK:
                return []  # harmless, refused by its genesis; left connected so it can read why
            return [self._penalize(peer, BANNED, "banned peer came back", disconnect=True)]
        state = self._peers.get(peer)
        if state is None:
            if not self._make_room(outbound=outbound):
                return []
            state = self._peers[peer] = _Peer(status_sent_s=now_s)
        state.outbound = state.outbound or outbound
        state.status_sent_s = now_s
        return [SendStatus(peer=peer, status=self.status)]

    def peer_left(self, peer: str, now_s: float) -> list[Effect]:
        self._peers.pop(peer, None)
        if self._forget_requests(peer):
            return self._maybe_fetch(now_s)
        return []

    def status_received(self, peer: str, status: Status, now_s: float) -> list[Effect]:
        if self._is_banned(peer, now_s):
            return []
        genesis = self.genesis
        if not status.empty and genesis is not None and status.genesis != genesis:
            reason = (
                f"peer is on another network (genesis {status.genesis.hex()[:16]}, ours {genesis.hex()[:16]})"
            )
            return self._drop(peer, OTHER_NETWORK, reason, now_s)
        effects: list[Effect] = []
        state = self._peers.get(peer)
        if state is None:  # it found us first: it learns our status in turn
            if not self._make_room(outbound=False):
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

    def blocks_applied(
        self, request_id: int, status: Status, now_s: float, *, received: int, full: bool = False
    ) -> list[Effect]:
        """The peer sent `received` blocks, each verified and stored or held already; `status`
        is ours after them. `full`: the reply filled the byte budget, so a short one is honest.
        """
        request = self._inflight.pop(request_id, None)
        if request is None:
            return []
        before = self.status.height
        advanced = status.height - before
        state = self._peers.get(request.peer)
        effects: list[Effect] = []
        if before >= request.start:  # overtaken by another answer: neither credited nor struck
            if advanced > 0 and state is not None:
                state.proven, state.strikes, state.failures = True, 0, 0
        elif request.start > before + 1 and advanced <= 0:
            pass  # stale: an earlier batch failed to store, so its range was out of reach
        elif received == 0:
            claim = state.status.height if state is not None and state.status is not None else -1
            effects += self._strike(
                request.peer, EMPTY, f"claims height {claim} but sent no block from {request.start}", now_s
            )
        elif advanced <= 0:
            effects += self._strike(
                request.peer,
                NO_PROGRESS,
                f"sent {received} block(s) we hold, asked from {request.start}",
                now_s,
            )
        elif advanced < received:
            effects += self._strike(
                request.peer, MISPLACED, f"sent {received} block(s) of which {advanced} were asked for", now_s
            )
        elif (
            received < request.count
            and not full
            and state is not None
            and state.status is not None
            and state.status.height >= request.start + received
        ):
            effects += self._strike(
                request.peer,
                SHORT,
                f"sent {received} of {request.count} blocks yet claims height {state.status.height}",
                now_s,
            )
        elif state is not None:
            state.proven, state.strikes, state.failures = True, 0, 0
        if advanced > 0:
            effects += self.committed(status, now_s)
        else:
            effects += self._maybe_fetch(now_s)
        return effects + self._pipeline(request.peer, now_s)  # a slot came free

    def blocks_received(self, request_id: int, received: int, now_s: float) -> list[Effect]:
        """A reply holding `received` blocks arrived and is being stored: a proven peer is
        asked for the range after it now (see Pipelining)."""
        request = self._inflight.get(request_id)
        if request is None or received <= 0:
            return []
        request.received = received
        return self._pipeline(request.peer, now_s)

    def _pipeline(self, peer: str, now_s: float) -> list[Effect]:
        """The range after the peer's batches being stored, if it is proven, claims it, has
        none on the wire and fewer than `pipeline_depth` in flight."""
        state = self._peers.get(peer)
        mine = [r for r in self._inflight.values() if r.peer == peer]
        if state is None or not state.proven or state.status is None or not mine:
            return []
        if len(mine) >= self.config.pipeline_depth or any(r.received < 0 for r in mine):
            return []
        start = max(r.start + r.received for r in mine)
        if start > state.status.height or state.backoff_until_s > now_s:
            return []
        count = min(self.config.batch_blocks_max, state.status.height - start + 1)
        request_id, self._next_id = self._next_id, self._next_id + 1
        deadline_s = now_s + self.config.request_timeout_s
        self._inflight[request_id] = _Request(peer, request_id, start, count, deadline_s)
        return [Fetch(peer=peer, request_id=request_id, start=start, count=count)]

    def blocks_refused(self, request_id: int, reason: str, status: Status, now_s: float) -> list[Effect]:
        """The peer sent a block that does not verify (blocks before it may have been stored)."""
        request = self._inflight.pop(request_id, None)
        if request is None:
            return []
        if request.start > max(self.status.height, status.height) + 1:
            return self._maybe_fetch(now_s)  # stale: our log cannot reach its range (see Pipelining)
        effects = self._drop(request.peer, BAD_BLOCK, reason, now_s)
        if status.height > self.status.height:
            return effects + self.committed(status, now_s)
        return effects + self._maybe_fetch(now_s)

    def request_failed(self, request_id: int, now_s: float) -> list[Effect]:
        """The stream failed, timed out or the reply was malformed: try someone else for a while."""
        request = self._inflight.pop(request_id, None)
        if request is None:
            return []
        if (state := self._peers.get(request.peer)) is not None:
            state.failures += 1
            growth = min(1 << min(state.failures - 1, 16), BACKOFF_GROWTH_MAX)
            state.backoff_until_s = now_s + self.config.backoff_s * growth
        return self._maybe_fetch(now_s)

    def tick(self, now_s: float) -> list[Effect]:
        effects: list[Effect] = []
        for request in [r for r in self._inflight.values() if now_s >= r.deadline_s]:
            effects += self.request_failed(request.request_id, now_s)
        for name, state in self._peers.items():
            if 0 < state.backoff_until_s <= now_s:
                state.backoff_until_s = 0.0  # served: the peer may be asked again
            # The same sum as in next_deadline_s: a difference can fall one ulp short of it.
            if now_s >= state.status_sent_s + self.config.status_interval_s:
                state.status_sent_s = now_s
                effects.append(SendStatus(peer=name, status=self.status))
        for name in [n for n, ban in self._bans.items() if ban.until_s <= now_s and n not in self._peers]:
            if self._bans[name].until_s + self._ban_length(self._bans[name].times) <= now_s:
                del self._bans[name]  # served twice over: a later offence starts afresh
        return effects + self._maybe_fetch(now_s)

    def next_deadline_s(self) -> float | None:
        deadlines = [s.status_sent_s + self.config.status_interval_s for s in self._peers.values()]
        if self._near_until_s is not None:
            deadlines.append(self._near_until_s)
        deadlines += [s.backoff_until_s for s in self._peers.values() if s.backoff_until_s > 0]
        deadlines += [r.deadline_s for r in self._inflight.values()]
        return min(deadlines) if deadlines else None

    # -- internals -------------------------------------------------------------------

    def _is_banned(self, peer: str, now_s: float) -> bool:
        ban = self._bans.get(peer)
        return ban is not None and ban.until_s > now_s

    def _ban_length(self, times: int) -> float:
        return self.config.ban_s * min(1 << min(times - 1, 16), BAN_GROWTH_MAX)

    def _penalize(self, peer: str, kind: str, reason: str, *, disconnect: bool) -> Penalize:
        self.penalties[kind] = self.penalties.get(kind, 0) + 1
        return Penalize(peer=peer, kind=kind, reason=reason, disconnect=disconnect)

    def _strike(self, peer: str, kind: str, reason: str, now_s: float) -> list[Effect]:
        state = self._peers.get(peer)
        if state is None:
            return []
        state.strikes += 1
        if state.strikes >= self.config.strikes_max:
            self.penalties[kind] = self.penalties.get(kind, 0) + 1
            return self._drop(peer, STRIKES, f"{reason} ({state.strikes} strikes)", now_s)
        return [self._penalize(peer, kind, f"{reason} (strike {state.strikes})", disconnect=False)]

    def _drop(self, peer: str, kind: str, reason: str, now_s: float) -> list[Effect]:
        """Forget the peer, ban it (longer each time) and have it disconnected."""
        self._peers.pop(peer, None)
        self._forget_requests(peer)
        self.drops[kind] = self.drops.get(kind, 0) + 1
        previous = self._bans.pop(peer, None)
        times = 1 if previous is None else previous.times + 1
        if len(self._bans) >= self.config.bans_max:
            del self._bans[min(self._bans, key=lambda name: self._bans[name].until_s)]
        self._bans[peer] = _Ban(until_s=now_s + self._ban_length(times), times=times, kind=kind)
        return [self._penalize(peer, kind, reason, disconnect=True)]

    def _forget_requests(self, peer: str) -> bool:
        mine = [rid for rid, request in self._inflight.items() if request.peer == peer]
        for rid in mine:
            del self._inflight[rid]
        return bool(mine)

    def _make_room(self, *, outbound: bool) -> bool:
        """Room for one more peer; when full, an outbound one displaces an unproven inbound one."""
        if len(self._peers) < self.config.peers_max:
            return True
        if not outbound:
            return False
        busy = {request.peer for request in self._inflight.values()}
        victims = [n for n, s in self._peers.items() if not s.outbound and not s.proven and n not in busy]
        if not victims:
            return False
        victims.sort()
        del self._peers[victims[int(self.rng.random() * len(victims)) % len(victims)]]
        return True

    def _waits_for_near_blocks(self, ours: int, now_s: float) -> bool:
        """Whether to leave the next block to the other way a little longer: peers are
        only `near_gap_blocks` ahead, and our height moved within `near_wait_s`."""
        if self.config.near_gap_blocks <= 0:
            return False
        top = max((p.status.height for p in self._peers.values() if p.status is not None), default=ours)
        if top <= ours or ours < 0 or top - ours > self.config.near_gap_blocks:
            self._near_until_s = None
            return False
        if self._near_height != ours:  # the wait starts afresh at each height we reach
            self._near_height, self._near_until_s = ours, now_s + self.config.near_wait_s
        if self._near_until_s is not None and now_s < self._near_until_s:
            return True
        self._near_until_s = None  # waited long enough at this height: fetch
        return False

    def _maybe_fetch(self, now_s: float) -> list[Effect]:
        """Ask the best candidates for our next batch: one proven peer, or else up to
        `fetches_max` unproven ones at once. A proven peer never waits for a slot that
        unproven ones hold (stalling sybils would hold every slot)."""
        busy = {request.peer for request in self._inflight.values()}
        if any(self._peers[p].proven for p in busy if p in self._peers):
            return []  # a peer that delivered before is being asked: wait for it
        genesis = self.genesis
        ours = self.status.height
        if self._waits_for_near_blocks(ours, now_s):
            return []
        claims = sorted((s.status.height for s in self._peers.values() if s.status is not None), reverse=True)
        top_alone = claims[0] if claims and (len(claims) == 1 or claims[1] < claims[0]) else None
        ranked = sorted(
            (
                state.strikes + state.failures,
                not state.proven,
                not state.outbound,
                state.status.height == top_alone,
                self.rng.random(),
                name,
            )
            for name, state in self._peers.items()
            if state.status is not None
            and state.status.height > ours
            and state.backoff_until_s <= now_s
            and name not in busy
            and (genesis is None or state.status.genesis == genesis)
        )
        effects: list[Effect] = []
        unproven_slots = self.config.fetches_max - len(self._inflight)
        for *_, name in ranked:
            state = self._peers[name]
            if not state.proven and unproven_slots <= 0:
                continue
            assert state.status is not None
            start, count = ours + 1, min(self.config.batch_blocks_max, state.status.height - ours)
            request_id, self._next_id = self._next_id, self._next_id + 1
            deadline_s = now_s + self.config.request_timeout_s
            self._inflight[request_id] = _Request(name, request_id, start, count, deadline_s)
            effects.append(Fetch(peer=name, request_id=request_id, start=start, count=count))
            if state.proven:
                break  # it delivered before: no need to ask anyone beside it
            unproven_slots -= 1
        return effects
