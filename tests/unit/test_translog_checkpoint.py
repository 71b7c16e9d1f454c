"""C2SP checkpoints and signed notes: known notes from the Go reference, ours, forgeries."""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nacl.signing import SigningKey

from pyrsia.errors import ProofInvalid
from pyrsia.formats.peer_id import peer_id_of
from pyrsia.translog import checkpoint
from pyrsia.translog.checkpoint import Checkpoint

# Signed notes published with Go's golang.org/x/mod/sumdb/note (its package docs and
# README examples); each verifier key is "<name>+<key hash hex>+base64(0x01 || key)".
# Both were checked here against plain SHA-256 and Ed25519 before being written down.
GO_NOTES = [
    (
        "PeterNeumann",
        "c74f20a3",
        "ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "If you think cryptography is the answer to your problem,\n"
        "then you don't know what your problem is.\n"
        "\n"
        "\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUg"
        "YN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n",
    ),
    (
        "example.com/foo",
        "530d903a",
        "AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",
        "This is an example message.\n"
        "\n"
        "\u2014 example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlT"
        "gK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n",
    ),
]


def peer(k: SigningKey) -> str:
    return peer_id_of(bytes(k.verify_key))


@pytest.mark.parametrize(("name", "hash_hex", "vkey", "text"), GO_NOTES)
def test_notes_signed_by_the_reference_implementation_open(
    name: str, hash_hex: str, vkey: str, text: str
) -> None:
    raw = base64.b64decode(vkey)
    assert raw[:1] == checkpoint.ED25519
    public_key = raw[1:]
    assert checkpoint.key_hash(name, public_key).hex() == hash_hex
    body, signers = checkpoint.open_note(text, {name: public_key})
    assert text.startswith(body) and body.endswith("\n") and signers == [name]
    with pytest.raises(ProofInvalid):  # a known key whose signature fails rejects the note
        checkpoint.open_note(
            text.replace("problem", "Problem").replace("example", "Example"), {name: public_key}
        )
    with pytest.raises(ProofInvalid):  # no key we know signed it
        checkpoint.open_note(text, {"someone.else": public_key})
    with pytest.raises(ProofInvalid):  # the right name with another key: key hash differs, so unknown
        checkpoint.open_note(text, {name: bytes(SigningKey.generate().verify_key)})


def test_our_note_has_the_spec_layout() -> None:
    key = SigningKey(bytes(range(32)))
    point = Checkpoint(origin="pyrsia.log/0123456789abcdef", size=42, root=bytes(range(32)))
    text = checkpoint.note(point, [(peer(key), checkpoint.sign_body(key, point))])
    lines = text.split("\n")
    assert lines[:4] == ["pyrsia.log/0123456789abcdef", "42", base64.b64encode(bytes(range(32))).decode(), ""]
    assert len(lines) == 6 and lines[5] == ""  # one signature line, newline-terminated
    line = lines[4]
    assert line.encode().startswith(b"\xe2\x80\x94 " + peer(key).encode() + b" ")  # U+2014 em dash, space
    stamp = base64.b64decode(line.split(" ")[2])
    assert len(stamp) == 68
    expected_hash = hashlib.sha256(peer(key).encode() + b"\n\x01" + bytes(key.verify_key)).digest()[:4]
    assert stamp[:4] == expected_hash
    assert stamp[4:] == key.sign(point.body()).signature  # over the body with its last newline
    assert point.body() == "\n".join(lines[:3]).encode() + b"\n"


@given(
    origin=st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40),
    size=st.integers(min_value=0, max_value=2**63),
    root=st.binary(min_size=32, max_size=32),
)
def test_checkpoints_round_trip_through_notes(origin: str, size: int, root: bytes) -> None:
    key = SigningKey(bytes(32))
    point = Checkpoint(origin=origin, size=size, root=root)
    text = checkpoint.note(point, [(peer(key), checkpoint.sign_body(key, point))])
    assert checkpoint.verify(text, {peer(key)}) == point
    assert checkpoint.parse(text) == (point, [(peer(key), checkpoint.sign_body(key, point))])


def test_any_trusted_signer_suffices_and_strangers_are_ignored() -> None:
    a, b, c = (SigningKey(bytes([n]) * 32) for n in (1, 2, 3))
    point = Checkpoint(origin="pyrsia.log/x", size=7, root=bytes(32))
    text = checkpoint.note(point, [(peer(k), checkpoint.sign_body(k, point)) for k in (a, b)])
    assert checkpoint.verify(text, {peer(b)}) == point
    assert checkpoint.verify(text, {peer(a), peer(c)}) == point
    with pytest.raises(ProofInvalid):
        checkpoint.verify(text, {peer(c)})
    with pytest.raises(ProofInvalid):
        checkpoint.verify(text, set())
    # a witness line from a key that is not a peer id is left alone by readers and verifiers
    witnessed = text + GO_NOTES[1][3].split("\n\n")[1]
    assert checkpoint.verify(witnessed, {peer(a)}) == point
    assert [name for name, _ in checkpoint.parse(witnessed)[1]] == [peer(a), peer(b)]


def test_a_trusted_signers_bad_signature_rejects_the_note() -> None:
    a, b = SigningKey(bytes([1]) * 32), SigningKey(bytes([2]) * 32)
    point = Checkpoint(origin="pyrsia.log/x", size=7, root=bytes(32))
    other = Checkpoint(origin="pyrsia.log/x", size=8, root=bytes(32))
    text = checkpoint.note(
        point, [(peer(a), checkpoint.sign_body(a, point)), (peer(b), checkpoint.sign_body(b, other))]
    )
    assert checkpoint.verify(text, {peer(a)}) == point
    with pytest.raises(ProofInvalid, match="signature of"):
        checkpoint.verify(text, {peer(a), peer(b)})


def _good() -> str:
    key = SigningKey(bytes(32))
    point = Checkpoint(origin="pyrsia.log/x", size=3, root=bytes(range(32)))
    return checkpoint.note(point, [(peer(key), checkpoint.sign_body(key, point))])


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t.replace("\n3\n", "\n4\n"),  # another size, same signature
        lambda t: t.replace("\n3\n", "\n03\n"),  # sizes are plain decimals
        lambda t: t.replace("\n3\n", "\n+3\n"),
        lambda t: t.replace("\n3\n", "\n3_0\n"),
        lambda t: t.replace("\n\n", "\n"),  # no blank line
        lambda t: t.replace("\u2014", "--"),  # not the em dash
        lambda t: t.replace("\u2014 ", "\u2014  "),
        lambda t: t[:-1],  # last line unterminated
        lambda t: t + "\n",  # trailing blank line
        lambda t: t.replace("AAECAw", "AAEC*w"),  # root not base64
        lambda t: t.replace("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", "AAEC"),  # root too short
        lambda t: t.replace("pyrsia", "pyr\tsia"),  # control character
        lambda t: t + "\u2014 x " + base64.b64encode(b"\x01\x02").decode() + "\n",  # stamp too short
        lambda t: t + ("\u2014 x " + base64.b64encode(bytes(68)).decode() + "\n") * 100,  # too many lines
        lambda t: "\n" + t,  # empty origin
    ],
)
def test_malformed_or_altered_notes_are_refused(mangle: object) -> None:
    text = _good()
    trusted = {peer(SigningKey(bytes(32)))}
    assert checkpoint.verify(text, trusted).size == 3
    assert callable(mangle)
    altered = mangle(text)
    assert altered != text
    with pytest.raises(ProofInvalid):
        checkpoint.verify(altered, trusted)
