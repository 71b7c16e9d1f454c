"""Noise XX with the libp2p handshake payload: an authenticated, encrypted channel.

Protocol `Noise_XX_25519_ChaChaPoly_SHA256` (noiseprotocol.org rev 34, libp2p/specs
noise/README.md), negotiated as `/noise`:

    -> e
    <- e, ee, s, es, payload(responder)
    -> s, se, payload(initiator)

Every message travels behind a 2-byte big-endian length, so none exceeds 65,535
bytes. The payload is the protobuf NoiseHandshakePayload: `identity_key` (a libp2p
PublicKey protobuf: Ed25519 only here), `identity_sig` (the identity key's signature
over `"noise-libp2p-static-key:" + static X25519 key`), and `extensions` whose
`stream_muxers` list offers early muxer negotiation (libp2p/specs
connections/inlined-muxer-negotiation.md). A dialer that knows whom it dials gets a
`ProtocolViolation` unless the remote key is that peer's.

After the handshake, `split()` yields two CipherStates; every transport message is
ChaCha20-Poly1305 with nonce = 4 zero bytes + the 8-byte little-endian counter and
empty associated data, so a replayed, dropped or reordered frame fails to decrypt.

Randomness is injected: the shell passes the static and ephemeral X25519 private keys.
Pure: pynacl, hashlib and hmac only.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from nacl import bindings
from nacl._sodium import ffi as _ffi  # type: ignore[import-not-found]
from nacl._sodium import lib as _lib
from nacl.exceptions import BadSignatureError, CryptoError
from nacl.signing import VerifyKey

from pyrsia.errors import ProtocolViolation
from pyrsia.formats.peer_id import peer_id_of
from pyrsia.p2p.identity import Identity
from pyrsia.p2p.wire import protobuf

PROTOCOL_ID = "/noise"
PROTOCOL_NAME = b"Noise_XX_25519_ChaChaPoly_SHA256"
SIGNATURE_PREFIX = b"noise-libp2p-static-key:"
MESSAGE_BYTES_MAX = 65535
TAG_BYTES = 16
PLAINTEXT_BYTES_MAX = MESSAGE_BYTES_MAX - TAG_BYTES
KEY_BYTES = 32
HANDSHAKE_PAYLOAD_BYTES_MAX = 4096
NONCE_MAX = 2**64 - 1  # reserved by the Noise spec, §5.1
ED25519_KEY_TYPE = 1
_NONCE = struct.Struct("<4xQ")
_LENGTH = struct.Struct(">H")
_TAG_ROOM = bytes(TAG_BYTES)


def x25519_public(private_key: bytes) -> bytes:
    return bindings.crypto_scalarmult_base(private_key)


def _dh(private_key: bytes, public_key: bytes) -> bytes:
    try:
        return bindings.crypto_scalarmult(private_key, public_key)
    except (CryptoError, RuntimeError) as exc:  # libsodium refuses low-order points
        raise ProtocolViolation("noise: degenerate Diffie-Hellman key") from exc


def _hkdf(chaining_key: bytes, material: bytes, outputs: int) -> list[bytes]:
    """Noise §4.3 HKDF over HMAC-SHA256."""
    temp_key = hmac.digest(chaining_key, material, "sha256")
    out: list[bytes] = []
    previous = b""
    for index in range(1, outputs + 1):
        previous = hmac.digest(temp_key, previous + bytes([index]), "sha256")
        out.append(previous)
    return out


class CipherState:
    """Noise §5.1: a key and a counting nonce; encryption fails closed past 2**64-1."""

    __slots__ = ("key", "nonce")

    def __init__(self, key: bytes | None = None) -> None:
        self.key = key
        self.nonce = 0

    def encrypt(self, ad: bytes, plaintext: bytes) -> bytes:
        if self.key is None:
            return plaintext
        if self.nonce >= NONCE_MAX:
            raise ProtocolViolation("noise: nonce space exhausted")
        out: bytes = bindings.crypto_aead_chacha20poly1305_ietf_encrypt(
            plaintext, ad, _NONCE.pack(self.nonce), self.key
        )
        self.nonce += 1
        return out

    def decrypt(self, ad: bytes, ciphertext: bytes) -> bytes:
        if self.key is None:
            return ciphertext
        if self.nonce >= NONCE_MAX:
            raise ProtocolViolation("noise: nonce space exhausted")
        try:
            out: bytes = bindings.crypto_aead_chacha20poly1305_ietf_decrypt(
                ciphertext, ad, _NONCE.pack(self.nonce), self.key
            )
        except CryptoError as exc:
            raise ProtocolViolation(
                "noise: message failed to decrypt (tampered, replayed or reordered)"
            ) from exc
        self.nonce += 1
        return out

    # Transport messages: libsodium called directly, on buffers in place. pynacl's
    # wrappers format their argument checks into strings and copy every result twice,
    # which costs as much as the cipher on a 64 KiB message.

    def seal_in_place(self, buffer: bytearray, at: int, size: int) -> None:
        """Encrypt buffer[at:at+size] where it lies and write the tag after it."""
        key = self.key
        if key is None or self.nonce >= NONCE_MAX:
            raise ProtocolViolation("noise: no key or nonce space exhausted")
        with _ffi.from_buffer(buffer) as base:
            target = base + at
            result = _lib.crypto_aead_chacha20poly1305_ietf_encrypt(
                target, _ffi.NULL, target, size, _ffi.NULL, 0, _ffi.NULL, _NONCE.pack(self.nonce), key
            )
        if result != 0:
            raise ProtocolViolation("noise: encryption failed")
        self.nonce += 1

    def open(self, sealed: memoryview) -> bytearray:
        """The plaintext of one transport message (ciphertext + tag)."""
        key = self.key
        if key is None or self.nonce >= NONCE_MAX:
            raise ProtocolViolation("noise: no key or nonce space exhausted")
        size = len(sealed) - TAG_BYTES
        plaintext = bytearray(size)
        with _ffi.from_buffer(sealed) as source, _ffi.from_buffer(plaintext) as target:
            result = _lib.crypto_aead_chacha20poly1305_ietf_decrypt(
                target, _ffi.NULL, _ffi.NULL, source, len(sealed), _ffi.NULL, 0, _NONCE.pack(self.nonce), key
            )
        if result != 0:
            raise ProtocolViolation("noise: message failed to decrypt (tampered, replayed or reordered)")
        self.nonce += 1
        return plaintext


class SymmetricState:
    """Noise §5.2: chaining key, handshake hash and the handshake's CipherState."""

    def __init__(self) -> None:
        # The protocol name is exactly HASHLEN bytes, so h starts as the name itself.
        self.h = PROTOCOL_NAME
        self.ck = PROTOCOL_NAME
        self.cipher = CipherState()
        self.mix_hash(b"")  # empty prologue

    def mix_hash(self, data: bytes) -> None:
        self.h = hashlib.sha256(self.h + data).digest()

    def mix_key(self, material: bytes) -> None:
        self.ck, temp_key = _hkdf(self.ck, material, 2)
        self.cipher = CipherState(temp_key)

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        ciphertext = self.cipher.encrypt(self.h, plaintext)
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        plaintext = self.cipher.decrypt(self.h, ciphertext)
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[CipherState, CipherState]:
        first, second = _hkdf(self.ck, b"", 2)
        return CipherState(first), CipherState(second)


