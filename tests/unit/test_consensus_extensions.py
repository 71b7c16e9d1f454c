"""Vote extensions: what a precommit carries beyond its signature, and who may count it.

Every node's `extend` here is what the chain's will be in spirit: the signer's own
Ed25519 signature over `b"ext" + value_hash(proposal)`, and `verify_extension` checks
it with the signer's public key (real nacl keys throughout). Scenarios cite Tendermint
(arXiv:1807.04938, Algorithm 1) and CometBFT's ABCI++ (ExtendVote/VerifyVoteExtension).
"""

from __future__ import annotations

import dataclasses

import pytest
from nacl.signing import SigningKey

from pyrsia.consensus import messages as m
from pyrsia.consensus.core import Commit, Extend, HardState
from pyrsia.errors import CertificateInvalid, MessageRejected
from pyrsia.translog import codec
from pyrsia.translog.tx import verify_signature
from tests.unit.test_consensus_core import GENESIS, ClusterOf, key_of

V = b"h0:v"
GARBAGE = b"\x07" * 64


def extension_of(key: SigningKey, proposal: bytes) -> bytes:
    return key.sign(b"ext" + m.value_hash(proposal)).signature


def signing(key: SigningKey) -> Extend:
    def extend(height: int, round_: int, proposal: bytes) -> bytes:
        return extension_of(key, proposal)

    return extend


def verify_extension(height: int, round_: int, proposal: bytes, signer: str, extension: bytes) -> bool:
    return verify_signature(signer, b"ext" + m.value_hash(proposal), extension)


def cluster_of(size: int) -> ClusterOf:
    return ClusterOf(size, extend_of=signing, verify_extension=verify_extension)


@dataclasses.dataclass
class Setup:
    """One receiving core `a` at height 0, the round-0 proposer `p0`, and the other two."""

    cluster: ClusterOf
    a: str
    p0: str
    b: str
    c: str

    def precommit(self, signer: str, extension: bytes | None = None, *, round_: int = 0) -> m.Precommit:
        key = self.cluster.keys[signer]
        return m.sign_precommit(
            key,
            GENESIS,
            height=0,
            round=round_,
            value=m.value_hash(V),
            extension=extension_of(key, V) if extension is None else extension,
        )

    def proposal(self) -> m.Proposal:
        return m.sign_proposal(
            self.cluster.keys[self.p0], GENESIS, height=0, round=0, proposal=V, valid_round=-1
        )

    def commits(self) -> tuple[Commit, ...]:
        return self.cluster.cores[self.a].ready().commits


def setup() -> Setup:
    cluster = cluster_of(4)
    p0 = cluster.proposer(0, 0)
    a, b, c = (p for p in cluster.ids if p != p0)
    return Setup(cluster=cluster, a=a, p0=p0, b=b, c=c)


def assert_extensions_verify(
    certificate: m.Certificate, proposal: bytes, authorities: frozenset[str]
) -> None:
    m.verify_certificate(
        certificate, authorities, GENESIS, proposal=proposal, verify_extension=verify_extension
    )
    assert all(s.extension for s in certificate.signatures)


# -- the wire ---------------------------------------------------------------------------


def test_precommit_and_certificate_extensions_survive_the_wire() -> None:
    key = key_of(0)
    with_extension = m.sign_precommit(
        key, GENESIS, height=2, round=1, value=m.value_hash(V), extension=b"x" * m.EXTENSION_BYTES_MAX
    )
    nil = m.sign_precommit(key, GENESIS, height=2, round=1, value=None)
    for message in (with_extension, nil):
        decoded = m.decode(m.encode(message))
        assert decoded == message and m.encode(decoded) == m.encode(message)
    assert m.to_map(with_extension)["extension"] == b"x" * m.EXTENSION_BYTES_MAX
    # A nil precommit may leave the field out altogether.
    bare = {k: v for k, v in m.to_map(nil).items() if k != "extension"}
    assert m.decode(codec.encode(bare)) == nil
    precommits = [
        m.sign_precommit(
            key_of(i), GENESIS, height=2, round=1, value=m.value_hash(V), extension=extension_of(key_of(i), V)
        )
        for i in range(3)
    ]
    certificate = m.certificate_of(2, 1, m.value_hash(V), precommits)
    decision = m.Decision(proposal=V, certificate=certificate)
    decoded = m.decode(m.encode(decision))
    assert isinstance(decoded, m.Decision) and decoded == decision
    assert decoded.certificate.precommits() == sorted(precommits, key=lambda p: p.signer)
    assert {s.extension for s in decoded.certificate.signatures} == {p.extension for p in precommits}


