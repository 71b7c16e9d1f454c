"""Transactions: what the log records, signed by whoever submits it.

`{type, payload, submitter, time, nonce, signature}` (DESIGN §3). The id is the
SHA-256 of the canonical encoding without the signature; the signature is Ed25519
over that id by the key the submitter's peer id embeds, so a transaction proves who
submitted it with nothing but itself. `time` is whole seconds since the epoch.

What is written can be read: every limit the decoder enforces is checked when a
value is built (`__post_init__`), because decoding builds values the same way. A
node can therefore never sign, commit or index something it would refuse to read
back. Integers fit SQLite's signed 64-bit INTEGER (0 ≤ x ≤ 2**63-1); text is at most
`TEXT_FIELD_CHARS_MAX` characters of encodable UTF-8; a transaction encodes to at
most `TX_BYTES_MAX` bytes.

Types: AddArtifact (a record of one file), AddAuthorizedNode/RemoveAuthorizedNode (the
authority set) and AddRegistry/RemoveRegistry (the Docker registries the network
vouches for; the host exactly as records and image names write it). What each change
may do is the chain core's to judge (`chain.py`); here only its shape.

An endorsement is an authority's signature over a domain-separated message naming a
transaction id. It travels with the transaction inside a block but is no part of the
transaction's id or of its submitter's signature; consensus adds endorsements (and
later a verdict, under a new domain string) to a transaction others submitted.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field
from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from pyrsia.errors import NameInvalid, TxInvalid
from pyrsia.formats.peer_id import peer_id_of, public_key_of
from pyrsia.formats.registry_host import check_host
from pyrsia.translog import codec

ADD_ARTIFACT = "AddArtifact"
ADD_AUTHORIZED_NODE = "AddAuthorizedNode"
REMOVE_AUTHORIZED_NODE = "RemoveAuthorizedNode"
ADD_REGISTRY = "AddRegistry"
REMOVE_REGISTRY = "RemoveRegistry"
PACKAGE_TYPES = ("docker", "maven")
TEXT_FIELD_CHARS_MAX = 4096
DEPENDENCIES_MAX = 1000
INTEGER_MAX = 2**63 - 1  # SQLite INTEGER is signed 64-bit
CHUNK_SIZE_BYTES_MIN = 1 << 10
CHUNK_SIZE_BYTES_MAX = 1 << 26
HASH_BYTES = 32
SIGNATURE_BYTES = 64
TX_BYTES_MAX = 1 << 20
ENDORSEMENTS_MAX = 100
PEER_ID_CHARS_MAX = 100  # an Ed25519 peer id is 52
ENDORSEMENT_DOMAIN = b"pyrsia endorsement v1\n"
_TEXT_FIELDS = ("package_type", "package_id", "path", "digest", "media_type", "source", "author")
_REQUIRED_TEXT = ("package_id", "path", "digest")
REGISTRY_CHARS_MAX = 253
# What a record without a `registry` means (every record written before the field).
DEFAULT_REGISTRIES = {"docker": "docker.io", "maven": "central"}
# A record of a file rebuilt from source (`pyrsia build source`) says where from and with
# what; a mirror record has none of these. All or none; encoded under "build" only when set.
REPRODUCES_UPSTREAM = ("yes", "no", "absent")
BUILD_FIELDS = ("build_source", "build_commit", "build_spec", "builder_jdk", "builder_maven")
BUILDER_CHARS_MAX = 100
_BUILD_KEYS = {
    "build_source": "source",
    "build_commit": "commit",
    "build_spec": "spec",
    "builder_jdk": "jdk",
    "builder_maven": "maven",
    "reproduces_upstream": "reproduces_upstream",
}
# (key in the record's "build" map, field), in key order: how the canonical map is written.
_BUILD_NAMES_BY_KEY = tuple(sorted((key, name) for name, key in _BUILD_KEYS.items()))
_HEX = frozenset("0123456789abcdef")


def registry_of(package_type: str, registry: str) -> str:
    """A record's registry: its own, else its package type's default."""
    return registry or DEFAULT_REGISTRIES.get(package_type, "")


def check_int(name: str, value: object, low: int = 0, high: int = INTEGER_MAX) -> int:
    """`value` as an int in [low, high]; bools and other types are refused."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TxInvalid(f"{name} must be an integer, not {type(value).__name__}")
    if not low <= value <= high:
        raise TxInvalid(f"{name} {_shown(value)} is outside {low}..{high}")
    return value