@dataclass(frozen=True, slots=True, kw_only=True)
class HandshakePayload:
    identity_key: bytes  # libp2p PublicKey protobuf
    identity_sig: bytes
    stream_muxers: tuple[str, ...] = ()

    def encode(self) -> bytes:
        fields: list[protobuf.Field] = [(1, self.identity_key), (2, self.identity_sig)]
        if self.stream_muxers:
            fields.append((4, protobuf.encode((2, muxer.encode()) for muxer in self.stream_muxers)))
        return protobuf.encode(fields)

    @classmethod
    def decode(cls, data: bytes) -> HandshakePayload:
        fields = protobuf.decode(data)
        key = protobuf.first(fields, 1, bytes)
        sig = protobuf.first(fields, 2, bytes)
        if not isinstance(key, bytes) or not isinstance(sig, bytes):
            raise ProtocolViolation("noise payload lacks identity_key or identity_sig")
        muxers: list[str] = []
        extensions = protobuf.first(fields, 4, bytes)
        if isinstance(extensions, bytes):
            for raw in protobuf.every(protobuf.decode(extensions), 2):
                try:
                    muxers.append(raw.decode())
                except UnicodeDecodeError as exc:
                    raise ProtocolViolation("noise payload: stream muxer is not UTF-8") from exc
        return cls(identity_key=key, identity_sig=sig, stream_muxers=tuple(muxers))


