"""Canonical encoding and signed transactions: pure, no files."""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st
from nacl.signing import SigningKey

from pyrsia.errors import TxInvalid
from pyrsia.formats.peer_id import peer_id_of
from pyrsia.translog import codec
from pyrsia.translog.block import BlockHeader
from pyrsia.translog.tx import (
    ADD_ARTIFACT,
    ADD_AUTHORIZED_NODE,
    REMOVE_AUTHORIZED_NODE,
    AddArtifact,
    AuthorizedNode,
    Transaction,
    check,
    sign,
)

ORIGIN = "pyrsia.log/test"
T0 = 1_700_000_000


def key(n: int) -> SigningKey:
    return SigningKey(bytes([n]) * 32)


def me(k: SigningKey) -> str:
    return peer_id_of(bytes(k.verify_key))


def alpine(**changes: Any) -> AddArtifact:
    base = AddArtifact(
        package_type="docker",
        package_id="library/alpine:3.18",
        path="/v2/library/alpine/manifests/3.18",
        digest="sha256:" + "ab" * 32,
        size=1234,
        chunk_size=1_048_576,
        chunk_root=bytes(32),
        media_type="application/vnd.oci.image.index.v1+json",
        source="https://registry-1.docker.io",
        author="Natanael Copa",
        dependencies=("library/busybox:1.36",),
    )
    return dataclasses.replace(base, **changes)


# -- codec --------------------------------------------------------------------------

scalars = (
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=8) | st.binary(max_size=8)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=20,
)


@given(st.dictionaries(st.text(max_size=6), values, max_size=6))
def test_encoding_ignores_insertion_order_and_round_trips(doc: dict[str, Any]) -> None:
    backwards = dict(reversed(list(doc.items())))
    assert codec.encode(doc) == codec.encode(backwards)
    assert codec.decode(codec.encode(doc)) == doc


def test_encoding_sorts_keys_at_every_depth_and_writes_tuples_as_arrays() -> None:
    encoded = codec.encode({"b": {"z": 1, "a": (1, 2)}, "a": b"\x00"})
    assert encoded == msgpack.packb({"a": b"\x00", "b": {"a": [1, 2], "z": 1}}, use_bin_type=True)
    assert list(codec.decode(encoded)) == ["a", "b"]


@pytest.mark.parametrize(
    "value", [{"x": 1.5}, {"x": [1, {"y": 0.0}]}, [float("nan")], {1: "int key"}, {"x": object()}]
)
def test_values_without_a_canonical_encoding_are_refused(value: Any) -> None:
    with pytest.raises(TxInvalid):
        codec.encode(value)


@pytest.mark.parametrize("data", [b"\xc1", b"\x92\x01", b"\x81\x01\x02", b"\xcb" + bytes(8)[:4]])
def test_malformed_bytes_are_tx_invalid(data: bytes) -> None:
    with pytest.raises(TxInvalid):
        codec.decode(data)


@pytest.mark.parametrize("count", [0, 1, 15, 16, 65_535, 65_536])
def test_maps_and_arrays_of_encoded_parts_equal_the_canonical_encoding(count: int) -> None:
    doc = {f"k{n:06d}": n for n in range(count)}
    shuffled = dict(reversed(list(doc.items())))
    assert codec.raw_map({k: codec.scalar(v) for k, v in shuffled.items()}) == codec.encode(doc)
    items = [b"x" * (n % 3) for n in range(count)]
    assert codec.raw_array([codec.scalar(i) for i in items]) == codec.encode(items)


@given(st.dictionaries(st.text(max_size=6), scalars | st.lists(scalars, max_size=4), max_size=8))
def test_a_map_built_in_sorted_order_encodes_as_the_canonical_walk_does(doc: dict[str, Any]) -> None:
    ordered = {k: doc[k] for k in sorted(doc)}
    assert codec.encode_sorted(ordered) == codec.encode(doc)


@pytest.mark.parametrize("origin", ["", ORIGIN])
@pytest.mark.parametrize("registries", [(), ("docker.io", "ghcr.io")])
@pytest.mark.parametrize("transactions_hash", [b"", b"\x04" * 32])
def test_a_header_hashes_its_canonical_encoding(
    origin: str, registries: tuple[str, ...], transactions_hash: bytes
) -> None:
    header = BlockHeader(
        height=7, prev_hash=bytes(32), tx_root=b"\x01" * 32, log_size=9, log_root=b"\x02" * 32, time=T0,
        proposer=me(key(1)), authorities_hash=b"\x03" * 32, origin=origin, registries=registries,
        transactions_hash=transactions_hash,
    )  # fmt: skip
    canonical = codec.encode(header.to_map())
    assert header.encoded() == canonical and header.hash == hashlib.sha256(canonical).digest()
    assert BlockHeader.from_map(codec.decode(canonical)) == header
    # absent when empty, so headers from before the field hash as they did
    assert ("transactions_hash" in codec.decode(canonical)) == bool(transactions_hash)
    with pytest.raises(TxInvalid):
        dataclasses.replace(header, transactions_hash=b"\x04" * 31)


