"""Each pull rule of the OCI distribution-spec, checked against a running node.

The upstream is a real docker-registry seeded with three images and a repository
`library/blobs` whose manifest names a 2048-byte blob, an empty blob and a blob
addressed by sha512 (a node serves only blobs a committed manifest vouches for, so
the manifest is pulled once, as any client would, before its blobs are asked for).
"""

from __future__ import annotations

import hashlib
import json
import socket
from collections.abc import Iterator

import httpx
import pytest

from tests.support import images
from tests.support.node import NodeProcess
from tests.support.registry import RegistryProcess

THREE, MULTI, NESTED = images.three_layer(), images.multi_arch(), images.nested()
DATA_2048 = bytes(range(256)) * 8
EMPTY = b""
DATA_512 = b"sha512 addressed bytes\n" * 40
D2048 = images.sha256(DATA_2048)
DEMPTY = images.sha256(EMPTY)
D512 = "sha512:" + hashlib.sha512(DATA_512).hexdigest()
GO_ACCEPT = [  # as Go clients send it: one header line per type
    ("Accept", images.OCI_MANIFEST),
    ("Accept", images.DOCKER_MANIFEST),
    ("Accept", "application/vnd.docker.distribution.manifest.list.v2+json"),
    ("Accept", images.OCI_INDEX),
]


def blobs_image() -> images.Image:
    image = images.Image("library/blobs", "1")
    config = b"{}"
    image.blobs = {images.sha256(config): config, D2048: DATA_2048, DEMPTY: EMPTY, D512: DATA_512}
    doc = {
        "schemaVersion": 2,
        "mediaType": images.OCI_MANIFEST,
        "config": {"mediaType": images.OCI_CONFIG, "digest": images.sha256(config), "size": 2},
        "layers": [
            {"mediaType": "application/octet-stream", "digest": d, "size": len(b)}
            for d, b in ((D2048, DATA_2048), (DEMPTY, EMPTY), (D512, DATA_512))
        ],
    }
    body = json.dumps(doc).encode()
    image.top, image.top_media_type = images.sha256(body), images.OCI_MANIFEST
    image.manifests[image.top] = (images.OCI_MANIFEST, body)
    return image


BLOBS = blobs_image()


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    with RegistryProcess(tmp_path_factory.mktemp("upstream")) as registry:
        for image in (THREE, MULTI, NESTED, BLOBS):
            images.push(registry.url, image)
        with NodeProcess(tmp_path_factory.mktemp("node"), "--docker-upstream", registry.url) as node:
            assert httpx.get(f"{node.url}/v2/library/blobs/manifests/1").status_code == 200
            yield node


@pytest.fixture(scope="module")
def client(node: NodeProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=node.url, timeout=30) as client:
        yield client


def assert_spec_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status
    assert response.headers["content-type"].startswith("application/json")
    errors = response.json()["errors"]
    assert len(errors) == 1 and errors[0]["code"] == code
    assert set(errors[0]) >= {"code", "message", "detail"} and errors[0]["message"]


def test_base_endpoint(client: httpx.Client) -> None:
    response = client.get("/v2/")
    assert (
        response.status_code == 200 and response.headers["docker-distribution-api-version"] == "registry/2.0"
    )


@pytest.mark.parametrize("image", [THREE, MULTI, NESTED], ids=lambda i: i.name)
@pytest.mark.parametrize("by", ["tag", "digest"])
def test_manifest_get_and_head(client: httpx.Client, image: images.Image, by: str) -> None:
    reference = image.tag if by == "tag" else image.top
    media_type, body = image.manifests[image.top]
    url = f"/v2/{image.name}/manifests/{reference}"
    got = client.get(url, headers=GO_ACCEPT)
    assert got.status_code == 200 and got.content == body
    assert got.headers["content-type"] == media_type
    assert got.headers["content-length"] == str(len(body))
    assert got.headers["docker-content-digest"] == image.top
    head = client.head(url, headers=GO_ACCEPT)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["docker-content-digest"] == image.top
    assert head.headers["content-length"] == str(len(body))


def test_index_to_a_client_that_accepts_only_manifests_gets_the_default_platform(
    client: httpx.Client,
) -> None:
    got = client.get(f"/v2/{MULTI.name}/manifests/{MULTI.tag}", headers={"Accept": images.OCI_MANIFEST})
    assert got.headers["docker-content-digest"] == MULTI.platforms["linux/amd64"]


def test_manifest_asked_for_as_index_only_still_answers(client: httpx.Client) -> None:
    """`skopeo inspect --raw` sends only the index type; a plain manifest must still come back."""
    got = client.get(f"/v2/{NESTED.name}/manifests/{NESTED.tag}", headers={"Accept": images.OCI_INDEX})
    assert got.status_code == 200 and got.headers["docker-content-digest"] == NESTED.top


