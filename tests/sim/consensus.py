"""The consensus core as a simulation node, every message through the real wire codec.

`ConsensusNode` is the shell the daemon will be, minus I/O: it turns the driver's
seconds into the core's ticks through its own skewed `NodeClock`, decodes each
payload, steps the core, and carries out `Ready` in contract order (persist the hard
state, send, apply commits) before `advance()`. Crash and restart rebuild the core
from what was persisted and the commits applied, nothing else.

A proposal is a `SimBlock`: its height and a list of transactions, each with the
endorsements (Ed25519 signatures over the transaction bytes) of authorities of that
height. A transaction is true or false (false ones end in `:bad`); `Endorsers` is the
out-of-band endorsement every authority runs, and honest authorities endorse only true
transactions. A node's `validate` accepts a block only if every transaction carries
endorsements from a quorum of the height's authorities, so a false one can never
gather enough. Precommits carry real vote extensions: the signer's signature over
`b"ext" + value_hash(proposal)`, checked with its public key.

`ByzantineNode` runs an honest core for its state but lies on the way out: it
equivocates proposals, sends different votes to different peers, votes for invalid
values, forges signatures, replays old messages, sends decisions with too few
signers, endorses false transactions and proposes them (alone, or with honest
endorsements copied from other transactions), strips endorsements, and sends
precommits with garbage or another signer's extension, or honest precommits with
their extension swapped. `SafetyChecker` checks each commit as it happens
(agreement, contiguity, an independently verified certificate and its extensions, a
quorum of valid endorsements on every transaction, no false transaction).

With a `TxBook`, values are compact as in the daemon (`pyrsia.consensus.compact`): the
proposer's transactions are gossiped to the others out of band, each copy lost with
the book's probability (and a node's pool is lost when it restarts), and a proposal
or decision names them by id. A node that lacks some holds the message in a real
`Assembly`, asks the sender (then others, with backoff) over the simulated network,
and steps the message once they arrive.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nacl.signing import SigningKey

from pyrsia.consensus import messages as m
from pyrsia.consensus.compact import Assembly, Fetch
from pyrsia.consensus.core import Broadcast, Commit, Config, Core, HardState, SendTo
from pyrsia.errors import CertificateInvalid, ConsensusError, MessageRejected, TxInvalid
from pyrsia.translog import codec
from pyrsia.translog.block import quorum
from pyrsia.translog.tx import verify_signature
from tests.sim.clock import NodeClock
from tests.sim.driver import Outgoing, Simulation

TICK_S = 0.01
GENESIS = hashlib.sha256(b"pyrsia simulated genesis").digest()
# Ticks per timeout: the simulated network's mean delay is ~2 ticks.
CONFIG = Config(
    genesis_hash=GENESIS,
    timeout_propose_ticks=30,
    timeout_propose_delta_ticks=10,
    timeout_prevote_ticks=10,
    timeout_prevote_delta_ticks=5,
    timeout_precommit_ticks=10,
    timeout_precommit_delta_ticks=5,
    timeout_ticks_max=400,
    rebroadcast_ticks=40,
)


@functools.lru_cache(maxsize=500_000)
def verify_cached(peer_id: str, message: bytes, signature: bytes) -> bool:
    """The real check, once per distinct (signer, bytes, signature) across the simulation."""
    return verify_signature(peer_id, message, signature)


AuthoritiesAt = Callable[[int], frozenset[str]]


def extension_bytes(proposal: bytes) -> bytes:
    """What a precommit's extension signs: the block certificate's stand-in."""
    return b"ext" + m.value_hash(proposal)


def is_false(body: bytes) -> bool:
    return body.endswith(b":bad")


@dataclass(frozen=True, slots=True, kw_only=True)
class SimTx:
    body: bytes
    # (authority, Ed25519 signature over `body`)
    endorsements: tuple[tuple[str, bytes], ...]

    def endorsers(self, authorities: frozenset[str], verify: m.Verifier) -> set[str]:
        """The distinct authorities whose endorsement verifies."""
        return {
            s for s, signature in self.endorsements if s in authorities and verify(s, self.body, signature)
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class SimBlock:
    height: int
    txs: tuple[SimTx, ...]

    def encode(self) -> bytes:
        txs = [[tx.body, [[s, sig] for s, sig in tx.endorsements]] for tx in self.txs]
        return codec.encode({"height": self.height, "txs": txs})

    @classmethod
    def decode(cls, data: bytes) -> SimBlock | None:
        """The block in proposal bytes, or None for anything else (proposals are hostile input)."""
        try:
            doc = codec.decode(data)
            height = codec.field(doc, "height", int)
            entries = codec.field(doc, "txs", list)
            return cls(height=height, txs=tuple(_tx(entry) for entry in entries))
        except (TxInvalid, TypeError, ValueError):
            return None


def _tx(entry: Any) -> SimTx:
    body, endorsements = entry
    if not isinstance(body, bytes) or not isinstance(endorsements, list):
        raise TypeError("not a transaction")
    pairs = tuple((signer, signature) for signer, signature in endorsements)
    if not all(isinstance(s, str) and isinstance(sig, bytes) for s, sig in pairs):
        raise TypeError("not an endorsement")
    return SimTx(body=body, endorsements=pairs)


class Endorsers:
    """The authorities' endorsement, out of band: honest ones sign only true transactions.

    A true transaction gets a quorum of the honest authorities of its height (which
    ones rotates with the transaction); a false one gets nothing from them.
    """

    def __init__(self, honest: list[SigningKey], authorities: AuthoritiesAt) -> None:
        self.keys = {m.signer_of(key): key for key in honest}
        self.authorities = authorities

    def endorse(self, height: int, body: bytes) -> tuple[tuple[str, bytes], ...]:
        if is_false(body):
            return ()
        authorities = self.authorities(height)
        willing = sorted(a for a in authorities if a in self.keys)
        start = hashlib.sha256(body).digest()[0] % len(willing)
        chosen = (willing[start:] + willing[:start])[: quorum(len(authorities))]
        return tuple((signer, self.keys[signer].sign(body).signature) for signer in sorted(chosen))


def tx_id(tx: SimTx) -> bytes:
    return hashlib.sha256(codec.encode([tx.body, [[s, sig] for s, sig in tx.endorsements]])).digest()


class TxBook:
    """Compact values: every transaction proposed, by id, and who got a copy of it."""

    def __init__(self, rng: random.Random, loss: float, *, deaf: frozenset[str] = frozenset()) -> None:
        self.rng = rng
        self.loss = loss
        self.deaf = deaf  # nodes whose copies are always lost: they fetch everything
        self.all: dict[bytes, SimTx] = {}
        self.pools: dict[str, dict[bytes, SimTx]] = {}

    def publish(self, proposer: str, txs: tuple[SimTx, ...]) -> None:
        for tx in txs:
            key = tx_id(tx)
            self.all[key] = tx
            for name, pool in self.pools.items():
                if name == proposer or (name not in self.deaf and self.rng.random() >= self.loss):
                    pool[key] = tx

    @staticmethod
    def compact(block: SimBlock) -> bytes:
        return codec.encode({"height": block.height, "ids": [tx_id(tx) for tx in block.txs]})

    @staticmethod
    def ids_of(value: bytes) -> tuple[int, list[bytes]] | None:
        try:
            doc = codec.decode(value)
            ids = codec.field(doc, "ids", list)
            if not all(isinstance(i, bytes) for i in ids):
                return None
            return codec.field(doc, "height", int), ids
        except (TxInvalid, TypeError, ValueError):
            return None

    def rebuild(self, value: bytes, pool: dict[bytes, SimTx]) -> SimBlock | list[bytes] | None:
        """The block, the ids missing from `pool`, or None if `value` is no compact block."""
        found = self.ids_of(value)
        if found is None:
            return None
        height, ids = found
        missing = [i for i in ids if i not in pool]
        return missing or SimBlock(height=height, txs=tuple(pool[i] for i in ids))


class SafetyChecker:
    """Invariants checked at every commit of every honest node (DESIGN §5)."""

    def __init__(self, authorities: AuthoritiesAt, book: TxBook | None = None) -> None:
        self.authorities = authorities
        self.book = book
        self.decided: dict[int, bytes] = {}
        self.commits = 0
        # Transactions in the decided blocks, each height counted once.
        self.transactions = 0
        self.counted_heights = 0

    def on_commit(self, node: ConsensusNode, commit: Commit) -> None:
        self.commits += 1
        height, certificate = commit.height, commit.certificate
        # Contiguity: a node commits heights 0, 1, 2, ... with no gap and no repeat.
        assert commit.height == len(node.log) - 1, f"{node.name} committed {height} after {len(node.log) - 1}"
        # The certificate, checked here with nothing from the core: a quorum of distinct
        # authorities of that height signed a precommit for exactly this proposal.
        assert certificate.height == height and certificate.value == m.value_hash(commit.proposal)
        authorities = self.authorities(height)
        signers = [s.signer for s in certificate.signatures]
        assert len(set(signers)) == len(signers), "certificate repeats a signer"
        assert set(signers) <= authorities, "certificate names a non-authority"
        assert len(signers) >= quorum(len(authorities)), f"certificate has {len(signers)} signers"
        sign_bytes = m.vote_sign_bytes(GENESIS, "precommit", height, certificate.round, certificate.value)
        for s in certificate.signatures:
            assert verify_cached(s.signer, sign_bytes, s.signature), "certificate carries a bad signature"
            # Every signer's extension: what the block certificate is built from.
            assert verify_cached(s.signer, extension_bytes(commit.proposal), s.extension), (
                f"certificate carries a bad extension from {s.signer[-6:]}"
            )
        if self.book is None:
            block = SimBlock.decode(commit.proposal)
        else:
            rebuilt = self.book.rebuild(commit.proposal, self.book.all)
            block = rebuilt if isinstance(rebuilt, SimBlock) else None
        assert block is not None and block.height == height, "a proposal that is no block was committed"
        for tx in block.txs:
            assert not is_false(tx.body), f"a false transaction committed: {tx.body!r}"
            endorsers = tx.endorsers(authorities, verify_cached)
            assert len(endorsers) >= quorum(len(authorities)), f"{tx.body!r} committed with {len(endorsers)}"
        # Agreement: no two different values are committed at one height anywhere.
        first = self.decided.setdefault(height, certificate.value)
        assert first == certificate.value, f"two values committed at height {height}"
        if len(self.decided) > self.counted_heights:
            self.counted_heights = len(self.decided)
            self.transactions += len(block.txs)

    def check_prefixes(self, nodes: list[ConsensusNode]) -> None:
        logs = sorted(([c.certificate.value for c in n.log] for n in nodes), key=len)
        for shorter, longer in itertools.pairwise(logs):
            assert longer[: len(shorter)] == shorter, "a committed sequence is not a prefix of another"


@dataclass
class NodeStats:
    rejected: int = 0
    # Refused for a bad vote extension (on a precommit or in a certificate).
    bad_extensions: int = 0
    # Proposals this node's validate refused.
    invalid_blocks: int = 0
    evidence: int = 0
    restarts: int = 0
    sent: int = 0
    # Compact values: transactions asked for, and messages held until they came.
    txs_fetched: int = 0
    held: int = 0
    validate_lacked: int = 0


class ConsensusNode:
    def __init__(
        self,
        *,
        key: SigningKey,
        peers: Callable[[], list[str]],
        authorities: AuthoritiesAt,
        clock: NodeClock,
        checker: SafetyChecker | None,
        now_s: float,
        endorsers: Endorsers,
        txs_per_block: int = 2,
        config: Config = CONFIG,
        verify: m.Verifier = verify_cached,
        book: TxBook | None = None,
    ) -> None:
        self.key = key
        self.book = book
        self.assembly = Assembly()
        self.own_values: set[bytes] = set()  # value hashes this node proposed
        self._now_s = now_s
        self._fetching: list[Fetch] = []  # asked for by validate, sent with the next drain
        if book is not None:
            book.pools[m.signer_of(key)] = {}
        self.name = m.signer_of(key)
        self.peers = peers
        self.authorities = authorities
        self.clock = clock
        self.checker = checker
        self.endorsers = endorsers
        self.txs_per_block = txs_per_block
        self.config = config
        self.verify = verify
        self.log: list[Commit] = []
        self.persisted: HardState | None = None
        self.stats = NodeStats()
        self._proposed = 0
        self.core = self._new_core(now_s)

    def _new_core(self, now_s: float) -> Core:
        return Core(
            key=self.key,
            config=self.config,
            authorities=self.authorities,
            validate=self._validate,
            get_value=self._value,
            height=len(self.log),
            now_ticks=self.ticks(now_s),
            state=self.persisted,
            verify=self.verify,
            extend=self._extend,
            verify_extension=self._verify_extension,
        )

    # -- what the shell injects -----------------------------------------------------------

    def _value(self, height: int) -> bytes:
        self._proposed += 1
        bodies = [
            b"h%d:%s:%d:%d" % (height, self.name[-8:].encode(), self._proposed, index)
            for index in range(self.txs_per_block)
        ]
        if self.book is not None:
            block = SimBlock(
                height=height,
                txs=tuple(SimTx(body=b, endorsements=self.endorsers.endorse(height, b)) for b in bodies),
            )
            self.book.publish(self.name, block.txs)
            value = TxBook.compact(block)
            self.own_values.add(m.value_hash(value))
            return value
        return self.block_of(height, bodies)

    def block_of(self, height: int, bodies: list[bytes]) -> bytes:
        txs = tuple(SimTx(body=body, endorsements=self.endorsers.endorse(height, body)) for body in bodies)
        return SimBlock(height=height, txs=txs).encode()

    @property
    def pool(self) -> dict[bytes, SimTx]:
        assert self.book is not None
        return self.book.pools[self.name]

    def _decode_block(self, proposal: bytes) -> SimBlock | None:
        if self.book is None:
            return SimBlock.decode(proposal)
        rebuilt = self.book.rebuild(proposal, self.pool)
        return rebuilt if isinstance(rebuilt, SimBlock) else None

    def _validate(self, height: int, proposal: bytes) -> bool:
        """The chain's rule, in miniature: every transaction endorsed by a quorum of the height."""
        if self.book is not None:
            rebuilt = self.book.rebuild(proposal, self.pool)
            others = [p for p in self.peers() if p != self.name]
            if isinstance(rebuilt, list) and rebuilt and others:
                # Lacking, not invalid (a value resumed after a restart): fetch, ask again later.
                self.stats.validate_lacked += 1
                key = m.value_hash(proposal)
                fetch = self.assembly.hold(key, others[0], None, height, rebuilt, self._now_s)
                self._fetching += [fetch] if fetch else []
                return False
        block = self._decode_block(proposal)
        authorities = self.authorities(height)
        needed = quorum(len(authorities))
        valid = (
            block is not None
            and block.height == height
            and bool(block.txs)
            and all(len(tx.endorsers(authorities, self.verify)) >= needed for tx in block.txs)
        )
        if not valid:
            self.stats.invalid_blocks += 1
        return valid

    def _extend(self, height: int, round_: int, proposal: bytes) -> bytes:
        return bytes(self.key.sign(extension_bytes(proposal)).signature)

    def _verify_extension(
        self, height: int, round_: int, proposal: bytes, signer: str, extension: bytes
    ) -> bool:
        return self.verify(signer, extension_bytes(proposal), extension)

    @property
    def height(self) -> int:
        return len(self.log)

    def ticks(self, now_s: float) -> int:
        return int(self.clock.local_s(now_s) / TICK_S)

    # -- the driver's node interface ------------------------------------------------------

    def receive(self, src: str, payload: object, now_s: float) -> list[Outgoing]:
        self._now_s = now_s
        if isinstance(payload, tuple):
            return self._on_fetch_message(src, payload, now_s)
        assert isinstance(payload, bytes)
        self.core.tick(self.ticks(now_s))
        try:
            message = m.decode(payload)
            if (
                self.book is not None
                and isinstance(message, m.Proposal | m.Decision)
                and self.height <= message.height <= self.height + self.config.heights_ahead_max
            ):
                rebuilt = self.book.rebuild(message.proposal, self.pool)
                if isinstance(rebuilt, list) and rebuilt:
                    self.stats.held += 1
                    key = m.value_hash(message.proposal)
                    fetch = self.assembly.hold(key, src, message, message.height, rebuilt, now_s)
                    return self.drain() + self._fetches([fetch] if fetch else [])
            self.core.step(message)
        except (MessageRejected, CertificateInvalid) as exc:
            self.stats.rejected += 1
            if "extension" in exc.reason:
                self.stats.bad_extensions += 1
        except ConsensusError:
            self.stats.rejected += 1
        return self.drain()

    def tick(self, now_s: float) -> list[Outgoing]:
        self._now_s = now_s
        self.core.tick(self.ticks(now_s))
        self.assembly.forget_below(self.height)
        fetches = self.assembly.due(now_s, [p for p in self.peers() if p != self.name])
        return self.drain() + self._fetches(fetches)

    def _fetches(self, fetches: list[Fetch]) -> list[Outgoing]:
        self.stats.txs_fetched += sum(len(f.ids) for f in fetches)
        return [Outgoing(f.peer, ("fetch", f.ids)) for f in fetches]

    def _on_fetch_message(self, src: str, payload: tuple[object, ...], now_s: float) -> list[Outgoing]:
        """("fetch", ids) from a peer that lacks them, or ("txs", [SimTx]) answering ours."""
        if self.book is None or len(payload) != 2:
            return []
        kind, body = payload
        if kind == "fetch" and isinstance(body, tuple):
            held = tuple(self.pool[i] for i in body if isinstance(i, bytes) and i in self.pool)
            return [Outgoing(src, ("txs", held))] if held else []
        if kind != "txs" or not isinstance(body, tuple):
            return []
        got = []
        for tx in body:
            key = tx_id(tx)
            if self.assembly.wanted(key):  # only what we asked for goes into the pool
                self.pool[key] = tx
                got.append(key)
        complete = self.assembly.arrived(got)
        if not complete:
            return []
        self.core.forget_invalid()  # what validate lacked may be here now
        out = self.drain()
        for sender, message in complete:
            if message is not None:  # None: only validate was waiting
                out += self.receive(sender, m.encode(message), now_s)
        return out

    def next_deadline_s(self) -> float | None:
        deadline = self.core.next_deadline_ticks()
        if deadline is None:
            return None
        when = self.clock.global_s(deadline * TICK_S)
        while self.ticks(when) < deadline:  # float rounding must not wake us a hair early
            when += 1e-9 + abs(when) * 1e-12
        return when

    # -- the shell ------------------------------------------------------------------------

    def drain(self) -> list[Outgoing]:
        """Carry out Ready: persist, then send, then apply; then advance. Again after a
        commit: the next height starts at that advance, with output of its own."""
        out: list[Outgoing] = []
        while True:
            ready = self.core.ready()
            if ready.hard_state is not None:
                self.persisted = ready.hard_state
            out += self.send(ready.messages)
            for commit in ready.commits:
                self.log.append(commit)
                if self.checker is not None:
                    self.checker.on_commit(self, commit)
            self.stats.evidence += len(ready.evidence)
            self.core.advance()
            if not ready.commits:
                break
        fetching, self._fetching = self._fetching, []
        return out + self._fetches(fetching)

    def send(self, messages: tuple[Broadcast | SendTo, ...]) -> list[Outgoing]:
        out: list[Outgoing] = []
        for effect in messages:
            if isinstance(effect, Broadcast):
                data = m.encode(effect.message)
                out += [Outgoing(peer, data) for peer in self.peers() if peer != self.name]
            else:
                out.append(Outgoing(effect.peer, m.encode(effect.message)))
        self.stats.sent += len(out)
        return out

    def restart(self, now_s: float) -> None:
        """A new core from what this node persisted and applied, as after a process restart."""
        last = self.persisted.last_decision if self.persisted else None
        if self.persisted is not None and self.persisted.height > len(self.log) and last is not None:
            self.log.append(
                Commit(
                    height=last.height,
                    round=last.certificate.round,
                    proposal=last.proposal,
                    certificate=last.certificate,
                )
            )
        self.stats.restarts += 1
        if self.book is not None:
            self.pool.clear()  # the mempool does not survive a restart
            self.assembly = Assembly()
        self.core = self._new_core(now_s)