def test_a_nil_precommit_with_an_extension_or_an_oversize_one_is_refused() -> None:
    key = key_of(0)
    precommit = m.sign_precommit(key, GENESIS, height=0, round=0, value=m.value_hash(V), extension=b"e")
    good = m.to_map(precommit)
    nil = m.to_map(m.sign_precommit(key, GENESIS, height=0, round=0, value=None))
    decision = m.to_map(
        m.Decision(proposal=V, certificate=m.certificate_of(0, 0, m.value_hash(V), [precommit]))
    )
    oversize_entry = {**decision["certificate"]["signatures"][0], "extension": b"x" * 1025}
    for broken, reason in [
        ({**nil, "extension": b"e"}, "a nil precommit carries no extension"),
        ({**good, "extension": b"x" * (m.EXTENSION_BYTES_MAX + 1)}, "extension of 1025 bytes exceeds 1024"),
        ({k: v for k, v in good.items() if k != "extension"}, "missing field 'extension'"),
        ({**good, "extension": "text"}, "wrong type"),
        (
            {**decision, "certificate": {**decision["certificate"], "signatures": [oversize_entry]}},
            "extension of 1025 bytes exceeds 1024",
        ),
    ]:
        with pytest.raises(MessageRejected) as caught:
            m.decode(codec.encode(broken))
        assert reason in caught.value.reason
    # A core stepped such a precommit directly refuses it too, before anything counts.
    s = setup()
    core = s.cluster.cores[s.a]
    before = core.hard_state()
    signed_nil = m.sign_precommit(s.cluster.keys[s.b], GENESIS, height=0, round=0, value=None)
    for message, reason in [
        (dataclasses.replace(signed_nil, extension=b"e"), "a nil precommit carries no extension"),
        (dataclasses.replace(s.precommit(s.b), extension=b"x" * (m.EXTENSION_BYTES_MAX + 1)), "exceeds 1024"),
    ]:
        with pytest.raises(MessageRejected, match=reason):
            core.step(message)
    assert core.hard_state() == before
    with pytest.raises(ValueError, match="cannot go with this precommit"):
        m.sign_precommit(key, GENESIS, height=0, round=0, value=None, extension=b"e")


def test_a_node_persists_its_precommit_with_the_extension_it_made() -> None:
    cluster = cluster_of(4)
    # Proposals and prevotes move, precommits do not: every node precommits and waits.
    cluster.pump(lambda s, d, msg: not isinstance(msg, m.Precommit))
    for peer in cluster.ids:
        state = cluster.persisted[peer]
        [precommit] = [x for x in state.own if isinstance(x, m.Precommit)]
        proposal = b"h0:from " + cluster.proposer(0, 0)[-6:].encode()
        assert precommit.value == m.value_hash(proposal)
        assert precommit.extension == extension_of(cluster.keys[peer], proposal)
        assert HardState.decode(state.encode()) == state


# -- counting ---------------------------------------------------------------------------


def test_a_bad_extension_is_refused_on_arrival_and_its_signers_good_precommit_still_counts() -> None:
    s = setup()
    core = s.cluster.cores[s.a]
    core.step(s.proposal())  # the proposal is held from now on
    for bad in (GARBAGE, extension_of(s.cluster.keys[s.c], V), b""):
        with pytest.raises(MessageRejected, match=r"extension from .* does not verify"):
            core.step(s.precommit(s.b, bad))
    # Nothing of a refused precommit counts: two of them in round 3 would be f+1 there
    # and pull the node into round 3 (line 55) if they did.
    for signer in (s.b, s.c):
        with pytest.raises(MessageRejected):
            core.step(s.precommit(signer, GARBAGE, round_=3))
    assert core.round == 0
    core.step(s.precommit(s.c))
    core.step(s.precommit(s.p0))
    assert s.commits() == ()  # two good precommits of three needed
    core.step(s.precommit(s.b))  # b's slot was not taken by its refused precommits
    [commit] = s.commits()
    assert {x.signer for x in commit.certificate.signatures} == {s.b, s.c, s.p0}
    assert_extensions_verify(commit.certificate, V, s.cluster.all)


def test_a_bad_extension_before_the_proposal_is_dropped_and_the_honest_quorum_decides() -> None:
    s = setup()
    core = s.cluster.cores[s.a]
    liar = s.b
    # Before the proposal is known: a relay swaps c's extension for garbage (c's
    # signature is intact, the extension is not under it), the liar precommits with
    # p0's extension, then c's and p0's genuine precommits come. That is a quorum of
    # signed precommits for V, but only two good extensions.
    for precommit in [
        s.precommit(s.c, GARBAGE),
        s.precommit(liar, extension_of(s.cluster.keys[s.p0], V)),
        s.precommit(s.c),
        s.precommit(s.p0),
    ]:
        core.step(precommit)
    core.step(s.proposal())
    assert s.commits() == ()
    # The liar cannot block what honest signers reach alone: a's own precommit (after
    # a quorum of prevotes, line 36) is the third good one.
    for signer in (s.c, s.p0):
        core.step(m.sign_prevote(s.cluster.keys[signer], GENESIS, height=0, round=0, value=m.value_hash(V)))
    [commit] = s.commits()
    assert commit.proposal == V
    by_signer = {x.signer: x.extension for x in commit.certificate.signatures}
    assert by_signer == {signer: extension_of(s.cluster.keys[signer], V) for signer in (s.a, s.c, s.p0)}
    assert_extensions_verify(commit.certificate, V, s.cluster.all)


