"""One error hierarchy for all of pyrsia, mapped to HTTP and CLI outcomes here only.

Every failure that reaches a user is a `PyrsiaError`. Shells translate foreign errors
(`OSError`, `httpx.HTTPError`, `h11` errors) into one of these at the edge, with
`raise X(...) from exc`; nothing below the CLI or the HTTP server prints or chooses a
status code.

    PyrsiaError                      exit 1, HTTP 500
    ├── UsageError                   exit 2, HTTP 400 (bad flags, bad arguments)
    ├── ConfigError                  exit 2, HTTP 400 (bad pyrsia.toml / PYRSIA_* value)
    │   └── CredentialsInvalid       a docker config.json that cannot be read (never quotes a secret)
    ├── NodeUnreachable              exit 1 (client cannot reach a node)
    ├── ListenError                  exit 1 (a port cannot be bound)
    ├── Unauthorized                 HTTP 401 UNAUTHORIZED (admin token missing/wrong)
    ├── RegistryError                carries an OCI distribution-spec error code
    │   ├── NameInvalid              400 NAME_INVALID
    │   ├── TagInvalid               400 TAG_INVALID
    │   ├── DigestInvalid            400 DIGEST_INVALID
    │   ├── ManifestInvalid          400 MANIFEST_INVALID
    │   ├── NameUnknown              404 NAME_UNKNOWN
    │   │   └── RegistryUnknown      404 NAME_UNKNOWN (no upstream for the registry host a request names)
    │   ├── RegistryRefused          403 DENIED (a registry outside the network's genesis list)
    │   ├── ManifestUnknown          404 MANIFEST_UNKNOWN
    │   ├── BlobUnknown              404 BLOB_UNKNOWN
    │   ├── PaginationInvalid        400 PAGINATION_NUMBER_INVALID
    │   ├── Unsupported              405 UNSUPPORTED (this node is pull-only)
    │   ├── PathUnknown              404 NOT_FOUND (no route)
    │   ├── MavenPathInvalid         400 PATH_INVALID (exit 2: bad coordinates)
    │   └── MavenFileUnknown         404 NOT_FOUND
    ├── HttpError                    the HTTP request itself is unacceptable
    │   ├── BadRequest               400 (malformed HTTP)
    │   ├── RequestTimeout           408 (head or body not received in time)
    │   ├── PayloadTooLarge          413
    │   ├── HeadersTooLarge          431
    │   ├── VersionNotSupported      505 (not HTTP/1.x)
    │   └── ServerBusy               503 (every worker is taken)
    ├── RangeNotSatisfiable          416
    ├── PreconditionFailed           412 (If-Match / If-Unmodified-Since false)
    ├── UpstreamError                502 (an upstream registry failed us)
    │   ├── UpstreamUnavailable      503 (cannot connect, timed out, 5xx after retries)
    │   │   └── UpstreamTimeout      504 UPSTREAM_TIMEOUT (deadline passed, or transfer too slow)
    │   ├── DigestMismatch           502 (bytes do not hash to what was asked)
    │   ├── UpstreamManifestInvalid  502 MANIFEST_INVALID (the upstream's manifest is malformed)
    │   ├── UpstreamMetadataInvalid  502 METADATA_INVALID (a maven-metadata.xml that is no metadata)
    │   ├── UpstreamAuthFailed       502 UPSTREAM_AUTH (a login is needed, refused, or cannot be read)
    │   └── UpstreamSizeInvalid      502 SIZE_INVALID (more or fewer bytes than declared)
    ├── StorageError                 500 (the local disk failed us)
    ├── PeerError                    a p2p peer failed us or misbehaved (closes that session only)
    │   ├── ProtocolViolation        the peer sent something its protocol forbids
    │   ├── PeerUnreachable          cannot dial, handshake failed, or the session ended
    │   │   └── PeerTimeout          a peer did not answer, connect or send in time
    │   ├── StreamClosed             a p2p stream was reset or closed; its connection lives on
    │   └── ExchangeFailed           no provider delivered a blob's chunks (each was evicted or left)
    ├── ConsensusError               a consensus input is unacceptable (only that peer's message fails)
    │   ├── MessageRejected          400 malformed, unsigned, not from an authority, wrong proposer
    │   ├── CertificateInvalid       400 a commit certificate lacks a quorum of distinct valid precommits
    │   ├── NotAnAuthority           403 only an authorized node may do this (authorize-node, verify)
    │   └── PublishRefused           422 the authorities refused a transaction (names each reason)
    ├── BuildUnknown                 404 no build with that id on this node
    ├── SourceBuildError             a build from source was refused or failed
    │   ├── BuildSpecInvalid         400 (exit 2) a spec that cannot be read or is refused (names the field)
    │   │   └── ToolchainUnavailable 422 a tool or JDK this node cannot provide
    │   ├── SourceUnavailable        502 clone failed, no such tag, or the ref names a branch
    │   └── BuildFailed              500 the sandboxed build failed; `reason` names the limit or exit
    └── TranslogError                500 (the transparency log)
        ├── ChainBroken              500 (a block does not verify; names its height)
        ├── TxInvalid                400 (a transaction is malformed or its signature fails)
        ├── ProofInvalid             500 (a Merkle proof or checkpoint does not verify)
        ├── EntryUnknown             404 (no such block or logged digest)
        └── FormatUnsupported        500 (the log on disk is in a format this pyrsia cannot read)
"""

