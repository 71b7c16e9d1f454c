"""Transactions: what the log records, signed by whoever submits it.

`{type, payload, submitter, time, nonce, signature}` (DESIGN §3). The id is the
SHA-256 of the canonical encoding without the signature; the signature is Ed25519
over that id by the key the submitter's peer id embeds, so a transaction proves who
submitted it with nothing but itself. `time` is whole seconds since the epoch.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from pyrsia.errors import TxInvalid
from pyrsia.formats.peer_id import peer_id_of, public_key_of
from pyrsia.translog import codec

ADD_ARTIFACT = "AddArtifact"
ADD_AUTHORIZED_NODE = "AddAuthorizedNode"
REMOVE_AUTHORIZED_NODE = "RemoveAuthorizedNode"
PACKAGE_TYPES = ("docker", "maven")
TEXT_FIELD_CHARS_MAX = 4096
DEPENDENCIES_MAX = 1000


@dataclass(frozen=True, slots=True, kw_only=True)
class AddArtifact:
    package_type: str
    package_id: str
    path: str
    digest: str
    size: int
    chunk_size: int
    chunk_root: bytes
    media_type: str
    source: str
    author: str
    dependencies: tuple[str, ...] = ()

    def to_map(self) -> dict[str, Any]:
        return {
            "package_type": self.package_type,
            "package_id": self.package_id,
            "path": self.path,
            "digest": self.digest,
            "size": self.size,
            "chunk_size": self.chunk_size,
            "chunk_root": self.chunk_root,
            "media_type": self.media_type,
            "source": self.source,
            "author": self.author,
            "dependencies": list(self.dependencies),
        }

    @classmethod
    def from_map(cls, doc: Any) -> AddArtifact:
        text = {
            key: codec.field(doc, key, str)
            for key in ("package_type", "package_id", "path", "digest", "media_type", "source", "author")
        }
        if text["package_type"] not in PACKAGE_TYPES:
            raise TxInvalid(f"unknown package type {text['package_type'][:40]!r}")
        if any(len(v) > TEXT_FIELD_CHARS_MAX for v in text.values()):
            raise TxInvalid("a text field is too long")
        dependencies = codec.field(doc, "dependencies", list)
        if len(dependencies) > DEPENDENCIES_MAX or not all(isinstance(d, str) for d in dependencies):
            raise TxInvalid("dependencies must be a bounded list of strings")
        return cls(
            **text,
            size=codec.field(doc, "size", int),
            chunk_size=codec.field(doc, "chunk_size", int),
            chunk_root=codec.field(doc, "chunk_root", bytes),
            dependencies=tuple(dependencies),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthorizedNode:
    """Payload of AddAuthorizedNode and RemoveAuthorizedNode."""

    peer_id: str

    def to_map(self) -> dict[str, Any]:
        return {"peer_id": self.peer_id}

    @classmethod
    def from_map(cls, doc: Any) -> AuthorizedNode:
        peer_id = codec.field(doc, "peer_id", str)
        try:
            public_key_of(peer_id)
        except ValueError as exc:
            raise TxInvalid(str(exc)) from exc
        return cls(peer_id=peer_id)


Payload = AddArtifact | AuthorizedNode
_PAYLOADS: dict[str, type[AddArtifact] | type[AuthorizedNode]] = {
    ADD_ARTIFACT: AddArtifact,
    ADD_AUTHORIZED_NODE: AuthorizedNode,
    REMOVE_AUTHORIZED_NODE: AuthorizedNode,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Transaction:
    type: str
    payload: Payload
    submitter: str
    time: int
    nonce: int
    signature: bytes = b""

    def unsigned_map(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "payload": self.payload.to_map(),
            "submitter": self.submitter,
            "time": self.time,
            "nonce": self.nonce,
        }

    @property
    def id(self) -> bytes:
        return hashlib.sha256(codec.encode(self.unsigned_map())).digest()

    def to_map(self) -> dict[str, Any]:
        return {**self.unsigned_map(), "signature": self.signature}

    @classmethod
    def from_map(cls, doc: Any) -> Transaction:
        kind = codec.field(doc, "type", str)
        payload_type = _PAYLOADS.get(kind)
        if payload_type is None:
            raise TxInvalid(f"unknown transaction type {kind[:40]!r}")
        return cls(
            type=kind,
            payload=payload_type.from_map(codec.field(doc, "payload", dict)),
            submitter=codec.field(doc, "submitter", str),
            time=codec.field(doc, "time", int),
            nonce=codec.field(doc, "nonce", int),
            signature=codec.field(doc, "signature", bytes),
        )


def sign(key: SigningKey, *, type: str, payload: Payload, time: int, nonce: int) -> Transaction:
    unsigned = Transaction(
        type=type, payload=payload, submitter=peer_id_of(bytes(key.verify_key)), time=time, nonce=nonce
    )
    signature = key.sign(unsigned.id).signature
    return Transaction(
        type=type, payload=payload, submitter=unsigned.submitter, time=time, nonce=nonce, signature=signature
    )


def verify_signature(peer_id: str, message: bytes, signature: bytes) -> bool:
    """Whether `signature` is `peer_id`'s Ed25519 signature over `message`."""
    try:
        VerifyKey(public_key_of(peer_id)).verify(message, signature)
    except (ValueError, BadSignatureError):
        return False
    return True


def check(tx: Transaction) -> None:
    """A transaction is well-signed by its submitter, or `TxInvalid`."""
    if not verify_signature(tx.submitter, tx.id, tx.signature):
        raise TxInvalid(f"transaction {tx.id.hex()[:16]} is not signed by its submitter {tx.submitter[:60]}")
