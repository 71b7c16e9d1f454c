"""Consensus messages: what authorities sign and send each other, and their wire form.

Tendermint's three messages (arXiv:1807.04938, Algorithm 1) plus one for catching up:

    Proposal   {height, round, proposal bytes, valid_round, proposer, signature,
                proof: the prevotes for the value in valid_round}
    Prevote    {height, round, value hash or nil, signer, signature}
    Precommit  {height, round, value hash or nil, signer, signature, extension}
    Decision   {proposal bytes, certificate}: a decided value and the quorum of
               precommits that proves it, sent to an authority that fell behind
    CatchUp    {height, signer, signature}: "I am still at this height", from a node
               that sees later heights but signs nothing at its own (an observer)

A proposal that re-proposes a value (`valid_round` >= 0) carries the quorum of
prevotes that made it valid (Tendermint's proof of lock change): receivers count
them even if a Byzantine signer sent them a different prevote, so a value one honest
node saw a quorum for can win later (Algorithm 1, line 28, without relying on gossip
to relay other nodes' votes). The proof is self-authenticating and outside the
proposer's signature.

A proposal is opaque bytes to consensus (the chain encodes a block into them); votes
name it by its SHA-256, the "value hash". Every signature is Ed25519 over
domain-separated sign bytes, the canonical msgpack array

    ["pyrsia/consensus/1", kind, genesis_hash, height, round, value_hash, (valid_round)]

so a vote can be replayed neither as another kind of message nor into another network
(the genesis block hash names the chain). A `Certificate` is the quorum of precommit
signatures, with their extensions, for one (height, round, value hash);
`verify_certificate` checks it against the authority set of that height (and, given
the proposal and a verifier, every extension).

A precommit for a value carries a vote extension (as in CometBFT's ABCI++): opaque
bytes, at most EXTENSION_BYTES_MAX, that the shell's `extend` makes from the proposal
(the chain puts in it the signatures a block certificate needs from each authority)
and its `verify_extension` checks against the proposal. The extension is outside the
precommit's signature, so it is verified on its own wherever it is counted; a nil
precommit carries none. A certificate keeps each signer's extension.

The wire form is one canonical msgpack map per message (`translog.codec`). `decode`
bounds every field and turns anything malformed into `MessageRejected`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from nacl.signing import SigningKey

from pyrsia.errors import CertificateInvalid, MessageRejected, TxInvalid
from pyrsia.translog import codec
from pyrsia.translog.block import quorum
from pyrsia.translog.tx import signer_id, verify_signature

DOMAIN = "pyrsia/consensus/1"
HASH_BYTES = 32
SIGNATURE_BYTES = 64
PEER_ID_CHARS_MAX = 128
HEIGHT_MAX = 2**62
ROUND_MAX = 2**31
PROPOSAL_BYTES_MAX = 16 * 1024 * 1024
EXTENSION_BYTES_MAX = 1024
CERTIFICATE_SIGNATURES_MAX = 1024
# A decision: the proposal, plus up to CERTIFICATE_SIGNATURES_MAX signatures with their
# extensions, plus room for peer ids and framing.
MESSAGE_BYTES_MAX = PROPOSAL_BYTES_MAX + CERTIFICATE_SIGNATURES_MAX * (EXTENSION_BYTES_MAX + 256) + 256 * 1024

# verify(peer_id, message, signature) -> bool; `translog.tx.verify_signature` by default.
Verifier = Callable[[str, bytes, bytes], bool]
# verify_extension(height, round, proposal bytes, signer, extension) -> bool: whether
# `signer`'s vote extension is valid for that proposal (the shell's rule, injected).
VerifyExtension = Callable[[int, int, bytes, str, bytes], bool]


def value_hash(proposal: bytes) -> bytes:
    return hashlib.sha256(proposal).digest()


@dataclass(frozen=True, slots=True, kw_only=True)
class CertificateSignature:
    signer: str
    signature: bytes
    # The precommit's vote extension (always empty in a proposal's proof of prevotes).
    extension: bytes = b""


@dataclass(frozen=True, slots=True, kw_only=True)
class Proposal:
    height: int
    round: int
    proposal: bytes
    # The round in which this value got a quorum of prevotes, or -1 (Algorithm 1, line 19).
    valid_round: int
    proposer: str
    signature: bytes
    # Prevotes for this value in valid_round (empty when valid_round is -1).
    proof: tuple[CertificateSignature, ...] = ()
    value: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "value", value_hash(self.proposal))

    @property
    def signer(self) -> str:
        return self.proposer

    def sign_bytes(self, genesis_hash: bytes) -> bytes:
        return proposal_sign_bytes(genesis_hash, self.height, self.round, self.value, self.valid_round)

    def proof_prevotes(self) -> list[Prevote]:
        return [
            Prevote(
                height=self.height,
                round=self.valid_round,
                value=self.value,
                signer=s.signer,
                signature=s.signature,
            )
            for s in self.proof
        ]


@dataclass(frozen=True, slots=True, kw_only=True)
class Prevote:
    height: int
    round: int
    value: bytes | None
    signer: str
    signature: bytes

    kind = "prevote"

    def sign_bytes(self, genesis_hash: bytes) -> bytes:
        return vote_sign_bytes(genesis_hash, self.kind, self.height, self.round, self.value)


@dataclass(frozen=True, slots=True, kw_only=True)
class Precommit:
    height: int
    round: int
    value: bytes | None
    signer: str
    signature: bytes
    # Vote extension: not covered by `signature`, checked by the shell's verify_extension.
    extension: bytes = b""

    kind = "precommit"

    def sign_bytes(self, genesis_hash: bytes) -> bytes:
        return vote_sign_bytes(genesis_hash, self.kind, self.height, self.round, self.value)


Vote = Prevote | Precommit


@dataclass(frozen=True, slots=True, kw_only=True)
class Certificate:
    """A quorum of precommits for `value` at (height, round): proof that it was decided."""

    height: int
    round: int
    value: bytes
    signatures: tuple[CertificateSignature, ...]

    def precommits(self) -> list[Precommit]:
        return [
            Precommit(
                height=self.height,
                round=self.round,
                value=self.value,
                signer=s.signer,
                signature=s.signature,
                extension=s.extension,
            )
            for s in self.signatures
        ]


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    proposal: bytes
    certificate: Certificate

    @property
    def height(self) -> int:
        return self.certificate.height


@dataclass(frozen=True, slots=True, kw_only=True)
class CatchUp:
    """A node at `height` asks for the decisions from there on (it saw later messages)."""

    height: int
    signer: str
    signature: bytes

    kind = "catch_up"

    def sign_bytes(self, genesis_hash: bytes) -> bytes:
        return vote_sign_bytes(genesis_hash, self.kind, self.height, 0, None)


Message = Proposal | Prevote | Precommit | Decision | CatchUp


def proposal_sign_bytes(
    genesis_hash: bytes, height: int, round_: int, value: bytes, valid_round: int
) -> bytes:
    return codec.encode([DOMAIN, "proposal", genesis_hash, height, round_, value, valid_round])


def vote_sign_bytes(genesis_hash: bytes, kind: str, height: int, round_: int, value: bytes | None) -> bytes:
    return codec.encode([DOMAIN, kind, genesis_hash, height, round_, value])


def signer_of(key: SigningKey) -> str:
    """The peer id of `key` (cached: every vote and verdict a node signs names it)."""
    return signer_id(key)


def sign_proposal(
    key: SigningKey,
    genesis_hash: bytes,
    *,
    height: int,
    round: int,
    proposal: bytes,
    valid_round: int,
    proof: Iterable[Prevote] = (),
) -> Proposal:
    sign_bytes = proposal_sign_bytes(genesis_hash, height, round, value_hash(proposal), valid_round)
    return Proposal(
        height=height,
        round=round,
        proposal=proposal,
        valid_round=valid_round,
        proposer=signer_of(key),
        signature=key.sign(sign_bytes).signature,
        proof=_signatures(proof),
    )


def sign_prevote(
    key: SigningKey, genesis_hash: bytes, *, height: int, round: int, value: bytes | None
) -> Prevote:
    signature = key.sign(vote_sign_bytes(genesis_hash, Prevote.kind, height, round, value)).signature
    return Prevote(height=height, round=round, value=value, signer=signer_of(key), signature=signature)


def sign_precommit(
    key: SigningKey,
    genesis_hash: bytes,
    *,
    height: int,
    round: int,
    value: bytes | None,
    extension: bytes = b"",
) -> Precommit:
    """A precommit; `extension` (for a value, never nil) travels with it, unsigned by it."""
    if (value is None and extension) or len(extension) > EXTENSION_BYTES_MAX:
        raise ValueError(f"an extension of {len(extension)} bytes cannot go with this precommit")
    signature = key.sign(vote_sign_bytes(genesis_hash, Precommit.kind, height, round, value)).signature
    return Precommit(
        height=height,
        round=round,
        value=value,
        signer=signer_of(key),
        signature=signature,
        extension=extension,
    )


def check_extension(value: bytes | None, extension: bytes) -> None:
    """A precommit's extension is within bounds, and empty on a nil precommit; or `MessageRejected`."""
    if len(extension) > EXTENSION_BYTES_MAX:
        raise MessageRejected(f"extension of {len(extension)} bytes exceeds {EXTENSION_BYTES_MAX}")
    if value is None and extension:
        raise MessageRejected("a nil precommit carries no extension")


