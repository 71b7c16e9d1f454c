"""The peer HTTP data plane's handler, called directly: routes, vouching, Range, limits."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from pyrsia.artifacts.blobstore import BlobStore
from pyrsia.artifacts.exchange_service import ExchangeStats
from pyrsia.formats.digest import Digest
from pyrsia.http.message import FileBody, Request, StreamBody
from pyrsia.registry.peer_api import PeerBlobApp, blob_path
from pyrsia.registry.peer_gate import GateConfig

BLOB = random.Random(5).randbytes(300_000)
DIGEST = Digest.of(BLOB)
UNVOUCHED = random.Random(6).randbytes(1000)


@pytest.fixture
def app(tmp_path: Path) -> PeerBlobApp:
    store = BlobStore(tmp_path / "blobs")
    store.put(DIGEST, BLOB, "test")
    store.put(Digest.of(UNVOUCHED), UNVOUCHED, "test")
    gate = GateConfig(request_rate=1000.0, requests_per_ip_max=4, peers_max=8)
    return PeerBlobApp(store, lambda d: d == DIGEST, gate=gate, stats=ExchangeStats())


def get(
    app: PeerBlobApp, path: str, *headers: tuple[str, str], method: str = "GET", peer: str = "10.1.1.1:5"
):
    request = Request(method=method, target=path, path=path, headers=headers, peer=peer)
    return app.handle(request)


def body_bytes(response) -> bytes:  # type: ignore[no-untyped-def]
    body = response.body
    if isinstance(body, FileBody):
        with body.path.open("rb") as file:
            file.seek(body.offset)
            return file.read(body.length)
    if isinstance(body, StreamBody):
        return b"".join(body.pieces())
    return bytes(body)


def test_a_vouched_blob_is_served_whole_and_by_range(app: PeerBlobApp) -> None:
    whole = get(app, blob_path(DIGEST))
    assert whole.status == 200 and body_bytes(whole) == BLOB
    part = get(app, blob_path(DIGEST), ("range", "bytes=1000-2999"))
    assert part.status == 206 and body_bytes(part) == BLOB[1000:3000]
    assert ("Content-Range", f"bytes 1000-2999/{len(BLOB)}") in part.headers
    head = get(app, blob_path(DIGEST), method="HEAD")
    assert head.status == 200 and len(head.body) == len(BLOB)
    served = app.stats.snapshot().served_bytes_by_peer_path
    assert served[("10.1.1.1", "http")] == len(BLOB) + 2000


def test_unvouched_unknown_and_traversing_paths_are_404(app: PeerBlobApp) -> None:
    assert get(app, blob_path(Digest.of(UNVOUCHED))).status == 404  # held but not vouched
    assert get(app, blob_path(Digest.of(b"never stored"))).status == 404
    for path in (
        f"/peer/v1/blobs/sha256:{DIGEST.hex}/../../etc/passwd",
        "/peer/v1/blobs/../../../etc/passwd",
        f"/peer/v1/blobs/sha256:{DIGEST.hex.upper()}",
        f"/peer/v1/blobs/sha512:{DIGEST.hex}",
        "/v2/",
        "/api/v1/status",
    ):
        assert get(app, path).status == 404, path
    escaped = Request(
        method="GET",
        target=f"/peer/v1/blobs/sha256%3A{DIGEST.hex}",
        path=f"/peer/v1/blobs/sha256:{DIGEST.hex}",
        peer="10.1.1.1:5",
    )
    assert app.handle(escaped).status == 404
    assert get(app, blob_path(DIGEST), method="DELETE").status == 405


@pytest.mark.parametrize(
    "value",
    [
        f"bytes={len(BLOB)}-",
        f"bytes={len(BLOB) + 10}-{len(BLOB) + 20}",
        "bytes=abc",
        "bytes=5-2",
        "items=0-1",
        "bytes=0-1,5-6",
    ],
)
def test_bad_ranges_are_416_with_the_size(app: PeerBlobApp, value: str) -> None:
    response = get(app, blob_path(DIGEST), ("range", value))
    if value.startswith("items") or "," in value:
        assert response.status == 200  # another unit, several ranges: the whole (RFC 9110 §14.2)
        return
    assert response.status == 416
    assert ("Content-Range", f"bytes */{len(BLOB)}") in response.headers


def test_a_flood_from_one_address_gets_429_while_another_is_served(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    store.put(DIGEST, BLOB, "test")
    now = [0.0]
    app = PeerBlobApp(store, lambda d: d == DIGEST, gate=GateConfig(request_rate=5.0), clock=lambda: now[0])
    statuses = [get(app, blob_path(DIGEST), method="HEAD", peer="10.0.0.9:1").status for _ in range(20)]
    assert statuses.count(200) == 5 and statuses.count(429) == 15
    refused = get(app, blob_path(DIGEST), peer="10.0.0.9:2")
    assert refused.status == 429 and any(k == "Retry-After" for k, _ in refused.headers)
    assert get(app, blob_path(DIGEST), method="HEAD", peer="10.0.0.10:1").status == 200
    assert app.refused["rate"] == 16


def test_a_request_holds_its_slot_until_its_body_is_sent_or_dropped(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    store.put(DIGEST, BLOB, "test")
    app = PeerBlobApp(store, lambda d: d == DIGEST, gate=GateConfig(requests_per_ip_max=2))
    first = get(app, blob_path(DIGEST))
    second = get(app, blob_path(DIGEST))
    third = get(app, blob_path(DIGEST))
    assert (first.status, second.status, third.status) == (200, 200, 503)
    assert app.serving() == 1
    del first  # the server dropped it (sent, or the client left)
    assert get(app, blob_path(DIGEST)).status == 200
