"""Unsigned LEB128 varints, as multiformats and protobuf write them.

libp2p frames multistream-select lines, identify and kad messages, and pyrsia's own
protocol messages with a varint length prefix. Decoding is bounded: at most 9 bytes
(values below 2**63, the multiformats limit) and no non-minimal encodings, so one value
has one encoding and a hostile peer cannot make us loop or allocate.
"""

from __future__ import annotations

from pyrsia.errors import ProtocolViolation

VARINT_BYTES_MAX = 9
VALUE_MAX = 2**63 - 1


def encode(value: int) -> bytes:
    if not 0 <= value <= VALUE_MAX:
        raise ValueError(f"varint out of range: {value}")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def decode(data: bytes | bytearray | memoryview, offset: int = 0) -> tuple[int, int] | None:
    """(value, offset after it), or None when `data` ends inside the varint."""
    value = shift = 0
    for index in range(offset, min(len(data), offset + VARINT_BYTES_MAX)):
        byte = data[index]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if byte == 0 and index > offset:
                raise ProtocolViolation("non-minimal varint")
            return value, index + 1
        shift += 7
    if len(data) - offset >= VARINT_BYTES_MAX:
        raise ProtocolViolation(f"varint longer than {VARINT_BYTES_MAX} bytes")
    return None


def prefixed(payload: bytes) -> bytes:
    """`payload` behind its varint length."""
    return encode(len(payload)) + payload


class LengthPrefixedReader:
    """Splits a byte stream into varint-length-prefixed messages, each at most `size_max`.

    Push bytes with `feed`; pull whole messages with `next_message` until it returns
    None. A declared length above the bound is refused before anything is buffered.
    """

    def __init__(self, size_max: int) -> None:
        self._buffer = bytearray()
        self._size_max = size_max

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def next_message(self) -> bytes | None:
        head = decode(self._buffer)
        if head is None:
            return None
        length, start = head
        if length > self._size_max:
            raise ProtocolViolation(f"message of {length} bytes exceeds {self._size_max}")
        if len(self._buffer) - start < length:
            return None
        message = bytes(self._buffer[start : start + length])
        del self._buffer[: start + length]
        return message

    @property
    def buffered(self) -> int:
        return len(self._buffer)