from __future__ import annotations

from typing import ClassVar


class PyrsiaError(Exception):
    """Base of every error pyrsia raises on purpose."""

    http_status: ClassVar[int] = 500
    exit_code: ClassVar[int] = 1
    # OCI distribution-spec error code used when the error reaches a registry client.
    code: ClassVar[str] = "UNKNOWN"

    def __init__(self, message: str, *, detail: object = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail


class UsageError(PyrsiaError):
    exit_code = 2
    http_status = 400


class ConfigError(PyrsiaError):
    exit_code = 2
    http_status = 400


class CredentialsInvalid(ConfigError):
    """A docker `config.json` (or token file) that cannot be used; the message never quotes it."""


class NodeUnreachable(PyrsiaError):
    http_status = 503


class ListenError(PyrsiaError):
    pass


class Unauthorized(PyrsiaError):
    http_status = 401
    code = "UNAUTHORIZED"


class RegistryError(PyrsiaError):
    """An error with a code from the OCI distribution-spec error table."""


class NameInvalid(RegistryError):
    http_status = 400
    code = "NAME_INVALID"


class TagInvalid(RegistryError):
    http_status = 400
    code = "TAG_INVALID"


class DigestInvalid(RegistryError):
    http_status = 400
    code = "DIGEST_INVALID"


class ManifestInvalid(RegistryError):
    http_status = 400
    code = "MANIFEST_INVALID"


class NameUnknown(RegistryError):
    http_status = 404
    code = "NAME_UNKNOWN"


class RegistryUnknown(NameUnknown):
    """A request names a registry host (`?ns=`, or a first path component) no upstream serves."""


class RegistryRefused(RegistryError):
    """A registry outside the network's agreed list (its genesis): nothing from it is vouched for."""

    http_status = 403
    code = "DENIED"


class ManifestUnknown(RegistryError):
    http_status = 404
    code = "MANIFEST_UNKNOWN"


class BlobUnknown(RegistryError):
    http_status = 404
    code = "BLOB_UNKNOWN"


class PaginationInvalid(RegistryError):
    http_status = 400
    code = "PAGINATION_NUMBER_INVALID"


class Unsupported(RegistryError):
    http_status = 405
    code = "UNSUPPORTED"


class PathUnknown(RegistryError):
    http_status = 404
    code = "NOT_FOUND"


class HttpError(PyrsiaError):
    """The request broke HTTP or the server's limits; the connection is closed after it."""

    http_status = 400
    code = "BAD_REQUEST"


class BadRequest(HttpError):
    pass


class RequestTimeout(HttpError):
    http_status = 408
    code = "REQUEST_TIMEOUT"


class PayloadTooLarge(HttpError):
    http_status = 413
    code = "PAYLOAD_TOO_LARGE"


class HeadersTooLarge(HttpError):
    http_status = 431
    code = "HEADERS_TOO_LARGE"


class VersionNotSupported(HttpError):
    http_status = 505
    code = "HTTP_VERSION_NOT_SUPPORTED"


class ServerBusy(HttpError):
    http_status = 503
    code = "TOOMANYREQUESTS"


class MavenPathInvalid(RegistryError):
    http_status = 400
    exit_code = 2
    code = "PATH_INVALID"


class MavenFileUnknown(RegistryError):
    http_status = 404
    code = "NOT_FOUND"


class RangeNotSatisfiable(PyrsiaError):
    http_status = 416
    code = "RANGE_NOT_SATISFIABLE"

    def __init__(self, message: str, *, size: int) -> None:
        super().__init__(message)
        self.size = size


class PreconditionFailed(PyrsiaError):
    http_status = 412
    code = "PRECONDITION_FAILED"


class UpstreamError(PyrsiaError):
    http_status = 502
    code = "UPSTREAM_ERROR"


class UpstreamUnavailable(UpstreamError):
    http_status = 503
    code = "UPSTREAM_UNAVAILABLE"


class UpstreamTimeout(UpstreamUnavailable):
    """The fetch's overall deadline passed, or bytes arrived slower than the floor allows."""

    http_status = 504
    code = "UPSTREAM_TIMEOUT"


class UpstreamManifestInvalid(UpstreamError):
    """The upstream's manifest (or index) does not parse or validate: its fault, not the client's."""

    code = "MANIFEST_INVALID"


class UpstreamMetadataInvalid(UpstreamError):
    """An upstream's `maven-metadata.xml` does not parse as metadata: its fault, not the client's."""

    code = "METADATA_INVALID"


class UpstreamAuthFailed(UpstreamError):
    """The upstream wants a login this node lacks, refused the one it sent, or keeps it in a
    credential helper pyrsia does not run. The message names the registry, never a secret."""

    code = "UPSTREAM_AUTH"


class UpstreamSizeInvalid(UpstreamError):
    """The upstream sent more bytes than declared (or allowed), or fewer than its descriptor said."""

    code = "SIZE_INVALID"


class DigestMismatch(UpstreamError):
    code = "DIGEST_INVALID"

    def __init__(self, *, expected: str, calculated: str, source: str) -> None:
        super().__init__(
            f"{source} sent bytes hashing to {calculated}, expected {expected}",
            detail={"expected": expected, "calculated": calculated},
        )
        self.expected = expected
        self.calculated = calculated


class StorageError(PyrsiaError):
    code = "STORAGE_ERROR"


class TranslogError(PyrsiaError):
    code = "TRANSLOG_ERROR"


class ChainBroken(TranslogError):
    code = "CHAIN_BROKEN"

    def __init__(self, height: int, reason: str) -> None:
        super().__init__(
            f"transparency log is broken at height {height}: {reason}", detail={"height": height}
        )
        self.height = height
        self.reason = reason


class TxInvalid(TranslogError):
    http_status = 400
    code = "TX_INVALID"


class ProofInvalid(TranslogError):
    code = "PROOF_INVALID"

    def __init__(self, what: str, *, expected: str = "", calculated: str = "") -> None:
        detail = {"expected": expected, "calculated": calculated} if expected or calculated else None
        super().__init__(f"{what} does not verify", detail=detail)
        self.expected = expected
        self.calculated = calculated


class EntryUnknown(TranslogError):
    http_status = 404
    code = "NOT_FOUND"


class FormatUnsupported(TranslogError):
    """The log directory was written in an on-disk format this version cannot read."""

    code = "FORMAT_UNSUPPORTED"


class ConsensusError(PyrsiaError):
    """A consensus message or certificate is unacceptable; only that input is refused."""

    http_status = 400
    code = "CONSENSUS_ERROR"


class MessageRejected(ConsensusError):
    """A proposal, vote or decision that the core refuses; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"consensus message rejected: {reason}", detail={"reason": reason})
        self.reason = reason


class CertificateInvalid(ConsensusError):
    """A commit certificate without a quorum of distinct, valid precommits; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"commit certificate invalid: {reason}", detail={"reason": reason})
        self.reason = reason


