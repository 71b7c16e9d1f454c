"""Blob store: only verified bytes become visible; failures leave nothing behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyrsia.artifacts.blobstore import BlobStore
from pyrsia.errors import DigestMismatch
from pyrsia.formats.digest import Digest


def test_put_is_content_addressed(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    digest = Digest.of(b"hello")
    path = store.put(digest, b"hello", source="test").path
    assert path == tmp_path / "sha256" / digest.hex[:2] / digest.hex
    assert store.read(digest) == b"hello" and store.size(digest) == 5
    assert store.stats() == (1, 5)


def test_sha512_and_empty_blobs(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    for digest, data in ((Digest.of(b"", "sha256"), b""), (Digest.of(b"x", "sha512"), b"x")):
        store.put(digest, data, source="test")
        assert store.read(digest) == data


def test_mismatch_publishes_nothing(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    digest = Digest.of(b"expected")
    with pytest.raises(DigestMismatch) as info:
        store.put(digest, b"something else", source="evil upstream")
    assert info.value.expected == str(digest)
    assert info.value.calculated == str(Digest.of(b"something else"))
    assert "evil upstream" in info.value.message
    assert store.size(digest) is None
    assert list(store.tmp_dir.iterdir()) == []


def test_interrupted_write_leaves_only_a_temp_file_that_is_cleaned(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    digest = Digest.of(b"abc")
    writer = store.writer(digest, source="test")
    writer.write(b"ab")  # the process "dies" here: no commit, no abort
    assert store.size(digest) is None
    assert len(list(store.tmp_dir.iterdir())) == 1
    assert store.remove_temp_files() == 1
    assert list(store.tmp_dir.iterdir()) == []
    writer.abort()  # releases the file handle the "dead" writer held


def test_writers_at_once_each_write_a_temp_file_of_their_own(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    datas = [bytes([i]) * 100 for i in range(8)]
    writers = [store.writer(Digest.of(data), source="test") for data in datas]
    temps = {p.name for p in store.tmp_dir.iterdir()}
    assert len(temps) == len(writers) and all(name.endswith(".part") for name in temps)
    for writer, data in zip(writers, datas, strict=True):
        writer.write(data)
        writer.commit()
    assert [store.read(Digest.of(data)) for data in datas] == datas
    assert list(store.tmp_dir.iterdir()) == []


def test_exception_inside_writer_aborts(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    with pytest.raises(RuntimeError), store.writer(Digest.of(b"abc"), source="test") as writer:
        writer.write(b"a")
        raise RuntimeError("connection dropped")
    assert list(store.tmp_dir.iterdir()) == []


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_checked_blob_changed_on_disk_is_removed(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    data = b"layer bytes " * 1000
    digest = Digest.of(data)
    path = store.put(digest, data, source="test").path
    assert store.checked(digest) == len(data)
    _flip_a_byte(path)
    assert store.checked(digest) is None
    assert not path.exists()


def test_checked_rehashes_a_blob_it_has_not_verified(tmp_path: Path) -> None:
    """A store opened anew (a restart) trusts nothing it did not hash itself."""
    data = b"config"
    digest = Digest.of(data)
    path = BlobStore(tmp_path).put(digest, data, source="test").path
    _flip_a_byte(path)
    reopened = BlobStore(tmp_path)
    assert reopened.size(digest) == len(data)  # the file is there ...
    assert reopened.checked(digest) is None  # ... but not served


def test_read_checked_refuses_changed_manifest(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    data = b'{"schemaVersion": 2}'
    digest = Digest.of(data)
    path = store.put(digest, data, source="test").path
    assert store.read_checked(digest) == data
    _flip_a_byte(path)
    assert store.read_checked(digest) is None and not path.exists()