@dataclass
class Lies:
    """How often a Byzantine node does each thing, per message it would send."""

    equivocate: float = 0.5
    invalid: float = 0.2
    forge: float = 0.1
    replay: float = 0.2
    junk: float = 0.1
    # Its precommit for a value carries garbage or another signer's extension.
    bad_extension: float = 0.3
    # It relays an honest precommit it received, with the extension swapped for garbage.
    swap_extension: float = 0.2
    # Its own proposals (not only the lies) hold a false transaction it endorsed.
    false_block: float = 0.3
    history: list[bytes] = field(default_factory=list)


class ByzantineNode(ConsensusNode):
    """Signs whatever serves it worst, differently for each peer; its own core stays sane."""

    def __init__(self, *, rng: random.Random, lies: Lies | None = None, **kwargs: object) -> None:
        self.rng = rng
        self.lies = lies or Lies()
        # Honest precommits for values it received, newest last: material for its lies.
        self.overheard: list[m.Precommit] = []
        self._false: dict[int, bytes] = {}
        super().__init__(**kwargs)  # type: ignore[arg-type]

    def receive(self, src: str, payload: object, now_s: float) -> list[Outgoing]:
        assert isinstance(payload, bytes)
        try:
            message = m.decode(payload)
        except ConsensusError:
            message = None
        if isinstance(message, m.Precommit) and message.value is not None and message.extension:
            self.overheard.append(message)
            del self.overheard[:-32]
        return super().receive(src, payload, now_s)

    def _value(self, height: int) -> bytes:
        if self.rng.random() < self.lies.false_block:
            return self.false_block(height)
        return super()._value(height)

    def false_block(self, height: int) -> bytes:
        """A block with a false transaction it endorses (with honest endorsements copied
        from a true one when it has some: signatures over other bytes); one per height."""
        block = self._false.get(height)
        if block is None:
            body = b"h%d:%s:lie:bad" % (height, self.name[-8:].encode())
            true_body = b"h%d:%s:lie:true" % (height, self.name[-8:].encode())
            copied = self.endorsers.endorse(height, true_body)
            mine = (self.name, self.key.sign(body).signature)
            endorsements = (*[e for e in copied if e[0] != self.name], mine)
            block = SimBlock(height=height, txs=(SimTx(body=body, endorsements=endorsements),)).encode()
            self._false[height] = block
        return block

    def thin_block(self, height: int) -> bytes:
        """True transactions, but one endorsement short of a quorum."""
        body = b"h%d:%s:thin:%d" % (height, self.name[-8:].encode(), self.rng.getrandbits(16))
        endorsements = self.endorsers.endorse(height, body)[1:]
        return SimBlock(height=height, txs=(SimTx(body=body, endorsements=endorsements),)).encode()

    def send(self, messages: tuple[Broadcast | SendTo, ...]) -> list[Outgoing]:
        out: list[Outgoing] = []
        peers = [p for p in self.peers() if p != self.name]
        for effect in messages:
            if not isinstance(effect, Broadcast) or isinstance(effect.message, m.Decision | m.CatchUp):
                continue
            message = effect.message
            for peer in peers:
                for lie in self._lies_about(message):
                    out.append(Outgoing(peer, lie))
        return out

    def _proposal_lie(self, message: m.Proposal) -> m.Proposal:
        rng, h, r = self.rng, message.height, message.round
        if rng.random() >= self.lies.equivocate:
            return message
        choice = rng.random()
        if choice < self.lies.invalid:
            proposal = self.false_block(h)
        elif choice < 2 * self.lies.invalid:
            proposal = self.thin_block(h)
        else:  # a valid block of its own: equivocation proper
            proposal = self.block_of(
                h, [b"h%d:%s:alt:%d" % (h, self.name[-8:].encode(), rng.getrandbits(16))]
            )
        vr = message.valid_round if rng.random() < 0.5 else -1
        return m.sign_proposal(self.key, GENESIS, height=h, round=r, proposal=proposal, valid_round=vr)

    def _vote_lie(self, message: m.Prevote | m.Precommit) -> m.Prevote | m.Precommit:
        rng, h, r = self.rng, message.height, message.round
        value = message.value
        if rng.random() < self.lies.equivocate:
            choice = rng.random()
            if choice < self.lies.invalid:
                value = m.value_hash(self.false_block(h))
            elif choice < 0.6:
                value = None if message.value is not None else m.value_hash(b"h%d:lie:%d" % (h, r))
            else:
                value = rng.randbytes(32)
        if isinstance(message, m.Prevote):
            return (
                message
                if value == message.value
                else m.sign_prevote(self.key, GENESIS, height=h, round=r, value=value)
            )
        extension = message.extension if value == message.value else b""
        if value is not None and rng.random() < self.lies.bad_extension:
            stolen = [x.extension for x in self.overheard if x.value == value and x.signer != self.name]
            if stolen and rng.random() < 0.5:
                extension = rng.choice(stolen)  # another signer's, for the very same value
            else:
                extension = rng.randbytes(rng.choice((0, 64, 200)))
        elif value is not None and not extension:
            extension = self.key.sign(b"ext" + value).signature  # valid for the value it names
        if value == message.value and extension == message.extension:
            return message
        return m.sign_precommit(self.key, GENESIS, height=h, round=r, value=value, extension=extension)

    def _lies_about(self, message: m.Proposal | m.Prevote | m.Precommit) -> list[bytes]:
        rng, lies = self.rng, self.lies
        h = message.height
        sent: list[m.Message] = []
        if isinstance(message, m.Proposal):
            sent.append(self._proposal_lie(message))
        else:
            sent.append(self._vote_lie(message))
            sign = m.sign_prevote if isinstance(message, m.Prevote) else m.sign_precommit
            if rng.random() < lies.junk:
                # A vote far in the future and one a few rounds ahead: buffer and round-skip bait.
                sent.append(
                    sign(
                        self.key, GENESIS, height=h + rng.randint(1, 6), round=rng.randint(0, 400), value=None
                    )
                )
            if isinstance(message, m.Precommit) and rng.random() < lies.swap_extension:
                honest = [x for x in self.overheard if x.height == h and x.signer != self.name]
                if honest:
                    relayed = rng.choice(honest)
                    sent.append(dataclasses.replace(relayed, extension=rng.randbytes(64)))
        encoded = [m.encode(x) for x in sent]
        if rng.random() < lies.forge:
            forged = m.to_map(sent[0])
            forged["signature"] = rng.randbytes(64)
            encoded.append(codec.encode(forged))
            if self.log:
                # A decision whose certificate has one signature fewer than a quorum.
                last = self.log[-1].certificate
                thin = m.Certificate(
                    height=h,
                    round=last.round,
                    value=m.value_hash(self.false_block(h)),
                    signatures=last.signatures[:-1],
                )
                encoded.append(m.encode(m.Decision(proposal=self.false_block(h), certificate=thin)))
            # A nil precommit with an extension: the decoder refuses it.
            nil = m.sign_precommit(self.key, GENESIS, height=h, round=message.round, value=None)
            encoded.append(m.encode(dataclasses.replace(nil, extension=b"x")))
        if lies.history and rng.random() < lies.replay:
            encoded.append(rng.choice(lies.history))
        lies.history.extend(encoded[:1])
        del lies.history[:-64]
        self.stats.sent += len(encoded)
        return encoded


