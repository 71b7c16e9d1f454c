"""The consensus shell: an authority's part in verifying and ordering what enters the log.

One thread (`pyrsia-consensus`) owns the mempool and the consensus core and takes
events from one bounded queue: messages from peers (those one read of a stream
completes, together), this node's own submissions,
verdicts its verifier reached, blocks the log committed (by consensus or by sync) and
the core's timers. Nothing else touches either, so neither needs a lock.

Endorsement. A transaction submitted by an authority is gossiped to every authority;
each verifies it on its own (`verify`: re-fetch the artifact from its own upstream and
compare digest, size and chunk root; for an authority or registry change, whether its
own admin approved it) on a small worker pool, and gossips its signed verdict: the
endorsements reached in one step of the service thread go to each authority as one
`endorsements` message, refusals one by one with their reasons. The submitter
endorses its own at once (it fetched and verified the bytes to submit them). Once
endorsements from a quorum of the authorities in force back a transaction, it may be
proposed; once more than n - quorum refuse it, it never can be, and its waiters hear
the reasons (`PublishRefused`).

Ordering. The core (`core.py`) runs only while there is something to agree on: it is
started when a transaction becomes ready or a peer's consensus message for the next
height arrives, and dropped after a commit that leaves nothing ready (an idle network
sends nothing). Its value is the next block without its certificate, in compact form
(`compact.py`: the header and the transaction ids with their endorsers; every authority
holds the transactions from their submits, and one that lacks some holds the proposal
and fetches exactly those, from the proposer, then from other authorities with
backoff); `validate` rebuilds the block and puts it through the chain core
(`Chain.check_proposal`: links, signatures, each transaction endorsed by a quorum) and
refuses replays and stale transactions;
every precommit carries this authority's commit signature (over the block hash and the
C2SP checkpoint) as a vote extension, so the decision's quorum of precommits is the
block's certificate. The decided block goes through `Ledger.append` like a synced one.
The core's hard state is appended (`state_file.py`, one fdatasync) before anything it
signed is sent. Pending transactions and this node's verdicts on them are re-sent with
backoff (2 s, then 4, 8, …) until they settle, not every 2 s.

Inbound streams defend the authority: a stream from a peer that is not an authority
of the current set is reset before anything is read; a peer has at most
`STREAMS_PER_PEER_MAX` streams read at once; each message's size is checked against
its type's bound before it is decoded (`wire.check_size`); and the bytes of one
peer's messages waiting on the event queue are bounded (`INBOUND_BYTES_PER_PEER_MAX`:
its reader waits for room, then gives up and resets). Decoded proposals are cached
within `DECODED_BYTES_MAX`. Every refusal is counted by reason (`Stats.refused`).

Regular nodes do not run this service: they get committed blocks by sync.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from nacl.signing import SigningKey

from pyrsia.consensus import messages as m
from pyrsia.consensus import wire
from pyrsia.consensus.compact import Assembly, CompactBlock, Fetch, compact, rebuild
from pyrsia.consensus.core import Broadcast, Config, Core, HardState, Ready, SendTo, Step
from pyrsia.consensus.mempool import Entry, Mempool, committed_height
from pyrsia.consensus.state_file import StateFile
from pyrsia.errors import (
    ChainBroken,
    ConsensusError,
    ConsensusTimeout,
    MessageRejected,
    PeerError,
    ProtocolViolation,
    PublishRefused,
    PyrsiaError,
    StorageError,
    TxInvalid,
)
from pyrsia.formats.peer_id import peer_id_of
from pyrsia.p2p.swarm.host import Host, Stream
from pyrsia.p2p.wire.multiaddr import Multiaddr
from pyrsia.translog import codec
from pyrsia.translog.block import BLOCK_TXS_BYTES_MAX, Block, CommitSignature, commit_signature
from pyrsia.translog.chain import Chain
from pyrsia.translog.checkpoint import Checkpoint
from pyrsia.translog.ledger import Ledger
from pyrsia.translog.tx import (
    ADD_ARTIFACT,
    ADD_AUTHORIZED_NODE,
    ADD_REGISTRY,
    REMOVE_AUTHORIZED_NODE,
    AddArtifact,
    AuthorizedNode,
    Endorsement,
    Registry,
    Transaction,
    check,
    sign,
    verify_signature,
)

log = logging.getLogger("pyrsia.consensus")

TICK_S = 0.01  # one core tick; its timeouts are counted in these
EVENTS_MAX = 65_536
OUTBOX_MAX = 4096
VERIFY_WORKERS = 4
STREAM_TIMEOUT_S = 10.0
REBROADCAST_S = 2.0
OUTBOX_LINGER_S = 0.5
STREAM_READ_BYTES = 64 * 1024  # deflated bytes read at once from a consensus stream
# A peer's messages completed by one read go to the service thread together, this many
# encoded bytes at most (a larger message alone).
INBOUND_BATCH_BYTES_MAX = 1 << 20
# What one step of the service thread sends a peer is handed to its outbox as one item,
# and items already queued go out together in one write (one Noise and yamux frame for
# many small votes and verdicts), up to this many bytes.
OUTBOX_BATCH_BYTES_MAX = 60 * 1024
# The core's timeouts, in ticks of TICK_S: a proposal must be built, sent and checked
# within the propose timeout, and a block of thousands of transactions takes a while.
CORE_TIMEOUTS = {
    "timeout_propose_ticks": 100,
    "timeout_propose_delta_ticks": 50,
    "timeout_prevote_ticks": 50,
    "timeout_prevote_delta_ticks": 25,
    "timeout_precommit_ticks": 50,
    "timeout_precommit_delta_ticks": 25,
    "timeout_ticks_max": 3000,
    "rebroadcast_ticks": 200,
}
PROPOSAL_TXS_MAX = 2000
# A transaction is ordered only within this long of its own time (refuses replays of old
# ones, whose endorsements would otherwise still verify) ...
TX_AGE_MAX_S = 3600
# ... and a proposal may not claim a time this far ahead of ours.
CLOCK_SKEW_MAX_S = 60
OUTCOMES_KEPT = 10_000
VERDICTS_KEPT = 10_000
# A core with nothing ready and no message from a peer for this long is stopped.
CORE_IDLE_S = 3.0
STATE_FILE = "state.msgpack"
STREAMS_PER_PEER_MAX = 4
# What one peer's messages may hold on the event queue: two of the largest.
INBOUND_BYTES_PER_PEER_MAX = 2 * wire.FRAME_BYTES_MAX
DECODED_KEPT = 64
COMPACT_KEPT = 64
# Re-sends of a pending transaction (and of our verdict on it): after 2, 6, 14, 30, … s.
RESENDS_MAX = 6
DECODED_BYTES_MAX = 4 * wire.PROPOSED_BLOCK_BYTES_MAX
REFUSALS_LOGGED_MAX = 1024
# Inbound refusals, as counted (`pyrsia_consensus_refused_total{reason=…}`).
NOT_AUTHORITY = "not_authority"
PEER_STREAMS = "peer_streams"
OVERSIZED = "oversized"
MALFORMED = "malformed"
INBOUND_FULL = "inbound_full"
UNASKED_TXS = "unasked_txs"
REFUSAL_REASONS = (NOT_AUTHORITY, PEER_STREAMS, OVERSIZED, MALFORMED, INBOUND_FULL, UNASKED_TXS)


class _Pending:
    """`verify` has not decided yet (an authority change this node's admin has not approved)."""


PENDING = _Pending()
VerifyResult = str | None | _Pending  # None: endorse; text: refuse with that reason
Verify = Callable[[Transaction], VerifyResult]
FindPeer = Callable[[str, float], list[Multiaddr]]


@dataclass(slots=True)
class Outcome:
    """What became of a transaction this node has seen."""

    tx: Transaction
    state: str = "pending"  # pending | committed | refused | expired
    height: int | None = None
    verdicts: dict[str, tuple[str, str]] = field(default_factory=dict)
    done: Future[int] = field(default_factory=Future)


@dataclass(slots=True)
class Stats:
    commits: int = 0
    proposals_refused: int = 0
    messages_rejected: int = 0
    verdicts_given: int = 0
    evidence: int = 0
    last_refusal: str = ""
    refused: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REFUSAL_REASONS, 0))
    # Encoded bytes handed to peers' outboxes, by message type.
    sent_bytes: dict[str, int] = field(default_factory=dict)
    # Transactions asked for (a compact value named them, this node lacked them) and answered.
    txs_fetched: int = 0
    txs_served: int = 0


