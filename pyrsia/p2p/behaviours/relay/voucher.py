"""Reservation vouchers: a relay's signed word that it will relay for a peer until a time.

libp2p/specs relay/circuit-v2.md "Reservation Vouchers": the voucher is a signed
envelope (libp2p/specs RFC/0002-signed-envelopes.md) with domain `libp2p-relay-rsvp`
whose payload is the canonical protobuf

    Voucher { 1 relay (peer id bytes), 2 peer (peer id bytes), 3 expiration (unix seconds) }

written in field order with no unknown fields. The payload type is the two bytes
`0x03 0x02` (the multicodec code 0x0302 written big-endian, as go-libp2p and js-libp2p
write it, not as a varint).

    Envelope { 1 public_key (libp2p PublicKey protobuf), 2 payload_type, 3 payload, 5 signature }

The signature covers varint(len(domain)) ‖ domain ‖ varint(len(payload_type)) ‖
payload_type ‖ varint(len(payload)) ‖ payload (RFC 0002 "Signature Production"), an
Ed25519 signature made directly over those bytes (peer-ids spec). Opening an
envelope checks the signature against the key it carries; `verify` then checks that
key is the relay's and the voucher names the relay, the peer and the expiry we were
told. Signing is pure given the key. Only Ed25519 keys are accepted, as everywhere in
pyrsia.
"""

from __future__ import annotations

from dataclasses import dataclass

from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from pyrsia.errors import ProtocolViolation
from pyrsia.formats.peer_id import base58btc, base58btc_decode, peer_id_of
from pyrsia.p2p.identity import Identity
from pyrsia.p2p.wire import protobuf, varint
from pyrsia.p2p.wire.noise import ed25519_key_of, public_key_protobuf

DOMAIN = "libp2p-relay-rsvp"
PAYLOAD_TYPE = b"\x03\x02"
ENVELOPE_BYTES_MAX = 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class Envelope:
    public_key: bytes  # the raw Ed25519 key
    payload_type: bytes
    payload: bytes
    signature: bytes

    @property
    def signer(self) -> str:
        return peer_id_of(self.public_key)

    def encode(self) -> bytes:
        return protobuf.encode(
            [
                (1, public_key_protobuf(self.public_key)),
                (2, self.payload_type),
                (3, self.payload),
                (5, self.signature),
            ]
        )


def signed_bytes(domain: str, payload_type: bytes, payload: bytes) -> bytes:
    """What an envelope's signature covers (RFC 0002)."""
    encoded = domain.encode()
    return varint.prefixed(encoded) + varint.prefixed(payload_type) + varint.prefixed(payload)


def seal(identity: Identity, domain: str, payload_type: bytes, payload: bytes) -> Envelope:
    signature = identity.signing_key.sign(signed_bytes(domain, payload_type, payload)).signature
    return Envelope(
        public_key=identity.public_key, payload_type=payload_type, payload=payload, signature=bytes(signature)
    )


def open_envelope(data: bytes, domain: str) -> Envelope:
    """The envelope in `data`, its signature checked for `domain`; a ProtocolViolation if not."""
    if len(data) > ENVELOPE_BYTES_MAX:
        raise ProtocolViolation("signed envelope too large")
    fields = protobuf.decode(data)
    parts = [protobuf.first(fields, n, bytes) for n in (1, 2, 3, 5)]
    key_proto, payload_type, payload, signature = (p if isinstance(p, bytes) else b"" for p in parts)
    if not key_proto or not signature:
        raise ProtocolViolation("signed envelope without a key or a signature")
    public_key = ed25519_key_of(key_proto)
    try:
        VerifyKey(public_key).verify(signed_bytes(domain, payload_type, payload), signature)
    except (BadSignatureError, ValueError) as exc:
        raise ProtocolViolation(f"signed envelope for {domain} does not verify") from exc
    return Envelope(public_key=public_key, payload_type=payload_type, payload=payload, signature=signature)


@dataclass(frozen=True, slots=True, kw_only=True)
class Voucher:
    relay: str
    peer: str
    expiration: int  # unix seconds

    def encode(self) -> bytes:
        return protobuf.encode(
            [(1, base58btc_decode(self.relay)), (2, base58btc_decode(self.peer)), (3, self.expiration)]
        )

    @classmethod
    def decode(cls, data: bytes) -> Voucher:
        fields = protobuf.decode(data)
        relay, peer = (protobuf.first(fields, n, bytes) for n in (1, 2))
        expiration = protobuf.first(fields, 3, int)
        if not isinstance(relay, bytes) or not isinstance(peer, bytes) or not isinstance(expiration, int):
            raise ProtocolViolation("relay voucher lacks its relay, peer or expiration")
        return cls(relay=base58btc(relay), peer=base58btc(peer), expiration=expiration)


def sign(identity: Identity, voucher: Voucher) -> bytes:
    """The voucher sealed by the relay's key, as it travels in `Reservation.voucher`."""
    if voucher.relay != identity.peer_id:
        raise ValueError("a relay signs only vouchers that name itself")
    return seal(identity, DOMAIN, PAYLOAD_TYPE, voucher.encode()).encode()


def verify(data: bytes, *, relay: str, peer: str, expiration: int) -> Voucher:
    """The voucher in `data` if the relay signed it for exactly this peer and expiry."""
    envelope = open_envelope(data, DOMAIN)
    if envelope.payload_type != PAYLOAD_TYPE:
        raise ProtocolViolation("relay voucher has the wrong payload type")
    voucher = Voucher.decode(envelope.payload)
    if envelope.signer != relay or voucher.relay != relay:
        raise ProtocolViolation("relay voucher is not signed by the relay it names")
    if voucher.peer != peer or voucher.expiration != expiration:
        raise ProtocolViolation("relay voucher names another peer or expiry")
    return voucher
