"""A peer download's progress: readers get the verified, contiguous prefix and nothing else."""

from __future__ import annotations

import random
import threading
from pathlib import Path

import pytest

from pyrsia.artifacts.blobstore import BlobProgress, BlobStore, ResumableBlobWriter
from pyrsia.errors import DigestMismatch, ExchangeFailed
from pyrsia.formats.digest import Digest
from pyrsia.translog.chunks import CHUNK_BYTES, chunk_hashes, chunk_root

BLOB = random.Random(7).randbytes(4 * CHUNK_BYTES + 1234)  # chunks 0..4, the last short
DIGEST = Digest.of(BLOB)
HASHES = chunk_hashes(BLOB)
ROOT = chunk_root(HASHES)


def _chunk(index: int) -> bytes:
    return BLOB[index * CHUNK_BYTES : (index + 1) * CHUNK_BYTES]


def _writer(store: BlobStore) -> ResumableBlobWriter:
    writer = store.resumable_writer(DIGEST, "peers", size=len(BLOB), chunk_root=ROOT)
    writer.expect_chunks(HASHES)
    return writer


def _progress(store: BlobStore) -> BlobProgress:
    progress = store.download_progress(DIGEST)
    assert progress is not None
    return progress


def test_out_of_order_chunks_release_only_the_contiguous_prefix(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    writer = _writer(store)
    progress = _progress(store)
    writer.write_chunk(2, _chunk(2))
    writer.write_chunk(1, _chunk(1))
    assert progress.readable_bytes() == 0  # chunk 0 is missing: nothing is released
    writer.write_chunk(0, _chunk(0))
    assert progress.readable_bytes() == 3 * CHUNK_BYTES
    writer.write_chunk(4, _chunk(4))
    assert progress.readable_bytes() == 3 * CHUNK_BYTES
    writer.write_chunk(3, _chunk(3))
    # Every chunk verified, but the last is held until the whole blob verified.
    assert progress.readable_bytes() == 4 * CHUNK_BYTES
    stored = writer.commit()
    assert progress.readable_bytes() == len(BLOB) and progress.committed == stored.path
    assert store.download_progress(DIGEST) is None


def test_a_refused_chunk_is_not_released(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    writer = _writer(store)
    with pytest.raises(DigestMismatch):
        writer.write_chunk(0, b"\0" * CHUNK_BYTES)
    assert _progress(store).readable_bytes() == 0
    writer.abort()


def test_a_reader_streams_while_chunks_arrive_and_ends_with_the_blob(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    writer = _writer(store)
    progress = _progress(store)
    received: list[bytes] = []
    first_piece = threading.Event()

    def read() -> None:
        for piece in progress.pieces(stall_timeout_s=30):
            assert len(piece) <= CHUNK_BYTES
            received.append(piece)
            first_piece.set()

    reader = threading.Thread(target=read)
    reader.start()
    writer.write_chunk(1, _chunk(1))
    writer.write_chunk(0, _chunk(0))
    assert first_piece.wait(30)
    assert b"".join(received) == BLOB[: len(b"".join(received))]  # the reader is not done yet
    for index in (4, 3, 2):
        writer.write_chunk(index, _chunk(index))
    writer.commit()
    reader.join(30)
    assert b"".join(received) == BLOB


def test_a_failed_download_ends_the_stream_after_the_verified_prefix(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    writer = _writer(store)
    progress = _progress(store)
    writer.write_chunk(0, _chunk(0))
    writer.write_chunk(2, _chunk(2))
    pieces = progress.pieces(stall_timeout_s=30)
    assert next(pieces) == _chunk(0)
    writer.suspend()  # every provider left
    with pytest.raises(ExchangeFailed):
        next(pieces)
    assert store.download_progress(DIGEST) is None


def test_a_stalled_download_ends_the_stream(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    writer = _writer(store)
    pieces = _progress(store).pieces(stall_timeout_s=0.05)
    with pytest.raises(ExchangeFailed, match="stalled"):
        next(pieces)
    writer.abort()


def test_a_reader_that_starts_after_the_commit_reads_the_stored_blob(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    writer = _writer(store)
    progress = _progress(store)
    for index in range(5):
        writer.write_chunk(index, _chunk(index))
    writer.commit()
    assert b"".join(progress.pieces()) == BLOB


def test_resumed_chunks_are_readable_at_once(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    first = _writer(store)
    first.write_chunk(0, _chunk(0))
    first.write_chunk(1, _chunk(1))
    first.suspend()
    second = _writer(store)
    assert _progress(store).readable_bytes() == 2 * CHUNK_BYTES
    second.abort()