def build(
    sim: Simulation,
    *,
    honest: int,
    byzantine: int = 0,
    authorities: Callable[[frozenset[str]], AuthoritiesAt] | None = None,
    skew: bool = True,
    config: Config = CONFIG,
    verify: m.Verifier = verify_cached,
    txs_per_block: int = 2,
    lies: Lies | None = None,
    submit_loss: float | None = None,
) -> tuple[list[ConsensusNode], list[ByzantineNode], SafetyChecker]:
    """Nodes with keys from the scenario rng; `authorities(everyone)` gives the per-height sets."""
    keys = [SigningKey(sim.rng.randbytes(32)) for _ in range(honest + byzantine)]
    everyone = frozenset(m.signer_of(k) for k in keys)
    per_height = authorities(everyone) if authorities is not None else (lambda _height: everyone)
    names = sorted(everyone)
    book = None
    if submit_loss is not None:
        # Compact values; one node never gets a submit, so it fetches every transaction.
        deaf = frozenset({m.signer_of(keys[0])})
        book = TxBook(random.Random(sim.rng.getrandbits(64)), submit_loss, deaf=deaf)
    checker = SafetyChecker(per_height, book)
    endorsers = Endorsers(keys[:honest], per_height)

    def clock() -> NodeClock:
        if not skew:
            return NodeClock()
        return NodeClock(offset_s=sim.rng.uniform(0, 5), rate=sim.rng.uniform(0.9, 1.1))

    honest_nodes: list[ConsensusNode] = []
    liars: list[ByzantineNode] = []
    for index, key in enumerate(keys):
        common = {
            "key": key,
            "peers": lambda: names,
            "authorities": per_height,
            "clock": clock(),
            "now_s": sim.now_s,
            "config": config,
            "verify": verify,
            "endorsers": endorsers,
            "txs_per_block": txs_per_block,
            "book": book,
        }
        if index < honest:
            node = ConsensusNode(checker=checker, **common)  # type: ignore[arg-type]
            honest_nodes.append(node)
        else:
            liar_rng = random.Random(sim.rng.getrandbits(64))
            node = ByzantineNode(
                rng=liar_rng, lies=dataclasses.replace(lies or Lies()), checker=None, **common
            )
            liars.append(node)
    for node in [*honest_nodes, *liars]:
        sim.add(node.name, node)
        sim.call(node.name, lambda _now, n=node: n.drain())
    return honest_nodes, liars, checker
