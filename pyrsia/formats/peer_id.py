"""libp2p peer ids and base58btc, as DESIGN §3 fixes them.

    peer id = base58btc(identity-multihash(protobuf PublicKey{Type: Ed25519, Data: key}))

which for every Ed25519 key starts with `12D3KooW`. `public_key_of` is the inverse
for exactly that form; any other id is refused, so a signature check can never be
pointed at a key the id does not embed.
"""

from __future__ import annotations

_B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
# protobuf: field 1 (KeyType) varint = 1 (Ed25519); field 2 (Data) bytes of length 32
_PUBLIC_KEY_PROTO_PREFIX = b"\x08\x01\x12\x20"
_IDENTITY_MULTIHASH = 0x00


def base58btc(data: bytes) -> str:
    number = int.from_bytes(data, "big")
    out = []
    while number:
        number, rem = divmod(number, 58)
        out.append(_B58_ALPHABET[rem])
    leading_zeros = len(data) - len(data.lstrip(b"\0"))
    return "1" * leading_zeros + "".join(reversed(out))


def base58btc_decode(text: str) -> bytes:
    number = 0
    for char in text:
        index = _B58_ALPHABET.find(char)
        if index < 0:
            raise ValueError(f"not base58btc: {char!r}")
        number = number * 58 + index
    body = number.to_bytes((number.bit_length() + 7) // 8, "big")
    return b"\0" * (len(text) - len(text.lstrip("1"))) + body


def public_key_of(peer_id: str) -> bytes:
    """The Ed25519 key an identity-multihash peer id embeds; ValueError for any other."""
    raw = base58btc_decode(peer_id)
    prefix = bytes([_IDENTITY_MULTIHASH, len(_PUBLIC_KEY_PROTO_PREFIX) + 32]) + _PUBLIC_KEY_PROTO_PREFIX
    if len(raw) != len(prefix) + 32 or not raw.startswith(prefix):
        raise ValueError(f"{peer_id[:60]!r} is not an Ed25519 peer id")
    return raw[len(prefix) :]


def peer_id_of(public_key: bytes) -> str:
    proto = _PUBLIC_KEY_PROTO_PREFIX + public_key
    return base58btc(bytes([_IDENTITY_MULTIHASH, len(proto)]) + proto)
