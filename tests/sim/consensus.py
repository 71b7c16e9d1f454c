"""The consensus core as a simulation node, every message through the real wire codec.

`ConsensusNode` is the shell the daemon will be, minus I/O: it turns the driver's
seconds into the core's ticks through its own skewed `NodeClock`, decodes each
payload, steps the core, and carries out `Ready` in contract order (persist the hard
state, send, apply commits) before `advance()`. Crash and restart rebuild the core
from what was persisted and the commits applied, nothing else.

`ByzantineNode` runs an honest core for its state but lies on the way out: it
equivocates proposals, sends different votes to different peers, votes for invalid
values, forges signatures, replays old messages and sends decisions with too few
signers. `SafetyChecker` checks each commit as it happens (agreement, contiguity, an
independently verified certificate). Proposals are `b"h<height>:<who>:<n>"`; a
proposal ending in `:bad` is invalid everywhere.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from nacl.signing import SigningKey

from pyrsia.consensus import messages as m
from pyrsia.consensus.core import Broadcast, Commit, Config, Core, HardState, SendTo
from pyrsia.errors import ConsensusError
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


def valid(height: int, proposal: bytes) -> bool:
    return proposal.startswith(b"h%d:" % height) and not proposal.endswith(b":bad")


AuthoritiesAt = Callable[[int], frozenset[str]]


class SafetyChecker:
    """Invariants checked at every commit of every honest node (DESIGN §5)."""

    def __init__(self, authorities: AuthoritiesAt) -> None:
        self.authorities = authorities
        self.decided: dict[int, bytes] = {}
        self.commits = 0

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
        for s in certificate.signatures:
            sign_bytes = m.vote_sign_bytes(GENESIS, "precommit", height, certificate.round, certificate.value)
            assert verify_cached(s.signer, sign_bytes, s.signature), "certificate carries a bad signature"
        assert valid(height, commit.proposal), "an invalid proposal was committed"
        # Agreement: no two different values are committed at one height anywhere.
        first = self.decided.setdefault(height, certificate.value)
        assert first == certificate.value, f"two values committed at height {height}"

    def check_prefixes(self, nodes: list[ConsensusNode]) -> None:
        logs = sorted(([c.certificate.value for c in n.log] for n in nodes), key=len)
        for shorter, longer in itertools.pairwise(logs):
            assert longer[: len(shorter)] == shorter, "a committed sequence is not a prefix of another"


@dataclass
class NodeStats:
    rejected: int = 0
    evidence: int = 0
    restarts: int = 0
    sent: int = 0


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
        config: Config = CONFIG,
        verify: m.Verifier = verify_cached,
    ) -> None:
        self.key = key
        self.name = m.signer_of(key)
        self.peers = peers
        self.authorities = authorities
        self.clock = clock
        self.checker = checker
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
            validate=valid,
            get_value=self._value,
            height=len(self.log),
            now_ticks=self.ticks(now_s),
            state=self.persisted,
            verify=self.verify,
        )

    def _value(self, height: int) -> bytes:
        self._proposed += 1
        return b"h%d:%s:%d" % (height, self.name[-8:].encode(), self._proposed)

    @property
    def height(self) -> int:
        return len(self.log)

    def ticks(self, now_s: float) -> int:
        return int(self.clock.local_s(now_s) / TICK_S)

    # -- the driver's node interface ------------------------------------------------------

    def receive(self, src: str, payload: object, now_s: float) -> list[Outgoing]:
        assert isinstance(payload, bytes)
        self.core.tick(self.ticks(now_s))
        try:
            self.core.step(m.decode(payload))
        except ConsensusError:
            self.stats.rejected += 1
        return self.drain()

    def tick(self, now_s: float) -> list[Outgoing]:
        self.core.tick(self.ticks(now_s))
        return self.drain()

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
        """Carry out Ready: persist, then send, then apply; then advance."""
        ready = self.core.ready()
        if ready.hard_state is not None:
            self.persisted = ready.hard_state
        out = self.send(ready.messages)
        for commit in ready.commits:
            self.log.append(commit)
            if self.checker is not None:
                self.checker.on_commit(self, commit)
        self.stats.evidence += len(ready.evidence)
        self.core.advance()
        return out

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
        self.core = self._new_core(now_s)


@dataclass
class Lies:
    """How often a Byzantine node does each thing, per message it would send."""

    equivocate: float = 0.5
    invalid: float = 0.2
    forge: float = 0.1
    replay: float = 0.2
    junk: float = 0.1
    history: list[bytes] = field(default_factory=list)


class ByzantineNode(ConsensusNode):
    """Signs whatever serves it worst, differently for each peer; its own core stays sane."""

    def __init__(self, *, rng: random.Random, lies: Lies | None = None, **kwargs: object) -> None:
        self.rng = rng
        self.lies = lies or Lies()
        super().__init__(**kwargs)  # type: ignore[arg-type]

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

    def _lies_about(self, message: m.Proposal | m.Prevote | m.Precommit) -> list[bytes]:
        rng, lies = self.rng, self.lies
        h, r = message.height, message.round
        sent: list[m.Message] = []
        if isinstance(message, m.Proposal):
            if rng.random() < lies.equivocate:
                suffix = b":bad" if rng.random() < lies.invalid else b":%d" % rng.getrandbits(16)
                proposal = b"h%d:lie%s" % (h, suffix)
                vr = message.valid_round if rng.random() < 0.5 else -1
                sent.append(
                    m.sign_proposal(self.key, GENESIS, height=h, round=r, proposal=proposal, valid_round=vr)
                )
            else:
                sent.append(message)
        else:
            sign = m.sign_prevote if isinstance(message, m.Prevote) else m.sign_precommit
            if rng.random() < lies.equivocate:
                choice = rng.random()
                if choice < lies.invalid:
                    value: bytes | None = m.value_hash(b"h%d:lie:bad" % h)
                elif choice < 0.6:
                    value = None if message.value is not None else m.value_hash(b"h%d:lie:%d" % (h, r))
                else:
                    value = rng.randbytes(32)
                sent.append(sign(self.key, GENESIS, height=h, round=r, value=value))
            else:
                sent.append(message)
            if rng.random() < lies.junk:
                # A vote far in the future and one a few rounds ahead: buffer and round-skip bait.
                sent.append(
                    sign(
                        self.key, GENESIS, height=h + rng.randint(1, 6), round=rng.randint(0, 400), value=None
                    )
                )
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
                    value=m.value_hash(b"h%d:lie:bad" % h),
                    signatures=last.signatures[:-1],
                )
                encoded.append(m.encode(m.Decision(proposal=b"h%d:lie:bad" % h, certificate=thin)))
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
) -> tuple[list[ConsensusNode], list[ByzantineNode], SafetyChecker]:
    """Nodes with keys from the scenario rng; `authorities(everyone)` gives the per-height sets."""
    keys = [SigningKey(sim.rng.randbytes(32)) for _ in range(honest + byzantine)]
    everyone = frozenset(m.signer_of(k) for k in keys)
    per_height = authorities(everyone) if authorities is not None else (lambda _height: everyone)
    checker = SafetyChecker(per_height)
    names = sorted(everyone)

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
        }
        if index < honest:
            node = ConsensusNode(checker=checker, **common)  # type: ignore[arg-type]
            honest_nodes.append(node)
        else:
            node = ByzantineNode(rng=random.Random(sim.rng.getrandbits(64)), checker=None, **common)
            liars.append(node)
    for node in [*honest_nodes, *liars]:
        sim.add(node.name, node)
        sim.call(node.name, lambda _now, n=node: n.drain())
    return honest_nodes, liars, checker
