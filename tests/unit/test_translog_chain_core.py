"""The chain core: propose, certify and apply blocks in memory, with real Ed25519 keys.

Each broken block must raise `ChainBroken` naming its height and leave the chain
exactly as it was; authority changes take effect from the next height at runtime.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from typing import Any

import msgpack
import pytest
from nacl.signing import SigningKey

from pyrsia.errors import ChainBroken, TxInvalid
from pyrsia.formats.peer_id import peer_id_of
from pyrsia.translog import block as blocks
from pyrsia.translog import codec, merkle
from pyrsia.translog.block import Block, CommitSignature
from pyrsia.translog.chain import Chain, check_signatures, genesis_block, origin_of
from pyrsia.translog.tx import (
    ADD_ARTIFACT,
    ADD_AUTHORIZED_NODE,
    REMOVE_AUTHORIZED_NODE,
    AddArtifact,
    AuthorizedNode,
    Endorsement,
    Transaction,
    endorse,
    sign,
)

T0 = 1_700_000_000


def key(n: int) -> SigningKey:
    return SigningKey(bytes([n + 1]) * 32)


def me(k: SigningKey) -> str:
    return peer_id_of(bytes(k.verify_key))


def artifact_tx(k: SigningKey, n: int) -> Transaction:
    payload = AddArtifact(
        package_type="docker",
        package_id=f"library/app:{n}",
        path=f"/v2/library/app/manifests/{n}",
        digest=f"sha256:{n:064x}",
        size=n,
        chunk_size=1 << 20,
        chunk_root=bytes(32),
        media_type="application/vnd.oci.image.manifest.v1+json",
        source="https://registry-1.docker.io",
        author="Ada",
    )
    return sign(k, type=ADD_ARTIFACT, payload=payload, time=T0, nonce=n)


def authority_tx(k: SigningKey, kind: str, peer: SigningKey, nonce: int = 0) -> Transaction:
    return sign(k, type=kind, payload=AuthorizedNode(peer_id=me(peer)), time=T0, nonce=nonce)


def endorsed(tx: Transaction, endorsers: Sequence[SigningKey]) -> Transaction:
    return tx.with_endorsements(tuple(endorse(k, tx.id) for k in dict.fromkeys(endorsers)))


def made(chain: Chain, txs: Sequence[Transaction], signers: Sequence[SigningKey], *,
         proposer: SigningKey | None = None, now: int = T0,
         endorsers: Sequence[SigningKey] | None = None) -> Block:  # fmt: skip
    """The next block of `txs`, endorsed by `endorsers` (default: the certificate's signers)."""
    chosen = signers if endorsers is None else endorsers
    txs = [endorsed(tx, chosen) if chosen else tx for tx in txs]  # () keeps what they carry
    header = chain.propose(txs, now, me(proposer or signers[0]))
    return Block(
        header=header, transactions=tuple(txs), certificate=tuple(chain.certify(header, k) for k in signers)
    )


def state(chain: Chain) -> tuple[object, ...]:
    return (chain.tip, chain.height, chain.size, chain.tree.root(), chain.authorities, chain.origin)


def started() -> Chain:
    chain = Chain()
    chain.apply(genesis_block(key(0), T0))
    return chain


def broken(chain: Chain, block: Block, reason: str, **options: bool) -> None:
    before = state(chain)
    with pytest.raises(ChainBroken) as raised:
        chain.apply(block, **options)
    assert raised.value.height == block.header.height
    assert reason in raised.value.reason, raised.value.reason
    assert str(raised.value).startswith(f"transparency log is broken at height {block.header.height}: ")
    assert state(chain) == before


def four_authorities() -> Chain:
    chain = started()
    adds = [authority_tx(key(0), ADD_AUTHORIZED_NODE, key(n), n) for n in (1, 2, 3)]
    chain.apply(made(chain, adds, [key(0)]))
    assert chain.authorities == {me(key(n)) for n in range(4)}
    return chain


# -- proposing and applying -------------------------------------------------------------


def test_genesis_makes_its_one_authority_the_quorum_and_names_the_log() -> None:
    genesis = genesis_block(key(0), T0)
    chain = Chain()
    assert chain.apply(genesis) == 0
    assert (chain.height, chain.size, chain.authorities) == (0, 1, {me(key(0))})
    assert genesis.header.prev_hash == blocks.ZERO_HASH and genesis.header.proposer == me(key(0))
    assert chain.origin == origin_of(genesis.header) == f"pyrsia.log/{genesis.header.hash.hex()[:16]}"


def test_propose_apply_round_trip_through_bytes_and_a_replica() -> None:
    genesis = genesis_block(key(0), T0)
    original, replica = Chain(), Chain()
    original.apply(genesis)
    replica.apply(Block.decode(genesis.encode()))
    one = original.propose_certified([artifact_tx(key(0), 1), artifact_tx(key(0), 2)], T0 + 5, key(0))
    assert original.apply(one) == 1
    two = original.propose_certified([artifact_tx(key(0), 3)], T0 - 100, key(0))  # a clock that went back
    assert two.header.time == T0 + 5
    assert original.apply(two) == 3
    header = two.header
    canonical = msgpack.packb(dict(sorted(header.to_map().items())), use_bin_type=True)
    assert header.hash == hashlib.sha256(canonical).digest()
    assert header.prev_hash == one.header.hash and header.log_size == 4
    assert header.tx_root == merkle.Tree([artifact_tx(key(0), 3).id]).root()
    ids = [genesis.transactions[0].id] + [artifact_tx(key(0), n).id for n in (1, 2, 3)]
    assert header.log_root == merkle.Tree(ids).root() == original.tree.root()
    for block in (one, two):
        again = Block.decode(block.encode())
        assert again == block and again.encode() == block.encode()
        assert replica.apply(again) == block.header.log_size - len(block.transactions)
    assert state(replica) == state(original)


@pytest.mark.parametrize(("count", "needed"), [(1, 1), (2, 2), (3, 3), (4, 3), (5, 4), (7, 5), (10, 7)])
def test_quorum_is_more_than_two_thirds(count: int, needed: int) -> None:
    assert blocks.quorum(count) == needed
    assert needed * 3 > count * 2 and (needed - 1) * 3 <= count * 2


# -- every broken block is named and changes nothing ------------------------------------


def test_each_broken_link_is_named_with_its_height_and_changes_nothing() -> None:
    chain = started()
    chain.apply(chain.propose_certified([artifact_tx(key(0), 1)], T0 + 10, key(0)))
    good = chain.propose_certified([artifact_tx(key(0), 2), artifact_tx(key(0), 3)], T0 + 20, key(0))

    def resigned(**changes: Any) -> Block:
        header = dataclasses.replace(good.header, **changes)
        return dataclasses.replace(good, header=header, certificate=(chain.certify(header, key(0)),))

    forged_tx = dataclasses.replace(good.transactions[0], nonce=99, endorsements=())  # same signature
    cases: list[tuple[Block, str]] = [
        (resigned(height=3), "height 3 follows 1"),
        (resigned(prev_hash=bytes(32)), "previous block hash"),
        (resigned(time=T0), "before its predecessor"),
        (resigned(log_size=5), "log size"),
        (resigned(tx_root=bytes(32)), "transaction root"),
        (resigned(log_root=bytes(32)), "log root"),
        (resigned(authorities_hash=blocks.authorities_hash([me(key(1))])), "authority set hash"),
        (resigned(proposer=me(key(1))), "is not an authority"),
        (dataclasses.replace(good, transactions=good.transactions[::-1]), "transaction root"),
        (
            dataclasses.replace(good, transactions=(forged_tx, good.transactions[1])),
            "not signed by its submitter",
        ),
        (dataclasses.replace(good, certificate=()), "0 signatures of 1"),
        (dataclasses.replace(resigned(log_size=2), transactions=()), "no transactions"),
    ]
    for block, reason in cases:
        broken(chain, block, reason)
    twice = chain.propose_certified([artifact_tx(key(0), 2), artifact_tx(key(0), 2)], T0 + 20, key(0))
    broken(chain, twice, "appears twice")
    chain.apply(good)
    assert chain.height == 2


def test_certificates_need_a_quorum_of_distinct_authorities_with_valid_signatures() -> None:
    chain = four_authorities()
    txs = [endorsed(artifact_tx(key(1), 10), [key(0), key(1), key(2)])]
    broken(chain, made(chain, txs, [key(0), key(1)], endorsers=()), "2 signatures of 3 needed")
    broken(chain, made(chain, txs, [key(0), key(1), key(1)], endorsers=()), "names " + me(key(1)) + " twice")
    broken(
        chain,
        made(chain, txs, [key(0), key(1), key(9)], endorsers=()),
        f"signer {me(key(9))} is not an authority",
    )
    good = made(chain, txs, [key(0), key(1), key(2)])
    other_origin = blocks.commit_signature(key(2), good.header, "another.log/origin")
    broken(
        chain,
        dataclasses.replace(good, certificate=(*good.certificate[:2], other_origin)),
        "over the checkpoint",
    )
    swapped = CommitSignature(signer=me(key(3)), block=good.certificate[0].block, checkpoint=bytes(64))
    broken(chain, dataclasses.replace(good, certificate=(*good.certificate[:2], swapped)), "over the block")
    assert chain.apply(made(chain, txs, [key(3), key(0), key(2)], proposer=key(1))) == 4  # 3 of 4


def test_without_signature_checks_structure_and_roots_still_count() -> None:
    chain = started()
    good = chain.propose_certified([artifact_tx(key(0), 1)], T0, key(0))
    forged = dataclasses.replace(good.transactions[0], signature=bytes(64))
    unsigned = Block(
        header=chain.propose([forged], T0, me(key(0))),
        transactions=(forged,),
        certificate=(CommitSignature(signer=me(key(0)), block=bytes(64), checkpoint=bytes(64)),),
    )
    broken(chain, unsigned, "not signed by its submitter")  # in full
    stranger = dataclasses.replace(good, certificate=(chain.certify(good.header, key(5)),))
    broken(chain, stranger, "not an authority", verify_signatures=False)
    broken(chain, dataclasses.replace(good, certificate=()), "0 signatures of 1", verify_signatures=False)
    wrong_root = dataclasses.replace(good, header=dataclasses.replace(good.header, log_root=bytes(32)))
    broken(chain, wrong_root, "log root", verify_signatures=False)
    assert chain.apply(unsigned, verify_signatures=False) == 1  # replay trusts what it verified before


def test_the_transactions_hash_binds_every_signature_byte_of_the_transactions() -> None:
    chain = four_authorities()
    tx = endorsed(artifact_tx(key(0), 1), [key(0), key(1), key(2)])
    good = made(chain, [tx], [key(0), key(1), key(2)], endorsers=())
    encoded = codec.encode(good.to_map()["transactions"])
    assert good.header.transactions_hash == hashlib.sha256(encoded).digest()
    swapped_submitter = dataclasses.replace(tx, signature=artifact_tx(key(0), 2).signature)
    *kept, last = tx.endorsements
    garbled = dataclasses.replace(last, signature=endorse(key(3), tx.id).signature)
    swapped_endorsement = tx.with_endorsements((*kept, garbled))
    other_endorser = tx.with_endorsements((*kept, endorse(key(3), tx.id)))
    for changed in (swapped_submitter, swapped_endorsement, other_endorser):
        assert changed.id == tx.id  # ids leave signatures out: the header alone would not notice
        relayed = dataclasses.replace(good, transactions=(changed,))
        assert relayed.header.hash == good.header.hash
        broken(chain, relayed, "transactions hash does not match", verify_signatures=False)
        with pytest.raises(ChainBroken):
            chain.apply(relayed)
    chain.apply(good, verify_signatures=False)
    assert chain.height == 2


def test_check_signatures_leaves_covered_transactions_to_the_certificate() -> None:
    """A block with `transactions_hash` needs its certificate checked alone (the hash,
    compared by `apply`, binds the rest); a block written before the field, in full."""
    chain = started()
    tx = artifact_tx(key(0), 1)
    forged = dataclasses.replace(endorsed(tx, [key(0)]), signature=bytes(64))
    header = chain.propose([forged], T0, me(key(0)))
    covered = Block(header=header, transactions=(forged,), certificate=(chain.certify(header, key(0)),))
    check_signatures(covered, chain.origin)  # the authority certified these bytes
    broken(chain, covered, "not signed by its submitter")  # yet a chain checking in full refuses them
    legacy_header = dataclasses.replace(header, transactions_hash=b"")
    legacy = Block(
        header=legacy_header, transactions=(forged,), certificate=(chain.certify(legacy_header, key(0)),)
    )
    with pytest.raises(ChainBroken, match="not signed by its submitter"):
        check_signatures(legacy, chain.origin)
    garbled = dataclasses.replace(covered.certificate[0], block=bytes(64))
    with pytest.raises(ChainBroken, match="does not verify"):
        check_signatures(dataclasses.replace(covered, certificate=(garbled,)), chain.origin)


# -- authorities change at runtime --------------------------------------------------------


def test_an_added_authority_counts_from_the_next_height() -> None:
    chain = started()
    add = chain.propose_certified([authority_tx(key(0), ADD_AUTHORIZED_NODE, key(1))], T0, key(0))
    assert chain.apply(add) == 1
    assert chain.authorities == {me(key(0)), me(key(1))}
    txs = [artifact_tx(key(0), 1)]
    broken(chain, chain.propose_certified(txs, T0, key(0)), "1 endorsements of 2 needed")
    broken(chain, made(chain, txs, [key(0)], endorsers=[key(0), key(1)]), "1 signatures of 2 needed")
    chain.apply(made(chain, txs, [key(1), key(0)]))
    assert chain.height == 2


def test_a_removed_authority_no_longer_counts_and_the_rules_hold() -> None:
    chain = four_authorities()
    remove = authority_tx(key(0), REMOVE_AUTHORIZED_NODE, key(3), 9)
    chain.apply(made(chain, [remove], [key(0), key(1), key(3)]))  # still in force at this height
    assert chain.authorities == {me(key(n)) for n in range(3)}
    broken(
        chain,
        made(chain, [artifact_tx(key(0), 11)], [key(0), key(1), key(3)], endorsers=[key(0), key(1), key(2)]),
        "is not an authority",
    )
    outsider = made(chain, [artifact_tx(key(0), 11)], [key(0), key(1), key(2)], endorsers=[key(0), key(3)])
    broken(chain, outsider, f"endorsed by {me(key(3))}, not an authority")
    signers = [key(0), key(1), key(2)]
    broken(
        chain, made(chain, [authority_tx(key(7), ADD_AUTHORIZED_NODE, key(7))], signers), "not an authority"
    )
    broken(
        chain,
        made(chain, [authority_tx(key(0), ADD_AUTHORIZED_NODE, key(1))], signers),
        "already an authority",
    )
    broken(
        chain,
        made(chain, [authority_tx(key(0), REMOVE_AUTHORIZED_NODE, key(5))], signers),
        "cannot be removed",
    )
    every = [authority_tx(key(0), REMOVE_AUTHORIZED_NODE, key(n), n) for n in range(3)]
    broken(chain, made(chain, every, signers), "remove every authority")


def test_a_block_of_another_authority_set_applies_through_apply() -> None:
    """A four-authority network's chain, replayed by a node that saw none of it happen."""
    network = four_authorities()
    history = [network.tip]
    for n in range(3):
        block = made(network, [artifact_tx(key(n), 20 + n)], [key(1), key(2), key(3)], proposer=key(n))
        network.apply(block)
        history.append(block)
    replica = Chain()
    replica.apply(genesis_block(key(0), T0))
    for block in history:
        assert block is not None
        replica.apply(Block.decode(block.encode()))
    assert state(replica)[1:] == state(network)[1:]


def test_genesis_is_created_by_its_proposer_alone() -> None:
    chain = Chain()
    header = chain.propose([artifact_tx(key(0), 1)], T0, me(key(0)))
    block = Block(header=header, transactions=(artifact_tx(key(0), 1),), certificate=())
    broken(chain, block, "only AddAuthorizedNode")
    foreign = [authority_tx(key(1), ADD_AUTHORIZED_NODE, key(0))]
    broken(chain, made(chain, foreign, [key(0)], endorsers=()), "not by its proposer")
    twice = [authority_tx(key(0), ADD_AUTHORIZED_NODE, key(1), n) for n in (1, 2)]
    broken(chain, made(chain, twice, [key(0)], endorsers=()), "twice")
    header = chain.propose([authority_tx(key(0), ADD_AUTHORIZED_NODE, key(1))], T0, me(key(0)))
    by_member = Block(header=header, transactions=(authority_tx(key(0), ADD_AUTHORIZED_NODE, key(1)),),
                      certificate=(chain.certify(header, key(1)),))  # fmt: skip
    broken(chain, by_member, "is not an authority")  # certified by the creator, not a member


def test_a_genesis_names_several_authorities_and_its_origin() -> None:
    members = [me(key(n)) for n in (1, 2, 3, 4)]
    genesis = genesis_block(key(9), T0, members, origin="example.org/pyrsia")
    chain = Chain()
    chain.apply(Block.decode(genesis.encode()))
    assert chain.authorities == set(members) and me(key(9)) not in chain.authorities
    assert chain.origin == origin_of(genesis.header) == "example.org/pyrsia"
    derived = genesis_block(key(9), T0, members)
    assert origin_of(derived.header).startswith("pyrsia.log/")
    assert "origin" not in derived.header.to_map()  # hashes of logs without one are unchanged
    with pytest.raises(TxInvalid, match="origin"):
        genesis_block(key(9), T0, members, origin="two\nlines")
    block = made(chain, [artifact_tx(key(1), 1)], [key(1), key(2), key(3)])
    late = dataclasses.replace(block, header=dataclasses.replace(block.header, origin="x"))
    broken(chain, late, "only a genesis block names")
    chain.apply(block)
    assert chain.origin == "example.org/pyrsia"


def test_a_proposal_is_checked_in_full_except_its_certificate() -> None:
    chain = four_authorities()
    before = state(chain)
    proposal = made(chain, [artifact_tx(key(1), 3)], [key(0)], endorsers=[key(0), key(1), key(2)])
    chain.check_proposal(dataclasses.replace(proposal, certificate=()))
    assert state(chain) == before
    short = made(chain, [artifact_tx(key(1), 3)], [key(0)], endorsers=[key(0), key(1)])
    with pytest.raises(ChainBroken, match="2 endorsements of 3 needed"):
        chain.check_proposal(dataclasses.replace(short, certificate=()))
    assert state(chain) == before


# -- endorsements --------------------------------------------------------------------------


def test_endorsements_survive_encoding_and_are_verified() -> None:
    chain = four_authorities()
    tx = artifact_tx(key(0), 1)
    by_three = tx.with_endorsements(tuple(endorse(key(n), tx.id) for n in (1, 2, 3)))
    assert by_three.id == tx.id and by_three != tx
    block = made(chain, [by_three], [key(0), key(1), key(2)], endorsers=())
    assert block.encode() == codec.encode(block.to_map())  # spliced from cached parts, yet canonical
    again = Block.decode(block.encode())
    assert again == block
    assert [e.signer for e in again.transactions[0].endorsements] == sorted(me(key(n)) for n in (1, 2, 3))
    backwards = tx.with_endorsements(tuple(reversed(by_three.endorsements)))
    assert backwards.endorsements == by_three.endorsements  # kept in signer order, so blocks agree
    forged = Endorsement(signer=me(key(3)), tx_id=tx.id, signature=endorse(key(4), tx.id).signature)
    lying = tx.with_endorsements((*(e for e in by_three.endorsements if e.signer != me(key(3))), forged))
    bad = made(chain, [lying], [key(0), key(1), key(2)], endorsers=())
    broken(chain, bad, f"by {me(key(3))} does not verify")
    chain.apply(again)


def test_endorsements_that_cannot_belong_are_refused_when_built() -> None:
    tx = artifact_tx(key(0), 1)
    other = artifact_tx(key(0), 2)
    with pytest.raises(TxInvalid, match="names another"):
        tx.with_endorsements((endorse(key(1), other.id),))
    with pytest.raises(TxInvalid, match="endorsed twice"):
        tx.with_endorsements((endorse(key(1), tx.id), endorse(key(1), tx.id)))
    with pytest.raises(TxInvalid):
        Endorsement(signer="not-a-peer", tx_id=tx.id, signature=bytes(64))
    with pytest.raises(TxInvalid):
        Endorsement(signer=me(key(1)), tx_id=tx.id[:31], signature=bytes(64))
