"""The exchange codec: round trips, chunk frames in any pieces, bounded hostile input."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyrsia.errors import ProtocolViolation
from pyrsia.formats.digest import Digest
from pyrsia.p2p.behaviours.exchange import wire
from pyrsia.p2p.wire import varint
from pyrsia.translog import codec
from pyrsia.translog.chunks import CHUNK_BYTES

DIGEST = Digest.of(b"blob")
HASHES = tuple(hashlib.sha256(bytes([i])).digest() for i in range(3))


def _body(message: wire.Message) -> bytes:
    framed = wire.encode(message)
    head = varint.decode(framed)
    assert head is not None
    return framed[head[1] :]


@pytest.mark.parametrize(
    "message",
    [
        wire.GetChunkList(digest=DIGEST),
        wire.ChunkList(digest=DIGEST, size=2 * CHUNK_BYTES + 1, chunk_size=CHUNK_BYTES, hashes=HASHES),
        wire.ChunkList(digest=DIGEST, size=0, chunk_size=CHUNK_BYTES, hashes=(), http_port=7888),
        wire.GetChunks(digest=DIGEST, first=5, count=4),
        wire.Chunks(digest=DIGEST, first=0, count=1),
        wire.NotFound(digest=DIGEST),
        wire.Refused(reason="busy"),
    ],
)
def test_round_trip(message: wire.Message) -> None:
    assert wire.decode(_body(message)) == message


@pytest.mark.parametrize(
    "doc",
    [
        {"type": "get_chunk_list", "digest": "sha256:xyz"},
        {"type": "get_chunk_list"},
        {"type": "get_chunks", "digest": str(DIGEST), "first": -1, "count": 1},
        {"type": "get_chunks", "digest": str(DIGEST), "first": 0, "count": wire.REQUEST_CHUNKS_MAX + 1},
        {"type": "get_chunks", "digest": str(DIGEST), "first": 0, "count": 0},
        {"type": "chunk_list", "digest": str(DIGEST), "size": 10, "chunk_size": 4096, "hashes": [HASHES[0]]},
        {"type": "chunk_list", "digest": str(DIGEST), "size": 10, "chunk_size": CHUNK_BYTES, "hashes": []},
        {
            "type": "chunk_list",
            "digest": str(DIGEST),
            "size": 10,
            "chunk_size": CHUNK_BYTES,
            "hashes": [b"short"],
            "http_port": 0,
        },
        {
            "type": "chunk_list",
            "digest": str(DIGEST),
            "size": 10,
            "chunk_size": CHUNK_BYTES,
            "hashes": [HASHES[0]],
            "http_port": 70000,
        },
        {"type": "launch", "digest": str(DIGEST)},
        {"type": "refused", "reason": 7},
    ],
)
def test_malformed_messages_are_violations(doc: dict[str, object]) -> None:
    with pytest.raises(ProtocolViolation):
        wire.decode(codec.encode(doc))


def test_garbage_and_oversized_frames_are_violations() -> None:
    with pytest.raises(ProtocolViolation):
        wire.decode(b"\xc1\xc1")
    reader = wire.RequestReader()
    reader.receive_data(varint.encode(wire.MESSAGE_BYTES_MAX + 1))
    with pytest.raises(ProtocolViolation):
        reader.next_request()
    replies = wire.ReplyReader()
    replies.receive_data(varint.encode(wire.MESSAGE_BYTES_MAX + 1))
    with pytest.raises(ProtocolViolation):
        replies.next_event()


def test_requests_and_replies_are_not_confused() -> None:
    reader = wire.RequestReader()
    reader.receive_data(wire.encode(wire.NotFound(digest=DIGEST)))
    with pytest.raises(ProtocolViolation):
        reader.next_request()
    replies = wire.ReplyReader()
    replies.receive_data(wire.encode(wire.GetChunkList(digest=DIGEST)))
    with pytest.raises(ProtocolViolation):
        replies.next_event()


def test_pipelined_requests_come_out_in_order() -> None:
    reader = wire.RequestReader()
    stream = wire.encode(wire.GetChunkList(digest=DIGEST)) + wire.encode(
        wire.GetChunks(digest=DIGEST, first=2, count=3)
    )
    for i in range(0, len(stream), 3):
        reader.receive_data(stream[i : i + 3])
    assert reader.next_request() == wire.GetChunkList(digest=DIGEST)
    assert reader.next_request() == wire.GetChunks(digest=DIGEST, first=2, count=3)
    assert reader.next_request() is None


@given(
    st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=5),
    st.integers(min_value=1, max_value=97),
)
def test_chunk_frames_in_any_pieces(chunks: list[bytes], step: int) -> None:
    stream = wire.encode(wire.Chunks(digest=DIGEST, first=7, count=len(chunks)))
    for chunk in chunks:
        stream += wire.chunk_frame_head(len(chunk)) + chunk
    stream += wire.encode(wire.NotFound(digest=DIGEST))
    reader = wire.ReplyReader(chunk_bytes_max=300)
    events: list[object] = []
    for i in range(0, len(stream), step):
        reader.receive_data(stream[i : i + step])
        while (event := reader.next_event()) is not None:
            events.append(event)
    assert events[0] == wire.Chunks(digest=DIGEST, first=7, count=len(chunks))
    assert events[1:-1] == [wire.ChunkData(index=7 + i, data=c) for i, c in enumerate(chunks)]
    assert events[-1] == wire.NotFound(digest=DIGEST)
    assert not reader.in_chunks


def test_chunk_frame_above_the_bound_is_refused() -> None:
    reader = wire.ReplyReader(chunk_bytes_max=100)
    reader.receive_data(
        wire.encode(wire.Chunks(digest=DIGEST, first=0, count=1)) + wire.chunk_frame_head(101)
    )
    assert isinstance(reader.next_event(), wire.Chunks)
    with pytest.raises(ProtocolViolation):
        reader.next_event()
    empty = wire.ReplyReader()
    empty.receive_data(wire.encode(wire.Chunks(digest=DIGEST, first=0, count=1)) + wire.chunk_frame_head(0))
    assert isinstance(empty.next_event(), wire.Chunks)
    with pytest.raises(ProtocolViolation):
        empty.next_event()
