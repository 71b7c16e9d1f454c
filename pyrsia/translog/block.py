"""Blocks: ordered batches of transactions, chained by hash and certified by authorities.

Header `{height, prev_hash, tx_root, log_size, log_root, time, proposer,
authorities_hash}` (DESIGN §3). `tx_root` is the RFC 6962 root over this block's
transaction ids, `log_root` over every id so far, so each header is a signed tree
head. The block hash is SHA-256 of the canonical header. The certificate holds, per
authority, an Ed25519 signature over the block hash and one over the C2SP checkpoint
of `(log_size, log_root)`; it is valid with signatures from more than two thirds of
the authorities in force at that height. Each transaction travels with its
endorsements (empty until consensus brings them).

Genesis (height 0) carries the first AddAuthorizedNode; its authority set is that
node. AddAuthorizedNode/RemoveAuthorizedNode take effect from the next height.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from nacl.signing import SigningKey

from pyrsia.errors import ChainBroken, TxInvalid
from pyrsia.formats.peer_id import peer_id_of
from pyrsia.translog import checkpoint, codec, merkle
from pyrsia.translog.tx import (
    ADD_AUTHORIZED_NODE,
    REMOVE_AUTHORIZED_NODE,
    AuthorizedNode,
    Transaction,
    check,
    verify_signature,
)

ZERO_HASH = bytes(32)


@dataclass(frozen=True, slots=True, kw_only=True)
class BlockHeader:
    height: int
    prev_hash: bytes
    tx_root: bytes
    log_size: int
    log_root: bytes
    time: int
    proposer: str
    authorities_hash: bytes

    def to_map(self) -> dict[str, Any]:
        return {
            "height": self.height,
            "prev_hash": self.prev_hash,
            "tx_root": self.tx_root,
            "log_size": self.log_size,
            "log_root": self.log_root,
            "time": self.time,
            "proposer": self.proposer,
            "authorities_hash": self.authorities_hash,
        }

    @property
    def hash(self) -> bytes:
        return hashlib.sha256(codec.encode(self.to_map())).digest()

    @classmethod
    def from_map(cls, doc: Any) -> BlockHeader:
        return cls(
            height=codec.field(doc, "height", int),
            prev_hash=codec.field(doc, "prev_hash", bytes),
            tx_root=codec.field(doc, "tx_root", bytes),
            log_size=codec.field(doc, "log_size", int),
            log_root=codec.field(doc, "log_root", bytes),
            time=codec.field(doc, "time", int),
            proposer=codec.field(doc, "proposer", str),
            authorities_hash=codec.field(doc, "authorities_hash", bytes),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class CommitSignature:
    signer: str
    block: bytes  # over the block hash
    checkpoint: bytes  # over the checkpoint body of (log_size, log_root)


@dataclass(frozen=True, slots=True, kw_only=True)
class Block:
    header: BlockHeader
    transactions: tuple[Transaction, ...]
    certificate: tuple[CommitSignature, ...]

    def to_map(self) -> dict[str, Any]:
        return {
            "header": self.header.to_map(),
            "transactions": [{"tx": tx.to_map(), "endorsements": []} for tx in self.transactions],
            "certificate": [
                {"signer": s.signer, "block": s.block, "checkpoint": s.checkpoint} for s in self.certificate
            ],
        }

    def encode(self) -> bytes:
        return codec.encode(self.to_map())

    @classmethod
    def decode(cls, data: bytes) -> Block:
        doc = codec.decode(data)
        entries = codec.field(doc, "transactions", list)
        signatures = codec.field(doc, "certificate", list)
        return cls(
            header=BlockHeader.from_map(codec.field(doc, "header", dict)),
            transactions=tuple(Transaction.from_map(codec.field(e, "tx", dict)) for e in entries),
            certificate=tuple(
                CommitSignature(
                    signer=codec.field(s, "signer", str),
                    block=codec.field(s, "block", bytes),
                    checkpoint=codec.field(s, "checkpoint", bytes),
                )
                for s in signatures
            ),
        )


def authorities_hash(authorities: Iterable[str]) -> bytes:
    return hashlib.sha256(codec.encode(sorted(authorities))).digest()


def quorum(count: int) -> int:
    """Signatures needed: more than two thirds of `count` authorities."""
    return count * 2 // 3 + 1


def tx_root(transactions: Iterable[Transaction]) -> bytes:
    return merkle.Tree([tx.id for tx in transactions]).root()


def next_authorities(authorities: frozenset[str], block: Block) -> frozenset[str]:
    """The authority set in force after `block` commits."""
    current = set(authorities)
    for tx in block.transactions:
        if tx.type == ADD_AUTHORIZED_NODE and isinstance(tx.payload, AuthorizedNode):
            current.add(tx.payload.peer_id)
        elif tx.type == REMOVE_AUTHORIZED_NODE and isinstance(tx.payload, AuthorizedNode):
            current.discard(tx.payload.peer_id)
    return frozenset(current)


def genesis_authorities(block: Block) -> frozenset[str]:
    return next_authorities(frozenset(), block)


def propose(
    *,
    prev: BlockHeader | None,
    transactions: list[Transaction],
    tree: merkle.Tree,
    authorities: frozenset[str],
    time: int,
    proposer: str,
) -> BlockHeader:
    """The header for `transactions` on top of `prev`; `tree` already holds their ids."""
    return BlockHeader(
        height=0 if prev is None else prev.height + 1,
        prev_hash=ZERO_HASH if prev is None else prev.hash,
        tx_root=tx_root(transactions),
        log_size=tree.size,
        log_root=tree.root(),
        time=time,
        proposer=proposer,
        authorities_hash=authorities_hash(authorities),
    )


def commit_signature(key: SigningKey, header: BlockHeader, origin: str) -> CommitSignature:
    point = checkpoint.Checkpoint(origin=origin, size=header.log_size, root=header.log_root)
    return CommitSignature(
        signer=peer_id_of(bytes(key.verify_key)),
        block=key.sign(header.hash).signature,
        checkpoint=checkpoint.sign_body(key, point),
    )


def verify_link(prev: BlockHeader | None, block: Block, authorities: frozenset[str], origin: str) -> None:
    """Everything about `block` that its predecessor and the authority set decide.

    Checks height, previous hash, log size, tx root, transaction signatures, the
    authorities hash and a quorum of valid, distinct certificate signatures (block and
    checkpoint). `log_root` needs every earlier id, so the caller checks it.
    """
    header = block.header
    height = header.height

    def fail(reason: str) -> ChainBroken:
        return ChainBroken(height, reason)

    expected_height = 0 if prev is None else prev.height + 1
    if height != expected_height:
        raise fail(f"height {height} follows {expected_height - 1}")
    if header.prev_hash != (ZERO_HASH if prev is None else prev.hash):
        raise fail("previous block hash does not match")
    if header.log_size != (0 if prev is None else prev.log_size) + len(block.transactions):
        raise fail("log size does not add up")
    if not block.transactions:
        raise fail("block has no transactions")
    for tx in block.transactions:
        try:
            check(tx)
        except TxInvalid as exc:
            raise fail(exc.message) from exc
    if header.tx_root != tx_root(block.transactions):
        raise fail("transaction root does not match its transactions")
    if header.authorities_hash != authorities_hash(authorities):
        raise fail("authority set hash does not match")
    point = checkpoint.Checkpoint(origin=origin, size=header.log_size, root=header.log_root).body()
    signers = {
        s.signer
        for s in block.certificate
        if s.signer in authorities
        and verify_signature(s.signer, header.hash, s.block)
        and verify_signature(s.signer, point, s.checkpoint)
    }
    if len(signers) < quorum(len(authorities)):
        raise fail(
            f"commit certificate has {len(signers)} valid signatures of {quorum(len(authorities))} needed"
        )
