"""The consensus core driven by hand: four cores, messages moved by the test, no threads.

`ClusterOf(n)` owns n cores and a mailbox; `pump()` carries every message through the
wire codec to its destination (a `deliver` predicate may hold some back) until
nothing moves. Time moves only with `tick(ticks)`. Scenarios cite Tendermint
(arXiv:1807.04938, Algorithm 1).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from nacl.signing import SigningKey

from pyrsia.consensus import messages as m
from pyrsia.consensus.core import (
    Broadcast,
    Commit,
    Config,
    Core,
    Evidence,
    Extend,
    HardState,
    SendTo,
    Step,
    VerifyExtension,
    any_extension,
    no_extension,
)
from pyrsia.errors import CertificateInvalid, MessageRejected, StorageError
from pyrsia.translog import codec

GENESIS = hashlib.sha256(b"pyrsia test genesis").digest()
CONFIG = Config(genesis_hash=GENESIS)

Deliver = Callable[[str, str, m.Message], bool]


def key_of(index: int) -> SigningKey:
    return SigningKey(hashlib.sha256(b"consensus-test-key-%d" % index).digest())


def valid(height: int, proposal: bytes) -> bool:
    return proposal.startswith(b"h%d:" % height) and b"bad" not in proposal


@dataclass
class Mail:
    src: str
    dst: str
    data: bytes


@dataclass
class ClusterOf:
    size: int
    authorities_at: Callable[[int, frozenset[str]], frozenset[str]] | None = None
    now: int = 0
    cores: dict[str, Core] = field(default_factory=dict)
    keys: dict[str, SigningKey] = field(default_factory=dict)
    commits: dict[str, list[Commit]] = field(default_factory=dict)
    persisted: dict[str, HardState] = field(default_factory=dict)
    evidence: list[Evidence] = field(default_factory=list)
    sent: dict[str, list[m.Message]] = field(default_factory=dict)
    rejected: list[str] = field(default_factory=list)
    mailbox: list[Mail] = field(default_factory=list)
    down: set[str] = field(default_factory=set)
    # Proposers have something to propose only below this height, so a pump ends.
    heights: int = 1
    # Vote extensions: each node's `extend` made from its key, and the common check.
    extend_of: Callable[[SigningKey], Extend] = lambda _key: no_extension
    verify_extension: VerifyExtension = any_extension
    # validate(peer, height, proposal): the node's check of a value.
    validate: Callable[[str, int, bytes], bool] = lambda _peer, height, proposal: valid(height, proposal)

    def __post_init__(self) -> None:
        for index in range(self.size):
            key = key_of(index)
            self.keys[m.signer_of(key)] = key
        self.ids = sorted(self.keys)
        self.all = frozenset(self.ids)
        for peer in self.ids:
            self.commits[peer] = []
            self.sent[peer] = []
            self.cores[peer] = self._new_core(peer, height=0, state=None)

    def authorities(self, height: int) -> frozenset[str]:
        return self.all if self.authorities_at is None else self.authorities_at(height, self.all)

    def _new_core(self, peer: str, *, height: int, state: HardState | None) -> Core:
        return Core(
            key=self.keys[peer],
            config=CONFIG,
            authorities=self.authorities,
            validate=lambda h, v, p=peer: self.validate(p, h, v),
            get_value=lambda h, p=peer: b"h%d:from %s" % (h, p[-6:].encode()) if h < self.heights else None,
            height=height,
            now_ticks=self.now,
            state=state,
            extend=self.extend_of(self.keys[peer]),
            verify_extension=self.verify_extension,
        )

    def proposer(self, height: int, round_: int) -> str:
        ordered = sorted(self.authorities(height))
        return ordered[(height + round_) % len(ordered)]

    def drain(self, peer: str) -> None:
        """What the shell does with one core's Ready: persist, send, apply, advance; again
        after a commit, since the next height starts at that advance."""
        core = self.cores[peer]
        while True:
            ready = core.ready()
            if ready.hard_state is not None:
                self.persisted[peer] = ready.hard_state
            for out in ready.messages:
                self.sent[peer].append(out.message)
                data = m.encode(out.message)
                targets = [p for p in self.ids if p != peer] if isinstance(out, Broadcast) else [out.peer]
                self.mailbox.extend(Mail(peer, target, data) for target in targets)
            self.commits[peer].extend(ready.commits)
            self.evidence.extend(ready.evidence)
            core.advance()
            if not ready.commits:
                return

    def pump(self, deliver: Deliver | None = None, *, rounds_max: int = 1000) -> None:
        """Move messages until none is left that `deliver` lets through (the rest wait)."""
        for _ in range(rounds_max):
            for peer in self.ids:
                if peer not in self.down:
                    self.drain(peer)
            held, moved = [], False
            for mail in self.mailbox:
                if mail.dst in self.down or mail.src in self.down:
                    continue
                message = m.decode(mail.data)
                if deliver is not None and not deliver(mail.src, mail.dst, message):
                    held.append(mail)
                    continue
                moved = True
                try:
                    self.cores[mail.dst].step(message)
                except MessageRejected as exc:
                    self.rejected.append(exc.reason)
            self.mailbox = held
            if not moved:
                return
        raise AssertionError("messages kept flowing")

    def tick(self, ticks: int, deliver: Deliver | None = None) -> None:
        """Advance time one tick at a time, pumping messages after each."""
        for _ in range(ticks):
            self.now += 1
            for peer in self.ids:
                if peer not in self.down:
                    self.cores[peer].tick(self.now)
            self.pump(deliver)

    def crash(self, peer: str) -> None:
        self.down.add(peer)

    def restart(self, peer: str) -> None:
        self.down.discard(peer)
        state = self.persisted.get(peer)
        height = len(self.commits[peer])
        self.cores[peer] = self._new_core(peer, height=height, state=state)

    def committed(self, peer: str) -> list[bytes]:
        return [c.proposal for c in self.commits[peer]]


def only(kind: type, *, to: set[str] | None = None, src: set[str] | None = None) -> Deliver:
    """Hold back messages of `kind` (to/from the given peers); deliver everything else."""

    def deliver(s: str, d: str, message: m.Message) -> bool:
        if not isinstance(message, kind):
            return True
        return not ((to is None or d in to) and (src is None or s in src))

    return deliver


def test_the_next_height_starts_only_once_the_decision_is_applied() -> None:
    """A proposal for height 1 that reaches a node together with the precommits deciding
    height 0 is validated (and voted for) only after the shell applied height 0: a
    validate that needs the decided block in the chain would refuse it before."""
    seen: list[tuple[int, int]] = []  # (height validated, blocks x had applied then)
    watched: list[str] = []

    def validate(peer: str, height: int, proposal: bytes) -> bool:
        if peer in watched:
            seen.append((height, len(cluster.commits[peer])))
        return valid(height, proposal)

    cluster = ClusterOf(4, heights=2, validate=validate)
    x = next(p for p in cluster.ids if p not in (cluster.proposer(0, 0), cluster.proposer(1, 0)))
    watched.append(x)
    cluster.pump(lambda s, d, message: d != x)  # the others decide height 0 and propose height 1
    assert all(len(cluster.commits[p]) >= 1 for p in cluster.ids if p != x) and not cluster.commits[x]
    assert any(isinstance(mail_message, m.Proposal) for mail_message in _held_for(cluster, x, height=1))
    cluster.pump()  # all of it reaches x at once, height 1's proposal among it
    assert [c.height for c in cluster.commits[x]] == [0, 1]
    assert seen and all(height == applied for height, applied in seen), seen
    nil = [v for v in cluster.sent[x] if isinstance(v, m.Prevote | m.Precommit) and v.value is None]
    assert nil == []  # nothing refused for want of the block before it


def _held_for(cluster: ClusterOf, peer: str, *, height: int) -> list[m.Message]:
    out = []
    for mail in cluster.mailbox:
        message = m.decode(mail.data)
        if mail.dst == peer and getattr(message, "height", None) == height:
            out.append(message)
    return out


def test_happy_path_all_commit_the_round_zero_proposal_with_a_valid_certificate() -> None:
    cluster = ClusterOf(4)
    cluster.pump()
    proposer = cluster.proposer(0, 0)
    for peer in cluster.ids:
        [commit] = cluster.commits[peer]
        assert commit.height == 0 and commit.round == 0
        assert commit.proposal == b"h0:from " + proposer[-6:].encode()
        m.verify_certificate(commit.certificate, cluster.all, GENESIS)
        assert commit.certificate.value == m.value_hash(commit.proposal)
    # Every node moved on; height 1 has another proposer and commits as well.
    assert all(core.height == 1 for core in cluster.cores.values())
    cluster.heights = 2
    cluster.tick(
        CONFIG.timeout_propose_ticks + CONFIG.timeout_prevote_ticks + CONFIG.timeout_precommit_ticks + 5
    )
    assert all(len(cluster.commits[p]) >= 2 for p in cluster.ids)
    assert cluster.commits[cluster.ids[0]][1].proposal == b"h1:from " + cluster.proposer(1, 1)[-6:].encode()
    assert cluster.evidence == [] and cluster.rejected == []


def test_crashed_proposer_makes_the_others_time_out_into_round_one() -> None:
    cluster = ClusterOf(4)
    dead = cluster.proposer(0, 0)
    cluster.crash(dead)
    cluster.pump()
    alive = [p for p in cluster.ids if p != dead]
    assert all(cluster.commits[p] == [] for p in alive)
    assert all(cluster.cores[p].current_step == Step.PROPOSE for p in alive)
    cluster.tick(
        CONFIG.timeout_propose_ticks + CONFIG.timeout_prevote_ticks + CONFIG.timeout_precommit_ticks + 5
    )
    for peer in alive:
        first = cluster.commits[peer][0]
        assert first.height == 0 and first.round == 1
        assert first.proposal == b"h0:from " + cluster.proposer(0, 1)[-6:].encode()
    assert len({tuple(cluster.committed(p)[:1]) for p in alive}) == 1


def _round0_split(cluster: ClusterOf, locker: str) -> tuple[str, Deliver]:
    """Round 0 where only `locker` sees a quorum of prevotes for the proposal v.

    One node (`late`) never gets the round-0 proposal and prevotes nil after its
    timeout (line 57); `locker`'s round-0 prevote and precommit reach nobody while
    they are still in round 0. So `locker` sees v, v, v, nil and locks v (line 36);
    the rest see v, v, nil: a quorum of prevotes but none for one value, so they
    precommit nil when the prevote timeout fires (line 61), and all time out into
    round 1 (line 65).
    """
    p0 = cluster.proposer(0, 0)
    late = next(p for p in cluster.ids if p not in (p0, locker, cluster.proposer(0, 1)))

    def deliver(s: str, d: str, message: m.Message) -> bool:
        if isinstance(message, m.Decision) or message.round != 0 or cluster.cores[d].round != 0:
            return True
        if isinstance(message, m.Proposal):
            return d != late
        return s != locker

    return late, deliver


def test_a_locked_proposer_reproposes_its_valid_value_and_the_others_accept_it() -> None:
    cluster = ClusterOf(4)
    p0, p1 = cluster.proposer(0, 0), cluster.proposer(0, 1)
    _, deliver = _round0_split(cluster, p1)
    cluster.tick(CONFIG.timeout_propose_ticks + 1, deliver)
    v = b"h0:from " + p0[-6:].encode()
    assert cluster.cores[p1].hard_state().locked_value == v and cluster.cores[p1].locked_round == 0
    assert all(cluster.cores[p].locked_round == -1 for p in cluster.ids if p != p1)
    cluster.tick(CONFIG.timeout_prevote_ticks + CONFIG.timeout_precommit_ticks + 5, deliver)
    # Round 1: p1 proposes v again with valid_round 0 (line 16); once p1's held round-0
    # prevote arrives, the others see a quorum for v in round 0 and prevote it (line 28).
    reproposal = next(x for x in cluster.sent[p1] if isinstance(x, m.Proposal) and x.round == 1)
    assert reproposal.proposal == v and reproposal.valid_round == 0
    for peer in cluster.ids:
        first = cluster.commits[peer][0]
        assert (first.proposal, first.round) == (v, 1)


def test_a_node_locked_on_v_prevotes_nil_for_another_value() -> None:
    cluster = ClusterOf(4)
    p0, p1 = cluster.proposer(0, 0), cluster.proposer(0, 1)
    locker = next(p for p in cluster.ids if p not in (p0, p1))
    _, deliver = _round0_split(cluster, locker)
    cluster.tick(
        CONFIG.timeout_propose_ticks + CONFIG.timeout_prevote_ticks + CONFIG.timeout_precommit_ticks + 5,
        deliver,
    )
    v = m.value_hash(b"h0:from " + p0[-6:].encode())
    precommits = [x for x in cluster.sent[locker] if isinstance(x, m.Precommit) and x.round == 0]
    assert {x.value for x in precommits} == {v}  # locked on v in round 0 (line 36)
    # Round 1's proposer saw no quorum for v, so it proposes a fresh value w (valid_round
    # -1); the node locked on v must prevote nil for it (line 22).
    proposal = next(x for x in cluster.sent[p1] if isinstance(x, m.Proposal) and x.round == 1)
    w = b"h0:from " + p1[-6:].encode()
    assert proposal.proposal == w and proposal.valid_round == -1
    prevote = next(x for x in cluster.sent[locker] if isinstance(x, m.Prevote) and x.round == 1)
    assert prevote.value is None
    # The other three prevote w: a quorum, so the locked node re-locks on w (line 36) and w wins.
    for peer in cluster.ids:
        first = cluster.commits[peer][0]
        assert (first.proposal, first.round) == (w, 1)


def _outsider() -> SigningKey:
    return SigningKey(hashlib.sha256(b"not an authority").digest())


def test_bad_votes_are_rejected_with_a_reason_and_change_nothing() -> None:
    cluster = ClusterOf(4)
    a, b = cluster.ids[0], cluster.ids[1]
    core = cluster.cores[a]
    before, pending = core.hard_state(), core.ready()
    cases: list[tuple[m.Message, str]] = [
        (
            m.sign_prevote(_outsider(), GENESIS, height=0, round=0, value=None),
            "is not an authority at height 0",
        ),
        (
            m.sign_prevote(
                cluster.keys[b], hashlib.sha256(b"another network").digest(), height=0, round=0, value=None
            ),
            "bad prevote signature",
        ),
        (
            m.Precommit(height=0, round=0, value=None, signer=b, signature=bytes(64)),
            "bad precommit signature",
        ),
        (
            m.sign_proposal(
                cluster.keys[cluster.proposer(0, 1)],
                GENESIS,
                height=0,
                round=0,
                proposal=b"h0:x",
                valid_round=-1,
            ),
            "is not the proposer of height 0 round 0",
        ),
        (
            m.sign_proposal(
                cluster.keys[cluster.proposer(0, 2)],
                GENESIS,
                height=0,
                round=2,
                proposal=b"h0:x",
                valid_round=2,
            ),
            "valid round 2 is not below round 2",
        ),
    ]
    for message, reason in cases:
        with pytest.raises(MessageRejected) as caught:
            core.step(message)
        assert reason in caught.value.reason
    assert core.hard_state() == before
    assert core.ready() == pending


def test_malformed_bytes_are_rejected_by_the_decoder() -> None:
    vote = m.sign_prevote(key_of(0), GENESIS, height=0, round=0, value=bytes(32))
    good = m.to_map(vote)
    for broken, reason in [
        (b"\xc1", "undecodable"),
        (codec.encode({**good, "type": "vote"}), "unknown message type"),
        (codec.encode({**good, "value": b"short"}), "32-byte hash or nil"),
        (codec.encode({**good, "round": -1}), "round -1 out of range"),
        (codec.encode({**good, "signature": b"x" * 63}), "signature must be 64 bytes"),
        (codec.encode({k: v for k, v in good.items() if k != "value"}), "missing field 'value'"),
        (codec.encode({**good, "height": True}), "wrong type"),
    ]:
        with pytest.raises(MessageRejected) as caught:
            m.decode(broken)
        assert reason in caught.value.reason
    assert m.decode(m.encode(vote)) == vote


def test_replayed_votes_count_once_and_double_votes_are_reported_as_evidence() -> None:
    cluster = ClusterOf(4)
    a, b = cluster.ids[0], cluster.ids[1]
    core = cluster.cores[a]
    nil = m.sign_prevote(cluster.keys[b], GENESIS, height=0, round=3, value=None)
    for _ in range(3):
        core.step(nil)
    other = m.sign_prevote(cluster.keys[b], GENESIS, height=0, round=3, value=bytes(32))
    core.step(other)
    ready = core.ready()
    assert [(e.first, e.second) for e in ready.evidence] == [(nil, other)]
    # One signer in round 3 is below f+1 = 2: no round skip on its account, however often it votes.
    assert core.round == 0
    c = cluster.ids[2]
    core.step(m.sign_precommit(cluster.keys[c], GENESIS, height=0, round=3, value=None))
    assert core.round == 3  # two distinct authorities are in round 3 (line 55)


def test_equivocating_proposer_is_reported_and_the_first_proposal_is_prevoted() -> None:
    cluster = ClusterOf(4)
    proposer = cluster.proposer(0, 0)
    a = next(p for p in cluster.ids if p != proposer)
    core = cluster.cores[a]
    first = m.sign_proposal(
        cluster.keys[proposer], GENESIS, height=0, round=0, proposal=b"h0:one", valid_round=-1
    )
    second = m.sign_proposal(
        cluster.keys[proposer], GENESIS, height=0, round=0, proposal=b"h0:two", valid_round=-1
    )
    core.step(first)
    core.step(second)
    ready = core.ready()
    [evidence] = ready.evidence
    assert (evidence.first, evidence.second, evidence.signer) == (first, second, proposer)
    [prevote] = [o.message for o in ready.messages if isinstance(o.message, m.Prevote)]
    assert prevote.value == first.value


def test_an_invalid_proposal_gets_nil_prevotes() -> None:
    cluster = ClusterOf(4)
    proposer = cluster.proposer(0, 0)
    a = next(p for p in cluster.ids if p != proposer)
    core = cluster.cores[a]
    core.step(
        m.sign_proposal(
            cluster.keys[proposer], GENESIS, height=0, round=0, proposal=b"h0:bad", valid_round=-1
        )
    )
    [prevote] = [o.message for o in core.ready().messages if isinstance(o.message, m.Prevote)]
    assert prevote.value is None


def _certificate(cluster: ClusterOf, signers: list[str], value: bytes = b"h0:v") -> m.Certificate:
    precommits = [
        m.sign_precommit(cluster.keys[s], GENESIS, height=0, round=0, value=m.value_hash(value))
        for s in signers
    ]
    return m.certificate_of(0, 0, m.value_hash(value), precommits)


def test_certificates_with_too_few_duplicate_foreign_or_bad_signers_are_rejected() -> None:
    cluster = ClusterOf(4)
    ids = cluster.ids
    m.verify_certificate(_certificate(cluster, ids[:3]), cluster.all, GENESIS)
    too_few = _certificate(cluster, ids[:2])
    duplicated = _certificate(cluster, ids[:2])
    duplicated = m.Certificate(
        height=0,
        round=0,
        value=duplicated.value,
        signatures=(*duplicated.signatures, duplicated.signatures[0]),
    )
    good = _certificate(cluster, ids[:3])
    forged = m.Certificate(
        height=0,
        round=0,
        value=good.value,
        signatures=(*good.signatures[:2], m.CertificateSignature(signer=ids[3], signature=bytes(64))),
    )
    outsider = m.sign_precommit(_outsider(), GENESIS, height=0, round=0, value=good.value)
    foreign = m.Certificate(
        height=0,
        round=0,
        value=good.value,
        signatures=(
            *good.signatures,
            m.CertificateSignature(signer=outsider.signer, signature=outsider.signature),
        ),
    )
    for certificate, reason in [
        (too_few, "2 precommits of 3 needed"),
        (duplicated, "appears more than once"),
        (forged, "bad signature"),
        (foreign, "is not an authority"),
    ]:
        with pytest.raises(CertificateInvalid) as caught:
            m.verify_certificate(certificate, cluster.all, GENESIS)
        assert reason in caught.value.reason
        # A decision carrying it is refused by the core, which stays at height 0.
        core = cluster.cores[ids[0]]
        with pytest.raises(CertificateInvalid):
            core.step(m.Decision(proposal=b"h0:v", certificate=certificate))
        assert core.height == 0


def test_a_valid_decision_commits_at_once_and_a_lagging_node_catches_up() -> None:
    cluster = ClusterOf(4)
    cluster.heights = 3
    behind = cluster.ids[3]
    cluster.crash(behind)
    cluster.tick(200)
    ahead = [p for p in cluster.ids if p != behind]
    assert all(len(cluster.commits[p]) == 3 for p in ahead)
    # The node comes back empty-handed at height 0; its round-0 messages reach the others,
    # who answer with the decisions they keep, and it commits the same three values.
    cluster.restart(behind)
    cluster.tick(200)
    assert cluster.committed(behind) == cluster.committed(ahead[0])
    assert any(isinstance(x, m.Decision) for p in ahead for x in cluster.sent[p])


def test_nodes_restarted_after_a_decision_still_hand_it_to_a_node_that_missed_it() -> None:
    cluster = ClusterOf(4)
    behind = cluster.ids[3]
    ahead = cluster.ids[:3]
    cluster.crash(behind)
    cluster.pump()
    assert all(len(cluster.commits[p]) == 1 for p in ahead)
    # Everyone who decided restarts: only the persisted hard state remembers the decision,
    # and they cannot decide height 1 without the node still at height 0.
    for peer in ahead:
        cluster.crash(peer)
        cluster.restart(peer)
    cluster.restart(behind)
    cluster.tick(100)
    assert cluster.committed(behind) == cluster.committed(ahead[0])


def test_a_restarted_node_resumes_from_its_hard_state_and_never_signs_twice() -> None:
    cluster = ClusterOf(4)
    proposer = cluster.proposer(0, 0)
    a = next(p for p in cluster.ids if p != proposer)
    # `a` prevotes the proposal; then it crashes before anything else reaches it.
    cluster.pump(lambda s, d, msg: isinstance(msg, m.Proposal))
    state = cluster.persisted[a]
    assert state.step == Step.PREVOTE
    assert HardState.decode(state.encode()) == state
    [prevote] = [x for x in state.own if isinstance(x, m.Prevote)]
    cluster.crash(a)
    cluster.mailbox.clear()
    cluster.restart(a)
    core = cluster.cores[a]
    assert (core.height, core.round, core.current_step) == (0, 0, Step.PREVOTE)
    # It re-sends the same signed prevote rather than signing a new one.
    resent = [o.message for o in core.ready().messages]
    assert resent == [prevote]
    # The others' prevotes were lost with the crash; their periodic re-sends bring them back.
    cluster.tick(CONFIG.rebroadcast_ticks + 1)
    assert all(len(cluster.commits[p]) == 1 for p in cluster.ids)


def test_ready_holds_the_hard_state_before_messages_and_advance_clears_it() -> None:
    cluster = ClusterOf(4)
    core = cluster.cores[cluster.proposer(0, 0)]
    ready = core.ready()
    # The proposer signed its proposal and its own prevote for it: both persisted, then sent.
    assert ready.hard_state is not None and ready.hard_state.own == tuple(o.message for o in ready.messages)
    assert [type(o.message) for o in ready.messages] == [m.Proposal, m.Prevote]
    assert [t.kind for t in ready.timeouts] == ["rebroadcast", "propose"]
    assert min(t.at_ticks for t in ready.timeouts) == core.next_deadline_ticks()
    assert core.ready() == ready  # asking again, without advance, gives the same
    core.advance()
    assert not core.ready()


def test_authority_sets_change_per_height() -> None:
    # Height 1 drops the last node from the authority set: it neither proposes nor votes
    # there, but still learns the decision; three authorities need all three to commit.
    def authorities_at(height: int, everyone: frozenset[str]) -> frozenset[str]:
        return everyone if height != 1 else frozenset(sorted(everyone)[:3])

    cluster = ClusterOf(4, authorities_at=authorities_at)
    cluster.heights = 3
    cluster.tick(300)
    dropped = cluster.ids[3]
    assert all(cluster.committed(p) == cluster.committed(cluster.ids[0]) for p in cluster.ids)
    assert len(cluster.committed(dropped)) == 3
    assert not any(x.height == 1 for x in cluster.sent[dropped] if not isinstance(x, m.Decision))
    assert len(cluster.commits[dropped][1].certificate.signatures) == 3
    # Its vote at height 1 would be refused.
    with pytest.raises(MessageRejected):
        core = Core(
            key=cluster.keys[cluster.ids[0]],
            config=CONFIG,
            authorities=cluster.authorities,
            validate=valid,
            get_value=lambda h: None,
            height=1,
        )
        core.step(m.sign_prevote(cluster.keys[dropped], GENESIS, height=1, round=0, value=None))


def test_messages_for_a_future_height_wait_and_count_once_it_is_reached() -> None:
    cluster = ClusterOf(4)
    a = cluster.ids[0]
    core = cluster.cores[a]
    votes = [
        m.sign_prevote(cluster.keys[p], GENESIS, height=1, round=5, value=None) for p in cluster.ids[1:3]
    ]
    for vote in votes:
        core.step(vote)
    assert core.height == 0 and core.round == 0
    cluster.pump()
    # At height 1 the two buffered round-5 prevotes are f+1: the node jumps to round 5.
    assert core.height == 1 and core.round == 5


def test_every_message_type_survives_the_wire() -> None:
    key = key_of(0)
    prevotes = [
        m.sign_prevote(key_of(i), GENESIS, height=3, round=1, value=m.value_hash(b"h3:v")) for i in range(3)
    ]
    certificate = m.certificate_of(
        3,
        1,
        m.value_hash(b"h3:v"),
        [
            m.sign_precommit(key_of(i), GENESIS, height=3, round=1, value=m.value_hash(b"h3:v"))
            for i in range(3)
        ],
    )
    for message in [
        m.sign_proposal(key, GENESIS, height=3, round=2, proposal=b"h3:v", valid_round=1, proof=prevotes),
        m.sign_proposal(key, GENESIS, height=3, round=0, proposal=b"h3:v", valid_round=-1),
        m.sign_prevote(key, GENESIS, height=3, round=0, value=None),
        m.sign_precommit(key, GENESIS, height=3, round=0, value=bytes(32)),
        m.Decision(proposal=b"h3:v", certificate=certificate),
        m.sign_catch_up(key, GENESIS, height=2),
    ]:
        decoded = m.decode(m.encode(message))
        assert decoded == message and m.encode(decoded) == m.encode(message)
    with pytest.raises(MessageRejected, match="another value"):
        m.decode(m.encode(m.Decision(proposal=b"h3:other", certificate=certificate)))


def test_a_reproposal_proof_counts_prevotes_a_byzantine_signer_hid_from_us() -> None:
    """The liar prevoted v to some and nil to us; the re-proposal's proof still counts it for v."""
    cluster = ClusterOf(4)
    proposer1 = cluster.proposer(0, 1)
    receiver = next(p for p in cluster.ids if p not in (proposer1, cluster.proposer(0, 0)))
    liar = next(p for p in cluster.ids if p not in (proposer1, receiver))
    core = cluster.cores[receiver]
    v = b"h0:v"
    honest_v = [
        m.sign_prevote(cluster.keys[p], GENESIS, height=0, round=0, value=m.value_hash(v))
        for p in (proposer1, receiver)
    ]
    liar_v = m.sign_prevote(cluster.keys[liar], GENESIS, height=0, round=0, value=m.value_hash(v))
    core.step(m.sign_prevote(cluster.keys[liar], GENESIS, height=0, round=0, value=None))  # what we were told
    core.step(honest_v[0])
    # Into round 1 (two authorities are there), where proposer1 re-proposes v from round 0.
    core.step(m.sign_prevote(cluster.keys[proposer1], GENESIS, height=0, round=1, value=None))
    core.step(m.sign_prevote(cluster.keys[liar], GENESIS, height=0, round=1, value=None))
    assert core.round == 1
    reproposal = m.sign_proposal(
        cluster.keys[proposer1],
        GENESIS,
        height=0,
        round=1,
        proposal=v,
        valid_round=0,
        proof=[*honest_v, liar_v],
    )
    core.step(reproposal)
    prevote = next(
        o.message for o in core.ready().messages if isinstance(o.message, m.Prevote) and o.message.round == 1
    )
    assert prevote.value == m.value_hash(v)  # line 28 holds with the proof's quorum
    assert any(e.signer == liar for e in core.ready().evidence)