# -- events ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Inbound:
    """Messages of one peer read at once (one event, one wake-up of the service thread)."""

    peer: str
    messages: tuple[wire.Message, ...]
    size: int = 0  # their encoded bytes, counted against the peer's inbound bound


@dataclass(frozen=True, slots=True)
class _Local:
    txs: tuple[Transaction, ...]


@dataclass(frozen=True, slots=True)
class _Verified:
    tx_id: bytes
    result: VerifyResult


@dataclass(frozen=True, slots=True)
class _Committed:
    block: Block


class _Reverify:
    pass


class _Stop:
    pass


_Event = _Inbound | _Local | _Verified | _Committed | _Reverify | _Stop


def _batched(raws: Iterable[bytes]) -> Iterator[tuple[tuple[wire.Message, ...], int]]:
    """Decoded messages with their encoded size, in batches of at most
    INBOUND_BATCH_BYTES_MAX bytes (or one larger message)."""
    batch: list[wire.Message] = []
    size = 0
    for raw in raws:
        wire.check_size(raw)
        if batch and size + len(raw) > INBOUND_BATCH_BYTES_MAX:
            yield tuple(batch), size
            batch, size = [], 0
        batch.append(wire.decode(raw))
        size += len(raw)
    if batch:
        yield tuple(batch), size


