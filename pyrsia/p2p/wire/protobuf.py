"""The protobuf wire format, as far as libp2p's messages need it (proto2 and proto3).

libp2p's own messages (the Noise handshake payload, identify, kad's `dht.proto`,
public keys) are protobuf. The subset here is the wire format itself: varint (type 0)
and length-delimited (type 2) fields encode; fixed 64/32-bit fields (types 1, 5) are
skipped on decode so a newer peer's extra fields never break us. A message decodes to
its fields in order, `(number, value)`, so repeated fields keep every occurrence and
the caller picks what it knows. No code generation, no reflection.
"""

from __future__ import annotations

from collections.abc import Iterable

from pyrsia.errors import ProtocolViolation
from pyrsia.p2p.wire import varint

VARINT = 0
FIXED64 = 1
BYTES = 2
FIXED32 = 5
FIELD_NUMBER_MAX = 2**29 - 1

Field = tuple[int, int | bytes]


def field_varint(number: int, value: int) -> bytes:
    return varint.encode(number << 3 | VARINT) + varint.encode(value)


def field_bytes(number: int, value: bytes | str) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    return varint.encode(number << 3 | BYTES) + varint.prefixed(raw)


def encode(fields: Iterable[Field]) -> bytes:
    """Fields in the order given; ints as varints, bytes as length-delimited."""
    out = bytearray()
    for number, value in fields:
        out += field_varint(number, value) if isinstance(value, int) else field_bytes(number, value)
    return bytes(out)


def decode(data: bytes) -> list[Field]:
    """Every varint and length-delimited field in order; fixed-width fields are skipped."""
    fields: list[Field] = []
    offset = 0
    while offset < len(data):
        key = _varint(data, offset)
        tag, offset = key
        number, wire_type = tag >> 3, tag & 7
        if not 1 <= number <= FIELD_NUMBER_MAX:
            raise ProtocolViolation(f"protobuf field number {number} out of range")
        if wire_type == VARINT:
            value, offset = _varint(data, offset)
            fields.append((number, value))
        elif wire_type == BYTES:
            length, offset = _varint(data, offset)
            if offset + length > len(data):
                raise ProtocolViolation("protobuf field runs past the end of the message")
            fields.append((number, data[offset : offset + length]))
            offset += length
        elif wire_type in (FIXED64, FIXED32):
            offset += 8 if wire_type == FIXED64 else 4
            if offset > len(data):
                raise ProtocolViolation("protobuf field runs past the end of the message")
        else:
            raise ProtocolViolation(f"unsupported protobuf wire type {wire_type}")
    return fields


def _varint(data: bytes, offset: int) -> tuple[int, int]:
    decoded = varint.decode(data, offset)
    if decoded is None:
        raise ProtocolViolation("protobuf message ends inside a varint")
    return decoded


def first(fields: list[Field], number: int, kind: type[int] | type[bytes]) -> int | bytes | None:
    """The first field `number` of the given kind, or None; a wrong kind is a violation."""
    for n, value in fields:
        if n == number:
            if not isinstance(value, kind):
                raise ProtocolViolation(f"protobuf field {number} has the wrong wire type")
            return value
    return None


def every(fields: list[Field], number: int) -> list[bytes]:
    """Every length-delimited occurrence of a repeated field."""
    out = []
    for n, value in fields:
        if n == number:
            if not isinstance(value, bytes):
                raise ProtocolViolation(f"protobuf field {number} has the wrong wire type")
            out.append(value)
    return out
