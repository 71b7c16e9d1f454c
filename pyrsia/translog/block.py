"""Blocks: ordered batches of transactions, chained by hash and certified by authorities.

Header `{height, prev_hash, tx_root, log_size, log_root, time, proposer,
authorities_hash}` (DESIGN §3), `transactions_hash` in every block proposed since it
was added, and in a genesis block optionally `origin` and `registries` (the Docker
registry hosts the network agrees to vouch for; absent: the built-in list,
`DEFAULT_REGISTRIES`). `tx_root` is the RFC 6962 root over this block's transaction
ids, `log_root` over every id so far, so each header is a signed tree head. The block
hash is SHA-256 of the canonical header. The certificate holds, per authority, an
Ed25519 signature over the block hash and one over the C2SP checkpoint of `(log_size,
log_root)`. Each transaction travels with its endorsements, in signer order:

    {header, transactions: [{tx, endorsements: [{signer, tx_id, signature}]}], certificate}

`transactions_hash` is SHA-256 of the canonical encoding of that `transactions` array.
Transaction ids leave out signatures, so without it the certificate would vouch for
which transactions a block holds but not for their signature bytes: whoever relays
the block could swap them, and each reader had to check every submitter and
endorsement signature again. With it the certificate covers the whole block but
itself, and a node that checks the certificate checks every byte (sync: two
signatures per authority per block instead of two more per transaction and
endorsement). Blocks written before it carry none and are checked in full.

This module is the format: values, their limits (checked when built, so whatever
is built can be decoded), encoding and hashing. Whether a block may follow another
is `chain.Chain.apply`'s question.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from nacl.signing import SigningKey

from pyrsia.errors import TxInvalid
from pyrsia.formats.peer_id import peer_id_of
from pyrsia.translog import checkpoint, codec, merkle
from pyrsia.translog.tx import (
    ENDORSEMENTS_MAX,
    HASH_BYTES,
    SIGNATURE_BYTES,
    Endorsement,
    Transaction,
    check_bytes,
    check_int,
    check_peer_id,
    check_registry_host,
)

ZERO_HASH = bytes(HASH_BYTES)
BLOCK_TXS_MAX = 10_000
# A checkpoint note carries one signature line per authority, and readers refuse
# notes with more lines than this (the Go reference implementation's cap).
AUTHORITIES_MAX = checkpoint.SIGNATURES_MAX
BLOCK_BYTES_MAX = codec.DECODED_BYTES_MAX
# What a block's transactions may add up to, encoded, leaving room for the header, the
# certificate and each entry's framing within BLOCK_BYTES_MAX.
BLOCK_TXS_BYTES_MAX = BLOCK_BYTES_MAX - (4 << 20)


# What a genesis without `registries` agrees to: the registries pyrsia has built in.
DEFAULT_REGISTRIES = ("docker.io", "gcr.io", "ghcr.io", "quay.io", "registry.k8s.io")
REGISTRIES_MAX = 64


def check_registries(registries: object) -> tuple[str, ...]:
    """A genesis registry list: distinct, sorted host names, at most `REGISTRIES_MAX`."""
    if not isinstance(registries, tuple):
        raise TxInvalid("registries must be a list")
    if len(registries) > REGISTRIES_MAX:
        raise TxInvalid(f"more than {REGISTRIES_MAX} registries")
    for host in registries:
        check_registry_host("registry", host)
    if list(registries) != sorted(set(registries)):
        raise TxInvalid("registries must be distinct and sorted")
    return registries


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
    # The log's name in checkpoints, chosen by a genesis block's creator; omitted from
    # the encoding when empty (every later block, and a genesis that derives its name).
    origin: str = ""
    # The registries the network vouches for, fixed by a genesis block's creator; omitted
    # from the encoding when empty (every later block, and a genesis of the built-in list).
    registries: tuple[str, ...] = ()
    # SHA-256 of the block's encoded transactions array (see the module docstring);
    # omitted from the encoding when empty (blocks proposed before the field existed).
    transactions_hash: bytes = b""
    _hash: bytes = field(init=False, repr=False, compare=False)
    _encoded: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("height", "log_size", "time"):
            check_int(name, getattr(self, name))
        for name in ("prev_hash", "tx_root", "log_root", "authorities_hash"):
            check_bytes(name, getattr(self, name), HASH_BYTES)
        check_peer_id("proposer", self.proposer)
        if not isinstance(self.origin, str) or (self.origin and not checkpoint.valid_origin(self.origin)):
            raise TxInvalid(f"origin must be 1 to {checkpoint.ORIGIN_CHARS_MAX} printable characters")
        check_registries(self.registries)
        if self.transactions_hash != b"":
            check_bytes("transactions_hash", self.transactions_hash, HASH_BYTES)
        encoded = codec.encode_sorted(self.to_map())
        object.__setattr__(self, "_encoded", encoded)
        object.__setattr__(self, "_hash", hashlib.sha256(encoded).digest())

    def to_map(self) -> dict[str, Any]:
        """The header as a map, its keys in sorted order (so `encoded` needs no sort)."""
        doc: dict[str, Any] = {
            "authorities_hash": self.authorities_hash,
            "height": self.height,
            "log_root": self.log_root,
            "log_size": self.log_size,
        }
        if self.origin:
            doc["origin"] = self.origin
        doc["prev_hash"] = self.prev_hash
        doc["proposer"] = self.proposer
        if self.registries:
            doc["registries"] = list(self.registries)
        doc["time"] = self.time
        if self.transactions_hash:
            doc["transactions_hash"] = self.transactions_hash
        doc["tx_root"] = self.tx_root
        return doc

    def encoded(self) -> bytes:
        """The canonical encoding, made once when built (the hash is over it)."""
        return self._encoded

    @property
    def hash(self) -> bytes:
        return self._hash

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
            origin=codec.field(doc, "origin", str) if "origin" in doc else "",
            registries=tuple(codec.field(doc, "registries", list)) if "registries" in doc else (),
            transactions_hash=(
                codec.field(doc, "transactions_hash", bytes) if "transactions_hash" in doc else b""
            ),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class CommitSignature:
    signer: str
    block: bytes  # over the block hash
    checkpoint: bytes  # over the checkpoint body of (log_size, log_root)

    def __post_init__(self) -> None:
        check_peer_id("certificate signer", self.signer)
        check_bytes("certificate block signature", self.block, SIGNATURE_BYTES)
        check_bytes("certificate checkpoint signature", self.checkpoint, SIGNATURE_BYTES)

    def to_map(self) -> dict[str, Any]:
        return {"signer": self.signer, "block": self.block, "checkpoint": self.checkpoint}

    def encoded(self) -> bytes:
        """`codec.encode(self.to_map())`, its keys written in sorted order (hot paths)."""
        doc = {"block": self.block, "checkpoint": self.checkpoint, "signer": self.signer}
        return codec.encode_sorted(doc)

    @classmethod
    def from_map(cls, doc: Any) -> CommitSignature:
        return cls(
            signer=codec.field(doc, "signer", str),
            block=codec.field(doc, "block", bytes),
            checkpoint=codec.field(doc, "checkpoint", bytes),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Block:
    header: BlockHeader
    transactions: tuple[Transaction, ...]
    certificate: tuple[CommitSignature, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.header, BlockHeader):
            raise TxInvalid("a block needs a header")
        if not isinstance(self.transactions, tuple) or len(self.transactions) > BLOCK_TXS_MAX:
            raise TxInvalid(f"a block holds a tuple of at most {BLOCK_TXS_MAX} transactions")
        if not all(isinstance(tx, Transaction) for tx in self.transactions):
            raise TxInvalid("a block holds transactions only")
        if not isinstance(self.certificate, tuple) or len(self.certificate) > AUTHORITIES_MAX:
            raise TxInvalid(f"a certificate holds a tuple of at most {AUTHORITIES_MAX} signatures")
        if not all(isinstance(s, CommitSignature) for s in self.certificate):
            raise TxInvalid("a certificate holds commit signatures only")

    def to_map(self) -> dict[str, Any]:
        return {
            "header": self.header.to_map(),
            "transactions": [
                {"tx": tx.to_map(), "endorsements": [e.to_map() for e in tx.endorsements]}
                for tx in self.transactions
            ],
            "certificate": [s.to_map() for s in self.certificate],
        }

    def encode(self) -> bytes:
        """Canonical bytes (`codec.encode(self.to_map())`, assembled from each part's
        cached encoding); `TxInvalid` if they would be too large to decode again."""
        encoded = codec.raw_map(
            {
                "header": self.header.encoded(),
                "transactions": encode_transactions(self.transactions),
                "certificate": codec.raw_array([s.encoded() for s in self.certificate]),
            }
        )
        if len(encoded) > BLOCK_BYTES_MAX:
            raise TxInvalid(f"block encodes to {len(encoded)} bytes, more than {BLOCK_BYTES_MAX}")
        return encoded

    @classmethod
    def decode(cls, data: bytes) -> Block:
        doc = codec.decode(data)
        entries = codec.field(doc, "transactions", list)
        signatures = codec.field(doc, "certificate", list)
        if len(entries) > BLOCK_TXS_MAX or len(signatures) > AUTHORITIES_MAX:
            raise TxInvalid("block has too many transactions or signatures")
        transactions = []
        for entry in entries:
            endorsements = codec.field(entry, "endorsements", list)
            if len(endorsements) > ENDORSEMENTS_MAX:
                raise TxInvalid("transaction has too many endorsements")
            transactions.append(
                Transaction.from_map(
                    codec.field(entry, "tx", dict), tuple(Endorsement.from_map(e) for e in endorsements)
                )
            )
        return cls(
            header=BlockHeader.from_map(codec.field(doc, "header", dict)),
            transactions=tuple(transactions),
            certificate=tuple(CommitSignature.from_map(s) for s in signatures),
        )


def encode_transactions(transactions: Iterable[Transaction]) -> bytes:
    """A block's `transactions` array, encoded: each signed transaction with its
    endorsements (what `transactions_hash` is the hash of), from each transaction's
    cached entry."""
    return codec.raw_array([tx.entry_encoded() for tx in transactions])


def transactions_hash(transactions: Iterable[Transaction]) -> bytes:
    return hashlib.sha256(encode_transactions(transactions)).digest()


def authorities_hash(authorities: Iterable[str]) -> bytes:
    return hashlib.sha256(codec.encode(sorted(authorities))).digest()


def quorum(count: int) -> int:
    """Signatures needed: more than two thirds of `count` authorities."""
    return count * 2 // 3 + 1


def tx_root(transactions: Iterable[Transaction]) -> bytes:
    return merkle.root_of([tx.id for tx in transactions])


def commit_signature(key: SigningKey, header: BlockHeader, origin: str) -> CommitSignature:
    point = checkpoint.Checkpoint(origin=origin, size=header.log_size, root=header.log_root)
    return CommitSignature(
        signer=peer_id_of(bytes(key.verify_key)),
        block=key.sign(header.hash).signature,
        checkpoint=checkpoint.sign_body(key, point),
    )