class ConsensusService:
    def __init__(
        self,
        host: Host,
        ledger: Ledger,
        key: SigningKey,
        *,
        state_dir: Path,
        verify: Verify,
        find_peer: FindPeer | None = None,
        core_config: Config | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._host = host
        self.ledger = ledger
        self._key = key
        self.me = peer_id_of(bytes(key.verify_key))
        self._state_file = StateFile(state_dir / STATE_FILE)
        self._state_dir = state_dir
        self._verify = verify
        self._find_peer = find_peer
        self._core_config = core_config or Config(genesis_hash=ledger.genesis_hash, **CORE_TIMEOUTS)
        self._clock = clock
        self._wall = wall
        self._events: queue.Queue[_Event] = queue.Queue(EVENTS_MAX)
        self._thread = threading.Thread(target=self._run, name="pyrsia-consensus", daemon=True)
        self._verifiers = ThreadPoolExecutor(VERIFY_WORKERS, thread_name_prefix="pyrsia-verify")
        self._outboxes: dict[str, _Outbox] = {}
        self._out: dict[str, list[bytes]] = {}  # this step's messages by peer (service thread)
        self._outboxes_lock = threading.Lock()
        self._stopped = threading.Event()
        # Owned by the service thread:
        self.mempool = Mempool()
        self._core: Core | None = None
        self._decoded: OrderedDict[bytes, tuple[Block, int]] = OrderedDict()
        self._decoded_bytes = 0
        self._compact: OrderedDict[bytes, CompactBlock] = OrderedDict()
        self._assembly = Assembly()
        self._verifying: set[bytes] = set()
        self._verified: OrderedDict[tuple[object, ...], VerifyResult] = OrderedDict()
        # This node's endorsements reached since the last step, sent to every authority in
        # one `endorsements` message at the end of the step (at most one per verification).
        self._endorsed_out: list[tuple[bytes, bytes]] = []
        self._last_rebroadcast = 0.0
        self._persisted: HardState | None = None
        self._last_core_message = 0.0
        # Shared with callers (publish, status): guarded.
        self._outcomes: OrderedDict[bytes, Outcome] = OrderedDict()
        self._outcomes_lock = threading.Lock()
        self.stats = Stats()
        # Inbound streams and queued bytes per peer, shared by the handler threads.
        self._inbound = threading.Condition()
        self._inbound_streams: dict[str, int] = {}
        self._inbound_bytes: dict[str, int] = {}
        self._refusals_logged: OrderedDict[tuple[str, str], None] = OrderedDict()

    # -- life ------------------------------------------------------------------------

    def start(self) -> None:
        self._state_dir.mkdir(parents=True, exist_ok=True)
        self._persisted = self._load_state()
        # Authorities keep a stream open while messages flow: room for every one of them.
        self._host.set_handler(
            wire.PROTOCOL_ID, self._serve, workers=16, pending_max=64, streams_per_peer_max=4
        )
        self.ledger.on_commit(lambda block: self._post(_Committed(block)))
        self._thread.start()

    def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        with self._inbound:
            self._inbound.notify_all()  # readers waiting for room give up
        with contextlib.suppress(queue.Full):
            self._events.put_nowait(_Stop())
        if self._thread.is_alive():
            self._thread.join(timeout=10.0)
        self._verifiers.shutdown(wait=False, cancel_futures=True)
        self._state_file.close()
        with self._outboxes_lock:
            for outbox in self._outboxes.values():
                outbox.stop()

    @property
    def is_authority(self) -> bool:
        return self.me in self.ledger.authorities

    # -- callers' side ---------------------------------------------------------------

    def sign(self, type: str, payload: AddArtifact | AuthorizedNode | Registry) -> Transaction:
        """A transaction of this node's, with a random nonce (ids stay unique across authorities)."""
        return sign(self._key, type=type, payload=payload, time=int(self._wall()), nonce=secrets.randbits(62))

    def submit(self, txs: Sequence[Transaction]) -> list[Outcome]:
        """Gossip this node's signed transactions for endorsement; each outcome's `done`
        resolves with the committing height or fails with `PublishRefused`/`ConsensusTimeout`."""
        if not self.is_authority:
            raise ConsensusError("only an authority submits transactions; this node is not one")
        outcomes = [self._outcome_of(tx) for tx in txs]
        self._post(_Local(tuple(txs)))
        return outcomes

    def publish(self, payloads: Sequence[AddArtifact], timeout_s: float) -> int:
        """Commit one AddArtifact per payload through the authorities; the height that
        committed the last, once this node's log holds it."""
        if self.ledger.authorities == {self.me}:  # the one authority: nothing to agree on
            return self.ledger.publish(payloads).header.height
        outcomes = self.submit([self.sign(ADD_ARTIFACT, p) for p in payloads])
        return self.wait(outcomes, timeout_s)

    def wait(self, outcomes: Sequence[Outcome], timeout_s: float) -> int:
        deadline = self._clock() + timeout_s
        height = -1
        for outcome in outcomes:
            try:
                height = max(height, outcome.done.result(timeout=max(0.0, deadline - self._clock())))
            except TimeoutError as exc:
                raise ConsensusTimeout(
                    f"no quorum of authorities committed {_describe(outcome.tx)} within {timeout_s:g} s",
                    detail=self.verdicts_of(outcome),
                ) from exc
        return height

    def outcome(self, tx_id: bytes) -> Outcome | None:
        with self._outcomes_lock:
            return self._outcomes.get(tx_id)

    def verdicts_of(self, outcome: Outcome) -> list[dict[str, str]]:
        with self._outcomes_lock:
            items = sorted(outcome.verdicts.items())
        return [{"authority": peer, "verdict": v, "reason": reason} for peer, (v, reason) in items]

    def reverify(self) -> None:
        """This node's admin approved something: look again at what is pending undecided."""
        self._post(_Reverify())

    def pending_authority_changes(self) -> list[dict[str, object]]:
        with self._outcomes_lock:
            outcomes = [o for o in self._outcomes.values() if o.state == "pending"]
        out: list[dict[str, object]] = []
        for o in outcomes:
            if isinstance(o.tx.payload, AuthorizedNode):
                endorsed = sorted(p for p, (v, _) in o.verdicts.items() if v == "endorsed")
                out.append(
                    {
                        "tx_id": o.tx.id.hex(),
                        "action": "add" if o.tx.type == ADD_AUTHORIZED_NODE else "remove",
                        "peer_id": o.tx.payload.peer_id,
                        "submitter": o.tx.submitter,
                        "endorsed_by": endorsed,
                    }
                )
        return out

    def pending_registry_changes(self) -> list[dict[str, object]]:
        with self._outcomes_lock:
            outcomes = [o for o in self._outcomes.values() if o.state == "pending"]
        return [
            {
                "tx_id": o.tx.id.hex(),
                "action": "add" if o.tx.type == ADD_REGISTRY else "remove",
                "host": o.tx.payload.host,
                "submitter": o.tx.submitter,
                "endorsed_by": sorted(p for p, (v, _) in o.verdicts.items() if v == "endorsed"),
            }
            for o in outcomes
            if isinstance(o.tx.payload, Registry)
        ]

    def status(self) -> dict[str, object]:
        core = self._core
        return {
            "running": core is not None,
            "height": None if core is None else core.height,
            "round": None if core is None else core.round,
            "pending": len(self.mempool),
            "commits": self.stats.commits,
            "proposals_refused": self.stats.proposals_refused,
            "messages_rejected": self.stats.messages_rejected,
            "evidence": self.stats.evidence,
            "last_refusal": self.stats.last_refusal,
            "sent_bytes": dict(self.stats.sent_bytes),
            "txs_fetched": self.stats.txs_fetched,
            "txs_served": self.stats.txs_served,
            "refused": self.refusals(),
        }

    def refusals(self) -> dict[str, int]:
        """Inbound streams and messages refused, by reason (for `/metrics`)."""
        with self._inbound:
            return dict(self.stats.refused)

    def _outcome_of(self, tx: Transaction) -> Outcome:
        with self._outcomes_lock:
            found = self._outcomes.get(tx.id)
            if found is None:
                found = self._outcomes[tx.id] = Outcome(tx=tx.with_endorsements(()))
                while len(self._outcomes) > OUTCOMES_KEPT:
                    self._outcomes.popitem(last=False)
            return found

    def _post(self, event: _Event) -> None:
        try:
            self._events.put_nowait(event)
        except queue.Full:
            log.warning("consensus event queue full; dropped a %s", type(event).__name__.strip("_"))

    # -- the network -----------------------------------------------------------------

    def _serve(self, stream: Stream) -> None:
        """One inbound stream: messages until the peer closes it."""
        peer = stream.peer_id
        if peer not in self.ledger.authorities:
            self._refuse(stream, NOT_AUTHORITY, "not an authority of the current set")
            return
        with self._inbound:
            if self._inbound_streams.get(peer, 0) >= STREAMS_PER_PEER_MAX:
                admitted = False
            else:
                admitted = True
                self._inbound_streams[peer] = self._inbound_streams.get(peer, 0) + 1
        if not admitted:
            self._refuse(stream, PEER_STREAMS, f"more than {STREAMS_PER_PEER_MAX} streams at once")
            return
        try:
            self._read_stream(stream)
        finally:
            with self._inbound:
                left = self._inbound_streams.pop(peer, 1) - 1
                if left > 0:
                    self._inbound_streams[peer] = left

    def _read_stream(self, stream: Stream) -> None:
        peer = stream.peer_id
        inflater = wire.Inflater(wire.FRAME_BYTES_MAX)
        partial_since: float | None = None  # a message begun and not finished: since when
        try:
            while True:
                data = stream.read(STREAM_READ_BYTES, STREAM_TIMEOUT_S)
                if not data:
                    if inflater.partial:
                        self._refuse(stream, MALFORMED, "stream closed inside a message")
                        return
                    break
                try:
                    # What one read completes goes to the service thread as one event per batch.
                    for batch, size in _batched(inflater.messages(data)):
                        if not self._queue_inbound(_Inbound(peer, batch, size)):
                            self._refuse(stream, INBOUND_FULL, "its messages wait unread; try later")
                            return
                except (ConsensusError, ProtocolViolation) as exc:  # a message, or the framing
                    if isinstance(exc, ConsensusError):
                        self.stats.messages_rejected += 1
                    self._refuse(stream, OVERSIZED if "exceeds" in exc.message else MALFORMED, exc.message)
                    return
                # A peer trickling one message forever: the whole message has the timeout.
                now = time.monotonic()
                partial_since = (partial_since or now) if inflater.partial else None
                if partial_since is not None and now - partial_since > STREAM_TIMEOUT_S:
                    self._refuse(stream, MALFORMED, f"one message took more than {STREAM_TIMEOUT_S:g} s")
                    return
            stream.close()
        except PeerError as exc:
            log.debug("consensus stream from %s ended: %s", peer, exc.message)
            stream.reset()

    def _queue_inbound(self, event: _Inbound) -> bool:
        """Queue a peer's message once its queued bytes leave room (within STREAM_TIMEOUT_S)."""
        peer, size = event.peer, event.size
        with self._inbound:
            room = self._inbound.wait_for(
                lambda: (
                    self._inbound_bytes.get(peer, 0) + size <= INBOUND_BYTES_PER_PEER_MAX
                    or self._stopped.is_set()
                ),
                STREAM_TIMEOUT_S,
            )
            if not room or self._stopped.is_set():
                return False
            self._inbound_bytes[peer] = self._inbound_bytes.get(peer, 0) + size
        try:
            self._events.put_nowait(event)
        except queue.Full:
            self._dequeued(event)
            log.warning("consensus event queue full; dropped a message from %s", peer)
        return True

    def _dequeued(self, event: _Inbound) -> None:
        with self._inbound:
            left = self._inbound_bytes.pop(event.peer, 0) - event.size
            if left > 0:
                self._inbound_bytes[event.peer] = left
            self._inbound.notify_all()

    def _refuse(self, stream: Stream, reason: str, detail: str) -> None:
        """Reset the stream and count the refusal; logged once per peer and reason."""
        peer = stream.peer_id
        with self._inbound:
            self.stats.refused[reason] = self.stats.refused.get(reason, 0) + 1
            first = (peer, reason) not in self._refusals_logged
            self._refusals_logged[(peer, reason)] = None
            while len(self._refusals_logged) > REFUSALS_LOGGED_MAX:
                self._refusals_logged.popitem(last=False)
        if reason in (OVERSIZED, MALFORMED):
            first = True  # each such message is its own line (what was wrong with it)
        log.log(
            logging.INFO if first else logging.DEBUG,
            "consensus message from %s refused: %s (%s)",
            peer,
            detail,
            reason,
        )
        stream.reset()

    def _send(self, peer: str, message: wire.Message) -> None:
        self._send_to((peer,), message)

    def _broadcast(self, message: wire.Message) -> None:
        self._send_to(self.ledger.authorities, message)

    def _send_to(self, peers: Iterable[str], message: wire.Message) -> None:
        """`message`, encoded once, into each peer's outbox (never to this node)."""
        if self._stopped.is_set():
            return
        data: bytes | None = None
        kind = _type_of(message)
        for peer in peers:
            if peer == self.me:
                continue
            if data is None:
                data = wire.encode(message)
            self.stats.sent_bytes[kind] = self.stats.sent_bytes.get(kind, 0) + len(data)
            self._out.setdefault(peer, []).append(data)

    def _flush_out(self) -> None:
        """What this step sent each peer goes to its outbox at once: written together, in
        one piece of the stream, rather than one write (and one wake-up) per message."""
        out, self._out = self._out, {}
        for peer, messages in out.items():
            with self._outboxes_lock:
                outbox = self._outboxes.get(peer)
                if outbox is None:
                    outbox = self._outboxes[peer] = _Outbox(self._host, peer, self._find_peer, self._stopped)
            outbox.put(messages)

    # -- the service thread ----------------------------------------------------------

    def _run(self) -> None:
        while True:
            try:
                event: _Event | None = self._events.get(timeout=self._wait_s())
            except queue.Empty:
                event = None
            try:
                while event is not None:
                    if isinstance(event, _Stop):
                        return
                    self._handle(event)
                    try:
                        event = self._events.get_nowait()
                    except queue.Empty:
                        event = None
                self._flush_endorsements()  # before any proposal that may name them
                if self._core is not None:
                    self._core.tick(self._ticks())
                self._drive()
                self._housekeeping()
                self._flush_out()
            except Exception:
                log.exception("consensus service step failed; continuing")

    def _wait_s(self) -> float:
        wait = REBROADCAST_S
        if self._core is not None:
            deadline = self._core.next_deadline_ticks()
            if deadline is not None:
                wait = min(wait, max(0.0, (deadline - self._ticks()) * TICK_S))
        return wait

    def _ticks(self) -> int:
        return int(self._clock() / TICK_S)

    def _handle(self, event: _Event) -> None:
        match event:
            case _Inbound(peer=peer, messages=messages, size=size):
                if size:
                    self._dequeued(event)
                for message in messages:
                    self._on_message(peer, message)
            case _Local(txs=txs):
                for tx in txs:
                    self._on_local(tx)
            case _Verified(tx_id=tx_id, result=result):
                self._on_verified(tx_id, result)
            case _Committed(block=block):
                self._on_committed(block)
            case _Reverify():
                for entry in self.mempool.entries():
                    if self.me not in entry.endorsements and self.me not in entry.refusals:
                        self._start_verify(entry)

    def _on_message(self, peer: str, message: wire.Message) -> None:
        match message:
            case wire.Submit(tx=tx):
                self._on_submit(peer, tx)
            case wire.Verdict():
                self._on_verdict(peer, message)
            case wire.Endorsements():
                self._on_endorsements(peer, message)
            case wire.FetchTxs(ids=ids):
                self._on_fetch_txs(peer, ids)
            case wire.Txs(txs=txs):
                self._on_txs(peer, txs)
            case _:
                self._on_core_message(peer, message)

    def _already_committed(self, tx: Transaction) -> int | None:
        try:
            return committed_height(tx, self.ledger.latest)
        except PyrsiaError:  # the index behind its blocks: no answer, so no shortcut
            return None

    def _on_local(self, tx: Transaction) -> None:
        height = self._already_committed(tx)
        if height is not None:  # a twin committed since we looked: that is our publication
            log.info("transaction %s already committed at height %d", tx.id.hex()[:16], height)
            self._finish(tx.id, "committed", height)
            return
        entry = self.mempool.add(tx, self._clock(), local=True)
        if entry is None:
            return
        self._record_verdict(wire.endorsement_verdict(self._key, tx.id))
        self._broadcast(wire.Submit(tx=entry.endorsed(self.ledger.authorities)))
        self._maybe_start_core()

    def _on_submit(self, peer: str, tx: Transaction) -> None:
        authorities = self.ledger.authorities
        if self.mempool.get(tx.id) is not None:
            for e in tx.endorsements:  # what the sender knows that we may not
                if e.signer in authorities and e.verify():
                    self._apply_verdict(
                        wire.Verdict(
                            tx_id=tx.id, signer=e.signer, endorse=True, reason="", signature=e.signature
                        )
                    )
            return
        try:
            if tx.submitter not in authorities:
                raise TxInvalid(f"submitted by {tx.submitter}, not an authority")
            check(tx)
            if tx.type == ADD_ARTIFACT and (
                self.ledger.has_tx(tx.id) or self._already_committed(tx) is not None
            ):
                raise TxInvalid("already committed")
        except PyrsiaError as exc:
            self.stats.messages_rejected += 1
            log.info("transaction %s from %s refused: %s", tx.id.hex()[:16], peer, exc.message)
            return
        endorsed = tx.with_endorsements(tuple(e for e in tx.endorsements if e.signer in authorities))
        entry = self.mempool.add(endorsed, self._clock())
        if entry is None:
            return
        outcome = self._outcome_of(tx)
        self._sync_outcome(entry, outcome)
        if self.is_authority:
            self._start_verify(entry)
        self._maybe_start_core()

    def _on_verdict(self, peer: str, verdict: wire.Verdict) -> None:
        if verdict.signer not in self.ledger.authorities or not verdict.verify():
            self.stats.messages_rejected += 1
            log.info("verdict from %s refused: not signed by an authority", peer)
            return
        self._apply_verdict(verdict)

    def _on_endorsements(self, peer: str, batch: wire.Endorsements) -> None:
        if batch.signer not in self.ledger.authorities:
            self.stats.messages_rejected += 1
            log.info("endorsements from %s refused: not signed by an authority", peer)
            return
        for verdict in batch.verdicts():
            self._on_verdict(peer, verdict)

    def _flush_endorsements(self) -> None:
        """Send this step's endorsements to every authority, a block's worth a message."""
        pairs, self._endorsed_out = self._endorsed_out, []
        for start in range(0, len(pairs), wire.ENDORSEMENTS_BATCH_MAX):
            batch = tuple(pairs[start : start + wire.ENDORSEMENTS_BATCH_MAX])
            self._broadcast(wire.Endorsements(signer=self.me, pairs=batch))

    def _apply_verdict(self, verdict: wire.Verdict) -> None:
        entry = self.mempool.verdict(verdict)
        if entry is None:
            return
        outcome = self.outcome(entry.tx.id)
        if outcome is not None:
            self._sync_outcome(entry, outcome)
        if entry.is_refused(self.ledger.authorities):
            self._settle_refused(entry)
        else:
            self._maybe_start_core()

    def _record_verdict(self, verdict: wire.Verdict) -> None:
        """A verdict of this node's own: counted here like a peer's."""
        self.stats.verdicts_given += 1
        self._apply_verdict(verdict)

    def _start_verify(self, entry: Entry) -> None:
        tx = entry.tx
        if tx.id in self._verifying:
            return
        known = self._verified.get(_checked_fields(tx))
        if known is not None:  # the same file, submitted again (by another authority): same answer
            self._on_verified(tx.id, known)
            return
        self._verifying.add(tx.id)

        def run() -> None:
            try:
                result = self._verify(tx)
            except PyrsiaError as exc:
                result = exc.message
            except Exception as exc:  # a verifier bug refuses, never endorses
                log.exception("verifying %s failed", tx.id.hex()[:16])
                result = f"verification failed: {type(exc).__name__}"
            self._post(_Verified(tx.id, result))

        try:
            self._verifiers.submit(run)
        except RuntimeError:  # shutting down
            self._verifying.discard(tx.id)

    def _on_verified(self, tx_id: bytes, result: VerifyResult) -> None:
        self._verifying.discard(tx_id)
        entry = self.mempool.get(tx_id)
        if entry is None or isinstance(result, _Pending):
            return
        if isinstance(entry.tx.payload, AddArtifact):
            self._verified[_checked_fields(entry.tx)] = result
            while len(self._verified) > VERDICTS_KEPT:
                self._verified.popitem(last=False)
        if result is None:
            verdict = wire.endorsement_verdict(self._key, tx_id)
            self._record_verdict(verdict)
            self._endorsed_out.append((tx_id, verdict.signature))
            return
        log.info("refusing %s: %s", _describe(entry.tx), result)
        verdict = wire.refusal_verdict(self._key, tx_id, result)
        self._record_verdict(verdict)
        self._broadcast(verdict)

    def _sync_outcome(self, entry: Entry, outcome: Outcome) -> None:
        verdicts = entry.verdicts(self.ledger.authorities)
        with self._outcomes_lock:
            outcome.verdicts = verdicts

    def _settle_refused(self, entry: Entry) -> None:
        self.mempool.remove(entry.tx.id)
        outcome = self.outcome(entry.tx.id)
        if outcome is None or outcome.done.done():
            return
        reasons = [f"{peer}: {reason}" for peer, reason in sorted(entry.refusals.items())]
        with self._outcomes_lock:
            outcome.state = "refused"
        outcome.done.set_exception(
            PublishRefused(
                f"authorities refused {_describe(entry.tx)}: {'; '.join(reasons)}",
                detail=self.verdicts_of(outcome),
            )
        )

    def _on_committed(self, block: Block) -> None:
        self._settle(block)
        core = self._core
        if core is not None and core.height <= self.ledger.height:
            self._rebuild_core()

    def _settle(self, block: Block) -> None:
        """What the block committed (and whatever published the same) leaves the mempool."""
        height = block.header.height
        for entry in self.mempool.settle(block.transactions):
            self._finish(entry.tx.id, "committed", height)
        for tx in block.transactions:
            self._finish(tx.id, "committed", height)

    def _finish(self, tx_id: bytes, state: str, height: int | None) -> None:
        outcome = self.outcome(tx_id)
        if outcome is None or outcome.done.done():
            return
        with self._outcomes_lock:
            outcome.state, outcome.height = state, height
        if height is not None:
            outcome.done.set_result(height)
        else:
            outcome.done.set_exception(
                ConsensusTimeout(f"{_describe(outcome.tx)} expired before a quorum endorsed it")
            )

    def _housekeeping(self) -> None:
        now = self._clock()
        if len(self._assembly):
            self._assembly.forget_below(self.ledger.height + 1)
            holders = sorted(self.ledger.authorities - {self.me})
            for fetch in self._assembly.due(now, holders):
                self._send_fetch(fetch)
        if now - self._last_rebroadcast < REBROADCAST_S:
            return
        self._last_rebroadcast = now
        for entry in self.mempool.expire(now):
            self._finish(entry.tx.id, "expired", None)
        if not self.is_authority:
            return
        authorities = self.ledger.authorities
        endorsed_to: dict[str, list[tuple[bytes, bytes]]] = {}
        for entry in self.mempool.entries():
            # Backoff: a peer that lost a submit or a verdict gets it again after 2, 6, 14, …
            # s; one that lacks a transaction a proposal names fetches it at once anyway.
            if now - entry.received_s < REBROADCAST_S * (2 ** (entry.resends + 1) - 1):
                continue
            entry.resends = min(entry.resends + 1, RESENDS_MAX)
            # Only to the authorities that have said nothing of it yet (a verdict shows the
            # submit arrived; a proposal naming our endorsement is fetched whole anyway);
            # from the third re-send on, to all (a peer that restarted has forgotten it).
            heard = entry.endorsements.keys() | entry.refusals.keys()
            targets = sorted(authorities - {self.me} - (heard if entry.resends < 3 else set()))
            if entry.local:  # keep gossiping our own until it settles: peers may have restarted
                self._send_to(targets, wire.Submit(tx=entry.endorsed(authorities)))
            own = entry.endorsements.get(self.me)
            if own is not None:
                for peer in targets:
                    endorsed_to.setdefault(peer, []).append((own.tx_id, own.signature))
        for peer, pairs in endorsed_to.items():  # one message per peer, not one per transaction
            for start in range(0, len(pairs), wire.ENDORSEMENTS_BATCH_MAX):
                batch = tuple(pairs[start : start + wire.ENDORSEMENTS_BATCH_MAX])
                self._send(peer, wire.Endorsements(signer=self.me, pairs=batch))
        if self._core is None:
            self._maybe_start_core()
        elif now - self._last_core_message > CORE_IDLE_S and not self.mempool.ready(authorities, 1):
            # Nothing to agree on and no peer proposing or voting for a value: stop the rounds
            # (and their messages).
            # What the core signed stays persisted; it resumes from there if woken again.
            self._persist(self._core.hard_state())
            self._core = None

    # -- the core --------------------------------------------------------------------

    def _maybe_start_core(self) -> None:
        if self._core is None and self.is_authority and self.mempool.ready(self.ledger.authorities, 1):
            self._rebuild_core()

    def _on_core_message(self, peer: str, message: m.Message) -> None:
        if not self.is_authority:
            return
        height = message.height if not isinstance(message, m.Decision) else message.certificate.height
        ahead = height - self.ledger.height
        if (
            isinstance(message, m.Proposal | m.Decision)
            and 0 < ahead <= 1 + self._core_config.heights_ahead_max
        ):
            try:
                self._check_signed(message)
                missing = self._missing(message.proposal, height)
            except ConsensusError as exc:
                self.stats.messages_rejected += 1
                log.info("consensus message from %s refused: %s", peer, exc.message)
                return
            if missing:
                self._hold(peer, message, height, missing)
                return
        woken = self._core is None
        if woken:
            if height <= self.ledger.height:
                return  # a lagging peer: sync brings it the blocks
            self._rebuild_core()
        core = self._core
        if core is None:
            return
        try:
            core.step(message)
        except ConsensusError as exc:
            self.stats.messages_rejected += 1
            log.info("consensus message from %s refused: %s", peer, exc.message)
            if woken:
                self._core = None  # what the core refuses wakes nothing (a stranger's vote, say)
            return
        if _carries_value(message):
            self._last_core_message = self._clock()
        elif woken:
            # Nil votes and catch-ups are not work: answering them with rounds of our own
            # would keep every idle authority voting nil forever.
            self._core = None

    def _rebuild_core(self) -> None:
        """A core for the height after the log's tip: resumed from what it signed there, if anything."""
        if not self.is_authority:
            self._core = None
            return
        state = self._core.hard_state() if self._core is not None else self._persisted
        decided = state.last_decision if state is not None else None
        if decided is not None and decided.certificate.height == self.ledger.height + 1:
            # Agreed, persisted, but not applied (a crash, or the append failed): apply it now,
            # and never start that height again, which could sign something else there.
            self._apply(decided.certificate.height, decided.proposal, decided.certificate)
            if self.ledger.height < decided.certificate.height:
                # Its transactions left with the restart: ask the authorities (sync may
                # bring the block first); this height is not started again meanwhile.
                with contextlib.suppress(ConsensusError):
                    missing = self._missing(decided.proposal, decided.certificate.height)
                    others = sorted(self.ledger.authorities - {self.me})
                    if missing and others:
                        self._hold(others[0], decided, decided.certificate.height, missing)
                self._core = None
                return
        height = self.ledger.height + 1
        if state is not None and (
            state.height != height or (not state.own and state.round == 0 and state.step == Step.PROPOSE)
        ):
            state = None  # nothing signed at this height: start it afresh (and ask for a value now)
        self._core = Core(
            key=self._key,
            config=self._core_config,
            authorities=self._authorities_at,
            validate=self._validate,
            get_value=self._get_value,
            height=height,
            now_ticks=self._ticks(),
            state=state,
            extend=self._extend,
            verify_extension=self._verify_extension,
        )

    def _drive(self) -> None:
        """Carry out what the core asks, in its contract's order, until it asks nothing."""
        for _ in range(1000):
            core = self._core
            if core is None:
                return
            ready = core.ready()
            if not ready:
                return
            self._carry_out(core, ready)
            core.advance()  # after a commit, the core enters the next height now
            if ready.commits:
                if (
                    self._core is core
                    and core.height == self.ledger.height + 1
                    and core.authorities == self.ledger.authorities
                ):
                    pass  # kept: what arrived for the next height is already in it
                else:
                    self._rebuild_core()  # the block did not apply, or changed the authorities
                if self._core is not None and not self.mempool.ready(self.ledger.authorities, 1):
                    state = self._core.hard_state()
                    if not state.own and state.round == 0:
                        self._core = None  # idle: start again when there is work
                        self._persist(state)

    def _carry_out(self, core: Core, ready: Ready) -> None:
        if ready.hard_state is not None:
            self._persist(ready.hard_state)
        for out in ready.messages:
            if isinstance(out, Broadcast):
                self._broadcast(out.message)
            elif isinstance(out, SendTo):
                self._send(out.peer, out.message)
        if ready.commits:
            self._flush_out()  # on their way before the block's append waits for its fsync
        for commit in ready.commits:
            self._apply(commit.height, commit.proposal, commit.certificate)
        for evidence in ready.evidence:
            self.stats.evidence += 1
            log.warning(
                "authority %s signed two different messages at height %d",
                evidence.signer,
                evidence.first.height,
            )

    def _apply(self, height: int, proposal: bytes, certificate: m.Certificate) -> None:
        """The agreed block, its certificate made of the precommits' commit signatures."""
        if height <= self.ledger.height:
            return  # sync was faster
        try:
            block = self._block(proposal)
        except (ConsensusError, TxInvalid) as exc:
            log.error("the block agreed at height %d cannot be rebuilt yet: %s", height, exc.message)
            return
        signatures = (_commit_signature(s.signer, s.extension) for s in certificate.signatures)
        certified = Block(
            header=block.header,
            transactions=block.transactions,
            certificate=tuple(c for c in signatures if c),
        )
        try:
            self.ledger.append(certified)
            self.stats.commits += 1
            self._settle(certified)
        except (ChainBroken, TxInvalid, StorageError) as exc:
            log.error("the block agreed at height %d does not apply: %s", height, exc.message)

    def _persist(self, state: HardState) -> None:
        if state == self._persisted:
            return
        self._state_file.write(state.encode())
        self._persisted = state

    def _load_state(self) -> HardState | None:
        data = self._state_file.load()
        return None if data is None else HardState.decode(data)

    # -- what the core asks of the chain ---------------------------------------------

    def _authorities_at(self, height: int) -> frozenset[str] | None:
        # The set in force for the block after the tip; a core that just decided asks for
        # the height after that before the block is applied, and is rebuilt once it is.
        return self.ledger.authorities if height > self.ledger.height else None

    def _compact_of(self, proposal: bytes) -> CompactBlock:
        """The compact block in proposal bytes (`MessageRejected` if it is none), cached."""
        digest = m.value_hash(proposal)
        found = self._compact.get(digest)
        if found is None:
            found = self._compact[digest] = CompactBlock.decode(proposal)
            while len(self._compact) > COMPACT_KEPT:
                self._compact.popitem(last=False)
        return found

    def _lookup(self, tx_id: bytes) -> tuple[Transaction, dict[str, Endorsement]] | None:
        entry = self.mempool.get(tx_id)
        return None if entry is None else (entry.tx, entry.endorsements)

    def _missing(self, proposal: bytes, height: int) -> list[bytes]:
        """The ids of a compact value's transactions (or endorsements) this node lacks."""
        if m.value_hash(proposal) in self._decoded:
            return []
        value = self._compact_of(proposal)
        if height == self.ledger.height + 1:
            result = rebuild(value, self.ledger.authorities, self._lookup)
            if isinstance(result, Block):
                self._keep_block(m.value_hash(proposal), result)
                return []
            return result
        return [tx_id for tx_id in value.ids if self.mempool.get(tx_id) is None]  # a later height

    def _check_signed(self, message: m.Proposal | m.Decision) -> None:
        """Before holding a value (and fetching for it): signed by its height's proposer, or
        certified by a quorum; `MessageRejected`/`CertificateInvalid` otherwise. The core
        checks again, against the authority set of the height, once the value is whole."""
        authorities = self.ledger.authorities
        if isinstance(message, m.Decision):
            m.verify_certificate(message.certificate, authorities, self._core_config.genesis_hash)
            return
        if message.signer not in authorities:
            raise MessageRejected(f"{message.signer[:60]} is not an authority at height {message.height}")
        if not m.is_signed(message, self._core_config.genesis_hash):
            raise MessageRejected(f"bad proposal signature from {message.signer[:60]}")

    def _hold(self, peer: str, message: m.Proposal | m.Decision, height: int, missing: list[bytes]) -> None:
        fetch = self._assembly.hold(
            m.value_hash(message.proposal), peer, message, height, missing, self._clock()
        )
        if fetch is not None:
            self._send_fetch(fetch)

    def _send_fetch(self, fetch: Fetch) -> None:
        self.stats.txs_fetched += len(fetch.ids)
        log.debug("asking %s for %d transactions a proposal names", fetch.peer, len(fetch.ids))
        self._send(fetch.peer, wire.FetchTxs(ids=fetch.ids))

    def _on_fetch_txs(self, peer: str, ids: tuple[bytes, ...]) -> None:
        """An authority lacks transactions a value names: send those we hold, within a block's bytes."""
        authorities = self.ledger.authorities
        held = {t.id: t for block, _ in self._decoded.values() for t in block.transactions}
        out: list[Transaction] = []
        size = 0
        for tx_id in ids:
            entry = self.mempool.get(tx_id)
            tx = entry.endorsed(authorities) if entry is not None else held.get(tx_id)
            if tx is None:
                continue
            size += len(tx.encoded()) + 256 * len(tx.endorsements)
            if size > wire.PROPOSED_BLOCK_BYTES_MAX:
                break
            out.append(tx)
        if out:
            self.stats.txs_served += len(out)
            self._send(peer, wire.Txs(txs=tuple(out)))

    def _on_txs(self, peer: str, txs: tuple[Transaction, ...]) -> None:
        """Transactions we asked for: into the mempool like submits, then step what waited."""
        got = []
        for tx in txs:
            if not self._assembly.wanted(tx.id):
                with self._inbound:
                    self.stats.refused[UNASKED_TXS] += 1
                continue
            self._on_submit(peer, tx)
            got.append(tx.id)
        complete = self._assembly.arrived(got)
        if complete and self._core is not None:
            self._core.forget_invalid()  # what validate lacked may be here now
        for sender, message in complete:
            if message is not None:  # None: only validate was waiting
                self._on_core_message(sender, message)

    def _keep_block(self, digest: bytes, block: Block) -> None:
        if digest in self._decoded:
            return
        size = sum(len(tx.encoded()) + 256 * len(tx.endorsements) for tx in block.transactions)
        self._decoded[digest] = (block, size)
        self._decoded_bytes += size
        while len(self._decoded) > 1 and (
            len(self._decoded) > DECODED_KEPT or self._decoded_bytes > DECODED_BYTES_MAX
        ):
            self._decoded_bytes -= self._decoded.popitem(last=False)[1][1]

    def _block(self, proposal: bytes) -> Block:
        """The block a compact value stands for, rebuilt from the mempool; `TxInvalid` if
        this node lacks some of its transactions."""
        digest = m.value_hash(proposal)
        found = self._decoded.get(digest)
        if found is not None:
            return found[0]
        value = self._compact_of(proposal)
        result = rebuild(value, self.ledger.authorities, self._lookup)
        if not isinstance(result, Block):
            raise TxInvalid(f"{len(result)} of the proposal's transactions are not here")
        self._keep_block(digest, result)
        return result

    def _validate(self, height: int, proposal: bytes) -> bool:
        if height <= self.ledger.height:
            return False  # sync brought the block first: this core is rebuilt once that is handled
        if height == self.ledger.height + 1 and m.value_hash(proposal) not in self._decoded:
            try:
                missing = self._missing(proposal, height)
            except ConsensusError:
                missing = []  # refused below, with its reason
            if missing:
                # Not refused: asked for (a value resumed after a restart, say); the core
                # asks again once they arrive (`forget_invalid`).
                others = sorted(self.ledger.authorities - {self.me})
                if others:
                    fetch = self._assembly.hold(
                        m.value_hash(proposal), others[0], None, height, missing, self._clock()
                    )
                    if fetch is not None:
                        self._send_fetch(fetch)
                return False
        try:
            block = self._block(proposal)
            header = block.header
            if header.height != height or block.certificate:
                raise TxInvalid(f"a proposal for height {height} must be an uncertified block of that height")
            if height != self.ledger.height + 1:
                raise TxInvalid(f"this node's log is at height {self.ledger.height}")
            if header.time > self._wall() + CLOCK_SKEW_MAX_S:
                raise TxInvalid(f"block time {header.time} is in the future")
            for tx in block.transactions:
                if abs(header.time - tx.time) > TX_AGE_MAX_S:
                    raise TxInvalid(f"transaction {tx.id.hex()[:16]} is too old (or too new) for this block")
                if tx.type == ADD_ARTIFACT and self.ledger.has_tx(tx.id):
                    raise TxInvalid(f"transaction {tx.id.hex()[:16]} is committed already")
            self.ledger.call(lambda chain: chain.check_proposal(block))
        except PyrsiaError as exc:
            self.stats.proposals_refused += 1
            self.stats.last_refusal = exc.message
            log.info("refusing the proposal for height %d: %s", height, exc.message)
            return False
        return True

    def _get_value(self, height: int) -> bytes | None:
        if height != self.ledger.height + 1:
            return None
        authorities = self.ledger.authorities
        txs: list[Transaction] = []
        size = 0
        for tx in self.mempool.ready(authorities, PROPOSAL_TXS_MAX):
            if tx.type == ADD_ARTIFACT and self.ledger.has_tx(tx.id):
                self.mempool.remove(tx.id)
                continue
            encoded = len(tx.encoded()) + 256 * len(tx.endorsements)
            if size + encoded > min(BLOCK_TXS_BYTES_MAX, m.PROPOSAL_BYTES_MAX - (1 << 20)):
                break
            txs.append(tx)
            size += encoded
        txs = self._valid_for_chain(txs)
        if not txs:
            return None
        now = int(self._wall())
        header = self.ledger.call(lambda chain: chain.propose(txs, now, self.me))
        block = Block(header=header, transactions=tuple(txs), certificate=())
        value = compact(block, authorities).encode()
        self._keep_block(m.value_hash(value), block)
        return value

    def _valid_for_chain(self, txs: list[Transaction]) -> list[Transaction]:
        """The transactions the chain would take, in order; one it refuses is dropped."""

        def fits(chain: Chain) -> list[Transaction]:
            kept: list[Transaction] = []
            for tx in txs:
                candidate = [*kept, tx]
                header = chain.propose(candidate, int(self._wall()), self.me)
                try:
                    chain.check_proposal(Block(header=header, transactions=tuple(candidate), certificate=()))
                except ChainBroken as exc:
                    log.info("not proposing %s: %s", _describe(tx), exc.reason)
                    self.mempool.remove(tx.id)
                    continue
                kept.append(tx)
            return kept

        if not txs:
            return txs
        now = int(self._wall())

        def whole(chain: Chain) -> bool:
            header = chain.propose(txs, now, self.me)
            try:
                chain.check_proposal(Block(header=header, transactions=tuple(txs), certificate=()))
            except ChainBroken:
                return False
            return True

        return txs if self.ledger.call(whole) else self.ledger.call(fits)

    def _extend(self, height: int, round_: int, proposal: bytes) -> bytes:
        """This authority's commit signature for the block, carried on its precommit."""
        signature = commit_signature(self._key, self._compact_of(proposal).header, self.ledger.origin)
        return codec.encode({"block": signature.block, "checkpoint": signature.checkpoint})

    def _verify_extension(
        self, height: int, round_: int, proposal: bytes, signer: str, extension: bytes
    ) -> bool:
        signature = _commit_signature(signer, extension)
        if signature is None:
            return False
        try:
            header = self._compact_of(proposal).header
        except ConsensusError:
            return False
        point = Checkpoint(origin=self.ledger.origin, size=header.log_size, root=header.log_root).body()
        return verify_signature(signer, header.hash, signature.block) and verify_signature(
            signer, point, signature.checkpoint
        )


def _type_of(message: wire.Message) -> str:
    if isinstance(message, m.Prevote | m.Precommit | m.CatchUp):
        return message.kind
    return type(message).__name__.lower()


def _carries_value(message: m.Message) -> bool:
    """A proposal, a decision or a vote for a value: something to agree on."""
    if isinstance(message, m.Prevote | m.Precommit):
        return message.value is not None
    return isinstance(message, m.Proposal | m.Decision)


def _commit_signature(signer: str, extension: bytes) -> CommitSignature | None:
    try:
        doc = codec.decode(extension)
        return CommitSignature(
            signer=signer,
            block=codec.field(doc, "block", bytes),
            checkpoint=codec.field(doc, "checkpoint", bytes),
        )
    except TxInvalid:
        return None


def _checked_fields(tx: Transaction) -> tuple[object, ...]:
    """What verifying an artifact compares: two transactions equal in these get one verdict."""
    p = tx.payload
    if isinstance(p, AddArtifact):
        # A rebuilt file is vouched for by a rebuild, a mirrored one by a re-fetch: never one for the other.
        return (
            p.package_type,
            p.path,
            p.digest,
            p.size,
            p.chunk_size,
            p.chunk_root,
            p.build_spec,
            p.build_commit,
        )
    return (tx.id,)  # an authority change is decided by approvals, which may change


def _describe(tx: Transaction) -> str:
    payload = tx.payload
    if isinstance(payload, AddArtifact):
        return f"{payload.path} ({payload.digest})"
    if isinstance(payload, Registry):
        return f"{'adding' if tx.type == ADD_REGISTRY else 'removing'} registry {payload.host}"
    verb = "adding" if tx.type == ADD_AUTHORIZED_NODE else "removing"
    assert tx.type in (ADD_AUTHORIZED_NODE, REMOVE_AUTHORIZED_NODE)
    return f"{verb} authority {getattr(payload, 'peer_id', '?')}"


class _Outbox:
    """Messages for one peer, written in order by one thread. A stream stays open while
    messages keep coming and is closed after `OUTBOX_LINGER_S` without one (the peer's
    handler holds a worker while it is open)."""

    def __init__(self, host: Host, peer: str, find_peer: FindPeer | None, stopped: threading.Event) -> None:
        self._host = host
        self._peer = peer
        self._find_peer = find_peer
        self._stopped = stopped
        # Each item: the messages one step of the service sent this peer; None: stop.
        self._queue: queue.Queue[list[bytes] | None] = queue.Queue(OUTBOX_MAX)
        self._thread = threading.Thread(target=self._run, name=f"consensus-out-{peer[-8:]}", daemon=True)
        self._thread.start()

    def put(self, messages: list[bytes]) -> None:
        with contextlib.suppress(queue.Full):  # dropped: the core re-sends what matters
            self._queue.put_nowait(messages)

    def stop(self) -> None:
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)

    def _run(self) -> None:
        backoff = 0.5
        while not self._stopped.is_set():
            data = self._queue.get()
            if data is None:
                return
            try:
                stream = self._open()
            except PeerError as exc:
                log.debug("consensus messages to %s dropped: %s", self._peer, exc.message)
                self._stopped.wait(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.5
            deflater = wire.Deflater()  # one DEFLATE stream per consensus stream
            try:
                stopping = False
                pending: list[bytes] | None = data
                while pending is not None:
                    pending = self._write_batch(stream, deflater, pending)
                    if pending == []:  # stop() came while batching
                        stopping = True
                        break
                    if pending is None:
                        try:
                            pending = self._queue.get(timeout=OUTBOX_LINGER_S)
                        except queue.Empty:
                            break
                        stopping = pending is None
                stream.close()
                if stopping:
                    return
            except PeerError as exc:
                log.debug("consensus stream to %s failed: %s", self._peer, exc.message)
                stream.reset()

    def _write_batch(self, stream: Stream, deflater: wire.Deflater, first: list[bytes]) -> list[bytes] | None:
        """Write `first` and whatever else is queued, within a batch's bytes (a step's
        messages are never split), in one write (one flushed piece of the stream's
        DEFLATE stream).

        Returns messages that did not fit (the next batch's first), [] if stop() was
        queued, or None once the queue is empty."""
        parts = list(first)
        size = sum(len(part) for part in parts)
        left: list[bytes] | None = None
        while size < OUTBOX_BATCH_BYTES_MAX:
            try:
                more = self._queue.get_nowait()
            except queue.Empty:
                break
            if more is None:
                left = []
                break
            more_size = sum(len(part) for part in more)
            if size + more_size > OUTBOX_BATCH_BYTES_MAX:
                left = more
                break
            parts += more
            size += more_size
        stream.write(deflater.batch(parts), STREAM_TIMEOUT_S)
        return left

    def _open(self) -> Stream:
        if not self._host.is_connected(self._peer) and self._find_peer is not None:
            with contextlib.suppress(PyrsiaError):
                self._host.add_addresses(self._peer, self._find_peer(self._peer, STREAM_TIMEOUT_S))
        return self._host.open_stream(self._peer, [wire.PROTOCOL_ID], timeout=STREAM_TIMEOUT_S)
