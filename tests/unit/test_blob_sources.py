"""Chunk roots, the chunk-at-any-offset writer and the ordered blob sources."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyrsia.artifacts.blobstore import BlobStore
from pyrsia.artifacts.sources import Sources, Wanted
from pyrsia.errors import BlobUnknown, DigestMismatch, UpstreamUnavailable
from pyrsia.formats.digest import Digest
from pyrsia.translog import merkle
from pyrsia.translog.chunks import CHUNK_BYTES, ChunkHasher, chunk_count, chunk_hashes, chunk_root
from pyrsia.upstream.sink import OpenSink

BLOB = random.Random(7).randbytes(2 * CHUNK_BYTES + 12345)
DIGEST = Digest.of(BLOB)
HASHES = chunk_hashes(BLOB)
ROOT = chunk_root(HASHES)


@given(
    st.binary(max_size=5000), st.integers(min_value=1, max_value=700), st.integers(min_value=1, max_value=64)
)
def test_chunk_hasher_matches_slicing_whatever_the_pieces(data: bytes, step: int, chunk: int) -> None:
    hasher = ChunkHasher(chunk)
    for start in range(0, len(data), step):
        hasher.update(data[start : start + step])
    assert hasher.finish() == chunk_hashes(data, chunk)
    assert len(hasher.hashes) == chunk_count(len(data), chunk)


def test_chunk_root_is_rfc6962_over_chunk_digests() -> None:
    assert len(HASHES) == 3
    assert (
        merkle.node_hash(
            merkle.node_hash(merkle.leaf_hash(HASHES[0]), merkle.leaf_hash(HASHES[1])),
            merkle.leaf_hash(HASHES[2]),
        )
        == ROOT
    )
    assert chunk_root(chunk_hashes(b"")) == merkle.EMPTY_ROOT


def _chunks(data: bytes) -> list[bytes]:
    return [data[i : i + CHUNK_BYTES] for i in range(0, len(data), CHUNK_BYTES)]


def test_chunks_in_any_order_assemble_a_verified_blob(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    writer = store.writer(DIGEST, "peers", size=len(BLOB), chunk_root=ROOT)
    writer.expect_chunks(HASHES)
    for index in (2, 0, 1):
        writer.write_chunk(index, _chunks(BLOB)[index])
    assert writer.missing_chunks() == []
    stored = writer.commit()
    assert stored.path.read_bytes() == BLOB and stored.chunk_root == ROOT and stored.size == len(BLOB)
    assert store.stored(DIGEST) == stored


def test_a_bad_chunk_is_refused_and_names_its_index(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    writer = store.writer(DIGEST, "peer 12D3KooWbad", size=len(BLOB), chunk_root=ROOT)
    writer.expect_chunks(HASHES)
    with pytest.raises(DigestMismatch, match=r"peer 12D3KooWbad.*chunk 1"):
        writer.write_chunk(1, b"x" * CHUNK_BYTES)
    with pytest.raises(DigestMismatch):
        writer.write_chunk(2, _chunks(BLOB)[2] + b"longer")
    with pytest.raises(DigestMismatch):
        writer.write_chunk(3, b"")
    assert writer.missing_chunks() == [0, 1, 2]
    with pytest.raises(DigestMismatch, match="missing"):
        writer.commit()
    assert store.size(DIGEST) is None and list(store.tmp_dir.iterdir()) == []


def test_a_chunk_list_that_disagrees_with_the_root_is_refused(tmp_path: Path) -> None:
    writer = BlobStore(tmp_path).writer(DIGEST, "peer", size=len(BLOB), chunk_root=ROOT)
    with pytest.raises(DigestMismatch):
        writer.expect_chunks([*HASHES[:2], hashlib.sha256(b"other").digest()])
    with pytest.raises(DigestMismatch):
        writer.expect_chunks(HASHES[:2])
    writer.abort()


def test_streamed_bytes_past_the_declared_size_are_refused_at_once(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    writer = store.writer(Digest.of(b"88"), "upstream", size=2)
    writer.write(b"88")
    with pytest.raises(DigestMismatch, match="more than 2 bytes"):
        writer.write(b"!")
    writer.abort()
    short = store.writer(DIGEST, "upstream", size=len(BLOB))
    short.write(BLOB[:10])
    with pytest.raises(DigestMismatch):
        short.commit()
    assert store.size(DIGEST) is None


class Scripted:
    def __init__(self, label: str, data: bytes | None, error: Exception | None = None) -> None:
        self.label, self.data, self.error, self.calls = label, data, error, 0

    def origin(self, wanted: Wanted) -> str:
        return self.label

    def fetch(self, wanted: Wanted, open_sink: OpenSink) -> None:
        self.calls += 1
        if self.error is not None:
            raise self.error
        sink = open_sink()
        assert self.data is not None
        sink.write(self.data)
        sink.commit()


def test_sources_are_asked_in_order_until_one_delivers_verified_bytes(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    down = Scripted("peer a", None, UpstreamUnavailable("gone"))
    liar = Scripted("peer b", b"not the blob")
    good = Scripted("upstream", BLOB)
    never = Scripted("spare", BLOB)
    sources = Sources(store, [down, liar, good, never])
    stored = sources.obtain(Wanted(digest=DIGEST, name="library/x", size=len(BLOB), chunk_root=ROOT))
    assert stored.chunk_root == ROOT and stored.path.read_bytes() == BLOB
    assert (down.calls, liar.calls, good.calls, never.calls) == (1, 1, 1, 0)
    # Held now: no source is asked again.
    assert sources.obtain(Wanted(digest=DIGEST, name="library/x")) == stored and good.calls == 1


def test_when_every_source_fails_the_last_error_is_raised_and_nothing_is_stored(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    sources = Sources(store, [Scripted("a", b"wrong"), Scripted("b", None, UpstreamUnavailable("down"))])
    with pytest.raises(UpstreamUnavailable):
        sources.obtain(Wanted(digest=DIGEST, name="x"))
    assert store.size(DIGEST) is None and list(store.tmp_dir.iterdir()) == []
    with pytest.raises(BlobUnknown):
        Sources(store, []).obtain(Wanted(digest=DIGEST, name="x"))
