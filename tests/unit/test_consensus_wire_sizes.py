"""`wire.check_size`: every message's type is read without decoding it, and a message
longer than its type may be is refused before it is decoded."""

from __future__ import annotations

import os
import zlib

import pytest
from nacl.signing import SigningKey

from pyrsia.consensus import messages as m
from pyrsia.consensus import wire
from pyrsia.errors import MessageRejected, ProtocolViolation
from pyrsia.formats.peer_id import peer_id_of
from pyrsia.p2p.wire import varint
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


# -- the stream: DEFLATE around varint-prefixed messages ------------------------------------


def test_messages_cross_a_deflated_stream_in_pieces_of_any_size() -> None:
    kinds = every_kind()
    messages = [wire.encode(kinds[k]) for k in ("submit", "verdict", "endorsements", "prevote", "fetch_txs")]
    deflater = wire.Deflater()
    stream = deflater.batch(messages[:2]) + deflater.batch(messages[2:])
    for piece_bytes in (1, 7, 4096, len(stream)):
        inflater = wire.Inflater()
        got = [
            message
            for start in range(0, len(stream), piece_bytes)
            for message in inflater.messages(stream[start : start + piece_bytes])
        ]
        assert got == messages and not inflater.partial


def maven_submit(n: int) -> bytes:
    path = f"org/example/lib{n}/1.0/lib{n}-1.0.jar"
    payload = AddArtifact(
        package_type="maven",
        package_id=f"org.example:lib{n}:1.0",
        path="/maven2/" + path,
        digest="sha256:" + os.urandom(32).hex(),
        size=1024 + n,
        chunk_size=1 << 20,
        chunk_root=os.urandom(32),
        media_type="application/java-archive",
        source="https://repo.maven.apache.org/maven2/" + path,
        author="org.example",
        registry="central",
    )
    tx = sign(KEYS[0], type=ADD_ARTIFACT, payload=payload, time=1_765_000_000, nonce=n)
    return wire.encode(wire.Submit(tx=tx.with_endorsements((endorse(KEYS[0], tx.id),))))


def test_submits_of_a_stream_take_under_half_their_bytes() -> None:
    """Keys, URLs, the media type and the submitter repeat from one to the next; the ids,
    digests and signatures do not, and stay."""
    deflater = wire.Deflater()
    submits = [maven_submit(n) for n in range(20)]
    pieces = [deflater.batch([submit]) for submit in submits]
    assert sum(map(len, pieces[1:])) < 0.5 * sum(map(len, submits[1:]))
    inflater = wire.Inflater()
    assert [m for piece in pieces for m in inflater.messages(piece)] == submits


def test_a_small_piece_that_inflates_to_much_is_read_one_message_at_a_time() -> None:
    """A bomb of empty maps: each message is taken before the next is inflated, so the
    reader never holds more than one message beyond what the caller took."""
    count = 2_000_000
    piece = wire.Deflater().piece(varint.prefixed(b"\x80") * count)
    assert len(piece) < 20_000
    inflater = wire.Inflater(message_bytes_max=1024)
    messages = inflater.messages(piece)
    for _ in range(10):
        assert next(messages) == b"\x80"
    assert inflater._reader.buffered <= 1024 + varint.VARINT_BYTES_MAX
    assert sum(1 for _ in messages) == count - 10


@pytest.mark.parametrize(
    ("piece", "match"),
    [
        (b"\xff\xfe not deflate at all", "does not inflate"),
        (wire.Deflater().piece(varint.encode(wire.FRAME_BYTES_MAX + 1)), "exceeds"),
        (wire.Deflater().piece(b"\xff" * 10), "varint longer than"),
        (zlib.compress(b"\x01\x80", wbits=-15), "ended its DEFLATE stream"),
    ],
)
def test_a_stream_that_does_not_frame_is_a_protocol_violation(piece: bytes, match: str) -> None:
    with pytest.raises(ProtocolViolation, match=match):
        list(wire.Inflater().messages(piece))


def test_a_verdict_is_the_endorsement_or_refusal_its_key_signs() -> None:
    key = SigningKey.generate()
    tx_id = os.urandom(32)
    verdict = wire.endorsement_verdict(key, tx_id)
    assert verdict.endorsement() == endorse(key, tx_id) and verdict.verify()
    assert verdict.signer == m.signer_of(key) == peer_id_of(bytes(key.verify_key))
    refusal = wire.refusal_verdict(key, tx_id, "not at the upstream")
    assert refusal.signer == verdict.signer and not refusal.endorse and refusal.verify()
    other = SigningKey.generate()
    assert m.signer_of(other) == peer_id_of(bytes(other.verify_key)) != verdict.signer
