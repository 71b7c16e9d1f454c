"""Peer ids follow libp2p's encoding for Ed25519 keys."""

from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st

from pyrsia.formats.peer_id import _B58_ALPHABET, base58btc, peer_id_of
from pyrsia.p2p.identity import Identity


def _b58decode(text: str) -> bytes:
    number = 0
    for char in text:
        number = number * 58 + _B58_ALPHABET.index(char)
    body = number.to_bytes((number.bit_length() + 7) // 8, "big") if number else b""
    return b"\0" * (len(text) - len(text.lstrip("1"))) + body


@given(st.binary(max_size=64))
def test_base58_round_trip(data: bytes) -> None:
    assert _b58decode(base58btc(data)) == data


def test_known_base58_vector() -> None:
    # Bitcoin's base58 test vector set: "Hello World!" and leading zero bytes.
    assert base58btc(b"Hello World!") == "2NEpo7TZRRrLZSi2U"
    assert base58btc(b"\0\0\x28\x7f\xb4\xcd") == "11233QC4"


@given(st.binary(min_size=32, max_size=32))
def test_ed25519_peer_ids_read_like_libp2p(seed: bytes) -> None:
    identity = Identity.from_seed(seed)
    peer = identity.peer_id
    assert peer.startswith("12D3KooW") and len(peer) == 52
    raw = _b58decode(peer)
    assert raw[:6] == b"\x00\x24\x08\x01\x12\x20" and raw[6:] == identity.public_key


def test_peer_id_is_stable_for_a_key() -> None:
    key = hashlib.sha256(b"fixed").digest()
    assert peer_id_of(key) == peer_id_of(key) != peer_id_of(hashlib.sha256(b"other").digest())