def test_a_reproposal_with_a_thin_or_forged_proof_is_rejected() -> None:
    cluster = ClusterOf(4)
    proposer1 = cluster.proposer(0, 1)
    core = cluster.cores[next(p for p in cluster.ids if p != proposer1)]
    v = b"h0:v"
    prevotes = [
        m.sign_prevote(cluster.keys[p], GENESIS, height=0, round=0, value=m.value_hash(v))
        for p in cluster.ids
    ]
    forged = dataclasses.replace(prevotes[2], signature=bytes(64))
    for proof, reason in [
        (prevotes[:2], "2 prevotes, a quorum is 3"),
        ([*prevotes[:2], forged], "bad prevote signature"),
        ([prevotes[0], prevotes[0], prevotes[1]], "repeats a signer"),
    ]:
        proposal = m.sign_proposal(
            cluster.keys[proposer1], GENESIS, height=0, round=1, proposal=v, valid_round=0
        )
        proposal = dataclasses.replace(
            proposal,
            proof=tuple(m.CertificateSignature(signer=p.signer, signature=p.signature) for p in proof),
        )
        with pytest.raises(MessageRejected) as caught:
            core.step(proposal)
        assert reason in caught.value.reason


def test_catch_up_requests_are_answered_only_for_authorities_with_good_signatures() -> None:
    cluster = ClusterOf(4)
    cluster.heights = 2
    cluster.tick(100)
    core = cluster.cores[cluster.ids[0]]
    assert core.height == 2
    core.ready()
    core.advance()
    with pytest.raises(MessageRejected, match="no authority"):
        core.step(m.sign_catch_up(_outsider(), GENESIS, height=0))
    with pytest.raises(MessageRejected, match="bad catch-up signature"):
        core.step(
            dataclasses.replace(
                m.sign_catch_up(cluster.keys[cluster.ids[1]], GENESIS, height=0), signature=bytes(64)
            )
        )
    core.step(m.sign_catch_up(cluster.keys[cluster.ids[1]], GENESIS, height=0))
    answers = core.ready().messages
    assert [(a.peer, a.message.height) for a in answers if isinstance(a, SendTo)] == [
        (cluster.ids[1], 0),
        (cluster.ids[1], 1),
    ]
    assert all(isinstance(a.message, m.Decision) for a in answers)
    core.advance()
    core.step(m.sign_catch_up(cluster.keys[cluster.ids[1]], GENESIS, height=0))
    assert core.ready().messages == ()  # once per re-send interval


def test_unreadable_hard_state_is_a_storage_error() -> None:
    state = ClusterOf(4).cores[key_id(0)].hard_state()
    assert HardState.decode(state.encode()) == state
    for broken in [b"", b"\x81\xa1x\x01", state.encode()[:-3]]:
        with pytest.raises(StorageError, match="unreadable consensus state"):
            HardState.decode(broken)


def key_id(index: int) -> str:
    return m.signer_of(key_of(index))