class NotAnAuthority(ConsensusError):
    http_status = 403
    code = "DENIED"


class PublishRefused(ConsensusError):
    """Too many authorities refused a transaction for it ever to gather a quorum."""

    http_status = 422
    code = "PUBLISH_REFUSED"


class ConsensusTimeout(ConsensusError):
    http_status = 504
    code = "CONSENSUS_TIMEOUT"


class BuildUnknown(PyrsiaError):
    http_status = 404
    code = "NOT_FOUND"


class PeerError(PyrsiaError):
    """A p2p peer failed us or misbehaved; only that session is affected."""

    http_status = 502


class ProtocolViolation(PeerError):
    """The peer sent something its protocol forbids (malformed, oversized, out of order)."""


class PeerUnreachable(PeerError):
    """The peer cannot be dialled, its handshake failed, or the session ended."""

    http_status = 503


class PeerTimeout(PeerUnreachable):
    """A peer did not connect, answer or send within the deadline."""


class StreamClosed(PeerError):
    """A stream was reset, refused or already closed; its connection lives on."""


class ExchangeFailed(PeerError):
    """Every provider of a blob was evicted (bad chunk, stall, refusal) or left; names them."""


class SourceBuildError(PyrsiaError):
    """A build from source was refused or failed; only that build is affected."""

    code = "SOURCE_BUILD_ERROR"


class BuildSpecInvalid(SourceBuildError):
    """A build spec that cannot be read, or that asks for something pyrsia refuses to run."""

    http_status = 400
    exit_code = 2
    code = "BUILDSPEC_INVALID"


class ToolchainUnavailable(BuildSpecInvalid):
    """The spec needs a build tool or JDK that this node does not have."""

    http_status = 422
    code = "TOOLCHAIN_UNAVAILABLE"


class SourceUnavailable(SourceBuildError):
    """The source repository cannot be cloned, lacks the tag, or the ref is a branch."""

    http_status = 502
    code = "SOURCE_UNAVAILABLE"


class BuildFailed(SourceBuildError):
    """The sandboxed build ended without outputs: `reason` is `exit`, `timeout`, `output_size`,
    `no_output` or `sandbox`; `log_tail` holds the end of its output."""

    code = "BUILD_FAILED"

    def __init__(self, message: str, *, reason: str, log_tail: str = "") -> None:
        super().__init__(message, detail={"reason": reason, "log_tail": log_tail})
        self.reason = reason
        self.log_tail = log_tail
