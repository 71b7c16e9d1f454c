"""Upstream registry client: token flow, retries, digest checks, pagination.

Docker Hub itself is out of reach here, so its token flow is played by an
`httpx.MockTransport`; the real-registry paths are covered by the e2e tests against
a CNCF docker-registry.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from pyrsia.artifacts.blobstore import BlobStore
from pyrsia.errors import BlobUnknown, DigestMismatch, ManifestUnknown, UpstreamError, UpstreamUnavailable
from pyrsia.formats.digest import Digest
from pyrsia.formats.manifest import OCI_MANIFEST
from pyrsia.upstream.registry import RegistryClient

CONFIG = {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": f"sha256:{0:064x}", "size": 2}
MANIFEST = json.dumps(
    {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": CONFIG, "layers": []}
).encode()
MANIFEST_DIGEST = Digest.of(MANIFEST)
BLOB = b"layer bytes" * 1000
BLOB_DIGEST = Digest.of(BLOB)

Route = Callable[[httpx.Request], httpx.Response]


def _client(route: Route, retries: int = 2) -> tuple[RegistryClient, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return route(request)

    client = RegistryClient(
        "https://hub.test", transport=httpx.MockTransport(handler), retries_max=retries, sleep=lambda _s: None
    )
    return client, seen


def test_anonymous_bearer_token_flow_and_cache() -> None:
    def route(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.test":
            assert request.url.params["scope"] == "repository:library/alpine:pull"
            assert request.url.params["service"] == "registry.test"
            return httpx.Response(200, json={"token": "T1", "expires_in": 300})
        if request.headers.get("Authorization") != "Bearer T1":
            return httpx.Response(
                401,
                headers={
                    "WWW-Authenticate": 'Bearer realm="https://auth.test/token",service="registry.test",'
                    'scope="repository:library/alpine:pull"'
                },
            )
        return httpx.Response(200, content=MANIFEST, headers={"Content-Type": OCI_MANIFEST})

    client, seen = _client(route)
    first = client.get_manifest("library/alpine", "3.18")
    second = client.get_manifest("library/alpine", str(MANIFEST_DIGEST))
    assert first.digest == second.digest == MANIFEST_DIGEST and first.media_type == OCI_MANIFEST
    # 401, token, retry; then the cached token is used straight away.
    assert [r.url.host for r in seen] == ["hub.test", "auth.test", "hub.test", "hub.test"]
    assert "Accept" in seen[0].headers and OCI_MANIFEST in seen[0].headers["Accept"]


def test_manifest_digest_is_checked_against_header_and_reference() -> None:
    def route(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, content=MANIFEST, headers={"Docker-Content-Digest": str(Digest.of(b"other"))}
        )

    client, _ = _client(route)
    with pytest.raises(DigestMismatch):
        client.get_manifest("library/alpine", "3.18")
    with pytest.raises(DigestMismatch):
        client.get_manifest("library/alpine", str(Digest.of(b"something else")))


def test_missing_things_are_typed(tmp_path: Path) -> None:
    client, _ = _client(lambda r: httpx.Response(404, json={"errors": []}))
    with pytest.raises(ManifestUnknown):
        client.get_manifest("library/alpine", "nope")
    with pytest.raises(BlobUnknown):
        client.fetch_blob("library/alpine", BLOB_DIGEST, BlobStore(tmp_path).opener(BLOB_DIGEST, "test"))


def test_retries_transient_failures_then_succeeds(tmp_path: Path) -> None:
    answers = iter([httpx.Response(503), httpx.Response(200, content=BLOB)])
    client, seen = _client(lambda r: next(answers))
    store = BlobStore(tmp_path)
    client.fetch_blob("library/alpine", BLOB_DIGEST, store.opener(BLOB_DIGEST, "test"))
    assert store.read(BLOB_DIGEST) == BLOB and len(seen) == 2


def test_gives_up_after_bounded_retries() -> None:
    def route(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    client, seen = _client(route, retries=2)
    with pytest.raises(UpstreamUnavailable, match="refused"):
        client.get_manifest("library/alpine", "1")
    assert len(seen) == 3


def test_wrong_blob_bytes_are_never_stored(tmp_path: Path) -> None:
    client, _ = _client(lambda r: httpx.Response(200, content=b"evil" * 100))
    store = BlobStore(tmp_path)
    with pytest.raises(DigestMismatch):
        client.fetch_blob("library/alpine", BLOB_DIGEST, store.opener(BLOB_DIGEST, "test"))
    assert store.size(BLOB_DIGEST) is None and list(store.tmp_dir.iterdir()) == []


def test_truncated_blob_is_retried_then_refused(tmp_path: Path) -> None:
    short = httpx.Response(200, content=BLOB[:100], headers={"Content-Length": str(len(BLOB))})
    client, seen = _client(lambda r: short, retries=1)
    store = BlobStore(tmp_path)
    with pytest.raises(UpstreamUnavailable, match="body ended after 100"):
        client.fetch_blob("library/alpine", BLOB_DIGEST, store.opener(BLOB_DIGEST, "test"))
    assert len(seen) == 2 and store.size(BLOB_DIGEST) is None


def test_blob_redirect_is_followed_without_leaking_the_token(tmp_path: Path) -> None:
    def route(request: httpx.Request) -> httpx.Response:
        if request.url.host == "cdn.test":
            assert "Authorization" not in request.headers
            return httpx.Response(200, content=BLOB)
        return httpx.Response(307, headers={"Location": "https://cdn.test/blob"})

    client, _ = _client(route)
    client._tokens["repository:library/alpine:pull"] = ("SECRET", float("inf"))
    store = BlobStore(tmp_path)
    client.fetch_blob("library/alpine", BLOB_DIGEST, store.opener(BLOB_DIGEST, "test"))
    assert store.read(BLOB_DIGEST) == BLOB


def test_tag_list_follows_link_pagination() -> None:
    def route(request: httpx.Request) -> httpx.Response:
        if request.url.params.get("last") == "b":
            return httpx.Response(200, json={"name": "x", "tags": ["c"]})
        return httpx.Response(
            200,
            json={"name": "x", "tags": ["a", "b"]},
            headers={"Link": '</v2/library/x/tags/list?n=2&last=b>; rel="next"'},
        )

    client, seen = _client(route)
    assert client.list_tags("library/x") == ["a", "b", "c"]
    assert len(seen) == 2


def test_non_bearer_challenge_is_a_clear_error() -> None:
    client, _ = _client(lambda r: httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="x"'}))
    with pytest.raises(UpstreamError, match="authentication"):
        client.get_manifest("library/alpine", "1")