def test_short_names_and_mirror_query(client: httpx.Client) -> None:
    got = client.get(f"/v2/threelayer/manifests/{THREE.tag}?ns=docker.io", headers=GO_ACCEPT)
    assert got.status_code == 200 and got.headers["docker-content-digest"] == THREE.top


@pytest.mark.parametrize(("digest", "data"), [(D2048, DATA_2048), (DEMPTY, EMPTY), (D512, DATA_512)])
def test_blob_get_and_head(client: httpx.Client, digest: str, data: bytes) -> None:
    got = client.get(f"/v2/library/blobs/blobs/{digest}")
    assert got.status_code == 200 and got.content == data
    assert got.headers["content-length"] == str(len(data))
    assert got.headers["docker-content-digest"] == digest
    head = client.head(f"/v2/library/blobs/blobs/{digest}")
    assert (
        head.status_code == 200 and head.content == b"" and head.headers["content-length"] == str(len(data))
    )


@pytest.mark.parametrize(
    ("header", "first", "last"),
    [
        ("bytes=500-1499", 500, 1499),
        ("bytes=500-", 500, 2047),
        ("bytes=-500", 1548, 2047),
        ("bytes=2000-5000", 2000, 2047),
    ],
)
def test_satisfiable_ranges(client: httpx.Client, header: str, first: int, last: int) -> None:
    got = client.get(f"/v2/library/blobs/blobs/{D2048}", headers={"Range": header})
    assert got.status_code == 206
    assert got.headers["content-range"] == f"bytes {first}-{last}/2048"
    assert got.content == DATA_2048[first : last + 1]
    assert got.headers["content-length"] == str(last - first + 1)


@pytest.mark.parametrize("header", ["bytes=500-0", "bytes=5000-10000"])
def test_unsatisfiable_ranges(client: httpx.Client, header: str) -> None:
    got = client.get(f"/v2/library/blobs/blobs/{D2048}", headers={"Range": header})
    assert got.status_code == 416 and got.headers["content-range"] == "bytes */2048"


def test_missing_manifest_blob_and_repository(client: httpx.Client) -> None:
    assert_spec_error(client.get(f"/v2/{THREE.name}/manifests/nope"), 404, "MANIFEST_UNKNOWN")
    assert_spec_error(client.get(f"/v2/{THREE.name}/blobs/sha256:{'0' * 64}"), 404, "BLOB_UNKNOWN")
    missing = client.get("/v2/library/no-such-repo/manifests/latest")
    assert missing.status_code == 404 and missing.json()["errors"][0]["code"] in (
        "NAME_UNKNOWN",
        "MANIFEST_UNKNOWN",
    )


@pytest.mark.parametrize("name", ["Library/Upper", "a//b", "-lead", "a/b_", "a" * 300])
def test_bad_names(client: httpx.Client, name: str) -> None:
    got = client.get(f"/v2/{name}/manifests/latest")
    assert got.status_code in (400, 404)
    assert got.json()["errors"][0]["code"] == "NAME_INVALID"


@pytest.mark.parametrize("digest", ["sha256:xyz", "sha256:" + "0" * 63, "md5:" + "0" * 32])
def test_bad_digests(client: httpx.Client, digest: str) -> None:
    assert_spec_error(client.get(f"/v2/library/blobs/blobs/{digest}"), 400, "DIGEST_INVALID")


def test_tags_list_with_pagination(client: httpx.Client) -> None:
    full = client.get(f"/v2/{THREE.name}/tags/list")
    assert full.status_code == 200 and full.json() == {"name": THREE.name, "tags": [THREE.tag]}
    page = client.get(f"/v2/{MULTI.name}/tags/list", params={"n": "1"})
    assert page.json()["tags"] == [MULTI.tag]
    after = client.get(f"/v2/{MULTI.name}/tags/list", params={"last": MULTI.tag})
    assert after.json()["tags"] == []


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v2/library/x/blobs/uploads/"),
        ("PUT", "/v2/library/x/manifests/1"),
        ("DELETE", f"/v2/library/blobs/blobs/{D2048}"),
        ("PATCH", "/v2/library/x/blobs/uploads/abc"),
    ],
)
def test_push_endpoints_are_unsupported(client: httpx.Client, method: str, path: str) -> None:
    assert_spec_error(client.request(method, path, content=b"x"), 405, "UNSUPPORTED")


def test_keep_alive_serves_many_requests_on_one_connection(node: NodeProcess) -> None:
    host, port = node.address.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        request = f"GET /v2/library/blobs/blobs/{D2048} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        sock.sendall(request * 3)
        received = b""
        while received.count(DATA_2048) < 3:
            chunk = sock.recv(65536)
            assert chunk, "connection closed before three responses"
            received += chunk
    assert received.count(b"HTTP/1.1 200") == 3
