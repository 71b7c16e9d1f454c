"""Upstream registry client: token flow, retries, digest checks, pagination.

Docker Hub itself is out of reach here, so its token flow is played by an
`httpx.MockTransport`; the real-registry paths are covered by the e2e tests against
a CNCF docker-registry.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from pyrsia.artifacts.blobstore import BlobStore
from pyrsia.errors import (
    BlobUnknown,
    DigestInvalid,
    DigestMismatch,
    ManifestInvalid,
    ManifestUnknown,
    UpstreamAuthFailed,
    UpstreamError,
    UpstreamManifestInvalid,
    UpstreamSizeInvalid,
    UpstreamTimeout,
    UpstreamUnavailable,
)
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


def test_unknown_challenge_is_a_clear_error() -> None:
    client, _ = _client(lambda r: httpx.Response(401, headers={"WWW-Authenticate": 'Negotiate realm="x"'}))
    with pytest.raises(UpstreamError, match="authentication"):
        client.get_manifest("library/alpine", "1")


def test_basic_challenge_without_a_login_says_one_is_needed() -> None:
    client, _ = _client(lambda r: httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="x"'}))
    with pytest.raises(UpstreamAuthFailed, match="needs a login"):
        client.get_manifest("library/alpine", "1")


# --- hostile upstreams: every failure is typed, bounded in bytes and in time ---------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class Drip(httpx.SyncByteStream):
    """A body that arrives `chunk` by `chunk`, each `every_s` seconds later on the fake clock."""

    def __init__(self, clock: FakeClock, chunk: bytes, count: int, every_s: float) -> None:
        self.clock, self.chunk, self.count, self.every_s = clock, chunk, count, every_s
        self.sent = 0

    def __iter__(self) -> Iterator[bytes]:
        for _ in range(self.count):
            self.clock.now += self.every_s
            self.sent += 1
            yield self.chunk


def _timed_client(route: Route, clock: FakeClock, retries: int = 0, **limits: float) -> RegistryClient:
    return RegistryClient(
        "https://hub.test",
        transport=httpx.MockTransport(route),
        retries_max=retries,
        sleep=clock.sleep,
        clock=clock,
        **limits,  # type: ignore[arg-type]
    )


def test_a_dripping_blob_is_cut_by_the_rate_floor(tmp_path: Path) -> None:
    clock = FakeClock()
    drip = Drip(clock, b"x", count=10_000, every_s=1.0)
    client = _timed_client(
        lambda r: httpx.Response(200, stream=drip), clock, rate_min_bytes_s=1024, rate_window_s=30
    )
    store = BlobStore(tmp_path)
    with pytest.raises(UpstreamTimeout, match="below the floor"):
        client.fetch_blob("library/alpine", BLOB_DIGEST, store.opener(BLOB_DIGEST, "test"))
    assert drip.sent <= 31  # cut when the first window closed, not at the end of the body
    assert store.size(BLOB_DIGEST) is None and list(store.tmp_dir.iterdir()) == []


def test_a_fast_enough_body_passes_the_rate_floor(tmp_path: Path) -> None:
    clock = FakeClock()
    chunks = [BLOB[i : i + 1000] for i in range(0, len(BLOB), 1000)]

    class Steady(httpx.SyncByteStream):
        def __iter__(self) -> Iterator[bytes]:
            for chunk in chunks:
                clock.now += 0.5  # 2000 bytes/s, above a 1000 bytes/s floor
                yield chunk

    client = _timed_client(
        lambda r: httpx.Response(200, stream=Steady()), clock, rate_min_bytes_s=1000, rate_window_s=2
    )
    store = BlobStore(tmp_path)
    client.fetch_blob("library/alpine", BLOB_DIGEST, store.opener(BLOB_DIGEST, "test"), size_bytes=len(BLOB))
    assert store.read(BLOB_DIGEST) == BLOB


def test_the_deadline_covers_every_retry() -> None:
    clock = FakeClock()
    seen: list[float] = []

    def route(request: httpx.Request) -> httpx.Response:
        seen.append(clock.now)
        clock.now += 4.0  # each attempt takes 4 s and fails with a 503
        return httpx.Response(503)

    client = _timed_client(route, clock, retries=50, request_deadline_s=10)
    with pytest.raises(UpstreamTimeout, match="deadline") as caught:
        client.get_manifest("library/alpine", "1")
    assert len(seen) <= 3 and clock.now - seen[0] <= 10 + 4
    assert isinstance(caught.value.detail, list) and "HTTP 503" in caught.value.detail[0]


def test_blob_deadline_grows_with_its_size() -> None:
    clock = FakeClock()
    client = _timed_client(lambda r: httpx.Response(404), clock, deadline_s=100)
    assert client._http.transfer_seconds(None) == 100
    assert client._http.transfer_seconds(1024**3) == 100 + 1024


def test_a_blob_longer_than_declared_is_cut_off(tmp_path: Path) -> None:
    endless = Drip(FakeClock(), b"x" * 65536, count=10_000, every_s=0)
    client, _ = _client(lambda r: httpx.Response(200, stream=endless))
    store = BlobStore(tmp_path)
    with pytest.raises(UpstreamSizeInvalid):
        client.fetch_blob("library/alpine", BLOB_DIGEST, store.opener(BLOB_DIGEST, "test"), size_bytes=88)
    assert endless.sent == 1  # the first chunk past the limit ends it
    assert list(store.tmp_dir.iterdir()) == [] and store.size(BLOB_DIGEST) is None


def test_a_content_length_past_the_declared_size_is_refused_unread(tmp_path: Path) -> None:
    never = Drip(FakeClock(), b"x", count=1, every_s=0)
    client, _ = _client(lambda r: httpx.Response(200, stream=never, headers={"Content-Length": "999999"}))
    with pytest.raises(UpstreamSizeInvalid, match="Content-Length"):
        client.fetch_blob(
            "library/alpine", BLOB_DIGEST, BlobStore(tmp_path).opener(BLOB_DIGEST, "t"), size_bytes=88
        )
    assert never.sent == 0


def test_a_blob_shorter_than_declared_with_the_right_digest_is_refused(tmp_path: Path) -> None:
    client, seen = _client(lambda r: httpx.Response(200, content=BLOB))
    with pytest.raises(UpstreamSizeInvalid, match="not"):
        client.fetch_blob(
            "library/alpine",
            BLOB_DIGEST,
            BlobStore(tmp_path).opener(BLOB_DIGEST, "t"),
            size_bytes=len(BLOB) + 1,
        )
    assert len(seen) == 1  # the descriptor lied: no point asking again


GZIP = {"Content-Encoding": "gzip"}
BAD_DIGEST = {"Docker-Content-Digest": "sha256:zz"}


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (lambda: httpx.Response(200, content=b"<html>login</html>"), UpstreamManifestInvalid),
        (lambda: httpx.Response(200, json={**json.loads(MANIFEST), "layers": 5}), UpstreamManifestInvalid),
        (lambda: httpx.Response(200, content=b"[" * 100_000), UpstreamManifestInvalid),
        (lambda: httpx.Response(200, content=MANIFEST, headers=BAD_DIGEST), UpstreamError),
        (lambda: httpx.Response(302, headers={"Location": "/v2/library/alpine/manifests/1"}), UpstreamError),
        (lambda: httpx.Response(200, stream=httpx.ByteStream(b"garbage"), headers=GZIP), UpstreamError),
        (lambda: httpx.Response(302, headers={"Location": "http://[::1"}), UpstreamUnavailable),
    ],
    ids=["html", "layers-int", "nested", "bad-digest-header", "redirect-loop", "bad-gzip", "bad-location"],
)  # fmt: skip
def test_garbage_from_the_upstream_is_an_upstream_error(
    answer: Callable[[], httpx.Response], error: type[Exception]
) -> None:
    client, _ = _client(lambda r: answer(), retries=0)
    with pytest.raises(error) as caught:
        client.get_manifest("library/alpine", "1")
    assert isinstance(caught.value, UpstreamError)
    assert not isinstance(caught.value, DigestInvalid | ManifestInvalid)  # never the client's fault


def _token_route(answer: bytes) -> Route:
    def route(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.test":
            return httpx.Response(200, content=answer)
        if request.headers.get("Authorization") != "Bearer T1":
            challenge = 'Bearer realm="https://auth.test/token",service="s"'
            return httpx.Response(401, headers={"WWW-Authenticate": challenge})
        return httpx.Response(200, content=MANIFEST)

    return route


@pytest.mark.parametrize(
    "answer",
    [
        b"[]",
        b'"T1"',
        b'{"token": 5}',
        b'{"token": "T1\\r\\nX: 1"}',
        b'{"token": "a b"}',
        b"{}",
        b"{" * 100_000,
    ],
)
def test_token_endpoint_garbage_is_an_upstream_error(answer: bytes) -> None:
    client, _ = _client(_token_route(answer), retries=0)
    with pytest.raises(UpstreamError):
        client.get_manifest("library/alpine", "1")


@pytest.mark.parametrize("lifetime", [b'"x"', b"1e400", b"1" + b"0" * 400, b"-3", b"true", b"null"])
def test_token_lifetime_garbage_falls_back(lifetime: bytes) -> None:
    client, _ = _client(_token_route(b'{"access_token": "T1", "expires_in": ' + lifetime + b"}"))
    assert client.get_manifest("library/alpine", "1").digest == MANIFEST_DIGEST
    token, expires = client._tokens["repository:library/alpine:pull"]
    assert token == "T1" and expires < float("inf")


def test_unusable_realm_is_an_upstream_error() -> None:
    for realm in ("ftp://auth.test/token", "http://[::1", "/relative"):
        challenge = f'Bearer realm="{realm}"'
        client, _ = _client(lambda r, c=challenge: httpx.Response(401, headers={"WWW-Authenticate": c}))
        with pytest.raises(UpstreamError):
            client.get_manifest("library/alpine", "1")


def test_tag_list_link_to_another_origin_is_not_followed() -> None:
    def route(request: httpx.Request) -> httpx.Response:
        assert request.url.host == "hub.test", "followed a Link to another origin"
        link = '<https://evil.test/v2/library/x/tags/list?last=b>; rel="next"'
        return httpx.Response(200, json={"tags": ["a", "b", 5, "bad\ntag"]}, headers={"Link": link})

    client, seen = _client(route)
    client._tokens["repository:library/x:pull"] = ("SECRET", float("inf"))
    assert client.list_tags("library/x") == ["a", "b"]
    assert len(seen) == 1


@pytest.mark.parametrize(
    "link",
    ['<http://hub.test/v2/x/tags/list?last=b>; rel="next"', '<https://hub.test:444/v2/x>; rel="next"'],
)
def test_tag_list_link_must_keep_scheme_and_port(link: str) -> None:
    client, seen = _client(lambda r: httpx.Response(200, json={"tags": ["a"]}, headers={"Link": link}))
    assert client.list_tags("library/x") == ["a"] and len(seen) == 1


@pytest.mark.parametrize("body", [b"[]", b'{"tags": "abc"}', b"\xff", b"{" * 100_000])
def test_tag_list_garbage(body: bytes) -> None:
    client, _ = _client(lambda r: httpx.Response(200, content=body))
    if body == b"[]":  # no tags key: an empty list, as a registry with no tags answers
        assert client.list_tags("library/x") == []
        return
    with pytest.raises(UpstreamError):
        client.list_tags("library/x")
