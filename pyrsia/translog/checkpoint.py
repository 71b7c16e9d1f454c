"""Checkpoints in the C2SP signed-note format, readable by transparency-log tooling.

    <origin>
    <tree size>
    <base64 root>

    — <signer name> <base64(key hash[4] || Ed25519 signature)>

C2SP tlog-checkpoint: the body is the origin, the decimal size and the base64 root,
each line ending in a newline (extension lines may follow; the signature covers them).
C2SP signed-note: the note is the body, a blank line, then one line per signature;
the key hash is the first four bytes of SHA-256(name || "\\n" || 0x01 || public key),
0x01 naming Ed25519. A verifier ignores signatures from keys it does not know, and a
known key whose signature fails rejects the whole note. Signer names are peer ids
here, so a verifier recovers each public key from the name alone. Pure.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from pyrsia.errors import ProofInvalid
from pyrsia.formats.peer_id import peer_id_of, public_key_of

ED25519 = b"\x01"
DASH = "\u2014"
NOTE_CHARS_MAX = 1024 * 1024
SIGNATURES_MAX = 100  # the Go reference implementation's cap
ROOT_BYTES = 32
ORIGIN_CHARS_MAX = 200
_SIZE = re.compile(r"0|[1-9][0-9]{0,19}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes

    def body(self) -> bytes:
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n".encode()


@dataclass(frozen=True, slots=True, kw_only=True)
class NoteSignature:
    """One signature line: who, which of their keys (the 4-byte hash), the signature."""

    name: str
    key_hash: bytes
    signature: bytes


def key_hash(name: str, public_key: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + ED25519 + public_key).digest()[:4]


def sign_body(key: SigningKey, checkpoint: Checkpoint) -> bytes:
    return key.sign(checkpoint.body()).signature


def valid_origin(origin: str) -> bool:
    """C2SP tlog-checkpoint: the origin is one non-empty line; pyrsia also keeps it
    printable ASCII and short, as log names (`example.com/log`) are."""
    return 0 < len(origin) <= ORIGIN_CHARS_MAX and origin.isascii() and origin.isprintable()


def _valid_name(name: str) -> bool:
    # signed-note: non-empty, no Unicode space, no '+'
    return bool(name) and "+" not in name and not any(c.isspace() for c in name)


def note(checkpoint: Checkpoint, signatures: list[tuple[str, bytes]]) -> str:
    """The signed note: body, blank line, one line per (peer id, signature)."""
    lines = []
    for name, signature in signatures:
        stamp = base64.b64encode(key_hash(name, public_key_of(name)) + signature).decode()
        lines.append(f"{DASH} {name} {stamp}\n")
    return checkpoint.body().decode() + "\n" + "".join(lines)


def split_note(text: str) -> tuple[str, list[NoteSignature]]:
    """A note's signed text (with its final newline) and its signature lines.

    Syntax only, for any signer names and key types; `ProofInvalid` if malformed.
    """
    if len(text) > NOTE_CHARS_MAX or any(c < " " and c != "\n" for c in text):
        raise ProofInvalid("signed note (too long or has control characters)")
    cut = text.rfind("\n\n")  # the body never holds a blank line; the signatures never do
    if cut < 0 or not text.endswith("\n"):
        raise ProofInvalid("signed note (no blank line before the signatures)")
    body, lines = text[: cut + 1], text[cut + 2 : -1].split("\n")
    if len(lines) > SIGNATURES_MAX:
        raise ProofInvalid(f"signed note (more than {SIGNATURES_MAX} signatures)")
    signatures = []
    for line in lines:
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != DASH or not _valid_name(parts[1]):
            raise ProofInvalid(f"signed note (malformed signature line {line[:80]!r})")
        try:
            raw = base64.b64decode(parts[2], validate=True)
        except binascii.Error as exc:
            raise ProofInvalid(f"signed note (signature of {parts[1][:60]} is not base64)") from exc
        if len(raw) < 5:
            raise ProofInvalid(f"signed note (signature of {parts[1][:60]} is too short)")
        signatures.append(NoteSignature(name=parts[1], key_hash=raw[:4], signature=raw[4:]))
    return body, signatures


def open_note(text: str, keys: Mapping[str, bytes]) -> tuple[str, list[str]]:
    """The body and the names whose Ed25519 key (`keys`: name → public key) signed it.

    Lines from unknown names or key hashes are ignored; a known key's bad signature
    rejects the note, and so does a note no known key signed.
    """
    body, signatures = split_note(text)
    verified: list[str] = []
    for sig in signatures:
        public_key = keys.get(sig.name)
        if public_key is None or sig.key_hash != key_hash(sig.name, public_key) or sig.name in verified:
            continue
        try:
            VerifyKey(public_key).verify(body.encode(), sig.signature)
        except (BadSignatureError, ValueError) as exc:
            raise ProofInvalid(f"signature of {sig.name[:60]} on the note") from exc
        verified.append(sig.name)
    if not verified:
        raise ProofInvalid("signed note (no signature from a trusted key)")
    return body, verified


def parse_body(body: str) -> Checkpoint:
    """A checkpoint body (origin, size, root and any extension lines) into its values."""
    lines = body.split("\n")
    if len(lines) < 4 or lines[-1] != "" or not lines[0] or not _SIZE.fullmatch(lines[1]):
        raise ProofInvalid("checkpoint (malformed body)")
    try:
        root = base64.b64decode(lines[2], validate=True)
    except binascii.Error as exc:
        raise ProofInvalid("checkpoint (root is not base64)") from exc
    if len(root) != ROOT_BYTES:
        raise ProofInvalid(f"checkpoint (root is {len(root)} bytes, not {ROOT_BYTES})")
    return Checkpoint(origin=lines[0], size=int(lines[1]), root=root)


def parse(text: str) -> tuple[Checkpoint, list[tuple[str, bytes]]]:
    """A note back into its checkpoint and the (peer id, signature) pairs it carries.

    Unverified. Lines whose name is not a peer id, or whose key hash does not match
    that peer id's key, are not ours to read and are left out.
    """
    body, signatures = split_note(text)
    pairs = []
    for sig in signatures:
        try:
            public_key = public_key_of(sig.name)
        except ValueError:
            continue
        if sig.key_hash == key_hash(sig.name, public_key):
            pairs.append((sig.name, sig.signature))
    return parse_body(body), pairs


def verify(text: str, trusted: set[str]) -> Checkpoint:
    """The checkpoint, once a trusted peer id's signature over it verifies."""
    keys = {}
    for name in trusted:
        try:
            keys[name] = public_key_of(name)
        except ValueError:
            continue
    body, _ = open_note(text, keys)
    return parse_body(body)


def signer_name(key: SigningKey) -> str:
    return peer_id_of(bytes(key.verify_key))