def sign_catch_up(key: SigningKey, genesis_hash: bytes, *, height: int) -> CatchUp:
    signature = key.sign(vote_sign_bytes(genesis_hash, CatchUp.kind, height, 0, None)).signature
    return CatchUp(height=height, signer=signer_of(key), signature=signature)


def is_signed(
    message: Proposal | Vote | CatchUp, genesis_hash: bytes, verify: Verifier = verify_signature
) -> bool:
    return verify(message.signer, message.sign_bytes(genesis_hash), message.signature)


def _signatures(votes: Iterable[Prevote | Precommit]) -> tuple[CertificateSignature, ...]:
    signatures = {
        v.signer: CertificateSignature(
            signer=v.signer, signature=v.signature, extension=v.extension if isinstance(v, Precommit) else b""
        )
        for v in votes
    }
    return tuple(signatures[signer] for signer in sorted(signatures))


def certificate_of(height: int, round_: int, value: bytes, precommits: Iterable[Precommit]) -> Certificate:
    return Certificate(height=height, round=round_, value=value, signatures=_signatures(precommits))


def verify_certificate(
    certificate: Certificate,
    authorities: frozenset[str],
    genesis_hash: bytes,
    verify: Verifier = verify_signature,
    *,
    proposal: bytes | None = None,
    verify_extension: VerifyExtension | None = None,
) -> None:
    """A quorum of distinct authorities precommitted `value`, or `CertificateInvalid`.

    Any duplicate signer, signer outside the authority set, or bad signature fails
    the whole certificate: an honest node never builds one like that. Given the
    `proposal` and a `verify_extension`, every signer's vote extension must verify
    against that proposal as well.
    """
    if (proposal is None) != (verify_extension is None):
        raise ValueError("checking extensions takes both the proposal and verify_extension")
    if proposal is not None and value_hash(proposal) != certificate.value:
        raise CertificateInvalid("certificate is for another value than the proposal")
    signers = [s.signer for s in certificate.signatures]
    if len(set(signers)) != len(signers):
        raise CertificateInvalid("a signer appears more than once")
    outsiders = [s for s in signers if s not in authorities]
    if outsiders:
        raise CertificateInvalid(f"{outsiders[0][:60]} is not an authority at height {certificate.height}")
    needed = quorum(len(authorities))
    if len(signers) < needed:
        raise CertificateInvalid(f"{len(signers)} precommits of {needed} needed")
    for precommit in certificate.precommits():
        if not is_signed(precommit, genesis_hash, verify):
            raise CertificateInvalid(f"precommit of {precommit.signer[:60]} has a bad signature")
    if proposal is None or verify_extension is None:
        return
    for s in certificate.signatures:
        if len(s.extension) > EXTENSION_BYTES_MAX or not verify_extension(
            certificate.height, certificate.round, proposal, s.signer, s.extension
        ):
            raise CertificateInvalid(f"precommit of {s.signer[:60]} has a bad extension")


