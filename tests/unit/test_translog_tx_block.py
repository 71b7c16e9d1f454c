"""Canonical encoding, signed transactions and block links: pure, no files.

A block chain is built in memory with real Ed25519 keys; each test breaks one thing
and checks that `verify_link` names the height and the reason.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st
from nacl.signing import SigningKey

from pyrsia.errors import ChainBroken, TxInvalid
from pyrsia.formats.peer_id import peer_id_of
from pyrsia.translog import block as blocks
from pyrsia.translog import codec, merkle
from pyrsia.translog.block import Block, CommitSignature
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
    assert dataclasses.replace(tx, signature=b"other").id == tx.id


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
        dataclasses.replace(tx, submitter="not-a-peer-id"),
        dataclasses.replace(tx, signature=b""),
    ):
        with pytest.raises(TxInvalid):
            check(forged)


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


# -- blocks -------------------------------------------------------------------------


class Chain:
    """Blocks built in memory by the same rules as the ledger, signed by chosen keys."""

    def __init__(self, first: SigningKey) -> None:
        self.ids: list[bytes] = []
        self.blocks: list[Block] = []
        self.authorities: list[frozenset[str]] = []  # in force at each height
        tx = sign(
            first, type=ADD_AUTHORIZED_NODE, payload=AuthorizedNode(peer_id=me(first)), time=T0, nonce=0
        )
        self.add([tx], [first], proposer=first)

    def next_authorities(self) -> frozenset[str]:
        return blocks.next_authorities(self.authorities[-1], self.blocks[-1])

    def make(self, txs: list[Transaction], signers: list[SigningKey], *, proposer: SigningKey) -> Block:
        if self.blocks:
            authorities = self.next_authorities()
        else:  # genesis names its own authorities
            authorities = frozenset(
                tx.payload.peer_id for tx in txs if isinstance(tx.payload, AuthorizedNode)
            )
        header = blocks.propose(
            prev=self.blocks[-1].header if self.blocks else None,
            transactions=txs,
            tree=merkle.Tree([*self.ids, *(tx.id for tx in txs)]),
            authorities=authorities,
            time=T0 + len(self.blocks),
            proposer=me(proposer),
        )
        certificate = tuple(blocks.commit_signature(k, header, ORIGIN) for k in signers)
        return Block(header=header, transactions=tuple(txs), certificate=certificate)

    def add(self, txs: list[Transaction], signers: list[SigningKey], *, proposer: SigningKey) -> Block:
        made = self.make(txs, signers, proposer=proposer)
        if self.blocks:
            prev, authorities = self.blocks[-1].header, self.next_authorities()
        else:
            prev, authorities = None, blocks.genesis_authorities(made)
        blocks.verify_link(prev, made, authorities, ORIGIN)
        self.blocks.append(made)
        self.authorities.append(authorities)
        self.ids += [tx.id for tx in txs]
        return made


def artifact_tx(k: SigningKey, n: int) -> Transaction:
    return sign(k, type=ADD_ARTIFACT, payload=alpine(size=n), time=T0, nonce=n)


def test_block_hash_is_sha256_of_the_canonical_header_and_blocks_round_trip() -> None:
    chain = Chain(key(0))
    made = chain.add([artifact_tx(key(0), 1), artifact_tx(key(0), 2)], [key(0)], proposer=key(0))
    header = made.header
    assert (
        header.hash
        == hashlib.sha256(msgpack.packb(dict(sorted(header.to_map().items())), use_bin_type=True)).digest()
    )
    assert Block.decode(made.encode()) == made
    for name in ("height", "log_size", "time"):
        assert dataclasses.replace(header, **{name: getattr(header, name) + 1}).hash != header.hash
    assert header.tx_root == merkle.Tree([tx.id for tx in made.transactions]).root()
    assert header.log_root == merkle.Tree([tx.id for b in chain.blocks for tx in b.transactions]).root()
    assert header.log_size == 3 and header.prev_hash == chain.blocks[0].header.hash


def test_genesis_makes_its_one_authority_the_quorum() -> None:
    chain = Chain(key(0))
    genesis = chain.blocks[0]
    assert genesis.header.height == 0 and genesis.header.prev_hash == blocks.ZERO_HASH
    assert blocks.genesis_authorities(genesis) == {me(key(0))}
    assert [s.signer for s in genesis.certificate] == [me(key(0))]


@pytest.mark.parametrize(
    ("count", "needed"), [(1, 1), (2, 2), (3, 3), (4, 3), (5, 4), (6, 5), (7, 5), (10, 7)]
)
def test_quorum_is_more_than_two_thirds(count: int, needed: int) -> None:
    assert blocks.quorum(count) == needed
    assert needed * 3 > count * 2 and (needed - 1) * 3 <= count * 2


def four_authorities() -> Chain:
    chain = Chain(key(0))
    adds = [
        sign(key(0), type=ADD_AUTHORIZED_NODE, payload=AuthorizedNode(peer_id=me(key(n))), time=T0, nonce=n)
        for n in (1, 2, 3)
    ]
    chain.add(adds, [key(0)], proposer=key(0))  # in force from the next height
    assert chain.next_authorities() == {me(key(n)) for n in range(4)}
    return chain


def test_certificate_needs_a_quorum_of_distinct_valid_authority_signatures() -> None:
    chain = four_authorities()
    prev, authorities = chain.blocks[-1].header, chain.next_authorities()
    txs = [artifact_tx(key(1), 10)]

    def fails(signers: list[SigningKey], extra: tuple[CommitSignature, ...] = ()) -> str:
        made = chain.make(txs, signers, proposer=key(1))
        made = dataclasses.replace(made, certificate=made.certificate + extra)
        with pytest.raises(ChainBroken) as broken:
            blocks.verify_link(prev, made, authorities, ORIGIN)
        assert broken.value.height == 2
        return broken.value.reason

    assert "2 valid signatures of 3" in fails([key(0), key(1)])
    assert "2 valid signatures of 3" in fails([key(0), key(1), key(1)])  # a duplicate counts once
    assert "2 valid signatures of 3" in fails([key(0), key(1), key(9)])  # not an authority
    good = chain.make(txs, [key(2)], proposer=key(1))
    foreign = blocks.commit_signature(key(2), good.header, "another.log/origin")
    assert "2 valid signatures" in fails([key(0), key(1)], (foreign,))  # checkpoint under another origin
    swapped = CommitSignature(signer=me(key(3)), block=good.certificate[0].block, checkpoint=b"")
    assert "2 valid signatures" in fails([key(0), key(1)], (swapped,))  # someone else's signature
    chain.add(txs, [key(3), key(0), key(2)], proposer=key(1))  # three of four is a quorum


def test_removed_authority_no_longer_counts() -> None:
    chain = four_authorities()
    remove = sign(
        key(0), type=REMOVE_AUTHORIZED_NODE, payload=AuthorizedNode(peer_id=me(key(3))), time=T0, nonce=9
    )
    chain.add([remove], [key(0), key(1), key(2)], proposer=key(0))
    assert chain.next_authorities() == {me(key(n)) for n in range(3)}
    made = chain.make([artifact_tx(key(0), 11)], [key(0), key(1), key(3)], proposer=key(0))
    with pytest.raises(ChainBroken, match="2 valid signatures of 3"):
        blocks.verify_link(chain.blocks[-1].header, made, chain.next_authorities(), ORIGIN)


def _broken(chain: Chain, made: Block) -> ChainBroken:
    with pytest.raises(ChainBroken) as broken:
        blocks.verify_link(chain.blocks[-1].header, made, chain.next_authorities(), ORIGIN)
    return broken.value


def test_each_broken_link_is_named_with_its_height() -> None:
    chain = Chain(key(0))
    chain.add([artifact_tx(key(0), 1)], [key(0)], proposer=key(0))
    good = chain.make([artifact_tx(key(0), 2), artifact_tx(key(0), 3)], [key(0)], proposer=key(0))

    def resigned(**header_changes: Any) -> Block:
        header = dataclasses.replace(good.header, **header_changes)
        return dataclasses.replace(
            good, header=header, certificate=(blocks.commit_signature(key(0), header, ORIGIN),)
        )

    forged_tx = dataclasses.replace(good.transactions[0], nonce=99)
    cases: list[tuple[Block, str]] = [
        (resigned(height=3), "height 3 follows 1"),
        (resigned(prev_hash=bytes(32)), "previous block hash"),
        (resigned(log_size=5), "log size"),
        (resigned(tx_root=bytes(32)), "transaction root"),
        (resigned(authorities_hash=blocks.authorities_hash([me(key(1))])), "authority set hash"),
        (dataclasses.replace(good, transactions=good.transactions[::-1]), "transaction root"),
        (
            dataclasses.replace(good, transactions=(forged_tx, good.transactions[1])),
            "not signed by its submitter",
        ),
        (dataclasses.replace(good, certificate=()), "0 valid signatures of 1"),
        (dataclasses.replace(resigned(log_size=2), transactions=()), "no transactions"),
    ]
    for made, reason in cases:
        broken = _broken(chain, made)
        assert broken.height == made.header.height and reason in broken.reason, (reason, broken.reason)
        assert str(broken).startswith(f"transparency log is broken at height {made.header.height}: ")
        assert broken.exit_code == 1
    blocks.verify_link(chain.blocks[-1].header, good, chain.next_authorities(), ORIGIN)