def check_bytes(name: str, value: object, length: int) -> bytes:
    if not isinstance(value, bytes):
        raise TxInvalid(f"{name} must be bytes, not {type(value).__name__}")
    if len(value) != length:
        raise TxInvalid(f"{name} is {len(value)} bytes, not {length}")
    return value


def check_text(name: str, value: object, *, required: bool = False) -> str:
    """Text that encodes as UTF-8 (no lone surrogates) and fits the field limit."""
    if not isinstance(value, str):
        raise TxInvalid(f"{name} must be text, not {type(value).__name__}")
    if len(value) > TEXT_FIELD_CHARS_MAX:
        raise TxInvalid(f"{name} is {len(value)} characters, more than {TEXT_FIELD_CHARS_MAX}")
    if required and not value:
        raise TxInvalid(f"{name} is empty")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise TxInvalid(f"{name} is not encodable as UTF-8") from exc
    return value


@functools.lru_cache(maxsize=4096)
def _peer_id_problem(peer_id: str) -> str:
    try:
        public_key_of(peer_id)
    except ValueError as exc:
        return str(exc)
    return ""


def check_peer_id(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise TxInvalid(f"{name} must be a peer id, not {type(value).__name__}")
    problem = _peer_id_problem(value) if len(value) <= PEER_ID_CHARS_MAX else "peer id is too long"
    if problem:
        raise TxInvalid(f"{name}: {problem}")
    return value


def _shown(value: int) -> str:
    text = str(value) if value.bit_length() < 200 else f"of {value.bit_length()} bits"
    return text


@dataclass(frozen=True, slots=True, kw_only=True)
class AddArtifact:
    package_type: str
    package_id: str
    path: str
    digest: str
    size: int
    chunk_size: int
    chunk_root: bytes
    media_type: str
    source: str
    author: str
    dependencies: tuple[str, ...] = ()
    # Where the artifact comes from, by name: a Docker registry host (`ghcr.io`) or a Maven
    # repository id. Omitted from the encoding when empty, so records written before it
    # existed keep their ids; empty means the package type's default (`docker.io`, see
    # `registry_of`). `source` stays the URL the bytes were fetched from.
    registry: str = ""
    # Rebuilt from source: the git URL, the full commit, the spec's digest, the builder's
    # JDK and Maven versions, and whether the bytes equal the upstream's published file
    # for the same coordinates. Empty on a mirror record (see `check_build_fields`).
    build_source: str = ""
    build_commit: str = ""
    build_spec: str = ""
    builder_jdk: str = ""
    builder_maven: str = ""
    reproduces_upstream: str = ""
    _encoded: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.check()
        object.__setattr__(self, "_encoded", self._encode_checked())

    def _encode_checked(self) -> bytes:
        """`codec.encode(self.to_map())` of a checked value, its map built in sorted key
        order so the canonical walk is skipped: every record read or built passes here."""
        doc: dict[str, Any] = {"author": self.author}
        if self.build_source:
            doc["build"] = {key: getattr(self, name) for key, name in _BUILD_NAMES_BY_KEY}
        doc["chunk_root"] = self.chunk_root
        doc["chunk_size"] = self.chunk_size
        doc["dependencies"] = list(self.dependencies)
        doc["digest"] = self.digest
        doc["media_type"] = self.media_type
        doc["package_id"] = self.package_id
        doc["package_type"] = self.package_type
        doc["path"] = self.path
        if self.registry:
            doc["registry"] = self.registry
        doc["size"] = self.size
        doc["source"] = self.source
        return codec.encode_sorted(doc)

    @property
    def registry_or_default(self) -> str:
        return registry_of(self.package_type, self.registry)

    @property
    def rebuilt(self) -> bool:
        """Whether this records a file rebuilt from source (not mirrored from an upstream)."""
        return bool(getattr(self, "build_source", ""))

    def encoded(self) -> bytes:
        """The canonical encoding of `to_map()`, made once when built."""
        cached: bytes | None = getattr(self, "_encoded", None)  # None if built around __init__
        return codec.encode(self.to_map()) if cached is None else cached

    def check(self) -> None:
        """Every field within what the decoder accepts, or `TxInvalid` naming it."""
        for name in _TEXT_FIELDS:
            check_text(name, getattr(self, name), required=name in _REQUIRED_TEXT)
        if self.package_type not in PACKAGE_TYPES:
            raise TxInvalid(f"unknown package type {self.package_type[:40]!r}")
        check_int("size", self.size)
        check_int("chunk_size", self.chunk_size, CHUNK_SIZE_BYTES_MIN, CHUNK_SIZE_BYTES_MAX)
        check_bytes("chunk_root", self.chunk_root, HASH_BYTES)
        deps = self.dependencies
        if not isinstance(deps, tuple):
            raise TxInvalid(f"dependencies must be a tuple, not {type(deps).__name__}")
        if len(deps) > DEPENDENCIES_MAX:
            raise TxInvalid(f"{len(deps)} dependencies, more than {DEPENDENCIES_MAX}")
        for dep in deps:
            check_text("a dependency", dep, required=True)
        check_text("registry", self.registry)
        if len(self.registry) > REGISTRY_CHARS_MAX:
            raise TxInvalid(f"registry is longer than {REGISTRY_CHARS_MAX} characters")
        check_build_fields(self._build_fields())

    def to_map(self) -> dict[str, Any]:
        doc = {
            "package_type": self.package_type,
            "package_id": self.package_id,
            "path": self.path,
            "digest": self.digest,
            "size": self.size,
            "chunk_size": self.chunk_size,
            "chunk_root": self.chunk_root,
            "media_type": self.media_type,
            "source": self.source,
            "author": self.author,
            "dependencies": list(self.dependencies),
        }
        if self.registry:
            doc["registry"] = self.registry
        build = self._build_fields()
        if build["build_source"]:
            doc["build"] = {key: build[name] for name, key in _BUILD_KEYS.items()}
        return doc

    def _build_fields(self) -> dict[str, object]:
        # getattr: a value made around __init__ (as hostile-input tests do) may lack them.
        return {name: getattr(self, name, "") for name in _BUILD_KEYS}

    @classmethod
    def from_map(cls, doc: Any) -> AddArtifact:
        text = {key: codec.field(doc, key, str) for key in _TEXT_FIELDS}
        dependencies = codec.field(doc, "dependencies", list)
        if len(dependencies) > DEPENDENCIES_MAX:
            raise TxInvalid(f"{len(dependencies)} dependencies, more than {DEPENDENCIES_MAX}")
        return cls(
            **text,
            size=codec.field(doc, "size", int),
            chunk_size=codec.field(doc, "chunk_size", int),
            chunk_root=codec.field(doc, "chunk_root", bytes),
            dependencies=tuple(dependencies),
            registry=codec.field(doc, "registry", str) if "registry" in doc else "",
            **_build_fields_of(doc),
        )


def check_build_fields(fields: dict[str, object]) -> None:
    """A rebuilt file's facts: all present and well-formed, or all empty (a mirror record)."""
    for name, value in fields.items():
        check_text(name, value)
    if not any(fields.values()):
        return
    missing = [name for name, value in fields.items() if not value]
    if missing:
        raise TxInvalid(f"a rebuilt record needs every build field; missing {', '.join(missing)}")
    commit = str(fields["build_commit"])
    if len(commit) != 40 or not set(commit) <= _HEX:
        raise TxInvalid(f"build_commit {commit[:60]!r} is not a full 40-hex git commit")
    spec = str(fields["build_spec"])
    if not spec.startswith("sha256:") or len(spec) != 71 or not set(spec[7:]) <= _HEX:
        raise TxInvalid(f"build_spec {spec[:80]!r} is not a sha256: digest")
    for name in ("builder_jdk", "builder_maven"):
        if len(str(fields[name])) > BUILDER_CHARS_MAX:
            raise TxInvalid(f"{name} is longer than {BUILDER_CHARS_MAX} characters")
    if fields["reproduces_upstream"] not in REPRODUCES_UPSTREAM:
        shown = str(fields["reproduces_upstream"])[:20]
        raise TxInvalid(f"reproduces_upstream must be one of {', '.join(REPRODUCES_UPSTREAM)}, not {shown!r}")


def _build_fields_of(doc: Any) -> dict[str, str]:
    if "build" not in doc:
        return {}
    build = codec.field(doc, "build", dict)
    unknown = sorted(str(k)[:40] for k in build if k not in _BUILD_KEYS.values())
    if unknown:
        raise TxInvalid(f"unknown build fields {', '.join(unknown)}")
    return {name: codec.field(build, key, str) for name, key in _BUILD_KEYS.items()}


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthorizedNode:
    """Payload of AddAuthorizedNode and RemoveAuthorizedNode."""

    peer_id: str

    def __post_init__(self) -> None:
        self.check()

    def encoded(self) -> bytes:
        return codec.encode(self.to_map())

    def check(self) -> None:
        check_peer_id("peer_id", self.peer_id)

    def to_map(self) -> dict[str, Any]:
        return {"peer_id": self.peer_id}

    @classmethod
    def from_map(cls, doc: Any) -> AuthorizedNode:
        return cls(peer_id=codec.field(doc, "peer_id", str))


def check_registry_host(name: str, value: object) -> str:
    """A Docker registry host as the log names it: already normalized (lowercase DNS
    labels, a dot, a port or `localhost`; no path, no scheme), at most
    `REGISTRY_CHARS_MAX` characters."""
    if not isinstance(value, str):
        raise TxInvalid(f"{name} must be text, not {type(value).__name__}")
    if len(value) > REGISTRY_CHARS_MAX:
        raise TxInvalid(f"{name} is {len(value)} characters, more than {REGISTRY_CHARS_MAX}")
    try:
        host = check_host(value)
    except NameInvalid as exc:
        raise TxInvalid(f"{name}: {exc.message}") from exc
    if host != value:
        raise TxInvalid(f"{name} {value[:100]!r} is not written as the host {host!r}")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class Registry:
    """Payload of AddRegistry and RemoveRegistry: a Docker registry host the network
    starts (stops) vouching for."""

    host: str

    def __post_init__(self) -> None:
        self.check()

    def encoded(self) -> bytes:
        return codec.encode(self.to_map())

    def check(self) -> None:
        check_registry_host("registry host", self.host)

    def to_map(self) -> dict[str, Any]:
        return {"host": self.host}

    @classmethod
    def from_map(cls, doc: Any) -> Registry:
        return cls(host=codec.field(doc, "host", str))


Payload = AddArtifact | AuthorizedNode | Registry
_PAYLOADS: dict[str, type[AddArtifact] | type[AuthorizedNode] | type[Registry]] = {
    ADD_ARTIFACT: AddArtifact,
    ADD_AUTHORIZED_NODE: AuthorizedNode,
    REMOVE_AUTHORIZED_NODE: AuthorizedNode,
    ADD_REGISTRY: Registry,
    REMOVE_REGISTRY: Registry,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Endorsement:
    """`signer` vouches for transaction `tx_id`: Ed25519 over `endorsement_message(tx_id)`."""

    signer: str
    tx_id: bytes
    signature: bytes

    def __post_init__(self) -> None:
        check_peer_id("endorsement signer", self.signer)
        check_bytes("endorsement tx_id", self.tx_id, HASH_BYTES)
        check_bytes("endorsement signature", self.signature, SIGNATURE_BYTES)

    def to_map(self) -> dict[str, Any]:
        return {"signer": self.signer, "tx_id": self.tx_id, "signature": self.signature}

    def encoded(self) -> bytes:
        """`codec.encode(self.to_map())`, its keys written in sorted order (hot paths)."""
        return codec.encode_sorted({"signature": self.signature, "signer": self.signer, "tx_id": self.tx_id})

    @classmethod
    def from_map(cls, doc: Any) -> Endorsement:
        return cls(
            signer=codec.field(doc, "signer", str),
            tx_id=codec.field(doc, "tx_id", bytes),
            signature=codec.field(doc, "signature", bytes),
        )

    def verify(self) -> bool:
        return verify_signature(self.signer, endorsement_message(self.tx_id), self.signature)


def endorsement_message(tx_id: bytes) -> bytes:
    return ENDORSEMENT_DOMAIN + tx_id


def endorse(key: SigningKey, tx_id: bytes) -> Endorsement:
    return Endorsement(
        signer=signer_id(key),
        tx_id=tx_id,
        signature=key.sign(endorsement_message(tx_id)).signature,
    )


def _unsigned_map(type: str, payload: Payload, submitter: str, time: int, nonce: int) -> dict[str, Any]:
    return {"type": type, "payload": payload.to_map(), "submitter": submitter, "time": time, "nonce": nonce}


_KEY_NONCE, _KEY_PAYLOAD, _KEY_SIGNATURE, _KEY_SUBMITTER, _KEY_TIME, _KEY_TYPE = (
    codec.scalar(k) for k in ("nonce", "payload", "signature", "submitter", "time", "type")
)


def _encoded_unsigned(
    type: str, payload: Payload, submitter: str, time: int, nonce: int
) -> tuple[bytes, int]:
    """The canonical encoding of the unsigned map, and the offset where "signature"
    sorts in (after "payload"), so the signed encoding is one splice away."""
    kind = _PAYLOADS.get(type) if isinstance(type, str) else None
    if kind is None:
        raise TxInvalid(f"unknown transaction type {str(type)[:40]!r}")
    if not isinstance(payload, kind):
        raise TxInvalid(f"{type} needs a {kind.__name__} payload, not {payload.__class__.__name__}")
    check_peer_id("submitter", submitter)
    check_int("time", time)
    check_int("nonce", nonce)
    # Keys in sorted order (nonce, payload, submitter, time, type): codec.raw_map unrolled,
    # as this runs for every transaction built or read.
    head = b"\x85" + _KEY_NONCE + codec.scalar(nonce) + _KEY_PAYLOAD + payload.encoded()
    encoded = head + _KEY_SUBMITTER + codec.scalar(submitter) + _KEY_TIME + codec.scalar(time)
    encoded += _KEY_TYPE + codec.scalar(type)
    if len(encoded) > TX_BYTES_MAX:
        raise TxInvalid(f"transaction encodes to {len(encoded)} bytes, more than {TX_BYTES_MAX}")
    return encoded, len(head)


_KEY_ENDORSEMENTS, _KEY_TX = codec.scalar("endorsements"), codec.scalar("tx")
_SIGNED_FIELDS = ("type", "payload", "submitter", "time", "nonce", "signature", "_id", "_unsigned", "_split")


@dataclass(frozen=True, slots=True, kw_only=True)
class Transaction:
    type: str
    payload: Payload
    submitter: str
    time: int
    nonce: int
    signature: bytes
    endorsements: tuple[Endorsement, ...] = ()
    _id: bytes = field(init=False, repr=False, compare=False)
    _unsigned: bytes = field(init=False, repr=False, compare=False)
    _split: int = field(init=False, repr=False, compare=False)
    _entry: bytes | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        encoded, split = _encoded_unsigned(self.type, self.payload, self.submitter, self.time, self.nonce)
        check_bytes("signature", self.signature, SIGNATURE_BYTES)
        tx_id = hashlib.sha256(encoded).digest()
        object.__setattr__(self, "_id", tx_id)
        object.__setattr__(self, "_unsigned", encoded)
        object.__setattr__(self, "_split", split)
        self._check_endorsements()

    def _check_endorsements(self) -> None:
        """Checked, and kept in signer order: a block's bytes (which its header's
        `transactions_hash` covers) then depend on who endorsed, not on arrival order."""
        endorsements, tx_id = self.endorsements, self._id
        if not isinstance(endorsements, tuple) or len(endorsements) > ENDORSEMENTS_MAX:
            raise TxInvalid(f"endorsements must be a tuple of at most {ENDORSEMENTS_MAX}")
        signers = set()
        previous = ""
        ordered = True
        for e in endorsements:
            if not isinstance(e, Endorsement) or e.tx_id != tx_id:
                raise TxInvalid(f"an endorsement of transaction {tx_id.hex()[:16]} names another one")
            if e.signer in signers:
                raise TxInvalid(f"transaction {tx_id.hex()[:16]} is endorsed twice by {e.signer}")
            signers.add(e.signer)
            ordered = ordered and previous < e.signer
            previous = e.signer
        if not ordered:
            object.__setattr__(self, "endorsements", tuple(sorted(endorsements, key=lambda e: e.signer)))

    def unsigned_map(self) -> dict[str, Any]:
        return _unsigned_map(self.type, self.payload, self.submitter, self.time, self.nonce)

    @property
    def id(self) -> bytes:
        return self._id

    def to_map(self) -> dict[str, Any]:
        return {**self.unsigned_map(), "signature": self.signature}

    def encoded(self) -> bytes:
        """The canonical encoding of `to_map()` (the signed transaction): the unsigned
        map, one entry longer, with the signature spliced in after the payload."""
        unsigned, split = self._unsigned, self._split
        signature = _KEY_SIGNATURE + codec.scalar(self.signature)
        return b"\x86" + unsigned[1:split] + signature + unsigned[split:]

    def entry_encoded(self) -> bytes:
        """The canonical encoding of `{tx, endorsements}`, this transaction's entry in a
        block, made once: a proposal's transactions are encoded for its header's
        `transactions_hash` and again for its block file."""
        entry: bytes | None = getattr(self, "_entry", None)  # unset in a with_endorsements clone
        if entry is None:
            # Keys in sorted order ("endorsements" < "tx"): codec.raw_map unrolled.
            endorsements = codec.raw_array([e.encoded() for e in self.endorsements])
            entry = b"\x82" + _KEY_ENDORSEMENTS + endorsements + _KEY_TX + self.encoded()
            object.__setattr__(self, "_entry", entry)
        return entry

    def with_endorsements(self, endorsements: tuple[Endorsement, ...]) -> Transaction:
        """The same signed transaction with other endorsements: its id and encoding are
        reused (they do not cover endorsements), only the endorsements are checked."""
        clone = object.__new__(Transaction)
        for name in _SIGNED_FIELDS:
            object.__setattr__(clone, name, getattr(self, name))
        object.__setattr__(clone, "endorsements", endorsements)
        clone._check_endorsements()
        return clone

    @classmethod
    def from_map(cls, doc: Any, endorsements: tuple[Endorsement, ...] = ()) -> Transaction:
        kind = codec.field(doc, "type", str)
        payload_type = _PAYLOADS.get(kind)
        if payload_type is None:
            raise TxInvalid(f"unknown transaction type {kind[:40]!r}")
        return cls(
            type=kind,
            payload=payload_type.from_map(codec.field(doc, "payload", dict)),
            submitter=codec.field(doc, "submitter", str),
            time=codec.field(doc, "time", int),
            nonce=codec.field(doc, "nonce", int),
            signature=codec.field(doc, "signature", bytes),
            endorsements=endorsements,
        )


def sign(key: SigningKey, *, type: str, payload: Payload, time: int, nonce: int) -> Transaction:
    """A signed transaction; `TxInvalid` if anything in it could not be read back."""
    if not isinstance(payload, AddArtifact | AuthorizedNode | Registry):
        raise TxInvalid(f"cannot sign a {payload.__class__.__name__} payload")
    if getattr(payload, "_encoded", None) is None:  # not built through __init__: check it now
        payload.check()
    tx = Transaction(
        type=type,
        payload=payload,
        submitter=signer_id(key),
        time=time,
        nonce=nonce,
        signature=bytes(SIGNATURE_BYTES),
    )
    # The signature is no part of the id, so setting it on this new, unshared value
    # leaves every derived field true, and the id is computed once.
    object.__setattr__(tx, "signature", key.sign(tx.id).signature)
    return tx


def signer_id(key: SigningKey) -> str:
    """The peer id of `key`, cached: every transaction, endorsement and vote a node signs
    names it, and base58 of the key costs more than the signature."""
    return _peer_id_of_key(bytes(key.verify_key))


_peer_id_of_key = functools.lru_cache(maxsize=64)(peer_id_of)


# One signature reaches a node many times (a transaction on arrival, in each proposal,
# in its block; a vote again in a certificate): each answer is computed once. The check
# is a pure function of its arguments, so a remembered answer is the answer.
VERIFIED_KEPT = 1 << 16


def verify_signature_once(peer_id: str, message: bytes, signature: bytes) -> bool:
    """Whether `signature` is `peer_id`'s Ed25519 signature over `message`, not
    remembered: for signatures met once (a synced block's), which would only push out
    of `verify_signature`'s memory the ones that come back."""
    try:
        verify_key_of(peer_id).verify(message, signature)
    except (ValueError, BadSignatureError):
        return False
    return True


verify_signature = functools.lru_cache(maxsize=VERIFIED_KEPT)(verify_signature_once)
verify_signature.__doc__ = "Whether `signature` is `peer_id`'s Ed25519 signature over `message` (remembered)."


@functools.lru_cache(maxsize=4096)
def verify_key_of(peer_id: str) -> VerifyKey:
    """The Ed25519 key a peer id names, remembered: a batch names a few signers many
    times. Raises ValueError for a peer id that names no Ed25519 key."""
    return VerifyKey(public_key_of(peer_id))


# One signature to check: (signer's peer id, message, signature, why its holder is
# refused when it does not verify). Listed apart from checking, so a batch's can be
# checked all at once elsewhere (`sigcheck`).
Claim = tuple[str, bytes, bytes, str]


def claims_of(tx: Transaction) -> list[Claim]:
    """The signatures that make `tx` well-signed: its submitter's, then each endorsement's."""
    claims: list[Claim] = [
        (
            tx.submitter,
            tx.id,
            tx.signature,
            f"transaction {tx.id.hex()[:16]} is not signed by its submitter {tx.submitter[:60]}",
        )
    ]
    for e in tx.endorsements:
        reason = f"endorsement of transaction {tx.id.hex()[:16]} by {e.signer} does not verify"
        claims.append((e.signer, endorsement_message(e.tx_id), e.signature, reason))
    return claims


def check(tx: Transaction, *, remember: bool = True) -> None:
    """A transaction is well-signed by its submitter, and every endorsement by its signer;
    or `TxInvalid`. `remember=False`: the answers are not kept (`verify_signature_once`)."""
    verify = verify_signature if remember else verify_signature_once
    for signer, message, signature, reason in claims_of(tx):
        if not verify(signer, message, signature):
            raise TxInvalid(reason)
