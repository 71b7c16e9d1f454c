"""Maven metadata: refreshed after its TTL, served stale (and marked) when the upstream is down."""

from __future__ import annotations

from pathlib import Path

import httpx

from pyrsia.artifacts.blobstore import BlobStore
from pyrsia.artifacts.maven import MavenArtifacts
from pyrsia.artifacts.records import RecordStore
from pyrsia.artifacts.vouch import MAVEN, MemoryArtifactLog
from pyrsia.formats.maven_layout import parse_path
from pyrsia.upstream.maven import MavenClient

METADATA = "a/b/maven-metadata.xml"


class Upstream:
    def __init__(self) -> None:
        self.body = b"<metadata>v1</metadata>"
        self.pom = POM
        self.up = True
        self.requests = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if not self.up:
            raise httpx.ConnectError("down", request=request)
        self.requests += 1
        if request.url.path.endswith("maven-metadata.xml"):
            return httpx.Response(200, content=self.body)
        if request.url.path.endswith(".pom"):
            return httpx.Response(200, content=self.pom)
        if request.url.path.endswith(".jar"):
            return httpx.Response(200, content=b"PK jar bytes")
        return httpx.Response(404)


POM = b"""<project><groupId>a</groupId><artifactId>b</artifactId><version>1.0</version>
<developers><developer><name>Ada</name></developer></developers>
<dependencies><dependency><groupId>x</groupId><artifactId>y</artifactId><version>2</version></dependency>
</dependencies></project>"""


def make(tmp_path: Path, upstream: Upstream, now: list[float]) -> tuple[MavenArtifacts, MemoryArtifactLog]:
    client = MavenClient("https://up.test", transport=httpx.MockTransport(upstream), retries_max=0)
    translog = MemoryArtifactLog()
    artifacts = MavenArtifacts(
        BlobStore(tmp_path / "blobs"),
        RecordStore(tmp_path / "refs"),
        translog,
        client,
        metadata_ttl_s=60,
        clock=lambda: now[0],
    )
    return artifacts, translog


def test_metadata_ttl_and_stale_fallback(tmp_path: Path) -> None:
    upstream = Upstream()
    now = [1000.0]
    artifacts, translog = make(tmp_path, upstream, now)
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
    # Each version of the metadata the node served was committed to the log first.
    assert [v.digest for _, v in translog.records] == [
        f"sha256:{first.checksums['sha256']}",
        f"sha256:{refreshed.checksums['sha256']}",
    ]

    upstream.up = False
    now[0] += 61
    stale = artifacts.file(target)
    assert stale.stale and stale.blob.read_bytes().endswith(b"v2</metadata>")
    assert stale.checksums["sha256"] == refreshed.checksums["sha256"]


def test_files_are_published_before_served_with_the_poms_provenance(tmp_path: Path) -> None:
    upstream = Upstream()
    artifacts, translog = make(tmp_path, upstream, [0.0])
    pom = artifacts.file(parse_path("a/b/1.0/b-1.0.pom"))
    jar = artifacts.file(parse_path("a/b/1.0/b-1.0.jar"))
    records = {v.path: v for _, v in translog.records}
    assert set(records) == {"/maven2/a/b/1.0/b-1.0.pom", "/maven2/a/b/1.0/b-1.0.jar"}
    for found, path in ((pom, "/maven2/a/b/1.0/b-1.0.pom"), (jar, "/maven2/a/b/1.0/b-1.0.jar")):
        vouched = records[path]
        assert vouched.digest == f"sha256:{found.checksums['sha256']}" and vouched.package_id == "a:b:1.0"
        assert vouched.author == "Ada" and vouched.dependencies == ("x:y:2",)
    calls = upstream.requests
    artifacts.file(parse_path("a/b/1.0/b-1.0.jar"))
    assert upstream.requests == calls and len(translog.records) == 2


def test_a_held_file_the_log_does_not_vouch_for_is_not_served(tmp_path: Path) -> None:
    upstream = Upstream()
    artifacts, translog = make(tmp_path, upstream, [0.0])
    artifacts.file(parse_path("a/b/1.0/b-1.0.jar"))
    translog.records.clear()  # e.g. a store copied in from elsewhere
    calls = upstream.requests
    artifacts.file(parse_path("a/b/1.0/b-1.0.jar"))
    assert upstream.requests > calls  # fetched and published again rather than trusted
    assert [t for t, _ in translog.records] == [MAVEN]


def test_a_released_file_that_changes_upstream_is_refused(tmp_path: Path) -> None:
    import pytest

    from pyrsia.errors import DigestMismatch

    upstream = Upstream()
    artifacts, translog = make(tmp_path, upstream, [0.0])
    first = artifacts.file(parse_path("a/b/1.0/b-1.0.pom"))
    first.blob.unlink()  # the node lost its copy ...
    upstream.pom = POM.replace(b"Ada", b"Eve")  # ... and the upstream rewrote history
    with pytest.raises(DigestMismatch):
        artifacts.file(parse_path("a/b/1.0/b-1.0.pom"))
    assert len(translog.records) == 1
