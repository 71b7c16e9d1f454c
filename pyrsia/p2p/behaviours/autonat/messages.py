"""AutoNAT v2's messages: the protobuf codec of both streams, strict and bounded.

libp2p/specs autonat/autonat-v2.md "RPC Messages": every message is behind a varint
length. On `/libp2p/autonat/2/dial-request` each is a `Message` whose oneof holds one of
`DialRequest` (1), `DialResponse` (2), `DialDataRequest` (3), `DialDataResponse` (4);
on `/libp2p/autonat/2/dial-back` a bare `DialBack`, answered by a bare
`DialBackResponse`. Fields:

    DialRequest       1 addrs (repeated bytes, binary multiaddrs)   2 nonce (fixed64)
    DialDataRequest   1 addrIdx (uint32)                              2 numBytes (uint64)
    DialDataResponse  1 data (bytes, at most 4096 per message)
    DialResponse      1 status (enum)  2 addrIdx (uint32)  3 dialStatus (enum)
    DialBack          1 nonce (fixed64)
    DialBackResponse  1 status (enum, OK = 0: the message is empty)

The nonce is `fixed64`, a wire type the shared protobuf module skips, so this module
reads its own fields (`_fields`): varint, fixed64, length-delimited and fixed32, every
other wire type a violation. A oneof carrying no known message, or more than one, is a
violation; unknown fields inside a known message are ignored (a newer peer's additions).
Addresses are kept as raw bytes here: the server decides which it can parse and dial.
Enum values we do not know are kept as numbers: the spec says a client MUST discard
a response whose status it does not understand, and that is the client's decision.
Pure.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from pyrsia.errors import ProtocolViolation
from pyrsia.p2p.wire import varint

DIAL_REQUEST_PROTOCOL = "/libp2p/autonat/2/dial-request"
DIAL_BACK_PROTOCOL = "/libp2p/autonat/2/dial-back"

MESSAGE_BYTES_MAX = 8192  # one Message on the dial-request stream (go-libp2p's bound too)
DIAL_BACK_BYTES_MAX = 64  # a DialBack is 9 bytes; nothing legitimate comes near this
DIAL_DATA_CHUNK_BYTES_MAX = 4096  # libp2p/specs autonat-v2.md: `data` limited to 4096 bytes
ADDRS_MAX = 32  # addresses one DialRequest may carry
UINT32_MAX = 2**32 - 1

# DialStatus
DIAL_UNUSED = 0
DIAL_ERROR = 100
DIAL_BACK_ERROR = 101
DIAL_OK = 200
# DialResponse.ResponseStatus
E_INTERNAL_ERROR = 0
E_REQUEST_REJECTED = 100
E_DIAL_REFUSED = 101
RESPONSE_OK = 200
KNOWN_DIAL_STATUSES = frozenset({DIAL_UNUSED, DIAL_ERROR, DIAL_BACK_ERROR, DIAL_OK})
KNOWN_RESPONSE_STATUSES = frozenset({E_INTERNAL_ERROR, E_REQUEST_REJECTED, E_DIAL_REFUSED, RESPONSE_OK})

_VARINT, _FIXED64, _BYTES, _FIXED32 = 0, 1, 2, 5


@dataclass(frozen=True, slots=True, kw_only=True)
class DialRequest:
    addrs: tuple[bytes, ...]
    nonce: int


@dataclass(frozen=True, slots=True, kw_only=True)
class DialDataRequest:
    addr_idx: int
    num_bytes: int


@dataclass(frozen=True, slots=True, kw_only=True)
class DialDataResponse:
    data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class DialResponse:
    status: int
    addr_idx: int = 0
    dial_status: int = DIAL_UNUSED


Message = DialRequest | DialResponse | DialDataRequest | DialDataResponse


@dataclass(frozen=True, slots=True, kw_only=True)
class DialBack:
    nonce: int


# -- encoding ----------------------------------------------------------------------------


def _key(number: int, wire_type: int) -> bytes:
    return varint.encode(number << 3 | wire_type)


def _varint_field(number: int, value: int) -> bytes:
    # proto3: a scalar at its default value is not written
    return _key(number, _VARINT) + varint.encode(value) if value else b""


def _fixed64_field(number: int, value: int) -> bytes:
    return _key(number, _FIXED64) + struct.pack("<Q", value) if value else b""


def _bytes_field(number: int, value: bytes) -> bytes:
    return _key(number, _BYTES) + varint.prefixed(value)


def encode_body(message: Message) -> bytes:
    """The `Message` protobuf, without its length prefix."""
    match message:
        case DialRequest(addrs=addrs, nonce=nonce):
            inner = b"".join(_bytes_field(1, a) for a in addrs) + _fixed64_field(2, nonce)
            return _bytes_field(1, inner)
        case DialResponse(status=status, addr_idx=addr_idx, dial_status=dial_status):
            inner = _varint_field(1, status) + _varint_field(2, addr_idx) + _varint_field(3, dial_status)
            return _bytes_field(2, inner)
        case DialDataRequest(addr_idx=addr_idx, num_bytes=num_bytes):
            return _bytes_field(3, _varint_field(1, addr_idx) + _varint_field(2, num_bytes))
        case DialDataResponse(data=data):
            return _bytes_field(4, _bytes_field(1, data))


def encode(message: Message) -> bytes:
    """One message as it goes on the dial-request stream: varint length, then `Message`."""
    return varint.prefixed(encode_body(message))


def encode_dial_back(nonce: int) -> bytes:
    return varint.prefixed(_fixed64_field(1, nonce))


def encode_dial_back_response() -> bytes:
    return varint.prefixed(b"")  # status OK is proto3's default: an empty message


# -- decoding ----------------------------------------------------------------------------

_Field = tuple[int, int, int | bytes]  # number, wire type, value


def _fields(data: bytes) -> list[_Field]:
    out: list[_Field] = []
    offset = 0
    while offset < len(data):
        tag, offset = _read_varint(data, offset)
        number, wire_type = tag >> 3, tag & 7
        if number < 1:
            raise ProtocolViolation("autonat: protobuf field number 0")
        if wire_type == _VARINT:
            value, offset = _read_varint(data, offset)
            out.append((number, wire_type, value))
        elif wire_type in (_FIXED64, _FIXED32):
            width = 8 if wire_type == _FIXED64 else 4
            raw = data[offset : offset + width]
            if len(raw) != width:
                raise ProtocolViolation("autonat: message ends inside a fixed-width field")
            out.append((number, wire_type, int.from_bytes(raw, "little")))
            offset += width
        elif wire_type == _BYTES:
            length, offset = _read_varint(data, offset)
            if offset + length > len(data):
                raise ProtocolViolation("autonat: field runs past the end of the message")
            out.append((number, wire_type, data[offset : offset + length]))
            offset += length
        else:
            raise ProtocolViolation(f"autonat: unsupported protobuf wire type {wire_type}")
    return out


def _read_varint(data: bytes, offset: int) -> tuple[int, int]:
    decoded = varint.decode(data, offset)
    if decoded is None:
        raise ProtocolViolation("autonat: message ends inside a varint")
    return decoded


def _scalar(fields: list[_Field], number: int, wire_type: int, default: int = 0) -> int:
    """The last occurrence of a scalar field (protobuf: last one wins)."""
    value = default
    for n, kind, raw in fields:
        if n == number:
            if kind != wire_type or not isinstance(raw, int):
                raise ProtocolViolation(f"autonat: field {number} has the wrong wire type")
            value = raw
    return value


def _uint32(fields: list[_Field], number: int) -> int:
    value = _scalar(fields, number, _VARINT)
    if value > UINT32_MAX:
        raise ProtocolViolation(f"autonat: field {number} is not a uint32")
    return value


def _repeated_bytes(fields: list[_Field], number: int) -> list[bytes]:
    out = []
    for n, kind, raw in fields:
        if n == number:
            if kind != _BYTES or not isinstance(raw, bytes):
                raise ProtocolViolation(f"autonat: field {number} has the wrong wire type")
            out.append(raw)
    return out


def decode_body(data: bytes) -> Message:
    """One `Message` (without its length prefix); anything else is a `ProtocolViolation`."""
    known = [(n, raw) for n, kind, raw in _fields(data) if n in (1, 2, 3, 4)]
    if len(known) != 1:
        raise ProtocolViolation(f"autonat: a Message carries {len(known)} messages, not one")
    number, raw = known[0]
    if not isinstance(raw, bytes):
        raise ProtocolViolation(f"autonat: Message field {number} has the wrong wire type")
    inner = _fields(raw)
    if number == 1:
        addrs = _repeated_bytes(inner, 1)
        if len(addrs) > ADDRS_MAX:
            raise ProtocolViolation(f"autonat: a DialRequest lists {len(addrs)} addresses, over {ADDRS_MAX}")
        return DialRequest(addrs=tuple(addrs), nonce=_scalar(inner, 2, _FIXED64))
    if number == 2:
        return DialResponse(
            status=_uint32(inner, 1), addr_idx=_uint32(inner, 2), dial_status=_uint32(inner, 3)
        )
    if number == 3:
        return DialDataRequest(addr_idx=_uint32(inner, 1), num_bytes=_scalar(inner, 2, _VARINT))
    chunks = _repeated_bytes(inner, 1)
    data_field = chunks[-1] if chunks else b""
    if len(data_field) > DIAL_DATA_CHUNK_BYTES_MAX:
        raise ProtocolViolation(f"autonat: dial data of {len(data_field)} bytes in one message")
    return DialDataResponse(data=data_field)


def decode_dial_back(data: bytes) -> DialBack:
    return DialBack(nonce=_scalar(_fields(data), 1, _FIXED64))


def decode_dial_back_response(data: bytes) -> int:
    """The DialBackResponse's status (0 is OK)."""
    return _uint32(_fields(data), 1)
