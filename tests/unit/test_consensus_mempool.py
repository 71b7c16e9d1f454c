"""The consensus wire (submit, verdict) and the mempool that counts verdicts, with real keys."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from pyrsia.consensus import messages as m
from pyrsia.consensus import wire
from pyrsia.consensus.mempool import Mempool, committed_height, key_of
from pyrsia.errors import MessageRejected
from pyrsia.formats.peer_id import peer_id_of
from pyrsia.translog import codec
from pyrsia.translog.tx import (
    ADD_ARTIFACT,
    ADD_AUTHORIZED_NODE,
    AddArtifact,
    AuthorizedNode,
    Transaction,
    endorse,
    sign,
)

KEYS = [SigningKey(bytes([n + 1]) * 32) for n in range(5)]
IDS = [peer_id_of(bytes(k.verify_key)) for k in KEYS]
FOUR = frozenset(IDS[:4])
T0 = 1_700_000_000


def artifact(n: int, digest: int | None = None, submitter: int = 0, nonce: int = 0) -> Transaction:
    payload = AddArtifact(
        package_type="docker",
        package_id=f"library/app:{n}",
        path=f"/v2/library/app/manifests/{n}",
        digest=f"sha256:{(n if digest is None else digest):064x}",
        size=n,
        chunk_size=1 << 20,
        chunk_root=bytes(32),
        media_type="application/vnd.oci.image.manifest.v1+json",
        source="http://upstream",
        author="Ada",
    )
    return sign(KEYS[submitter], type=ADD_ARTIFACT, payload=payload, time=T0, nonce=nonce)


# -- the wire ------------------------------------------------------------------------------


def test_submits_and_verdicts_round_trip_and_verify() -> None:
    tx = artifact(1)
    carried = tx.with_endorsements((endorse(KEYS[1], tx.id),))
    again = wire.decode(wire.encode(wire.Submit(tx=carried)))
    assert (
        isinstance(again, wire.Submit)
        and again.tx == carried
        and again.tx.endorsements == carried.endorsements
    )
    yes = wire.endorsement_verdict(KEYS[2], tx.id)
    no = wire.refusal_verdict(KEYS[3], tx.id, "upstream serves sha256:ab… for app:1")
    for verdict in (yes, no):
        decoded = wire.decode(wire.encode(verdict))
        assert decoded == verdict and isinstance(decoded, wire.Verdict) and decoded.verify()
    assert yes.endorsement() == endorse(KEYS[2], tx.id)  # the very signature a block carries
    # A reason changed after signing, or a refusal passed off as an endorsement, does not verify.
    assert not wire.Verdict(
        tx_id=tx.id, signer=no.signer, endorse=False, reason="other", signature=no.signature
    ).verify()
    assert not wire.Verdict(
        tx_id=tx.id, signer=no.signer, endorse=True, reason="", signature=no.signature
    ).verify()
    vote = m.sign_prevote(KEYS[0], bytes(32), height=3, round=1, value=None)
    assert wire.decode(wire.encode(vote)) == vote  # the core's messages share the protocol


def test_endorsements_travel_in_one_message_and_each_verifies() -> None:
    txs = [artifact(i) for i in range(3)]
    verdicts = [wire.endorsement_verdict(KEYS[2], tx.id) for tx in txs]
    batch = wire.Endorsements(signer=IDS[2], pairs=tuple((v.tx_id, v.signature) for v in verdicts))
    data = wire.encode(batch)
    assert wire.check_size(data) == "endorsements"
    decoded = wire.decode(data)
    assert isinstance(decoded, wire.Endorsements) and decoded == batch
    assert decoded.verdicts() == verdicts and all(v.verify() for v in decoded.verdicts())
    # Three endorsements in one message take fewer bytes than three verdicts.
    assert len(data) < 0.7 * sum(len(wire.encode(v)) for v in verdicts)
    # A pair moved under another signer's name does not verify.
    forged = wire.Endorsements(signer=IDS[3], pairs=batch.pairs[:1])
    assert not any(v.verify() for v in forged.verdicts())


def endorsements_doc(**changes: object) -> dict[str, object]:
    return {"type": "endorsements", "signer": IDS[0], "votes": [[bytes(32), bytes(64)]], **changes}


def verdict_doc(**changes: object) -> dict[str, object]:
    doc = {"type": "verdict", "tx_id": bytes(32), "signer": IDS[0], "endorse": False, "reason": ""}
    return {**doc, "signature": bytes(64), **changes}


@pytest.mark.parametrize(
    "doc",
    [
        verdict_doc(tx_id=b"x"),
        verdict_doc(endorse=True, reason="why"),
        verdict_doc(signer="x"),
        verdict_doc(reason="r" * 2000),
        verdict_doc(signature=bytes(63)),
        endorsements_doc(votes=[[bytes(31), bytes(64)]]),
        endorsements_doc(votes=[[bytes(32), bytes(64), b""]]),
        endorsements_doc(votes=[bytes(96)]),
        endorsements_doc(votes=[[bytes(32), bytes(64)]] * (wire.ENDORSEMENTS_BATCH_MAX + 1)),
        endorsements_doc(signer="x"),
        endorsements_doc(votes=None),
        {"type": "submit", "tx": {"type": "Nope"}, "endorsements": []},
        {"type": "submit", "tx": artifact(1).to_map(), "endorsements": [{}] * 101},
        {"type": "gossip"},
        [1, 2, 3],
    ],
)
def test_malformed_messages_are_rejected(doc: object) -> None:
    with pytest.raises(MessageRejected):
        wire.decode(codec.encode(doc))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_arbitrary_bytes_are_rejected_or_decode(data: bytes) -> None:
    """Nothing but `MessageRejected` may escape decoding, whatever a peer sends."""
    with contextlib.suppress(MessageRejected):
        wire.decode(data)


def test_oversized_messages_are_rejected_before_decoding() -> None:
    with pytest.raises(MessageRejected, match="exceeds"):
        wire.decode(bytes(wire.MESSAGE_BYTES_MAX + 1))


# -- the mempool ---------------------------------------------------------------------------


def test_a_transaction_is_ready_with_a_quorum_and_refused_past_n_minus_quorum() -> None:
    pool = Mempool()
    tx = artifact(1)
    entry = pool.add(tx, 0.0, local=True)
    assert entry is not None and pool.add(tx, 1.0) is None  # once
    for n in range(2):
        pool.verdict(wire.endorsement_verdict(KEYS[n], tx.id))
    assert pool.ready(FOUR, 10) == []  # two of four: quorum is three
    pool.verdict(wire.refusal_verdict(KEYS[3], tx.id, "no"))
    assert not entry.is_refused(FOUR)  # one refusal of four is tolerated
    pool.verdict(wire.endorsement_verdict(KEYS[2], tx.id))
    [ready] = pool.ready(FOUR, 10)
    assert ready.id == tx.id and [e.signer for e in ready.endorsements] == sorted(IDS[:3])
    assert entry.verdicts(FOUR)[IDS[3]] == ("refused", "no")
    # An authority's first word counts: a later endorsement by the refuser changes nothing.
    assert pool.verdict(wire.endorsement_verdict(KEYS[3], tx.id)) is None

    other = artifact(2)
    second = pool.add(other, 0.0)
    assert second is not None
    for n in (2, 3):
        pool.verdict(wire.refusal_verdict(KEYS[n], other.id, "differs"))
    assert second.is_refused(FOUR) and not second.is_ready(FOUR)


def test_endorsements_of_strangers_do_not_count() -> None:
    pool = Mempool()
    tx = artifact(1)
    pool.add(tx.with_endorsements((endorse(KEYS[4], tx.id),)), 0.0)
    for n in range(2):
        pool.verdict(wire.endorsement_verdict(KEYS[n], tx.id))
    assert pool.ready(FOUR, 10) == []  # the fifth key is no authority of this set
    assert pool.ready(frozenset(IDS), 10) == []  # of five, quorum is four
    pool.verdict(wire.endorsement_verdict(KEYS[2], tx.id))
    assert len(pool.ready(frozenset(IDS), 10)) == 1


def test_verdicts_before_their_transaction_wait_for_it() -> None:
    pool = Mempool()
    tx = artifact(1)
    for n in range(3):
        assert pool.verdict(wire.endorsement_verdict(KEYS[n], tx.id)) is None
    pool.add(tx, 0.0)
    assert [t.id for t in pool.ready(FOUR, 10)] == [tx.id]


def test_one_publication_is_proposed_once_and_settles_its_twins() -> None:
    pool = Mempool()
    first, twin, other = artifact(1, submitter=0), artifact(1, submitter=1), artifact(2)
    assert first.id != twin.id and key_of(first) == key_of(twin) != key_of(other)
    for tx in (first, twin, other):
        pool.add(tx, 0.0)
        for n in range(3):
            pool.verdict(wire.endorsement_verdict(KEYS[n], tx.id))
    assert [t.id for t in pool.ready(FOUR, 10)] == [first.id, other.id]
    settled = pool.settle([first.with_endorsements(())])
    assert {e.tx.id for e in settled} == {first.id, twin.id}
    assert [t.id for t in pool.ready(FOUR, 10)] == [other.id]


def test_authority_changes_have_keys_and_old_entries_expire() -> None:
    pool = Mempool(ttl_s=10.0)
    change = sign(KEYS[0], type=ADD_AUTHORIZED_NODE, payload=AuthorizedNode(peer_id=IDS[4]), time=T0, nonce=1)
    assert key_of(change) == ("authority", ADD_AUTHORIZED_NODE, IDS[4])
    pool.add(change, 0.0)
    pool.add(artifact(1), 5.0)
    assert [e.tx.id for e in pool.expire(12.0)] == [change.id]
    assert len(pool) == 1


def test_the_pool_is_bounded() -> None:
    pool = Mempool(txs_max=3)
    added = [pool.add(artifact(n), 0.0) for n in range(5)]
    assert [a is not None for a in added] == [True, True, True, False, False]


# -- a twin that comes after the first committed ----------------------------------------


class Record:
    def __init__(self, digest: str, height: int) -> None:
        self.digest, self.height = digest, height


def test_a_twin_of_what_the_log_holds_is_committed_at_that_height() -> None:
    first, twin = artifact(3, submitter=0), artifact(3, submitter=1, nonce=7)
    assert first.id != twin.id and key_of(first) == key_of(twin)
    log = {("docker", "/v2/library/app/manifests/3"): Record(f"sha256:{3:064x}", 42)}
    asked: list[tuple[str, str]] = []

    def latest(package_type: str, path: str) -> Record | None:
        asked.append((package_type, path))
        return log.get((package_type, path))

    assert committed_height(twin, latest) == 42
    assert asked == [("docker", "/v2/library/app/manifests/3")]
    # The path moved on to another digest (a tag updated upstream): a new publication.
    assert committed_height(artifact(3, digest=9, submitter=1), latest) is None
    # Nothing at that path yet.
    assert committed_height(artifact(4), latest) is None


def test_authority_changes_are_never_taken_for_twins() -> None:
    change = sign(KEYS[0], type=ADD_AUTHORIZED_NODE, payload=AuthorizedNode(peer_id=IDS[4]), time=T0, nonce=1)

    def latest(package_type: str, path: str) -> Record | None:
        raise AssertionError("an authority change does not read the artifact log")

    assert committed_height(change, latest) is None
