"""kad-dht `dht.proto` messages: bytes as js-libp2p writes them, round trips, bounds, hostile bytes."""

from __future__ import annotations

import contextlib
import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyrsia.errors import ProtocolViolation
from pyrsia.p2p.behaviours.kad import messages as dm
from pyrsia.p2p.identity import Identity
from pyrsia.p2p.wire import protobuf, varint

# From a real js-libp2p 3.2 session (kad-dht 16.4.5, protocol /pyrsia/kad/1.0.0).
JS_PEER_A = "12D3KooWPkxWkmMjtF7XLJ1b88ShwUZ7RSkvAeg42mSshUVNerm8"
JS_DIGEST = "sha256:e56bcd838446810b49e2d360b89a3dc02a289cedfb26df25459b6bd89d591481"
JS_GET_PROVIDERS = bytes.fromhex(
    "080312221220e56bcd838446810b49e2d360b89a3dc02a289cedfb26df25459b6bd89d591481"
)
JS_FIND_NODE_KEY = bytes.fromhex(
    "002408011220cf2420b547afce2b534c7a679029e65d64e305349b8edfbe03b6bdd2b605763b"
)
# /ip4/127.0.0.1/tcp/37137 as multiaddr bytes
JS_ADDR = bytes.fromhex("047f000001069111")


def test_provider_key_is_the_sha256_multihash_js_sends() -> None:
    key = dm.provider_key(JS_DIGEST)
    assert key == JS_GET_PROVIDERS[4:]
    assert dm.digest_of_provider_key(key) == JS_DIGEST


@pytest.mark.parametrize(
    "digest",
    ["sha512:" + "0" * 128, "sha256:" + "0" * 63, "sha256:" + "A" * 64, "sha256:" + "g" * 64, "e56b"],
)
def test_provider_key_refuses_other_digests(digest: str) -> None:
    with pytest.raises(ValueError):
        dm.provider_key(digest)


def test_js_get_providers_request_decodes_and_encodes_byte_for_byte() -> None:
    message = dm.decode(JS_GET_PROVIDERS)
    assert message == dm.Message(type=dm.MessageType.GET_PROVIDERS, key=dm.provider_key(JS_DIGEST))
    assert dm.encode(message) == JS_GET_PROVIDERS


def test_js_find_node_reply_decodes_and_encodes_byte_for_byte() -> None:
    # "kad msg: type=FIND_NODE(4) closer=[12D3KooWPkxWkmMj.. addrs=['/ip4/127.0.0.1/tcp/37137']]"
    peer_bytes = dm.peer_id_to_bytes(JS_PEER_A)
    framed = bytes.fromhex("36080442320a26") + peer_bytes + b"\x12\x08" + JS_ADDR
    reader = dm.reader()
    reader.feed(framed)
    body = reader.next_message()
    assert body is not None
    message = dm.decode(body)
    assert message.type is dm.MessageType.FIND_NODE
    assert message.closer_peers == (dm.Peer(id=peer_bytes, addrs=(JS_ADDR,)),)
    assert dm.encode_framed(message) == framed


def test_js_find_node_request_key_is_the_peer_id_multihash() -> None:
    request = dm.decode(bytes.fromhex("08041226") + JS_FIND_NODE_KEY)
    assert request.key == JS_FIND_NODE_KEY
    assert dm.peer_id_from_bytes(request.key).startswith("12D3KooW")


def test_empty_reply_is_type_only() -> None:
    # js answers FIND_NODE for an unknown key with "020804": length 2, type FIND_NODE.
    assert dm.encode_framed(dm.Message(type=dm.MessageType.FIND_NODE)) == bytes.fromhex("020804")


def test_peer_id_bytes_round_trip() -> None:
    peer_id = Identity.from_seed(b"\1" * 32).peer_id
    raw = dm.peer_id_to_bytes(peer_id)
    assert raw[:2] == b"\x00\x24"
    assert dm.peer_id_from_bytes(raw) == peer_id
    hashed = b"\x12\x20" + hashlib.sha256(b"rsa key").digest()
    assert dm.peer_id_to_bytes(dm.peer_id_from_bytes(hashed)) == hashed


@pytest.mark.parametrize(
    "raw",
    [b"", b"\x00", b"\x00\x05abc", b"\x12\x10" + b"x" * 16, b"\x13\x20" + b"x" * 32, b"\x00\x40" + b"x" * 64],
)
def test_bad_peer_ids_are_violations(raw: bytes) -> None:
    with pytest.raises(ProtocolViolation):
        dm.peer_id_from_bytes(raw)


def test_bad_base58_peer_id_is_a_violation() -> None:
    with pytest.raises(ProtocolViolation):
        dm.peer_id_to_bytes("12D3KooW0OIl")


