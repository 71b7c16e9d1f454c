"""Maven upstream client: published checksums are enforced, every sidecar is computed."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pyrsia.artifacts.blobstore import BlobStore
from pyrsia.errors import DigestMismatch, MavenFileUnknown, UpstreamSizeInvalid, UpstreamTimeout
from pyrsia.formats.maven_layout import CHECKSUMS
from pyrsia.upstream.maven import MavenClient, last_modified

JAR = b"PK\x03\x04 not really a jar" * 100


def _client(files: dict[str, bytes]) -> tuple[MavenClient, list[str]]:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix("/maven2/")
        seen.append(path)
        return httpx.Response(200, content=files[path]) if path in files else httpx.Response(404)

    return MavenClient(
        "https://central.test/maven2", transport=httpx.MockTransport(handler), sleep=lambda _s: None
    ), seen


@pytest.mark.parametrize(
    ("sidecars", "verified_with"),
    [
        ({"a/b/1/b-1.jar.sha256": hashlib.sha256(JAR).hexdigest().encode()}, "sha256"),
        ({"a/b/1/b-1.jar.sha1": hashlib.sha1(JAR).hexdigest().encode() + b"  b-1.jar\n"}, "sha1"),
        ({}, None),
    ],
)
def test_fetch_checks_published_checksum(
    tmp_path: Path, sidecars: dict[str, bytes], verified_with: str | None
) -> None:
    client, _ = _client({"a/b/1/b-1.jar": JAR, **sidecars})
    fetched = client.fetch("a/b/1/b-1.jar", BlobStore(tmp_path).opener(None, "test", CHECKSUMS))
    assert fetched.verified_with == verified_with and fetched.size == len(JAR)
    for algorithm in ("sha1", "md5", "sha256", "sha512"):
        assert fetched.checksums[algorithm] == hashlib.new(algorithm, JAR).hexdigest()
    assert str(fetched.digest) == "sha256:" + hashlib.sha256(JAR).hexdigest()


def test_fetch_without_sidecar_makes_one_request(tmp_path: Path) -> None:
    """A verifier holding the record's digest asks for the file alone: a wrong sidecar
    is never read, and nothing says the bytes were checked with one."""
    client, seen = _client({"a/b/1/b-1.jar": JAR, "a/b/1/b-1.jar.sha256": b"0" * 64})
    fetched = client.fetch(
        "a/b/1/b-1.jar", BlobStore(tmp_path).opener(None, "test", CHECKSUMS), sidecar=False
    )
    assert seen == ["a/b/1/b-1.jar"]
    assert fetched.verified_with is None
    assert str(fetched.digest) == "sha256:" + hashlib.sha256(JAR).hexdigest()
    client2, seen2 = _client({"a/b/1/b-1.jar": JAR})
    client2.fetch("a/b/1/b-1.jar", BlobStore(tmp_path / "2").opener(None, "test", CHECKSUMS))
    assert seen2 == ["a/b/1/b-1.jar.sha256", "a/b/1/b-1.jar.sha1", "a/b/1/b-1.jar"]


def test_mismatch_stores_nothing(tmp_path: Path) -> None:
    client, _ = _client({"a/b/1/b-1.jar": JAR, "a/b/1/b-1.jar.sha1": b"0" * 40})
    store = BlobStore(tmp_path)
    with pytest.raises(DigestMismatch, match="sha1:0000"):
        client.fetch("a/b/1/b-1.jar", store.opener(None, "test", CHECKSUMS))
    assert store.stats() == (0, 0) and list(store.tmp_dir.iterdir()) == []


def test_unreadable_sidecar_is_refused(tmp_path: Path) -> None:
    client, _ = _client({"a/b/1/b-1.jar": JAR, "a/b/1/b-1.jar.sha1": b"<html>not found</html>"})
    with pytest.raises(DigestMismatch, match="unreadable"):
        client.fetch("a/b/1/b-1.jar", BlobStore(tmp_path).opener(None, "test", CHECKSUMS))


def test_missing_file(tmp_path: Path) -> None:
    client, _ = _client({})
    with pytest.raises(MavenFileUnknown):
        client.fetch("a/b/1/b-1.jar", BlobStore(tmp_path).opener(None, "test", CHECKSUMS))


def test_last_modified_comes_back_as_epoch_seconds(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith(".jar"):
            return httpx.Response(
                200, content=JAR, headers={"Last-Modified": "Wed, 21 Oct 2015 07:28:00 GMT"}
            )
        return httpx.Response(404)

    client = MavenClient("https://central.test/maven2", transport=httpx.MockTransport(handler))
    fetched = client.fetch("a/b/1/b-1.jar", BlobStore(tmp_path).opener(None, "test", CHECKSUMS))
    assert fetched.last_modified == 1445412480.0


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("yesterday", None),
        ("Wed, 99 Oct 2015 07:28:00 GMT", None),
        ("Wed, 21 Oct 99999 07:28:00 GMT", None),
        ("Wed, 21 Oct 2015 07:28:00 -0000", 1445412480.0),
        ("Wed, 21 Oct 2015 09:28:00 +0200", 1445412480.0),
    ],
)
def test_last_modified_parsing(header: str | None, expected: float | None) -> None:
    assert last_modified(header) == expected


def test_a_file_past_the_maximum_is_cut_off(tmp_path: Path) -> None:
    client, _ = _client({"a/b/1/b-1.jar": JAR})
    client.file_bytes_max = len(JAR) - 1
    store = BlobStore(tmp_path)
    with pytest.raises(UpstreamSizeInvalid):
        client.fetch("a/b/1/b-1.jar", store.opener(None, "test", CHECKSUMS))
    assert store.stats() == (0, 0) and list(store.tmp_dir.iterdir()) == []


def test_an_absurd_content_length_is_refused_unread(tmp_path: Path) -> None:
    read: list[int] = []

    class Body(httpx.SyncByteStream):
        def __iter__(self) -> Iterator[bytes]:
            read.append(1)
            yield b"PK"

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith(".jar"):
            return httpx.Response(200, stream=Body(), headers={"Content-Length": str(5 * 1024**4)})
        return httpx.Response(404)

    client = MavenClient("https://central.test/maven2", transport=httpx.MockTransport(handler))
    with pytest.raises(UpstreamSizeInvalid, match="Content-Length"):
        client.fetch("a/b/1/b-1.jar", BlobStore(tmp_path).opener(None, "test", CHECKSUMS))
    assert read == []


def test_a_dripping_checksum_sidecar_hits_its_deadline(tmp_path: Path) -> None:
    now = [0.0]

    class Drip(httpx.SyncByteStream):
        def __iter__(self) -> Iterator[bytes]:
            for _ in range(1000):
                now[0] += 1.0
                yield b"0"

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=Drip())

    client = MavenClient(
        "https://central.test/maven2",
        transport=httpx.MockTransport(handler),
        request_deadline_s=5,
        rate_min_bytes_s=0,
        clock=lambda: now[0],
    )
    with pytest.raises(UpstreamTimeout, match="deadline"):
        client.fetch("a/b/1/b-1.jar", BlobStore(tmp_path).opener(None, "test", CHECKSUMS))
    assert now[0] <= 6
