"""Checkpoints in the C2SP signed-note format, readable by transparency-log tooling.

    <origin>
    <tree size>
    <base64 root>

    — <signer name> <base64(key hash[4] || Ed25519 signature)>

The body is the first three lines, each ending in a newline; every signer adds one
line after the blank line. The key hash is the first four bytes of
SHA-256(name || "\\n" || 0x01 || public key), 0x01 naming Ed25519. Signer names are
peer ids here, so a verifier recovers each public key from the name alone.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

from nacl.signing import SigningKey

from pyrsia.errors import ProofInvalid
from pyrsia.p2p.identity import peer_id_of, public_key_of
from pyrsia.translog.tx import verify_signature

ED25519 = b"\x01"
DASH = "\u2014"


@dataclass(frozen=True, slots=True, kw_only=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes

    def body(self) -> bytes:
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n".encode()


def key_hash(name: str, public_key: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + ED25519 + public_key).digest()[:4]


def sign_body(key: SigningKey, checkpoint: Checkpoint) -> bytes:
    return key.sign(checkpoint.body()).signature


def note(checkpoint: Checkpoint, signatures: list[tuple[str, bytes]]) -> str:
    """The signed note: body, blank line, one line per (peer id, signature)."""
    lines = []
    for name, signature in signatures:
        stamp = base64.b64encode(key_hash(name, public_key_of(name)) + signature).decode()
        lines.append(f"{DASH} {name} {stamp}\n")
    return checkpoint.body().decode() + "\n" + "".join(lines)


def parse(text: str) -> tuple[Checkpoint, list[tuple[str, bytes]]]:
    """A note back into its checkpoint and (signer, signature) pairs; `ProofInvalid` if malformed."""
    body, sep, signed = text.partition("\n\n")
    lines = body.split("\n")
    if not sep or len(lines) < 3:
        raise ProofInvalid("checkpoint note (malformed)")
    try:
        checkpoint = Checkpoint(
            origin=lines[0], size=int(lines[1]), root=base64.b64decode(lines[2], validate=True)
        )
        signatures = []
        for line in signed.splitlines():
            dash, name, stamp = line.split(" ")
            raw = base64.b64decode(stamp, validate=True)
            if dash != DASH or len(raw) != 68 or raw[:4] != key_hash(name, public_key_of(name)):
                raise ValueError(f"bad signature line for {name[:60]}")
            signatures.append((name, raw[4:]))
    except ValueError as exc:
        raise ProofInvalid(f"checkpoint note ({exc})") from exc
    return checkpoint, signatures


def verify(text: str, trusted: set[str]) -> Checkpoint:
    """The checkpoint, once a trusted signer's signature over it verifies."""
    checkpoint, signatures = parse(text)
    if not any(
        name in trusted and verify_signature(name, checkpoint.body(), sig) for name, sig in signatures
    ):
        raise ProofInvalid("checkpoint signature")
    return checkpoint


def signer_name(key: SigningKey) -> str:
    return peer_id_of(bytes(key.verify_key))