# -- wire form --------------------------------------------------------------------------


def to_map(message: Message) -> dict[str, Any]:
    match message:
        case Proposal():
            return {
                "type": "proposal",
                "height": message.height,
                "round": message.round,
                "proposal": message.proposal,
                "valid_round": message.valid_round,
                "proposer": message.proposer,
                "signature": message.signature,
                "proof": [{"signer": s.signer, "signature": s.signature} for s in message.proof],
            }
        case Prevote():
            return {
                "type": message.kind,
                "height": message.height,
                "round": message.round,
                "value": message.value,
                "signer": message.signer,
                "signature": message.signature,
            }
        case Precommit():
            return {
                "type": message.kind,
                "height": message.height,
                "round": message.round,
                "value": message.value,
                "signer": message.signer,
                "signature": message.signature,
                "extension": message.extension,
            }
        case CatchUp():
            return {
                "type": message.kind,
                "height": message.height,
                "signer": message.signer,
                "signature": message.signature,
            }
        case Decision(proposal=proposal, certificate=certificate):
            return {
                "type": "decision",
                "proposal": proposal,
                "certificate": {
                    "height": certificate.height,
                    "round": certificate.round,
                    "value": certificate.value,
                    "signatures": [
                        {"signer": s.signer, "signature": s.signature, "extension": s.extension}
                        for s in certificate.signatures
                    ],
                },
            }


def encode(message: Message) -> bytes:
    return codec.encode(to_map(message))


def decode(data: bytes) -> Message:
    """One message from the wire; anything malformed or out of bounds is `MessageRejected`."""
    if len(data) > MESSAGE_BYTES_MAX:
        raise MessageRejected(f"message of {len(data)} bytes exceeds {MESSAGE_BYTES_MAX}")
    try:
        return from_map(codec.decode(data))
    except TxInvalid as exc:
        raise MessageRejected(exc.message) from exc


