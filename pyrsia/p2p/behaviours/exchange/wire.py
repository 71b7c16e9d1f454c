"""Messages of `/pyrsia/exchange/1.0.0`: chunk lists and chunk bytes — a pure codec.

A downloader opens one stream per provider and writes requests; the provider answers
each in order, so requests can be pipelined on one stream (DESIGN §3):

    GetChunkList{digest}            -> ChunkList{digest, size, chunk_size, hashes, http_port}
                                       | NotFound{digest} | Refused{reason}
    GetChunks{digest, first, count} -> Chunks{digest, first, count}, then `count` chunk frames
                                       | NotFound{digest} | Refused{reason}

Messages are canonical msgpack maps behind an unsigned-varint length, like every pyrsia
protocol. A chunk frame is an unsigned-varint length followed by that many raw bytes,
not msgpack, so a 1 MiB chunk is never re-encoded. `http_port` is the provider's
registry port (0: none), for a future HTTP `Range` data path; whatever path the bytes
take, the downloader checks each chunk against the chunk list, and the list against
the chunk root the log recorded.

Decoding is bounded: a message above `MESSAGE_BYTES_MAX`, a chunk list longer than
`CHUNK_LIST_HASHES_MAX`, a request for more than `REQUEST_CHUNKS_MAX` chunks or a
chunk frame that is empty or above `chunk_bytes_max` is a `ProtocolViolation`, refused before it is
buffered.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pyrsia.errors import DigestInvalid, ProtocolViolation, TxInvalid
from pyrsia.formats.digest import Digest
from pyrsia.p2p.wire import varint
from pyrsia.translog import codec
from pyrsia.translog.chunks import CHUNK_BYTES

PROTOCOL_ID = "/pyrsia/exchange/1.0.0"
HASH_BYTES = 32
# 128 GiB in 1 MiB chunks; a list that long encodes to about 4.3 MiB.
CHUNK_LIST_HASHES_MAX = 131_072
MESSAGE_BYTES_MAX = 5 * 1024 * 1024
REQUEST_CHUNKS_MAX = 64
REASON_CHARS_MAX = 200
PORT_MAX = 65_535


@dataclass(frozen=True, slots=True, kw_only=True)
class GetChunkList:
    digest: Digest


@dataclass(frozen=True, slots=True, kw_only=True)
class ChunkList:
    digest: Digest
    size: int
    chunk_size: int
    hashes: tuple[bytes, ...]
    http_port: int = 0  # the provider's peer HTTP data plane port (Range reads); 0 = none


@dataclass(frozen=True, slots=True, kw_only=True)
class GetChunks:
    digest: Digest
    first: int
    count: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Chunks:
    """Header of a `GetChunks` answer: `count` chunk frames follow, from index `first`."""

    digest: Digest
    first: int
    count: int


@dataclass(frozen=True, slots=True, kw_only=True)
class NotFound:
    digest: Digest


@dataclass(frozen=True, slots=True, kw_only=True)
class Refused:
    """The provider will not answer this request (busy, out of range); the stream stays usable."""

    reason: str


Message = GetChunkList | ChunkList | GetChunks | Chunks | NotFound | Refused
Request = GetChunkList | GetChunks
Reply = ChunkList | Chunks | NotFound | Refused


@dataclass(frozen=True, slots=True, kw_only=True)
class ChunkData:
    """One chunk frame of a `Chunks` answer, numbered by the downloader's decoder."""

    index: int
    data: bytes


def encode(message: Message) -> bytes:
    """The message behind its varint length, ready to write on the stream."""
    doc: dict[str, Any]
    match message:
        case GetChunkList():
            doc = {"type": "get_chunk_list", "digest": str(message.digest)}
        case ChunkList():
            doc = {
                "type": "chunk_list",
                "digest": str(message.digest),
                "size": message.size,
                "chunk_size": message.chunk_size,
                "hashes": list(message.hashes),
                "http_port": message.http_port,
            }
        case GetChunks():
            doc = {"type": "get_chunks", "digest": str(message.digest), "first": message.first}
            doc["count"] = message.count
        case Chunks():
            doc = {"type": "chunks", "digest": str(message.digest), "first": message.first}
            doc["count"] = message.count
        case NotFound():
            doc = {"type": "not_found", "digest": str(message.digest)}
        case Refused():
            doc = {"type": "refused", "reason": message.reason[:REASON_CHARS_MAX]}
    return varint.prefixed(codec.encode(doc))


def chunk_frame_head(length: int) -> bytes:
    """What precedes a chunk's raw bytes."""
    return varint.encode(length)


def decode(data: bytes) -> Message:
    """One message body (without its length); anything malformed is a `ProtocolViolation`."""
    if len(data) > MESSAGE_BYTES_MAX:
        raise ProtocolViolation(f"exchange message of {len(data)} bytes exceeds {MESSAGE_BYTES_MAX}")
    try:
        doc = codec.decode(data)
        kind = codec.field(doc, "type", str)
        if kind == "refused":
            return Refused(reason=codec.field(doc, "reason", str)[:REASON_CHARS_MAX])
        digest = _digest(codec.field(doc, "digest", str))
        if kind == "get_chunk_list":
            return GetChunkList(digest=digest)
        if kind == "not_found":
            return NotFound(digest=digest)
        if kind in ("get_chunks", "chunks"):
            first, count = codec.field(doc, "first", int), codec.field(doc, "count", int)
            if not 0 <= first < CHUNK_LIST_HASHES_MAX or not 1 <= count <= REQUEST_CHUNKS_MAX:
                raise ProtocolViolation(f"chunk range {first}+{count} out of bounds")
            if kind == "get_chunks":
                return GetChunks(digest=digest, first=first, count=count)
            return Chunks(digest=digest, first=first, count=count)
        if kind == "chunk_list":
            return _chunk_list(doc, digest)
    except TxInvalid as exc:
        raise ProtocolViolation(f"malformed exchange message: {exc.message}") from exc
    raise ProtocolViolation(f"unknown exchange message type {kind[:40]!r}")


