"""Noise XX with libp2p payloads: handshake, identity checks, framing, tampering."""

from __future__ import annotations

import contextlib
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyrsia.errors import ProtocolViolation
from pyrsia.p2p.identity import Identity
from pyrsia.p2p.wire import noise


def _key(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


ALICE = Identity.from_seed(_key("alice"))
BOB = Identity.from_seed(_key("bob"))
MALLORY = Identity.from_seed(_key("mallory"))


def _pair(
    *,
    expected: str | None = None,
    muxers: tuple[str, ...] = ("/yamux/1.0.0",),
    responder: type = noise.Handshake,
) -> tuple[noise.Handshake, noise.Handshake]:
    initiator = noise.Handshake(
        initiator=True,
        identity=ALICE,
        static_private=_key("a-static"),
        ephemeral_private=_key("a-eph"),
        expected_peer_id=expected,
        stream_muxers=muxers,
    )
    other = responder(
        initiator=False, identity=BOB, static_private=_key("b-static"), ephemeral_private=_key("b-eph")
    )
    return initiator, other


def _handshake(initiator: noise.Handshake, responder: noise.Handshake) -> None:
    message2 = responder.receive_data(initiator.start())
    message3 = initiator.receive_data(message2)
    assert responder.receive_data(message3) == b""


def test_handshake_authenticates_both_sides_and_sizes_match_js() -> None:
    initiator, responder = _pair(expected=BOB.peer_id)
    message1 = initiator.start()
    message2 = responder.receive_data(message1)
    message3 = initiator.receive_data(message2)
    responder.receive_data(message3)
    # Reference capture: msg1 32 bytes; msg2 = 32 e + 48 s + payload; msg3 = 48 s + payload.
    assert len(message1) == 2 + 32
    assert initiator.complete and responder.complete
    assert initiator.remote_peer_id == BOB.peer_id and responder.remote_peer_id == ALICE.peer_id
    assert responder.remote_stream_muxers == ("/yamux/1.0.0",)
    assert initiator.remote_stream_muxers == ()
    assert initiator.send_cipher is not None and responder.receive_cipher is not None
    assert initiator.send_cipher.key == responder.receive_cipher.key
    assert initiator.receive_cipher is not None and responder.send_cipher is not None
    assert initiator.receive_cipher.key == responder.send_cipher.key != initiator.send_cipher.key


def test_payload_layout_matches_js() -> None:
    # identity_key is the PublicKey protobuf: 08 01 (Ed25519) 12 20 (32-byte key).
    assert noise.public_key_protobuf(BOB.public_key).hex() == "08011220" + BOB.public_key.hex()
    payload = noise.HandshakePayload(identity_key=b"k", identity_sig=b"s", stream_muxers=("/yamux/1.0.0",))
    assert payload.encode() == b"\x0a\x01k\x12\x01s\x22\x0e\x12\x0c/yamux/1.0.0"
    assert noise.HandshakePayload.decode(payload.encode()) == payload


def test_dialing_the_wrong_peer_fails() -> None:
    initiator, responder = _pair(expected=MALLORY.peer_id)
    with pytest.raises(ProtocolViolation, match="reached"):
        initiator.receive_data(responder.receive_data(initiator.start()))


class _SignsWithWrongKey(noise.Handshake):
    def _payload(self) -> bytes:
        signature = MALLORY.signing_key.sign(noise.SIGNATURE_PREFIX + self._s_pub).signature
        return noise.HandshakePayload(
            identity_key=noise.public_key_protobuf(BOB.public_key), identity_sig=signature
        ).encode()


def test_payload_signed_by_another_key_fails() -> None:
    initiator, responder = _pair(responder=_SignsWithWrongKey)
    with pytest.raises(ProtocolViolation, match="not signed"):
        initiator.receive_data(responder.receive_data(initiator.start()))


def test_non_ed25519_identity_is_refused() -> None:
    with pytest.raises(ProtocolViolation):
        noise.ed25519_key_of(b"\x08\x00\x12\x20" + bytes(32))  # RSA key type


def _secured() -> tuple[noise.SecureChannel, noise.SecureChannel]:
    initiator, responder = _pair()
    _handshake(initiator, responder)
    assert (
        initiator.send_cipher
        and initiator.receive_cipher
        and responder.send_cipher
        and responder.receive_cipher
    )
    return (
        noise.SecureChannel(initiator.send_cipher, initiator.receive_cipher),
        noise.SecureChannel(responder.send_cipher, responder.receive_cipher),
    )


@given(st.binary(max_size=200_000), st.integers(min_value=1, max_value=70_000))
def test_transport_round_trip_any_chunking(plaintext: bytes, step: int) -> None:
    sender, receiver = _secured()
    wire = b"".join(sender.encrypt(plaintext)) if plaintext else b""
    out = []
    for start in range(0, len(wire), step):
        out += receiver.decrypt(wire[start : start + step])
    assert b"".join(out) == plaintext
    assert all(len(piece) <= noise.PLAINTEXT_BYTES_MAX for piece in out)
    assert receiver.buffered == 0


def test_replayed_reordered_and_tampered_frames_fail() -> None:
    sender, receiver = _secured()
    first, second = b"".join(sender.encrypt(b"one")), b"".join(sender.encrypt(b"two"))
    receiver.decrypt(first)
    with pytest.raises(ProtocolViolation):
        receiver.decrypt(first)  # replay
    sender, receiver = _secured()
    first, second = b"".join(sender.encrypt(b"one")), b"".join(sender.encrypt(b"two"))
    with pytest.raises(ProtocolViolation):
        receiver.decrypt(second)  # reorder
    sender, receiver = _secured()
    frame = bytearray(b"".join(sender.encrypt(b"one")))
    frame[-1] ^= 1
    with pytest.raises(ProtocolViolation):
        receiver.decrypt(bytes(frame))


def test_frame_shorter_than_tag_is_a_violation() -> None:
    _, receiver = _secured()
    with pytest.raises(ProtocolViolation):
        receiver.decrypt(b"\x00\x05hello")


def test_handshake_messages_out_of_turn() -> None:
    initiator, responder = _pair()
    message1 = initiator.start()
    with pytest.raises(ProtocolViolation):
        initiator.receive_data(message1)  # an initiator never reads message 1
    with pytest.raises(ProtocolViolation):
        responder.receive_data(b"\x00\x05short")


@given(st.binary(max_size=400))
def test_fuzz_handshake_only_violations(data: bytes) -> None:
    for initiator in (True, False):
        handshake = noise.Handshake(
            initiator=initiator, identity=ALICE, static_private=_key("s"), ephemeral_private=_key("e")
        )
        if initiator:
            handshake.start()
        with contextlib.suppress(ProtocolViolation):
            handshake.receive_data(data)


@given(st.lists(st.integers(min_value=1, max_value=70_000), min_size=1, max_size=12))
def test_sealed_frames_stay_whole_in_one_message_where_they_fit(sizes: list[int]) -> None:
    sender, receiver = _secured()
    frames = [[bytes([n % 251]) * 12, bytes([n % 7]) * (size - 1)] for n, size in enumerate(sizes)]
    wire = b"".join(sender.seal_frames(frames))
    messages = receiver.decrypt(wire)
    assert b"".join(messages) == b"".join(b"".join(frame) for frame in frames)
    assert all(len(message) <= noise.PLAINTEXT_BYTES_MAX for message in messages)
    # No message boundary falls inside a frame that fits in one message.
    boundaries = set()
    end = 0
    for message in messages:
        end += len(message)
        boundaries.add(end)
    at = 0
    for frame in frames:
        size = len(frame[0]) + len(frame[1])
        if size <= noise.PLAINTEXT_BYTES_MAX:
            assert not any(at < boundary < at + size for boundary in boundaries)
        at += size


def test_a_tampered_message_in_a_batch_is_a_violation() -> None:
    sender, receiver = _secured()
    wire = bytearray(b"".join(sender.seal_frames([[b"a" * 65519], [b"b" * 100]])))
    wire[-1] ^= 1
    with pytest.raises(ProtocolViolation, match="decrypt"):
        receiver.decrypt(bytes(wire))


def test_an_empty_transport_message_opens_to_nothing() -> None:
    sender, receiver = _secured()
    empty = b"".join(sender.encrypt(b""))  # nothing to seal: nothing sent
    assert empty == b""
    sealed = sender._send.encrypt(b"", b"")  # as another implementation may send one
    assert [bytes(p) for p in receiver.decrypt(len(sealed).to_bytes(2, "big") + sealed)] == [b""]
