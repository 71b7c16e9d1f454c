"""Chunk hashes and chunk roots: 1 MiB pieces, SHA-256 each, RFC 6962 root over them."""

from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st

from pyrsia.translog import merkle
from pyrsia.translog.chunks import CHUNK_BYTES, ChunkHasher, chunk_hashes, chunk_root


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def test_the_empty_blob_has_no_chunks_and_the_empty_tree_root() -> None:
    assert chunk_hashes(b"") == [] and ChunkHasher().finish() == []
    assert chunk_root([]) == merkle.EMPTY_ROOT == sha(b"") == ChunkHasher().root()


def test_chunk_boundaries_at_one_mib() -> None:
    assert CHUNK_BYTES == 1_048_576
    one = b"a" * CHUNK_BYTES
    assert chunk_hashes(one) == [sha(one)]
    assert chunk_hashes(one + b"b") == [sha(one), sha(b"b")]
    assert chunk_hashes(b"x") == [sha(b"x")]
    # one chunk: the leaf hash of its SHA-256 (RFC 6962 §2.1), not the blob's digest
    assert chunk_root([sha(b"x")]) == sha(b"\x00" + sha(b"x")) != sha(b"x")


def test_root_of_three_chunks_is_rfc_6962_by_hand() -> None:
    data = b"p" * CHUNK_BYTES + b"q" * CHUNK_BYTES + b"r"
    h = chunk_hashes(data)
    leaf = [sha(b"\x00" + x) for x in h]
    expected = sha(b"\x01" + sha(b"\x01" + leaf[0] + leaf[1]) + leaf[2])
    assert len(h) == 3 and chunk_root(h) == expected
    hasher = ChunkHasher()
    hasher.update(data[:10])
    hasher.update(data[10 : CHUNK_BYTES + 5])
    hasher.update(data[CHUNK_BYTES + 5 :])
    assert hasher.finish() == h and hasher.root() == expected


@given(st.binary(max_size=200), st.lists(st.integers(0, 200), max_size=8), st.integers(1, 17))
def test_any_split_of_the_input_gives_the_same_hashes(data: bytes, cuts: list[int], chunk: int) -> None:
    hasher = ChunkHasher(chunk)
    points = sorted({min(c, len(data)) for c in cuts})
    for lo, hi in zip([0, *points], [*points, len(data)], strict=True):
        hasher.update(data[lo:hi])
    expected = chunk_hashes(data, chunk)
    assert hasher.finish() == expected
    assert hasher.root() == merkle.Tree(expected).root()
    assert len(expected) == -(-len(data) // chunk)