def test_unknown_fields_are_skipped_and_record_decodes() -> None:
    record = protobuf.encode([(1, b"/pk/x"), (2, b"value"), (5, b"2024-01-01"), (7, b"future")])
    body = protobuf.encode([(1, 1), (10, 3), (2, b"/pk/x"), (3, record), (99, b"ignored")])
    message = dm.decode(body)
    assert message.type is dm.MessageType.GET_VALUE
    assert message.record == dm.Record(key=b"/pk/x", value=b"value", time_received="2024-01-01")
    assert dm.decode(dm.encode(message)) == message


def test_unknown_connection_type_reads_as_not_connected() -> None:
    peer = protobuf.encode([(1, dm.peer_id_to_bytes(JS_PEER_A)), (3, 9)])
    message = dm.decode(protobuf.encode([(1, 4), (8, peer)]))
    assert message.closer_peers[0].connection is dm.ConnectionType.NOT_CONNECTED


def _peer_field(addrs: int = 1, addr_bytes: int = 8) -> bytes:
    fields: list[protobuf.Field] = [(1, dm.peer_id_to_bytes(JS_PEER_A))]
    fields += [(2, b"\x04" * addr_bytes)] * addrs
    return protobuf.encode(fields)


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (protobuf.encode([(1, 6)]), "unknown type"),
        (protobuf.encode([(1, b"x")]), "type as bytes"),
        (protobuf.encode([(1, 4), (2, 5)]), "key as varint"),
        (protobuf.encode([(1, 4), (2, b"k" * (dm.KEY_BYTES_MAX + 1))]), "long key"),
        (protobuf.encode([(1, 4)] + [(8, _peer_field())] * (dm.PEERS_PER_FIELD_MAX + 1)), "many peers"),
        (protobuf.encode([(1, 4), (9, _peer_field(addrs=dm.ADDRS_PER_PEER_MAX + 1))]), "many addrs"),
        (protobuf.encode([(1, 4), (8, _peer_field(addr_bytes=dm.ADDR_BYTES_MAX + 1))]), "long addr"),
        (protobuf.encode([(1, 4), (8, protobuf.encode([(2, b"\x04")]))]), "peer without id"),
        (protobuf.encode([(1, 1), (3, protobuf.encode([(5, b"\xff\xfe")]))]), "bad timeReceived"),
        (b"\x08", "truncated"),
        (b"\x0b\x00", "group wire type"),
        (protobuf.encode([(1, 4), (2, b"k" * (dm.MESSAGE_BYTES_MAX))]), "oversized"),
    ],
)
def test_hostile_messages_are_violations(body: bytes, why: str) -> None:
    with pytest.raises(ProtocolViolation):
        dm.decode(body)


def test_reader_refuses_oversized_frame_before_buffering() -> None:
    reader = dm.reader()
    reader.feed(varint.encode(dm.MESSAGE_BYTES_MAX + 1))
    with pytest.raises(ProtocolViolation):
        reader.next_message()


_peer_ids = st.one_of(
    st.binary(min_size=32, max_size=32).map(lambda b: b"\x12\x20" + b),
    st.binary(min_size=1, max_size=42).map(lambda b: bytes([0, len(b)]) + b),
)
_peers = st.builds(
    dm.Peer,
    id=_peer_ids,
    addrs=st.lists(st.binary(max_size=64), max_size=4).map(tuple),
    connection=st.sampled_from(dm.ConnectionType),
)
_records = st.builds(
    dm.Record,
    key=st.binary(max_size=64),
    value=st.binary(max_size=256),
    time_received=st.text(max_size=30),
)
_messages = st.builds(
    dm.Message,
    type=st.sampled_from(dm.MessageType),
    key=st.binary(max_size=dm.KEY_BYTES_MAX),
    record=st.none() | _records,
    closer_peers=st.lists(_peers, max_size=6).map(tuple),
    provider_peers=st.lists(_peers, max_size=6).map(tuple),
)


@given(_messages)
def test_round_trip(message: dm.Message) -> None:
    assert dm.decode(dm.encode(message)) == message


@settings(max_examples=500)
@given(st.binary(max_size=400))
def test_random_bytes_decode_or_raise_only_protocol_violation(data: bytes) -> None:
    try:
        message = dm.decode(data)
    except ProtocolViolation:
        return
    assert dm.decode(dm.encode(message)) == message


@settings(max_examples=300)
@given(_messages, st.data())
def test_mutated_messages_decode_or_raise_only_protocol_violation(
    message: dm.Message, data: st.DataObject
) -> None:
    raw = bytearray(dm.encode(message))
    if raw:
        index = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
        raw[index] = data.draw(st.integers(min_value=0, max_value=255))
    cut = data.draw(st.integers(min_value=0, max_value=len(raw)))
    with contextlib.suppress(ProtocolViolation):
        dm.decode(bytes(raw[:cut]))
