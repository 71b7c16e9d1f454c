"""`wire.check_size`: every message's type is read without decoding it, and a message
longer than its type may be is refused before it is decoded."""

from __future__ import annotations

import os

import pytest
from nacl.signing import SigningKey

from pyrsia.consensus import messages as m
from pyrsia.consensus import wire
from pyrsia.errors import MessageRejected
from pyrsia.formats.peer_id import peer_id_of
from pyrsia.translog import codec
from pyrsia.translog.block import AUTHORITIES_MAX
from pyrsia.translog.tx import ADD_ARTIFACT, ENDORSEMENTS_MAX, AddArtifact, endorse, sign

GENESIS = bytes(32)
KEYS = [SigningKey(bytes([i + 1]) * 32) for i in range(AUTHORITIES_MAX)]


def largest_tx_submit() -> wire.Submit:
    payload = AddArtifact(
        package_type="docker",
        package_id="library/" + "a" * 200 + ":1.0",
        path="/v2/library/a/blobs/sha256:" + "0" * 64,
        digest="sha256:" + "0" * 64,
        size=1,
        chunk_size=1 << 20,
        chunk_root=os.urandom(32),
        media_type="application/octet-stream",
        source="https://registry.example/" + "p" * 4000,
        author="x" * 4000,
        dependencies=tuple(f"sha256:{i:064x}" for i in range(1000)),
    )
    tx = sign(KEYS[0], type=ADD_ARTIFACT, payload=payload, time=1, nonce=1)
    return wire.Submit(tx=tx.with_endorsements(tuple(endorse(k, tx.id) for k in KEYS[:ENDORSEMENTS_MAX])))


def every_kind() -> dict[str, wire.Message]:
    value = os.urandom(32)
    proposal = os.urandom(wire.PROPOSED_BLOCK_BYTES_MAX - 64)  # a block as large as one may be
    prevotes = [m.sign_prevote(k, GENESIS, height=5, round=0, value=m.value_hash(proposal)) for k in KEYS]
    extension = os.urandom(m.EXTENSION_BYTES_MAX)
    precommits = [
        m.sign_precommit(k, GENESIS, height=5, round=1, value=m.value_hash(proposal), extension=extension)
        for k in KEYS
    ]
    certificate = m.Certificate(
        height=5,
        round=1,
        value=m.value_hash(proposal),
        signatures=tuple(
            m.CertificateSignature(signer=p.signer, signature=p.signature, extension=p.extension)
            for p in precommits
        ),
    )
    return {
        "prevote": m.sign_prevote(KEYS[0], GENESIS, height=2**40, round=2**30, value=value),
        "precommit": precommits[0],
        "catch_up": m.sign_catch_up(KEYS[0], GENESIS, height=2**40),
        "verdict": wire.refusal_verdict(KEYS[0], value, "\U0001f600" * wire.REASON_CHARS_MAX),
        "submit": largest_tx_submit(),
        "proposal": m.sign_proposal(
            KEYS[0], GENESIS, height=5, round=1, proposal=proposal, valid_round=0, proof=prevotes
        ),
        "decision": m.Decision(proposal=proposal, certificate=certificate),
        "endorsements": wire.Endorsements(
            signer=peer_id_of(bytes(KEYS[0].verify_key)),
            pairs=tuple((os.urandom(32), os.urandom(64)) for _ in range(wire.ENDORSEMENTS_BATCH_MAX)),
        ),
        "fetch_txs": wire.FetchTxs(ids=tuple(os.urandom(32) for _ in range(wire.FETCH_IDS_MAX))),
        "txs": largest_txs(),
    }


def largest_txs() -> wire.Txs:
    """As many of the largest transactions as the service's answer to a fetch may hold."""
    tx = largest_tx_submit().tx
    each = len(tx.encoded()) + 256 * len(tx.endorsements)
    return wire.Txs(txs=(tx,) * (wire.PROPOSED_BLOCK_BYTES_MAX // each))


def test_the_largest_real_message_of_each_type_fits_its_bound() -> None:
    kinds = every_kind()
    assert set(kinds) == set(wire.BYTES_MAX_BY_TYPE)
    for kind, message in kinds.items():
        data = wire.encode(message)
        assert wire.message_type(data) == kind
        assert wire.check_size(data) == kind
        assert len(data) <= wire.BYTES_MAX_BY_TYPE[kind]
        assert type(wire.decode(data)) is type(message)


@pytest.mark.parametrize("kind", ["prevote", "precommit", "catch_up", "verdict", "submit", "endorsements"])
def test_a_small_type_padded_to_a_large_size_is_refused_undecoded(kind: str) -> None:
    padding = b"\0" * (wire.BYTES_MAX_BY_TYPE[kind] + 1)
    data = codec.encode({"type": kind, "height": 1, "padding": padding})
    with pytest.raises(MessageRejected, match=f"{kind} of {len(data)} bytes exceeds"):
        wire.check_size(data)


def test_a_sixteen_mib_proposal_with_a_proof_beyond_the_authorities_is_refused() -> None:
    proof = [{"signer": "x" * 128, "signature": b"s" * 64, "extension": b""}] * (4 * AUTHORITIES_MAX)
    data = codec.encode({"type": "proposal", "proposal": b"\0" * m.PROPOSAL_BYTES_MAX, "proof": proof})
    with pytest.raises(MessageRejected, match="exceeds"):
        wire.check_size(data)


def test_anything_beyond_the_largest_type_is_refused_first() -> None:
    data = b"\x81" + b"\0" * wire.FRAME_BYTES_MAX
    with pytest.raises(MessageRejected, match=f"exceeds {wire.FRAME_BYTES_MAX}"):
        wire.check_size(data)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "truncated"),
        (b"\x92\x01\x02", "not a map"),
        (codec.encode({"height": 1}), "no type"),
        (codec.encode({"type": 7}), "not a string"),
        (codec.encode({"type": "gossip"}), "unknown message type 'gossip'"),
        (codec.encode({"a": [1, 2, 3], "type": "prevote"})[:-3], "truncated"),
        (b"\x81\xa1a\xc1", "invalid msgpack byte"),
        (b"\x81\xa4type\xdb\xff\xff\xff\xff", "truncated"),
        (codec.encode({"a": [None] * (wire.PEEK_VALUES_MAX + 1), "type": "prevote"}), "more than"),
    ],
)
def test_malformed_frames_are_refused_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(MessageRejected, match=reason):
        wire.check_size(data)


def test_the_type_is_found_past_every_msgpack_format() -> None:
    doc = {
        "a": [0, 127, -1, -32, -33, 255, 65_535, 2**32, -(2**40), None, True, False],
        "b": {"nested": {"deeper": [b"", b"x" * 300, b"y" * 70_000]}},
        "c": "s" * 40,
        "d": "t" * 300,
        "e": "u" * 70_000,
        "f": list(range(20)),
        "g": {str(i): i for i in range(20)},
        "type": "catch_up",
    }
    data = codec.encode(doc)
    assert wire.message_type(data) == "catch_up"