def public_key_protobuf(public_key: bytes) -> bytes:
    return protobuf.encode([(1, ED25519_KEY_TYPE), (2, public_key)])


def ed25519_key_of(public_key_protobuf_bytes: bytes) -> bytes:
    """The Ed25519 key inside a libp2p PublicKey protobuf; other key types are refused."""
    fields = protobuf.decode(public_key_protobuf_bytes)
    key_type = protobuf.first(fields, 1, int)
    data = protobuf.first(fields, 2, bytes)
    if key_type != ED25519_KEY_TYPE:
        raise ProtocolViolation(f"unsupported libp2p key type {key_type!r}")
    if not isinstance(data, bytes) or len(data) != 32:
        raise ProtocolViolation("Ed25519 public key is not 32 bytes")
    return data


class Handshake:
    """One side of the XX handshake, driven by bytes; `complete` once keys are split.

    `start()` gives the initiator's first message. Feed received bytes to
    `receive_data`, send what it returns. Bytes after the last handshake message
    (early transport frames) are left in `remainder`.
    """

    def __init__(
        self,
        *,
        initiator: bool,
        identity: Identity,
        static_private: bytes,
        ephemeral_private: bytes,
        expected_peer_id: str | None = None,
        stream_muxers: Sequence[str] = (),
    ) -> None:
        if len(static_private) != KEY_BYTES or len(ephemeral_private) != KEY_BYTES:
            raise ValueError("X25519 private keys are 32 bytes")
        self.initiator = initiator
        self._identity = identity
        self._s = static_private
        self._s_pub = x25519_public(static_private)
        self._e = ephemeral_private
        self._e_pub = x25519_public(ephemeral_private)
        self._expected = expected_peer_id
        self._muxers = tuple(stream_muxers)
        self._state = SymmetricState()
        self._re = b""
        self._rs = b""
        self._step = 0  # messages processed so far: 0, 1, 2, 3
        self._buffer = bytearray()
        self.remote_peer_id: str | None = None
        self.remote_stream_muxers: tuple[str, ...] = ()
        self.send_cipher: CipherState | None = None
        self.receive_cipher: CipherState | None = None
        self.remainder = b""

    @property
    def complete(self) -> bool:
        return self._step == 3

    def _payload(self) -> bytes:
        signature = self._identity.signing_key.sign(SIGNATURE_PREFIX + self._s_pub).signature
        return HandshakePayload(
            identity_key=public_key_protobuf(self._identity.public_key),
            identity_sig=signature,
            stream_muxers=self._muxers,
        ).encode()

    def start(self) -> bytes:
        if not self.initiator or self._step != 0:
            raise RuntimeError("only the initiator starts, once")
        # -> e (and an empty payload, sent in the clear)
        self._state.mix_hash(self._e_pub)
        self._state.encrypt_and_hash(b"")
        self._step = 1
        return _frame(self._e_pub)

    def receive_data(self, data: bytes) -> bytes:
        if self.complete:
            raise ProtocolViolation("noise handshake data after completion")
        self._buffer += data
        out = b""
        while self._step != 3:
            if len(self._buffer) < 2:
                break
            (length,) = _LENGTH.unpack_from(self._buffer)
            if len(self._buffer) < 2 + length:
                break
            message = bytes(self._buffer[2 : 2 + length])
            del self._buffer[: 2 + length]
            out += self._on_message(message)
        if self._step == 3:
            self.remainder = bytes(self._buffer)
            self._buffer.clear()
        return out

    def _on_message(self, message: bytes) -> bytes:
        if self.initiator and self._step == 1:
            self._read_message_2(message)
            reply = self._write_message_3()
            self._finish()
            return reply
        if not self.initiator and self._step == 0:
            self._read_message_1(message)
            return self._write_message_2()
        if not self.initiator and self._step == 2:
            self._read_message_3(message)
            self._finish()
            return b""
        raise ProtocolViolation("noise handshake message out of turn")

    def _read_message_1(self, message: bytes) -> None:
        if len(message) < 32:
            raise ProtocolViolation("noise message 1 shorter than an ephemeral key")
        self._re = message[:32]
        self._state.mix_hash(self._re)
        self._state.decrypt_and_hash(message[32:])
        self._step = 1

    def _write_message_2(self) -> bytes:
        state = self._state
        state.mix_hash(self._e_pub)
        state.mix_key(_dh(self._e, self._re))  # ee
        encrypted_static = state.encrypt_and_hash(self._s_pub)  # s
        state.mix_key(_dh(self._s, self._re))  # es
        payload = state.encrypt_and_hash(self._payload())
        self._step = 2
        return _frame(self._e_pub + encrypted_static + payload)

    def _read_message_2(self, message: bytes) -> None:
        if len(message) < 32 + 48 + TAG_BYTES:
            raise ProtocolViolation("noise message 2 too short")
        state = self._state
        self._re = message[:32]
        state.mix_hash(self._re)
        state.mix_key(_dh(self._e, self._re))  # ee
        self._rs = state.decrypt_and_hash(message[32:80])  # s
        state.mix_key(_dh(self._e, self._rs))  # es
        self._verify(state.decrypt_and_hash(message[80:]))
        self._step = 2

    def _write_message_3(self) -> bytes:
        state = self._state
        encrypted_static = state.encrypt_and_hash(self._s_pub)  # s
        state.mix_key(_dh(self._s, self._re))  # se
        payload = state.encrypt_and_hash(self._payload())
        self._step = 3
        return _frame(encrypted_static + payload)

    def _read_message_3(self, message: bytes) -> None:
        if len(message) < 48 + TAG_BYTES:
            raise ProtocolViolation("noise message 3 too short")
        state = self._state
        self._rs = state.decrypt_and_hash(message[:48])  # s
        state.mix_key(_dh(self._e, self._rs))  # se
        self._verify(state.decrypt_and_hash(message[48:]))
        self._step = 3

    def _verify(self, raw_payload: bytes) -> None:
        if len(raw_payload) > HANDSHAKE_PAYLOAD_BYTES_MAX:
            raise ProtocolViolation("noise handshake payload too large")
        payload = HandshakePayload.decode(raw_payload)
        public_key = ed25519_key_of(payload.identity_key)
        try:
            VerifyKey(public_key).verify(SIGNATURE_PREFIX + self._rs, payload.identity_sig)
        except (BadSignatureError, ValueError, TypeError) as exc:
            raise ProtocolViolation("noise: static key not signed by the peer's identity key") from exc
        peer_id = peer_id_of(public_key)
        if self._expected is not None and peer_id != self._expected:
            raise ProtocolViolation(f"noise: dialed {self._expected} but reached {peer_id}")
        self.remote_peer_id = peer_id
        self.remote_stream_muxers = payload.stream_muxers

    def _finish(self) -> None:
        first, second = self._state.split()
        # Noise §5.3 Split: the initiator sends with the first key.
        self.send_cipher, self.receive_cipher = (first, second) if self.initiator else (second, first)