def test_a_cluster_with_extensions_commits_and_a_lagging_node_checks_them_in_decisions() -> None:
    cluster = cluster_of(4)
    cluster.heights = 3
    behind = cluster.ids[3]
    cluster.crash(behind)
    cluster.tick(200)
    ahead = [p for p in cluster.ids if p != behind]
    assert all(len(cluster.commits[p]) == 3 for p in ahead)
    cluster.restart(behind)
    cluster.tick(200)
    assert cluster.committed(behind) == cluster.committed(ahead[0])
    decisions = [x for p in ahead for x in cluster.sent[p] if isinstance(x, m.Decision)]
    assert decisions
    for decision in decisions:
        assert_extensions_verify(decision.certificate, decision.proposal, cluster.all)
    for peer in cluster.ids:
        for commit in cluster.commits[peer]:
            assert_extensions_verify(commit.certificate, commit.proposal, cluster.all)
    assert cluster.rejected == []


# -- certificates -----------------------------------------------------------------------


def test_verify_certificate_checks_every_extension_against_the_proposal() -> None:
    s = setup()
    good = m.certificate_of(0, 0, m.value_hash(V), [s.precommit(p) for p in (s.b, s.c, s.p0)])
    m.verify_certificate(good, s.cluster.all, GENESIS, proposal=V, verify_extension=verify_extension)

    def with_extension(signer: str, extension: bytes) -> m.Certificate:
        signatures = tuple(
            dataclasses.replace(x, extension=extension) if x.signer == signer else x for x in good.signatures
        )
        return dataclasses.replace(good, signatures=signatures)

    stolen = extension_of(s.cluster.keys[s.b], V)
    for certificate, reason in [
        (with_extension(s.c, GARBAGE), f"precommit of {s.c} has a bad extension"),
        (with_extension(s.c, b""), f"precommit of {s.c} has a bad extension"),
        (with_extension(s.p0, stolen), f"precommit of {s.p0} has a bad extension"),
    ]:
        # Without the proposal and a verifier only the precommit signatures are checked.
        m.verify_certificate(certificate, s.cluster.all, GENESIS)
        with pytest.raises(CertificateInvalid) as caught:
            m.verify_certificate(
                certificate, s.cluster.all, GENESIS, proposal=V, verify_extension=verify_extension
            )
        assert caught.value.reason == reason
        # A decision carrying it is refused by a core, which stays at height 0.
        core = s.cluster.cores[s.a]
        with pytest.raises(CertificateInvalid, match="bad extension"):
            core.step(m.Decision(proposal=V, certificate=certificate))
        assert core.height == 0
    with pytest.raises(CertificateInvalid, match="another value"):
        m.verify_certificate(
            good, s.cluster.all, GENESIS, proposal=b"h0:w", verify_extension=verify_extension
        )
    with pytest.raises(ValueError, match="both"):
        m.verify_certificate(good, s.cluster.all, GENESIS, proposal=V)
    # The good one decides at once.
    core = s.cluster.cores[s.a]
    core.step(m.Decision(proposal=V, certificate=good))
    [commit] = s.commits()
    assert commit.certificate == good and core.height == 0  # the next height waits for the apply
    core.advance()
    assert core.height == 1


def test_a_node_that_times_out_of_a_round_unvoted_votes_nil_there_so_the_others_follow() -> None:
    """Without gossip, what one node counts for its precommit timeout (line 47) the others
    may refuse: here a liar's precommit with a bad extension, counted unchecked by the
    node that lacks the proposal and refused by the one that holds it. The first leaves
    round 0 (line 65); its nil votes there are what lets the second leave it too."""
    s = setup()
    liar, holder, lagger = s.b, s.a, s.c
    held, lagging = s.cluster.cores[holder], s.cluster.cores[lagger]
    v = m.value_hash(V)
    held.step(s.proposal())
    for signer in (s.p0, liar):
        held.step(m.sign_prevote(s.cluster.keys[signer], GENESIS, height=0, round=0, value=v))
    own = [o.message for o in held.ready().messages if isinstance(o.message, m.Precommit)]
    assert [p.value for p in own] == [v]  # locked on V and precommitted it (line 36)
    held.step(s.precommit(s.p0))
    with pytest.raises(MessageRejected):
        held.step(s.precommit(liar, GARBAGE))
    held.tick(1000)
    assert held.round == 0  # two precommits: no timeout, no decision
    # The lagging node never got the proposal: the liar's precommit counts there, unchecked.
    for precommit in (s.precommit(s.p0), own[0], s.precommit(liar, GARBAGE)):
        lagging.step(precommit)
    lagging.ready()
    lagging.advance()
    lagging.tick(1000)
    assert lagging.round >= 1 and lagging.ready().commits == ()
    left = [o.message for o in lagging.ready().messages if o.message.round == 0]
    assert [(type(x), x.value) for x in left] == [(m.Prevote, None), (m.Precommit, None)]
    held.step(left[1])
    held.tick(1010)
    assert held.round >= 1
