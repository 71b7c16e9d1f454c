"""Varints and the protobuf wire format: round trips, bounds and hostile bytes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyrsia.errors import ProtocolViolation
from pyrsia.p2p.wire import protobuf, varint


@given(st.integers(min_value=0, max_value=varint.VALUE_MAX))
def test_varint_round_trip(value: int) -> None:
    encoded = varint.encode(value)
    assert varint.decode(encoded + b"\xff") == (value, len(encoded))
    assert varint.decode(encoded[:-1]) is None


def test_varint_known_bytes() -> None:
    # multiformats spec examples
    assert varint.encode(1) == b"\x01"
    assert varint.encode(127) == b"\x7f"
    assert varint.encode(128) == b"\x80\x01"
    assert varint.encode(300) == b"\xac\x02"
    assert varint.encode(16384) == b"\x80\x80\x01"


@pytest.mark.parametrize("raw", [b"\x80\x00", b"\xff" * 9, b"\x81\x80\x80\x80\x80\x80\x80\x80\x80\x01"])
def test_varint_refuses_non_minimal_and_overlong(raw: bytes) -> None:
    with pytest.raises(ProtocolViolation):
        varint.decode(raw)


def test_varint_refuses_out_of_range() -> None:
    with pytest.raises(ValueError):
        varint.encode(-1)
    with pytest.raises(ValueError):
        varint.encode(2**63)


@given(st.lists(st.binary(max_size=300), max_size=8), st.integers(min_value=1, max_value=64))
def test_length_prefixed_reader_any_split(messages: list[bytes], step: int) -> None:
    stream = b"".join(varint.prefixed(m) for m in messages)
    reader = varint.LengthPrefixedReader(size_max=300)
    out: list[bytes] = []
    for start in range(0, len(stream), step):
        reader.feed(stream[start : start + step])
        while (message := reader.next_message()) is not None:
            out.append(message)
    assert out == messages
    assert reader.buffered == 0


def test_length_prefixed_reader_refuses_oversized_before_buffering() -> None:
    reader = varint.LengthPrefixedReader(size_max=1024)
    reader.feed(varint.encode(1025))
    with pytest.raises(ProtocolViolation):
        reader.next_message()


fields = st.lists(
    st.tuples(
        st.integers(min_value=1, max_value=protobuf.FIELD_NUMBER_MAX),
        st.one_of(st.integers(min_value=0, max_value=varint.VALUE_MAX), st.binary(max_size=64)),
    ),
    max_size=10,
)


@given(fields)
def test_protobuf_round_trip(values: list[tuple[int, int | bytes]]) -> None:
    assert protobuf.decode(protobuf.encode(values)) == values


def test_protobuf_libp2p_public_key() -> None:
    # PublicKey{Type: Ed25519 (1), Data: 32 bytes}: the prefix every Ed25519 peer id embeds
    key = bytes(range(32))
    encoded = protobuf.encode([(1, 1), (2, key)])
    assert encoded == b"\x08\x01\x12\x20" + key
    decoded = protobuf.decode(encoded)
    assert protobuf.first(decoded, 1, int) == 1
    assert protobuf.first(decoded, 2, bytes) == key
    assert protobuf.first(decoded, 3, bytes) is None


def test_protobuf_skips_fixed_width_fields() -> None:
    data = b"\x09" + bytes(8) + b"\x15" + bytes(4) + protobuf.field_bytes(3, b"x")
    assert protobuf.decode(data) == [(3, b"x")]


@pytest.mark.parametrize(
    "raw",
    [b"\x0a\x05ab", b"\x08", b"\x0b", b"\x00\x01", b"\x09\x00", b"\x0a\xff\xff\xff\xff\x0f"],
)
def test_protobuf_refuses_malformed(raw: bytes) -> None:
    with pytest.raises(ProtocolViolation):
        protobuf.decode(raw)


def test_protobuf_wrong_wire_type_is_a_violation() -> None:
    decoded = protobuf.decode(protobuf.encode([(1, b"x")]))
    with pytest.raises(ProtocolViolation):
        protobuf.first(decoded, 1, int)
    with pytest.raises(ProtocolViolation):
        protobuf.every(protobuf.decode(protobuf.encode([(2, 5)])), 2)


@given(st.binary(max_size=200))
def test_protobuf_hostile_bytes_decode_or_are_violations(raw: bytes) -> None:
    try:
        decoded = protobuf.decode(raw)
    except ProtocolViolation:
        return
    assert all(1 <= n <= protobuf.FIELD_NUMBER_MAX for n, _ in decoded)
    assert sum(len(v) for _, v in decoded if isinstance(v, bytes)) <= len(raw)
