"""Publish requests on `/pyrsia/request/1.0.0`: a node asks an authority to vouch for something.

A node that is not an authority never commits to the log. When a client pulls what
its log does not vouch for, it sends one `PublishRequest` to an authority (one stream,
one request, one reply) and waits for the commit to reach it by sync. The authority
treats the request exactly as if a client had pulled through it: it fetches from its
upstream, verifies, commits, and answers with the height its log has then, so the
requester knows how far to sync. Canonical msgpack behind a varint length; bounded.

Builds (`build_docker`, `build_maven`: `pyrsia build` on a regular node) make an
authority fetch and publish whole images or Maven versions, so only authorities and
peers the admin listed may ask for them. `RequestGuard` holds what an authority checks
before serving anything: a request rate per peer, who may build, and what its
upstream said is missing (a bounded, expiring negative cache).

Builds from source (`pyrsia build source`) use three more kinds, each carrying the spec
as its canonical JSON in `reference` (name: the G:A:V): `build_source` makes the
authority that receives it the proposer (it asks the others to rebuild, builds, proposes
one AddArtifact per output, and answers when consensus ended); `source_rebuild` makes an
authority queue its own build of the spec, to verify a proposal with, and answer at
once; `source_status` (name: the spec digest) answers with that authority's build (the
reply's `source`: a map the caller checks with `SourceStatus.from_fields`).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from pyrsia.errors import ProtocolViolation, TxInvalid
from pyrsia.translog import codec

PROTOCOL_ID = "/pyrsia/request/1.0.0"
MESSAGE_BYTES_MAX = 256 * 1024
# Pull-driven publishes, and builds (`pyrsia build`: name is the image or G:A:V).
SOURCE_KINDS = ("build_source", "source_rebuild")
KINDS = (
    "docker_manifest",
    "docker_blob",
    "maven",
    "build_docker",
    "build_maven",
    *SOURCE_KINDS,
    "source_status",
)
FIELD_CHARS_MAX = 4096
SPEC_CHARS_MAX = 96 * 1024  # a spec's canonical JSON (`reference` of SOURCE_KINDS)
VERDICTS_MAX = 128
REASON_CHARS_MAX = 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class PublishRequest:
    kind: str  # docker_manifest (name, reference), docker_blob (name, reference=digest), maven (name=path)
    name: str
    reference: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class PublishReply:
    ok: bool
    height: int = -1  # the authority's log height once it holds the commit
    status: int = 0  # on failure, the HTTP status the authority's own client would have had
    error: str = ""
    # What each authority said of the transactions, as the answering one saw it:
    # (authority, "endorsed" | "refused" | "pending", reason).
    verdicts: tuple[tuple[str, str, str], ...] = ()
    # The answer to `source_status`: that authority's build of the spec, as a map the
    # caller checks (`SourceStatus.from_fields`); None otherwise.
    source: dict[str, Any] | None = None


def encode(message: PublishRequest | PublishReply) -> bytes:
    doc: dict[str, Any]
    if isinstance(message, PublishRequest):
        doc = {"type": "publish", "kind": message.kind, "name": message.name, "reference": message.reference}
    else:
        doc = {
            "type": "reply",
            "ok": message.ok,
            "height": message.height,
            "status": message.status,
            "error": message.error[:FIELD_CHARS_MAX],
            "verdicts": [[a, v, r[:REASON_CHARS_MAX]] for a, v, r in message.verdicts[:VERDICTS_MAX]],
        }
        if message.source is not None:
            doc["source"] = message.source
    return codec.encode(doc)


def decode(data: bytes) -> PublishRequest | PublishReply:
    if len(data) > MESSAGE_BYTES_MAX:
        raise ProtocolViolation(f"request message of {len(data)} bytes exceeds {MESSAGE_BYTES_MAX}")
    try:
        doc = codec.decode(data)
        kind = codec.field(doc, "type", str)
        if kind == "publish":
            request = PublishRequest(
                kind=codec.field(doc, "kind", str),
                name=codec.field(doc, "name", str),
                reference=codec.field(doc, "reference", str),
            )
            if request.kind not in KINDS or not request.name:
                raise ProtocolViolation(f"unknown publish request {request.kind[:40]!r}")
            reference_max = SPEC_CHARS_MAX if request.kind in SOURCE_KINDS else FIELD_CHARS_MAX
            if len(request.name) > FIELD_CHARS_MAX or len(request.reference) > reference_max:
                raise ProtocolViolation("publish request field too long")
            return request
        if kind == "reply":
            reply = PublishReply(
                ok=codec.field(doc, "ok", bool),
                height=codec.field(doc, "height", int),
                status=codec.field(doc, "status", int),
                error=codec.field(doc, "error", str),
                verdicts=_verdicts(doc.get("verdicts", [])),
                source=codec.field(doc, "source", dict) if "source" in doc else None,
            )
            if not -1 <= reply.height < 2**63 or not 0 <= reply.status < 1000:
                raise ProtocolViolation("publish reply out of range")
            return reply
    except TxInvalid as exc:
        raise ProtocolViolation(f"malformed request message: {exc.message}") from exc
    raise ProtocolViolation(f"unknown request message type {kind[:40]!r}")


def _verdicts(entries: Any) -> tuple[tuple[str, str, str], ...]:
    if not isinstance(entries, list) or len(entries) > VERDICTS_MAX:
        raise ProtocolViolation("publish reply verdicts malformed")
    out = []
    for entry in entries:
        if (
            not isinstance(entry, list)
            or len(entry) != 3
            or not all(isinstance(x, str) and len(x) <= REASON_CHARS_MAX for x in entry)
            or entry[1] not in ("endorsed", "refused", "pending")
        ):
            raise ProtocolViolation("publish reply verdict malformed")
        out.append((entry[0], entry[1], entry[2]))
    return tuple(out)


# -- the serving side's guard ------------------------------------------------------------

BUILD_KINDS = ("build_docker", "build_maven", *SOURCE_KINDS)
PEERS_TRACKED_MAX = 4096
MISSING_KEPT_MAX = 4096
MISSING_STATUS = 404
# Refusal reasons, as counted (`pyrsia_request_refused_total{reason=…}`).
RATE_LIMITED = "rate_limited"
BUILD_FORBIDDEN = "build_forbidden"
KNOWN_MISSING = "known_missing"
REFUSAL_REASONS = (RATE_LIMITED, BUILD_FORBIDDEN, KNOWN_MISSING)


@dataclass(frozen=True, slots=True, kw_only=True)
class Refusal:
    """A request answered without serving it: the reason counted and the reply sent."""

    reason: str
    reply: PublishReply


@dataclass(slots=True)
class _Bucket:
    tokens: float
    last_s: float


class RequestGuard:
    """What an authority checks before it serves a request from a peer — pure: time is an input.

    - A token bucket per requesting peer (`rate_per_s` refilled, at most `burst` held; a
      rate of 0 is unlimited): a request finding it empty is answered 429. At most
      `peers_max` buckets are kept; the one used least recently goes first (it comes
      back full, which is what an idle peer's bucket would be anyway).
    - Builds (`BUILD_KINDS`) only from an authority of the current set or a peer the
      node's admin listed (`allowed`); others are answered 403.
    - A negative cache: a request the upstream answered 404 is answered 404 again, from
      here, for `missing_ttl_s` (at most `missing_max` entries, the oldest dropped first),
      so a flood of requests for a missing name costs one upstream fetch per TTL.
    """

    def __init__(
        self,
        *,
        rate_per_s: float,
        burst: int,
        missing_ttl_s: float,
        peers_max: int = PEERS_TRACKED_MAX,
        missing_max: int = MISSING_KEPT_MAX,
    ) -> None:
        if rate_per_s < 0 or burst < 1 or missing_ttl_s < 0 or peers_max < 1 or missing_max < 1:
            raise ValueError("request guard limits must be positive")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.missing_ttl_s = missing_ttl_s
        self._peers_max = peers_max
        self._missing_max = missing_max
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._missing: OrderedDict[tuple[str, str, str], tuple[float, str]] = OrderedDict()

    def admit(self, peer: str, request: PublishRequest, now_s: float, *, may_build: bool) -> Refusal | None:
        """None if `request` from `peer` is to be served now; else the refusal to answer with."""
        if not self._take(peer, now_s):
            return Refusal(
                reason=RATE_LIMITED,
                reply=PublishReply(
                    ok=False,
                    status=429,
                    error=f"too many requests from {peer}: at most {self.rate_per_s:g} per second",
                ),
            )
        if request.kind in BUILD_KINDS and not may_build:
            return Refusal(
                reason=BUILD_FORBIDDEN,
                reply=PublishReply(
                    ok=False,
                    status=403,
                    error=f"{peer} may not request builds: not an authority nor listed in build_requesters",
                ),
            )
        key = _key(request)
        missing = self._missing.get(key)
        if missing is not None:
            until_s, error = missing
            if now_s < until_s:
                return Refusal(
                    reason=KNOWN_MISSING, reply=PublishReply(ok=False, status=MISSING_STATUS, error=error)
                )
            del self._missing[key]
        return None

    def served(self, request: PublishRequest, reply: PublishReply, now_s: float) -> None:
        """What serving `request` answered: a 404 is remembered for `missing_ttl_s`."""
        if reply.ok or reply.status != MISSING_STATUS or self.missing_ttl_s == 0:
            return
        key = _key(request)
        self._missing.pop(key, None)
        self._missing[key] = (now_s + self.missing_ttl_s, reply.error)
        while len(self._missing) > self._missing_max:
            self._missing.popitem(last=False)

    @property
    def missing_count(self) -> int:
        return len(self._missing)

    @property
    def peers_tracked(self) -> int:
        return len(self._buckets)

    def _take(self, peer: str, now_s: float) -> bool:
        if self.rate_per_s == 0:
            return True
        bucket = self._buckets.pop(peer, None)
        if bucket is None:
            bucket = _Bucket(tokens=float(self.burst), last_s=now_s)
        elif now_s > bucket.last_s:
            bucket.tokens = min(float(self.burst), bucket.tokens + (now_s - bucket.last_s) * self.rate_per_s)
            bucket.last_s = now_s
        self._buckets[peer] = bucket  # most recently used last
        while len(self._buckets) > self._peers_max:
            self._buckets.popitem(last=False)
        if bucket.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        return True


def _key(request: PublishRequest) -> tuple[str, str, str]:
    return (request.kind, request.name, request.reference)
