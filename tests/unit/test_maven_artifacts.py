"""Maven metadata: refreshed after its TTL, served stale (and marked) when the upstream is down."""

from __future__ import annotations

from pathlib import Path

import httpx

from pyrsia.artifacts.blobstore import BlobStore
from pyrsia.artifacts.maven import MavenArtifacts
from pyrsia.artifacts.records import RecordStore
from pyrsia.registry.maven_layout import parse_path
from pyrsia.upstream.maven import MavenClient

METADATA = "a/b/maven-metadata.xml"


class Upstream:
    def __init__(self) -> None:
        self.body = b"<metadata>v1</metadata>"
        self.up = True
        self.requests = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if not self.up:
            raise httpx.ConnectError("down", request=request)
        self.requests += 1
        if request.url.path.endswith("maven-metadata.xml"):
            return httpx.Response(200, content=self.body)
        return httpx.Response(404)


def test_metadata_ttl_and_stale_fallback(tmp_path: Path) -> None:
    upstream = Upstream()
    now = [1000.0]
    client = MavenClient("https://up.test", transport=httpx.MockTransport(upstream), retries_max=0)
    artifacts = MavenArtifacts(
        BlobStore(tmp_path / "blobs"),
        RecordStore(tmp_path / "refs"),
        client,
        metadata_ttl_s=60,
        clock=lambda: now[0],
    )
    target = parse_path(METADATA)

    first = artifacts.file(target)
    assert first.blob.read_bytes() == b"<metadata>v1</metadata>" and not first.stale
    calls = upstream.requests

    upstream.body = b"<metadata>v2</metadata>"
    now[0] += 30
    assert artifacts.file(target).blob.read_bytes().endswith(b"v1</metadata>")  # still fresh
    assert upstream.requests == calls

    now[0] += 31
    refreshed = artifacts.file(target)
    assert refreshed.blob.read_bytes().endswith(b"v2</metadata>") and not refreshed.stale

    upstream.up = False
    now[0] += 61
    stale = artifacts.file(target)
    assert stale.stale and stale.blob.read_bytes().endswith(b"v2</metadata>")
    assert stale.checksums["sha256"] == refreshed.checksums["sha256"]
