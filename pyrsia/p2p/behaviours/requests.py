"""Publish requests on `/pyrsia/request/1.0.0`: a node asks an authority to vouch for something.

A node that is not an authority never commits to the log. When a client pulls what
its log does not vouch for, it sends one `PublishRequest` to an authority (one stream,
one request, one reply) and waits for the commit to reach it by sync. The authority
treats the request exactly as if a client had pulled through it: it fetches from its
upstream, verifies, commits, and answers with the height its log has then, so the
requester knows how far to sync. Canonical msgpack behind a varint length; bounded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pyrsia.errors import ProtocolViolation, TxInvalid
from pyrsia.translog import codec

PROTOCOL_ID = "/pyrsia/request/1.0.0"
MESSAGE_BYTES_MAX = 256 * 1024
# Pull-driven publishes, and builds (`pyrsia build`: name is the image or G:A:V).
KINDS = ("docker_manifest", "docker_blob", "maven", "build_docker", "build_maven")
FIELD_CHARS_MAX = 4096
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
            if max(len(request.name), len(request.reference)) > FIELD_CHARS_MAX:
                raise ProtocolViolation("publish request field too long")
            return request
        if kind == "reply":
            reply = PublishReply(
                ok=codec.field(doc, "ok", bool),
                height=codec.field(doc, "height", int),
                status=codec.field(doc, "status", int),
                error=codec.field(doc, "error", str),
                verdicts=_verdicts(doc.get("verdicts", [])),
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
