"""What authorities say to each other on `/pyrsia/consensus/1.0.0`.

Three kinds of message share the protocol, each one canonical msgpack map behind an
unsigned-varint length (DESIGN §3):

    submit      a pending transaction, signed by the authority that submits it, with the
                endorsements its sender holds
    verdict     one authority's signed word on one transaction: an endorsement (the
                signature is the `Endorsement` the block will carry) or a refusal with
                its reason (signed over the refusal domain, the id and the reason)
    proposal, prevote, precommit, catch_up, decision
                the consensus core's own messages (`messages.py`)

Pure: decoding bounds every field and raises `MessageRejected`; nothing here knows who
the authorities are (the service checks that).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nacl.signing import SigningKey

from pyrsia.consensus import messages as m
from pyrsia.errors import MessageRejected, TxInvalid
from pyrsia.formats.peer_id import peer_id_of
from pyrsia.translog import codec
from pyrsia.translog.tx import (
    ENDORSEMENTS_MAX,
    HASH_BYTES,
    SIGNATURE_BYTES,
    Endorsement,
    Transaction,
    check_peer_id,
    endorse,
    verify_signature,
)

PROTOCOL_ID = "/pyrsia/consensus/1.0.0"
MESSAGE_BYTES_MAX = m.MESSAGE_BYTES_MAX
REASON_CHARS_MAX = 1024
REFUSAL_DOMAIN = b"pyrsia refusal v1\n"


@dataclass(frozen=True, slots=True, kw_only=True)
class Submit:
    tx: Transaction


@dataclass(frozen=True, slots=True, kw_only=True)
class Verdict:
    tx_id: bytes
    signer: str
    endorse: bool
    reason: str  # why it was refused; empty for an endorsement
    signature: bytes

    def endorsement(self) -> Endorsement:
        return Endorsement(signer=self.signer, tx_id=self.tx_id, signature=self.signature)

    def verify(self) -> bool:
        if self.endorse:
            return self.endorsement().verify()
        return verify_signature(self.signer, refusal_message(self.tx_id, self.reason), self.signature)


Message = Submit | Verdict | m.Message


def refusal_message(tx_id: bytes, reason: str) -> bytes:
    return REFUSAL_DOMAIN + tx_id + reason.encode()


def endorsement_verdict(key: SigningKey, tx_id: bytes) -> Verdict:
    e = endorse(key, tx_id)
    return Verdict(tx_id=tx_id, signer=e.signer, endorse=True, reason="", signature=e.signature)


def refusal_verdict(key: SigningKey, tx_id: bytes, reason: str) -> Verdict:
    reason = reason[:REASON_CHARS_MAX]
    return Verdict(
        tx_id=tx_id,
        signer=peer_id_of(bytes(key.verify_key)),
        endorse=False,
        reason=reason,
        signature=key.sign(refusal_message(tx_id, reason)).signature,
    )


def encode(message: Message) -> bytes:
    match message:
        case Submit(tx=tx):
            doc: dict[str, Any] = {
                "type": "submit",
                "tx": tx.to_map(),
                "endorsements": [e.to_map() for e in tx.endorsements],
            }
        case Verdict():
            doc = {
                "type": "verdict",
                "tx_id": message.tx_id,
                "signer": message.signer,
                "endorse": message.endorse,
                "reason": message.reason,
                "signature": message.signature,
            }
        case _:
            return m.encode(message)
    return codec.encode(doc)


def decode(data: bytes) -> Message:
    """One message from a peer; anything malformed or out of bounds is `MessageRejected`."""
    if len(data) > MESSAGE_BYTES_MAX:
        raise MessageRejected(f"message of {len(data)} bytes exceeds {MESSAGE_BYTES_MAX}")
    try:
        doc = codec.decode(data)
        kind = codec.field(doc, "type", str)
        if kind == "submit":
            entries = codec.field(doc, "endorsements", list)
            if len(entries) > ENDORSEMENTS_MAX:
                raise MessageRejected(f"more than {ENDORSEMENTS_MAX} endorsements")
            endorsements = tuple(Endorsement.from_map(e) for e in entries)
            return Submit(tx=Transaction.from_map(codec.field(doc, "tx", dict), endorsements))
        if kind == "verdict":
            tx_id = codec.field(doc, "tx_id", bytes)
            signature = codec.field(doc, "signature", bytes)
            reason = codec.field(doc, "reason", str)
            endorses = codec.field(doc, "endorse", bool)
            if len(tx_id) != HASH_BYTES or len(signature) != SIGNATURE_BYTES:
                raise MessageRejected("verdict with a malformed id or signature")
            if len(reason) > REASON_CHARS_MAX or (endorses and reason):
                raise MessageRejected("verdict reason too long, or given for an endorsement")
            signer = check_peer_id("verdict signer", codec.field(doc, "signer", str))
            return Verdict(tx_id=tx_id, signer=signer, endorse=endorses, reason=reason, signature=signature)
        return m.from_map(doc)
    except TxInvalid as exc:
        raise MessageRejected(exc.message) from exc
