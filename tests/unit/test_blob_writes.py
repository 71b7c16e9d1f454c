"""`BlobStore.writes_in_progress`: every open writer is listed with its bytes so far, and
leaves the list when it commits, aborts, fails its check or is suspended."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyrsia.artifacts.blobstore import BlobStore, BlobWrite
from pyrsia.errors import DigestMismatch
from pyrsia.formats.digest import Digest
from pyrsia.translog.chunks import chunk_hashes, chunk_root

DATA = bytes(range(256)) * 40
DIGEST = Digest.of(DATA)


def test_an_open_writer_is_listed_with_its_bytes_until_it_commits(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    assert store.writes_in_progress() == []
    writer = store.opener(DIGEST, "upstream http://registry.test:5000", size=len(DATA))()
    writer.write(DATA[:1000])
    assert store.writes_in_progress() == [
        BlobWrite(
            digest=str(DIGEST), source="upstream http://registry.test:5000", written=1000, size=len(DATA)
        )
    ]
    writer.write(DATA[1000:])
    assert store.writes_in_progress()[0].written == len(DATA)
    writer.commit()
    assert store.writes_in_progress() == []


def test_aborted_and_refused_writers_leave_the_list(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    aborted = store.writer(DIGEST, "a")
    aborted.write(b"x")
    aborted.abort()
    refused = store.writer(DIGEST, "b")
    refused.write(b"not the data")
    with pytest.raises(DigestMismatch):
        refused.commit()
    with store.writer(None, "c") as by_path:  # a Maven file asked for by path
        assert [w.digest for w in store.writes_in_progress()] == [None]
        by_path.abort()
    assert store.writes_in_progress() == []


def test_a_suspended_peer_download_leaves_the_list(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    hashes = chunk_hashes(DATA)
    writer = store.resumable_writer(DIGEST, "peers", size=len(DATA), chunk_root=chunk_root(hashes))
    writer.expect_chunks(hashes)
    writer.write_chunk(0, DATA)
    assert [w.source for w in store.writes_in_progress()] == ["peers"]
    writer.suspend()
    assert store.writes_in_progress() == []