def from_map(doc: Any) -> Message:
    kind = codec.field(doc, "type", str)
    if kind == "proposal":
        height, round_ = _height(doc), _round(doc)
        valid_round = codec.field(doc, "valid_round", int)
        if not -1 <= valid_round < round_:
            raise MessageRejected(f"valid round {valid_round} is not below round {round_}")
        proposal = codec.field(doc, "proposal", bytes)
        if len(proposal) > PROPOSAL_BYTES_MAX:
            raise MessageRejected(f"proposal of {len(proposal)} bytes exceeds {PROPOSAL_BYTES_MAX}")
        proof = _signature_list(doc, "proof")
        if valid_round == -1 and proof:
            raise MessageRejected("a proposal with valid round -1 carries no proof")
        return Proposal(
            height=height,
            round=round_,
            proposal=proposal,
            valid_round=valid_round,
            proposer=_peer(doc, "proposer"),
            signature=_signature(doc),
            proof=proof,
        )
    if kind in (Prevote.kind, Precommit.kind):
        if "value" not in doc:
            raise MessageRejected("missing field 'value'")
        value = doc["value"]
        if value is not None and not (isinstance(value, bytes) and len(value) == HASH_BYTES):
            raise MessageRejected("vote value must be a 32-byte hash or nil")
        if kind == Prevote.kind:
            return Prevote(
                height=_height(doc),
                round=_round(doc),
                value=value,
                signer=_peer(doc, "signer"),
                signature=_signature(doc),
            )
        # A nil precommit may leave the extension out; one for a value always names it.
        extension = _extension(doc) if value is not None or "extension" in doc else b""
        check_extension(value, extension)
        return Precommit(
            height=_height(doc),
            round=_round(doc),
            value=value,
            signer=_peer(doc, "signer"),
            signature=_signature(doc),
            extension=extension,
        )
    if kind == "decision":
        proposal = codec.field(doc, "proposal", bytes)
        if len(proposal) > PROPOSAL_BYTES_MAX:
            raise MessageRejected(f"proposal of {len(proposal)} bytes exceeds {PROPOSAL_BYTES_MAX}")
        cert = codec.field(doc, "certificate", dict)
        value = _hash(cert, "value")
        if value != value_hash(proposal):
            raise MessageRejected("certificate is for another value than the proposal")
        signatures = _signature_list(cert, "signatures", extensions=True)
        certificate = Certificate(
            height=_height(cert), round=_round(cert), value=value, signatures=signatures
        )
        return Decision(proposal=proposal, certificate=certificate)
    if kind == CatchUp.kind:
        return CatchUp(height=_height(doc), signer=_peer(doc, "signer"), signature=_signature(doc))
    raise MessageRejected(f"unknown message type {kind[:40]!r}")


def _signature_list(doc: Any, key: str, *, extensions: bool = False) -> tuple[CertificateSignature, ...]:
    """Signatures of a proof (prevotes) or, with `extensions`, of a certificate (precommits)."""
    entries = codec.field(doc, key, list)
    if len(entries) > CERTIFICATE_SIGNATURES_MAX:
        raise MessageRejected(f"{key} has more than {CERTIFICATE_SIGNATURES_MAX} signatures")
    return tuple(
        CertificateSignature(
            signer=_peer(e, "signer"),
            signature=_signature(e),
            extension=_extension(e) if extensions else b"",
        )
        for e in entries
    )


def _extension(doc: Any) -> bytes:
    extension: bytes = codec.field(doc, "extension", bytes)
    if len(extension) > EXTENSION_BYTES_MAX:
        raise MessageRejected(f"extension of {len(extension)} bytes exceeds {EXTENSION_BYTES_MAX}")
    return extension


def _height(doc: Any) -> int:
    height: int = codec.field(doc, "height", int)
    if not 0 <= height < HEIGHT_MAX:
        raise MessageRejected(f"height {height} out of range")
    return height


def _round(doc: Any) -> int:
    round_: int = codec.field(doc, "round", int)
    if not 0 <= round_ < ROUND_MAX:
        raise MessageRejected(f"round {round_} out of range")
    return round_


def _peer(doc: Any, key: str) -> str:
    peer: str = codec.field(doc, key, str)
    if not 0 < len(peer) <= PEER_ID_CHARS_MAX:
        raise MessageRejected(f"{key} is not a peer id")
    return peer


def _signature(doc: Any) -> bytes:
    signature: bytes = codec.field(doc, "signature", bytes)
    if len(signature) != SIGNATURE_BYTES:
        raise MessageRejected(f"signature must be {SIGNATURE_BYTES} bytes")
    return signature


def _hash(doc: Any, key: str) -> bytes:
    value: bytes = codec.field(doc, key, bytes)
    if len(value) != HASH_BYTES:
        raise MessageRejected(f"{key} must be a {HASH_BYTES}-byte hash")
    return value