def _frame(message: bytes) -> bytes:
    if len(message) > MESSAGE_BYTES_MAX:
        raise ValueError("noise message too large")
    return _LENGTH.pack(len(message)) + message


class SecureChannel:
    """Transport phase: plaintext in any size out as framed ciphertext, and back.

    Sending packs the given pieces into as few Noise messages as the 65,535-byte limit
    allows, each laid out as length prefix + ciphertext + tag in one output buffer and
    sealed in place (one copy of the plaintext, no per-message objects beyond it).
    `seal_frames` keeps whole frames (yamux's) inside one message where they fit, so a
    receiver can hand out payloads without joining messages. Receiving opens each whole
    message straight from the bytes given into a fresh plaintext buffer; only a partial
    message at the end is kept, in a buffer bounded by one message.
    """

    def __init__(self, send_cipher: CipherState, receive_cipher: CipherState) -> None:
        if send_cipher.key is None or receive_cipher.key is None:
            raise ValueError("the transport phase needs both keys")
        self._send = send_cipher
        self._receive = receive_cipher
        self._buffer = bytearray()

    def encrypt(self, plaintext: bytes | bytearray | memoryview) -> list[bytearray]:
        """Length prefixes and sealed frames, in order, in one buffer for the wire."""
        return self.seal_frames([[plaintext]])

    def seal_frames(self, frames: Sequence[Sequence[bytes | bytearray | memoryview]]) -> list[bytearray]:
        """Seal `frames` (each a list of pieces) in order; a frame that fits in the room a
        message has left goes whole into it, a larger one starts a message of its own and
        is split at the plaintext limit. Returns one buffer (empty list for no bytes)."""
        sizes: list[int] = []  # plaintext bytes per message
        fill = 0
        for frame in frames:
            size = 0
            for piece in frame:
                size += len(piece)
            if fill and fill + size > PLAINTEXT_BYTES_MAX:
                sizes.append(fill)
                fill = 0
            fill += size
            while fill > PLAINTEXT_BYTES_MAX:
                sizes.append(PLAINTEXT_BYTES_MAX)
                fill -= PLAINTEXT_BYTES_MAX
        if fill:
            sizes.append(fill)
        if not sizes:
            return []
        # Lay out prefix, plaintext and room for the tag of every message, joined in one
        # pass into one buffer (no zero fill), then seal each message where it lies.
        parts: list[bytes | bytearray | memoryview] = [_LENGTH.pack(sizes[0] + TAG_BYTES)]
        index, room = 0, sizes[0]
        for frame in frames:
            for piece in frame:
                taken, size = 0, len(piece)
                while taken < size:
                    if room == 0:
                        index += 1
                        room = sizes[index]
                        parts += (_TAG_ROOM, _LENGTH.pack(room + TAG_BYTES))
                    step = min(room, size - taken)
                    parts.append(piece if step == size else memoryview(piece)[taken : taken + step])
                    taken += step
                    room -= step
        parts.append(_TAG_ROOM)
        out = bytearray().join(parts)
        at = 0
        for size in sizes:
            self._send.seal_in_place(out, at + 2, size)
            at += 2 + size + TAG_BYTES
        return [out]

    def decrypt(self, data: bytes | bytearray | memoryview) -> list[bytearray]:
        """Plaintexts of every whole frame now buffered or given.

        A message left partial by the last call is completed from the first bytes of
        `data` alone; the rest is opened where it lies (no copy of the whole batch)."""
        out: list[bytearray] = []
        view = memoryview(data)
        offset = self._complete_partial(view, out) if self._buffer else 0
        if offset < 0:
            return out
        offset += self._open_all(view[offset:], out)
        if offset < len(view):
            self._buffer += view[offset:]
        return out

    def _complete_partial(self, view: memoryview, out: list[bytearray]) -> int:
        """Bytes of `view` taken to complete the buffered message, -1 if all were."""
        buffer = self._buffer
        taken = 0
        if len(buffer) < 2:
            taken = min(2 - len(buffer), len(view))
            buffer += view[:taken]
            if len(buffer) < 2:
                return -1
        length = buffer[0] << 8 | buffer[1]
        if length < TAG_BYTES:
            raise ProtocolViolation(f"noise frame of {length} bytes is shorter than its tag")
        need = 2 + length - len(buffer)
        step = min(need, len(view) - taken)
        buffer += view[taken : taken + step]
        if step < need:
            return -1
        with memoryview(buffer) as whole, whole[2:] as sealed:
            out.append(self._receive.open(sealed))
        buffer.clear()
        return taken + step

    def _open_all(self, view: memoryview, out: list[bytearray]) -> int:
        offset = 0
        end = len(view)
        while end - offset >= 2:
            length = view[offset] << 8 | view[offset + 1]
            if end - offset - 2 < length:
                break
            if length < TAG_BYTES:
                raise ProtocolViolation(f"noise frame of {length} bytes is shorter than its tag")
            out.append(self._receive.open(view[offset + 2 : offset + 2 + length]))
            offset += 2 + length
        return offset

    @property
    def buffered(self) -> int:
        return len(self._buffer)