def _digest(text: str) -> Digest:
    try:
        return Digest.parse(text)
    except DigestInvalid as exc:
        raise ProtocolViolation(f"exchange message names an invalid digest {text[:80]!r}") from exc


def _chunk_list(doc: Any, digest: Digest) -> ChunkList:
    size, chunk_size = codec.field(doc, "size", int), codec.field(doc, "chunk_size", int)
    hashes = codec.field(doc, "hashes", list)
    http_port = codec.field(doc, "http_port", int)
    if chunk_size != CHUNK_BYTES:
        raise ProtocolViolation(f"chunk size {chunk_size} is not {CHUNK_BYTES}")
    if not 0 <= size <= CHUNK_LIST_HASHES_MAX * chunk_size or not 0 <= http_port <= PORT_MAX:
        raise ProtocolViolation("chunk list size or port out of range")
    if len(hashes) != -(-size // chunk_size):
        raise ProtocolViolation(f"{len(hashes)} chunk hashes for {size} bytes")
    if not all(isinstance(h, bytes) and len(h) == HASH_BYTES for h in hashes):
        raise ProtocolViolation("chunk hashes must be 32-byte strings")
    return ChunkList(
        digest=digest, size=size, chunk_size=chunk_size, hashes=tuple(hashes), http_port=http_port
    )


class RequestReader:
    """The provider's side: requests, one after another, from the bytes of a stream."""

    def __init__(self) -> None:
        self._frames = varint.LengthPrefixedReader(MESSAGE_BYTES_MAX)

    def receive_data(self, data: bytes) -> None:
        self._frames.feed(data)

    def next_request(self) -> Request | None:
        frame = self._frames.next_message()
        if frame is None:
            return None
        message = decode(frame)
        if not isinstance(message, GetChunkList | GetChunks):
            raise ProtocolViolation(f"{type(message).__name__} is not a request")
        return message

    @property
    def buffered(self) -> int:
        return self._frames.buffered


class ReplyReader:
    """The downloader's side: replies, and after each `Chunks` header its chunk frames.

    Push bytes with `receive_data`; pull with `next_event` until it returns None.
    `wanted_bytes` says how much to read next so a chunk body arrives in few pieces.
    """

    def __init__(self, chunk_bytes_max: int = CHUNK_BYTES) -> None:
        self._chunk_bytes_max = chunk_bytes_max
        self._buffer = bytearray()
        self._next_index = 0
        self._frames_left = 0
        self._body_left = -1  # bytes of the current chunk still to come; -1: between frames
        self._parts: list[bytes] = []

    def receive_data(self, data: bytes) -> None:
        if self._body_left > 0 and not self._buffer:
            self._take_body(data)
        else:
            self._buffer += data

    @property
    def wanted_bytes(self) -> int:
        return self._body_left if self._body_left > 0 else 65_536

    @property
    def in_chunks(self) -> bool:
        """True while chunk frames of the last `Chunks` header are still expected."""
        return self._frames_left > 0

    def next_event(self) -> Reply | ChunkData | None:
        if self._body_left > 0 and self._buffer:
            pending, self._buffer = bytes(self._buffer), bytearray()
            self._take_body(pending)
        if self._body_left == 0:
            return self._finish_chunk()
        if self._frames_left > 0:
            head = varint.decode(self._buffer)
            if head is None:
                return None
            length, start = head
            if not 0 < length <= self._chunk_bytes_max:
                raise ProtocolViolation(f"chunk frame of {length} bytes, not 1..{self._chunk_bytes_max}")
            rest = bytes(self._buffer[start:])
            self._buffer = bytearray()
            self._body_left = length
            self._parts = []
            if rest:
                self._take_body(rest)
            return self._finish_chunk() if self._body_left == 0 else None
        head = varint.decode(self._buffer)
        if head is None:
            return None
        length, start = head
        if length > MESSAGE_BYTES_MAX:
            raise ProtocolViolation(f"exchange message of {length} bytes exceeds {MESSAGE_BYTES_MAX}")
        if len(self._buffer) - start < length:
            return None
        message = decode(bytes(self._buffer[start : start + length]))
        del self._buffer[: start + length]
        if isinstance(message, GetChunkList | GetChunks):
            raise ProtocolViolation(f"{type(message).__name__} is not a reply")
        if isinstance(message, Chunks):
            self._next_index, self._frames_left = message.first, message.count
        return message

    def _take_body(self, data: bytes) -> None:
        take = min(len(data), self._body_left)
        self._parts.append(data if take == len(data) else data[:take])
        self._body_left -= take
        if take < len(data):
            self._buffer += data[take:]

    def _finish_chunk(self) -> ChunkData:
        data = self._parts[0] if len(self._parts) == 1 else b"".join(self._parts)
        self._parts, self._body_left = [], -1
        index, self._next_index = self._next_index, self._next_index + 1
        self._frames_left -= 1
        return ChunkData(index=index, data=data)
