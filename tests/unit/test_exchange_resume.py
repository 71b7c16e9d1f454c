"""The resumable writer: verified chunks survive a stop, are re-checked, and never trusted blindly."""

from __future__ import annotations

import functools
import os
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pyrsia.artifacts import blobstore
from pyrsia.artifacts.blobstore import AHEAD_CHUNKS_MAX, BlobStore, ResumableBlobWriter
from pyrsia.errors import DigestMismatch
from pyrsia.formats.digest import Digest
from pyrsia.translog.chunks import CHUNK_BYTES, chunk_hashes, chunk_root

BLOB = random.Random(3).randbytes(40 * CHUNK_BYTES + 777)
DIGEST = Digest.of(BLOB)
HASHES = chunk_hashes(BLOB)
ROOT = chunk_root(HASHES)


def _chunk(index: int) -> bytes:
    return BLOB[index * CHUNK_BYTES : (index + 1) * CHUNK_BYTES]


def _writer(store: BlobStore) -> ResumableBlobWriter:
    writer = store.resumable_writer(DIGEST, "peers", size=len(BLOB), chunk_root=ROOT)
    writer.expect_chunks(HASHES)
    return writer


def test_suspended_chunks_are_resumed_and_the_rest_completes(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    first = _writer(store)
    for index in range(0, 41, 2):
        first.write_chunk(index, _chunk(index))
    first.suspend()
    assert store.remove_temp_files() == 0  # a start does not throw resumable work away
    second = _writer(store)
    assert second.resumable and second.resumed_chunks == 21
    assert second.missing_chunks() == list(range(1, 41, 2))
    for index in second.missing_chunks():
        second.write_chunk(index, _chunk(index))
    stored = second.commit()
    assert stored.digest == DIGEST and store.read(DIGEST) == BLOB
    assert list((tmp_path / "blobs" / "tmp").iterdir()) == []


def test_progress_is_saved_as_chunks_arrive_so_a_kill_loses_little(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ResumableBlobWriter, "PROGRESS_EVERY_CHUNKS", 8)
    store = BlobStore(tmp_path / "blobs")
    first = _writer(store)
    now = [0.0]
    first._clock, first._saved_at = (lambda: now[0]), 0.0
    for index in range(20):
        first.write_chunk(index, _chunk(index))
    # no suspend: the process died; the lock goes with its file descriptor
    first._file.close()
    second = _writer(store)
    assert second.resumed_chunks == 16  # the list is saved every few chunks
    second.abort()


def test_progress_is_saved_after_a_while_even_with_few_chunks(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    first = _writer(store)
    now = [0.0]
    first._clock, first._saved_at = (lambda: now[0]), 0.0
    first.write_chunk(0, _chunk(0))
    first.write_chunk(1, _chunk(1))
    now[0] = ResumableBlobWriter.PROGRESS_EVERY_S
    first.write_chunk(2, _chunk(2))
    first.write_chunk(3, _chunk(3))
    first._file.close()
    second = _writer(store)
    assert second.verified_chunks() == frozenset({0, 1, 2})
    second.abort()


def test_chunks_changed_on_disk_are_not_trusted(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    first = _writer(store)
    for index in range(4):
        first.write_chunk(index, _chunk(index))
    first.suspend()
    with first.partial_path.open("r+b") as file:
        file.seek(CHUNK_BYTES + 10)
        file.write(b"\xff\xff")
    second = _writer(store)
    assert second.verified_chunks() == frozenset({0, 2, 3})
    second.abort()


def test_progress_for_another_root_or_garbage_is_ignored(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    first = _writer(store)
    first.write_chunk(0, _chunk(0))
    first.suspend()
    first.progress_path.write_bytes(b"garbage")
    second = _writer(store)
    assert second.resumed_chunks == 0
    second.abort()


def test_a_second_writer_for_the_same_blob_uses_a_plain_temp_file(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    holder = _writer(store)
    other = _writer(store)
    assert holder.resumable and not other.resumable
    for index in range(41):
        other.write_chunk(index, _chunk(index))
    assert other.commit().digest == DIGEST
    holder.abort()
    assert not holder.partial_path.exists() and not holder.progress_path.exists()


def test_a_whole_that_does_not_verify_is_not_kept(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    writer = _writer(store)
    with pytest.raises(DigestMismatch):
        writer.commit()  # chunks missing
    assert not writer.partial_path.exists()


def test_stale_partials_are_removed_by_age(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    writer = _writer(store)
    writer.write_chunk(0, _chunk(0))
    writer.suspend()
    mtime = writer.partial_path.stat().st_mtime
    assert store.remove_stale_partials(3600, mtime + 10) == 0
    assert store.remove_stale_partials(3600, mtime + 7200) == 2


def test_chunks_from_several_threads_in_any_order_commit_to_the_digest(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    writer = _writer(store)
    order = list(range(41))
    random.Random(5).shuffle(order)
    with ThreadPoolExecutor(3) as pool:
        list(pool.map(lambda index: writer.write_chunk(index, _chunk(index)), order))
    stored = writer.commit()
    assert stored.digest == DIGEST and stored.chunk_root == ROOT and stored.size == len(BLOB)
    assert store.read(DIGEST) == BLOB


def test_a_chunk_changed_on_disk_before_the_prefix_reaches_it_fails_the_commit(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    writer = _writer(store)
    for index in range(1, 41):  # ahead of the prefix: the nearest held, the rest read back later
        writer.write_chunk(index, _chunk(index))
    os.pwrite(writer._file.fileno(), b"X", (AHEAD_CHUNKS_MAX + 5) * CHUNK_BYTES)
    writer.write_chunk(0, _chunk(0))
    with pytest.raises(DigestMismatch):
        writer.commit()
    assert store.read(DIGEST) is None


def test_chunks_held_ahead_of_the_prefix_are_released_once_it_takes_them(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    writer = _writer(store)
    released: list[int] = []
    for index in range(1, 41):
        writer.write_chunk(index, bytearray(_chunk(index)), functools.partial(released.append, index))
    # Those within AHEAD_CHUNKS_MAX of the prefix wait for it; the others were written and let go.
    assert sorted(released) == list(range(AHEAD_CHUNKS_MAX, 41))
    writer.write_chunk(0, _chunk(0), functools.partial(released.append, 0))
    assert sorted(released) == list(range(41))
    assert writer.commit().digest == DIGEST


def test_every_chunk_is_released_once_from_several_threads_and_on_abort(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    writer = _writer(store)
    released: list[int] = []
    order = list(range(1, 41))
    random.Random(7).shuffle(order)

    def write(index: int) -> None:
        writer.write_chunk(index, bytearray(_chunk(index)), functools.partial(released.append, index))

    with ThreadPoolExecutor(3) as pool:
        list(pool.map(write, order))
    with pytest.raises(DigestMismatch):
        writer.write_chunk(0, b"bad", functools.partial(released.append, 0))
    writer.abort()  # chunk 0 never came: the held ones are let go
    assert sorted(released) == list(range(41))


def test_writeback_is_started_every_few_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[int] = []
    monkeypatch.setattr(blobstore, "_start_writeback", started.append)
    store = BlobStore(tmp_path / "blobs")
    writer = _writer(store)
    for index in range(41):
        writer.write_chunk(index, _chunk(index))
    assert len(started) == 41 // blobstore.WRITEBACK_EVERY_CHUNKS
    assert set(started) == {writer._file.fileno()}
    assert writer.commit().digest == DIGEST


def test_the_writeback_hint_runs_on_a_real_file(tmp_path: Path) -> None:
    path = tmp_path / "f"
    with path.open("wb") as file:
        file.write(b"x" * 65536)
        blobstore._start_writeback(file.fileno())  # a hint: no error, nothing changed
    assert path.read_bytes() == b"x" * 65536