def test_field_checks_presence_and_type() -> None:
    assert codec.field({"n": 3}, "n", int) == 3
    for doc in ({}, {"n": "3"}, {"n": True}, ["n"]):
        with pytest.raises(TxInvalid):
            codec.field(doc, "n", int)


# -- transactions -------------------------------------------------------------------


def test_id_is_sha256_of_the_canonical_map_without_signature() -> None:
    seeded = SigningKey(bytes(range(32)))
    tx = sign(seeded, type=ADD_ARTIFACT, payload=alpine(), time=T0, nonce=1)
    # written out by hand, keys in sorted order, so the format cannot drift unseen
    unsigned = {
        "nonce": 1,
        "payload": {
            "author": "Natanael Copa",
            "chunk_root": bytes(32),
            "chunk_size": 1_048_576,
            "dependencies": ["library/busybox:1.36"],
            "digest": "sha256:" + "ab" * 32,
            "media_type": "application/vnd.oci.image.index.v1+json",
            "package_id": "library/alpine:3.18",
            "package_type": "docker",
            "path": "/v2/library/alpine/manifests/3.18",
            "size": 1234,
            "source": "https://registry-1.docker.io",
        },
        "submitter": me(seeded),
        "time": T0,
        "type": "AddArtifact",
    }
    assert tx.id == hashlib.sha256(msgpack.packb(unsigned, use_bin_type=True)).digest()
    assert tx.id.hex() == "33db3fe6add84d5093c1e8c91935b8456e504804df0da57658e8de391e00612b"
    assert tx.submitter == "12D3KooWA4Xop1JaT3MHxwYMkCepYsv4iPVopMXwCz5iHYdBfeSB"
    assert dataclasses.replace(tx, signature=bytes(64)).id == tx.id


def test_transaction_round_trips_through_bytes() -> None:
    for tx in (
        sign(key(0), type=ADD_ARTIFACT, payload=alpine(dependencies=()), time=T0, nonce=0),
        sign(key(0), type=ADD_AUTHORIZED_NODE, payload=AuthorizedNode(peer_id=me(key(1))), time=T0, nonce=1),
        sign(
            key(0), type=REMOVE_AUTHORIZED_NODE, payload=AuthorizedNode(peer_id=me(key(1))), time=T0, nonce=2
        ),
    ):
        again = Transaction.from_map(codec.decode(codec.encode(tx.to_map())))
        assert again == tx and again.id == tx.id
        check(again)


def test_forged_or_misattributed_transactions_are_rejected() -> None:
    tx = sign(key(0), type=ADD_ARTIFACT, payload=alpine(), time=T0, nonce=1)
    check(tx)
    bad_signature = bytes([tx.signature[0] ^ 1]) + tx.signature[1:]
    other_digest = alpine(digest="sha256:" + "cd" * 32)
    stolen = sign(key(1), type=ADD_ARTIFACT, payload=alpine(), time=T0, nonce=1).signature
    for forged in (
        dataclasses.replace(tx, signature=bad_signature),
        dataclasses.replace(tx, payload=other_digest),  # same signature, other content
        dataclasses.replace(tx, time=T0 + 1),
        dataclasses.replace(tx, submitter=me(key(1))),  # claims another node submitted it
        dataclasses.replace(tx, signature=stolen),  # right content, someone else's key
        dataclasses.replace(tx, signature=bytes(64)),
    ):
        with pytest.raises(TxInvalid):
            check(forged)
    for unbuildable in ({"submitter": "not-a-peer-id"}, {"signature": b""}, {"signature": bytes(65)}):
        with pytest.raises(TxInvalid):
            dataclasses.replace(tx, **unbuildable)


@pytest.mark.parametrize(
    "change",
    [
        {"type": "DeleteEverything"},
        {"payload": {**alpine().to_map(), "package_type": "npm"}},
        {"payload": {**alpine().to_map(), "size": True}},
        {"payload": {**alpine().to_map(), "dependencies": [1]}},
        {"payload": {**alpine().to_map(), "author": "x" * 5000}},
        {"payload": {k: v for k, v in alpine().to_map().items() if k != "digest"}},
        {"type": ADD_AUTHORIZED_NODE, "payload": {"peer_id": "QmNotEd25519"}},
        {"nonce": "1"},
    ],
)
def test_malformed_transaction_maps_are_tx_invalid(change: dict[str, Any]) -> None:
    doc = {**sign(key(0), type=ADD_ARTIFACT, payload=alpine(), time=T0, nonce=1).to_map(), **change}
    with pytest.raises(TxInvalid):
        Transaction.from_map(doc)
