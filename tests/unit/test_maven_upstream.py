"""Maven upstream client: published checksums are enforced, every sidecar is computed."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest

from pyrsia.artifacts.blobstore import BlobStore
from pyrsia.errors import DigestMismatch, MavenFileUnknown
from pyrsia.formats.maven_layout import CHECKSUMS
from pyrsia.upstream.maven import MavenClient

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
