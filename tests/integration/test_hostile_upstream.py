"""A hostile or broken upstream never makes a node answer 500, store what the log does
not vouch for, hang its workers, or hand its bearer token to another origin.

One real `pyrsia daemon` pulls through a scripted upstream (`tests/support/
scripted_upstream.py`) that answers each path exactly as a test says. Every case uses
its own repository name, so cases never see each other's log records. Each refused
case checks the whole outcome: the status (502 for garbage, 503/504 for an upstream
that is down or too slow), the distribution-spec error body, nothing new under
`<home>/blobs` or in the log, and an honest image still served. The last test (in
`test_hostile_upstream_fuzz.py`) then stops the node, verifies the log offline and
restarts it.
"""

from __future__ import annotations

import copy
import gzip
import hashlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import images
from tests.support.node import NodeProcess
from tests.support.scripted_upstream import Reply, ScriptedUpstream, manifest_reply, wait_for

# Small limits so a dripping upstream is cut within seconds: the node derives its
# manifest deadline and its transfer-rate window from the upstream timeout.
NODE_ENV = {"PYRSIA_UPSTREAM_RETRIES_MAX": "0", "PYRSIA_UPSTREAM_TIMEOUT_S": "3"}
HONEST = images.Image("honest/app", "1")
HONEST.top = images._single(HONEST, [{"hello.txt": b"hello\n"}])
HONEST.top_media_type = images.OCI_MANIFEST


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream() as scripted:
        scripted.serve_image(HONEST)
        yield scripted


@pytest.fixture(scope="module")
def node(upstream: ScriptedUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    home = tmp_path_factory.mktemp("node")
    flags = ("--docker-upstream", upstream.url, "--maven-upstream", f"{upstream.url}/maven2")
    with NodeProcess(home, *flags, env=NODE_ENV) as started:
        still_serving(started)
        yield started


# --- what every refusal must leave behind -------------------------------------------


def footprint(node: NodeProcess) -> tuple[list[Path], int]:
    """Every file under <home>/blobs (temp files included) and the log's size."""
    files = sorted(p for p in (node.home / "blobs").rglob("*") if p.is_file())
    return files, int(httpx.get(f"{node.url}/api/v1/log").json()["size"])


def still_serving(node: NodeProcess) -> None:
    got = httpx.get(
        f"{node.url}/v2/{HONEST.name}/manifests/{HONEST.tag}", headers={"Accept": images.OCI_MANIFEST}
    )
    assert got.status_code == 200 and got.headers["docker-content-digest"] == HONEST.top


def error_of(response: httpx.Response) -> dict[str, Any]:
    """The one entry of a distribution-spec error body."""
    assert response.headers["content-type"].startswith("application/json"), response.headers
    errors = response.json()["errors"]
    assert isinstance(errors, list) and len(errors) == 1, errors
    entry = errors[0]
    assert set(entry) == {"code", "message", "detail"}, entry
    assert isinstance(entry["code"], str) and isinstance(entry["message"], str) and entry["message"]
    return dict(entry)


def refused(node: NodeProcess, path: str, statuses: tuple[int, ...] = (502,)) -> dict[str, Any]:
    """GET `path` twice (a failure caches nothing); both refused, nothing stored, node fine."""
    before = footprint(node)
    entry: dict[str, Any] = {}
    for _ in range(2):
        got = httpx.get(f"{node.url}{path}", timeout=60)
        assert got.status_code in statuses, (got.status_code, got.text[:500])
        entry = error_of(got)
    assert footprint(node) == before
    still_serving(node)
    return entry


# --- building hostile manifests around honest blobs ----------------------------------


def honest_parts(name: str) -> tuple[images.Image, dict[str, Any]]:
    image = images.Image(name, "1")
    image.top = images._single(image, [{"f.txt": name.encode()}])
    return image, json.loads(image.manifests[image.top][1])


def serve_manifest(upstream: ScriptedUpstream, image: images.Image, body: bytes, **headers: str) -> str:
    """Serves `body` as the image's tag (and by digest) next to the image's honest blobs."""
    upstream.serve_image(image)
    reply = manifest_reply(body, images.OCI_MANIFEST, **headers)
    upstream.route(f"/v2/{image.name}/manifests/{image.tag}", reply)
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    upstream.route(f"/v2/{image.name}/manifests/{digest}", reply)
    return f"/v2/{image.name}/manifests/{image.tag}"


def _set(doc: dict[str, Any], where: str, value: Any) -> dict[str, Any]:
    """`layers.0.size` -> doc["layers"][0]["size"] = value, on a copy."""
    out = copy.deepcopy(doc)
    node: Any = out
    keys = where.split(".")
    for key in keys[:-1]:
        node = node[int(key)] if isinstance(node, list) else node[key]
    last = keys[-1]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return out


HOSTILE_FIELDS = {
    "size-string": ("layers.0.size", "abc"),
    "size-null": ("layers.0.size", None),
    "size-negative": ("layers.0.size", -1),
    "size-huge": ("layers.0.size", 10**30),
    "size-bool": ("layers.0.size", True),
    "size-float": ("config.size", 1.5),
    "layers-not-a-list": ("layers", 5),
    "layer-not-an-object": ("layers.0", "sha256:abc"),
    "config-not-an-object": ("config", "x"),
    "config-a-list": ("config", []),
    "digest-garbage": ("layers.0.digest", "sha256:xyz"),
    "digest-path": ("config.digest", "sha256:../../../etc/passwd"),
    "digest-not-a-string": ("layers.0.digest", 12),
    "media-type-5000": ("layers.0.mediaType", "application/" + "x" * 5000),
    "media-type-newline": ("layers.0.mediaType", "application/x\nEvil: 1"),
    "media-type-number": ("config.mediaType", 7),
    "annotations-not-an-object": ("annotations", ["a"]),
    "schema-version-string": ("schemaVersion", "2"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_FIELDS))
def test_hostile_manifest_field_is_an_upstream_fault(
    node: NodeProcess, upstream: ScriptedUpstream, case: str
) -> None:
    image, doc = honest_parts(f"fields/{case}")
    where, value = HOSTILE_FIELDS[case]
    path = serve_manifest(upstream, image, json.dumps(_set(doc, where, value)).encode())
    entry = refused(node, path)
    assert entry["code"] == "MANIFEST_INVALID"


@pytest.mark.parametrize(
    "body",
    [
        b'{"schemaVersion":2,"x":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b"[" * 100_000,
        b'{"schemaVersion":2,"mediaType":"\xff\xfe"}',
        b"<html><body>Sign in to continue</body></html>",
        b"",
        b"null",
    ],
    ids=["nested-100000", "unclosed-nesting", "not-utf8", "html", "empty", "null"],
)
def test_unparseable_manifest_is_an_upstream_fault(
    node: NodeProcess, upstream: ScriptedUpstream, body: bytes
) -> None:
    name = f"unparseable/{hashlib.sha256(body).hexdigest()[:12]}"
    image, _ = honest_parts(name)
    path = serve_manifest(upstream, image, body)
    assert refused(node, path)["code"] == "MANIFEST_INVALID"


def test_ten_thousand_layers_are_refused(node: NodeProcess, upstream: ScriptedUpstream) -> None:
    image, doc = honest_parts("huge/layers")
    doc["layers"] = doc["layers"] * 10_001
    assert (
        refused(node, serve_manifest(upstream, image, json.dumps(doc).encode()))["code"] == "MANIFEST_INVALID"
    )


def test_index_with_ten_thousand_entries_is_refused(node: NodeProcess, upstream: ScriptedUpstream) -> None:
    image, _ = honest_parts("huge/index")
    entry = {
        "mediaType": images.OCI_MANIFEST,
        "digest": image.top,
        "size": len(image.manifests[image.top][1]),
    }
    index = json.dumps(
        {"schemaVersion": 2, "mediaType": images.OCI_INDEX, "manifests": [entry] * 10_001}
    ).encode()
    upstream.serve_image(image)
    upstream.route(f"/v2/{image.name}/manifests/idx", manifest_reply(index, images.OCI_INDEX))
    assert refused(node, f"/v2/{image.name}/manifests/idx")["code"] == "MANIFEST_INVALID"


@pytest.mark.parametrize(
    "entry",
    [
        {"mediaType": images.OCI_MANIFEST, "digest": "sha256:nothex", "size": 10},
        {"mediaType": images.OCI_MANIFEST, "digest": "DIGEST", "size": "ten"},
        {"mediaType": images.OCI_MANIFEST, "digest": "DIGEST", "size": 10, "platform": "linux/amd64"},
        {"mediaType": images.OCI_MANIFEST, "digest": "DIGEST", "size": 10, "platform": {"os": 5}},
        "not an object",
    ],
    ids=["bad-digest", "bad-size", "platform-string", "platform-os-number", "entry-string"],
)
def test_hostile_index_entry(node: NodeProcess, upstream: ScriptedUpstream, entry: Any) -> None:
    image, _ = honest_parts(f"index/{hashlib.sha256(repr(entry).encode()).hexdigest()[:10]}")
    if isinstance(entry, dict) and entry.get("digest") == "DIGEST":
        entry = {**entry, "digest": image.top}
    index = json.dumps({"schemaVersion": 2, "mediaType": images.OCI_INDEX, "manifests": [entry]}).encode()
    upstream.serve_image(image)
    upstream.route(f"/v2/{image.name}/manifests/1", manifest_reply(index, images.OCI_INDEX))
    assert refused(node, f"/v2/{image.name}/manifests/1")["code"] == "MANIFEST_INVALID"


def test_nested_config_is_no_500(node: NodeProcess, upstream: ScriptedUpstream) -> None:
    """A config too deep to parse has no labels to read; the image is still an image."""
    image, doc = honest_parts("deep/config")
    config = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    doc["config"] = {"mediaType": images.OCI_CONFIG, "digest": config_digest, "size": len(config)}
    body = json.dumps(doc).encode()
    path = serve_manifest(upstream, image, body)
    upstream.route(f"/v2/{image.name}/blobs/{config_digest}", Reply(body=config))
    got = httpx.get(f"{node.url}{path}", headers={"Accept": images.OCI_MANIFEST})
    assert got.status_code == 200 and got.content == body


def test_long_author_is_cut_to_the_log_limit_and_the_node_restarts(
    node: NodeProcess, upstream: ScriptedUpstream
) -> None:
    image, doc = honest_parts("long/author")
    doc["annotations"] = {"org.opencontainers.image.authors": "A" * 5000}
    body = json.dumps(doc).encode()
    path = serve_manifest(upstream, image, body)
    got = httpx.get(f"{node.url}{path}", headers={"Accept": images.OCI_MANIFEST})
    assert got.status_code == 200 and got.content == body
    found = httpx.get(f"{node.url}/api/v1/log/search", params={"package": image.name}).json()
    authors = {r["author"] for r in found["results"]}
    assert authors == {"A" * 4096}
    node.stop()
    node.start()
    again = httpx.get(f"{node.url}{path}", headers={"Accept": images.OCI_MANIFEST})
    assert again.status_code == 200 and again.content == body


# --- headers, tokens, redirects, encodings ------------------------------------------


@pytest.mark.parametrize(
    "header",
    ["sha256:not-a-digest", "md5:abc", "sha256:" + "A" * 64, "garbage", "sha256:" + "a" * 63 + "\t"],
)
def test_garbage_docker_content_digest_is_an_upstream_fault(
    node: NodeProcess, upstream: ScriptedUpstream, header: str
) -> None:
    image, doc = honest_parts(f"header/{hashlib.sha256(header.encode()).hexdigest()[:10]}")
    body = json.dumps(doc).encode()
    upstream.serve_image(image)
    reply = Reply(
        body=body, headers=(("Content-Type", images.OCI_MANIFEST), ("Docker-Content-Digest", header))
    )
    upstream.route(f"/v2/{image.name}/manifests/1", reply)
    assert refused(node, f"/v2/{image.name}/manifests/1")["code"] in ("UPSTREAM_ERROR", "DIGEST_INVALID")


@pytest.mark.parametrize(
    ("case", "reply"),
    [
        ("redirect-loop", Reply(status=302, headers=(("Location", "/v2/redirect/loop/manifests/1"),))),
        ("bad-location", Reply(status=302, headers=(("Location", "http://[::1"),))),
        ("ftp-location", Reply(status=302, headers=(("Location", "ftp://127.0.0.1/x"),))),
        ("gzip-garbage", Reply(body=b"not gzip at all" * 10, headers=(("Content-Encoding", "gzip"),))),
        ("html-200", Reply(body=b"<html>maintenance</html>", headers=(("Content-Type", "text/html"),))),
        ("teapot", Reply(status=418, body=b"no")),
    ],
)
def test_broken_http_is_an_upstream_fault(
    node: NodeProcess, upstream: ScriptedUpstream, case: str, reply: Reply
) -> None:
    name = f"redirect/{'loop' if case == 'redirect-loop' else case}"
    upstream.route(f"/v2/{name}/manifests/1", reply)
    refused(node, f"/v2/{name}/manifests/1", (502, 503))


def test_gzip_manifest_is_decoded(node: NodeProcess, upstream: ScriptedUpstream) -> None:
    image, doc = honest_parts("gzip/ok")
    body = json.dumps(doc).encode()
    upstream.serve_image(image)
    headers = (("Content-Type", images.OCI_MANIFEST), ("Content-Encoding", "gzip"))
    upstream.route(f"/v2/{image.name}/manifests/1", Reply(body=gzip.compress(body), headers=headers))
    got = httpx.get(f"{node.url}/v2/{image.name}/manifests/1", headers={"Accept": images.OCI_MANIFEST})
    assert got.status_code == 200 and got.content == body


@pytest.fixture
def token_upstream(tmp_path: Path) -> Iterator[tuple[ScriptedUpstream, NodeProcess]]:
    """An upstream that demands Docker Hub's anonymous token flow, and a node of its own."""
    with ScriptedUpstream(bearer="T0KEN") as scripted:
        scripted.serve_image(HONEST)
        scripted.route("/token", Reply(body=b'{"token": "T0KEN", "expires_in": 300}'))
        with NodeProcess(tmp_path / "node", "--docker-upstream", scripted.url, env=NODE_ENV) as started:
            still_serving(started)
            yield scripted, started


@pytest.mark.parametrize(
    "answer",
    [b"[]", b'"T0KEN"', b'{"token": 5}', b'{"token": ["T0KEN"]}', b'{"token": "T0\\r\\nX-Evil: 1"}',
     b'{"token": ""}', b"{" * 100_000, b"\xff"],
    ids=["list", "string", "number", "token-list", "crlf", "empty", "nested", "not-utf8"],
)  # fmt: skip
def test_token_endpoint_garbage_is_an_upstream_fault(
    token_upstream: tuple[ScriptedUpstream, NodeProcess], answer: bytes
) -> None:
    upstream, node = token_upstream
    image, _ = honest_parts("token/victim")
    upstream.serve_image(image)
    upstream.route("/token", Reply(body=answer))
    refused(node, f"/v2/{image.name}/manifests/1")


@pytest.mark.parametrize("expires", [b'"x"', b"1e400", b"-5", b"null", b"[]"])
def test_token_lifetime_garbage_still_gets_the_image(
    token_upstream: tuple[ScriptedUpstream, NodeProcess], expires: bytes
) -> None:
    """`expires_in` only says how long to cache: a bad one is not worth failing a pull."""
    upstream, node = token_upstream
    image, _ = honest_parts("token/lifetime")
    upstream.serve_image(image)
    upstream.route("/token", Reply(body=b'{"token": "T0KEN", "expires_in": ' + expires + b"}"))
    got = httpx.get(f"{node.url}/v2/{image.name}/manifests/1", headers={"Accept": images.OCI_MANIFEST})
    assert got.status_code == 200 and got.headers["docker-content-digest"] == image.top


def test_token_never_reaches_another_origin(token_upstream: tuple[ScriptedUpstream, NodeProcess]) -> None:
    """A tag list `Link` naming another origin is not followed; a blob redirect to another
    origin is, without the token (httpx drops Authorization across origins)."""
    upstream, node = token_upstream
    image, _ = honest_parts("token/leak")
    upstream.serve_image(image)
    with ScriptedUpstream() as elsewhere:
        elsewhere.route(f"/v2/{image.name}/tags/list", Reply(body=b'{"name": "x", "tags": ["stolen"]}'))
        link = f'<{elsewhere.url}/v2/{image.name}/tags/list?last=1>; rel="next"'
        page = Reply(body=b'{"name": "x", "tags": ["1"]}', headers=(("Link", link),))
        upstream.route(f"/v2/{image.name}/tags/list", page)
        got = httpx.get(f"{node.url}/v2/{image.name}/tags/list")
        assert got.status_code == 200 and got.json()["tags"] == ["1"]
        assert elsewhere.requests_to("/") == []

        layer = image.layers_of(image.top)[0]
        elsewhere.route(f"/cdn/{layer}", Reply(body=image.blobs[layer]))
        redirect = Reply(status=307, headers=(("Location", f"{elsewhere.url}/cdn/{layer}"),))
        upstream.route(f"/v2/{image.name}/blobs/{layer}", redirect)
        assert httpx.get(f"{node.url}/v2/{image.name}/manifests/1").status_code == 200
        blob = httpx.get(f"{node.url}/v2/{image.name}/blobs/{layer}")
        assert blob.status_code == 200 and blob.content == image.blobs[layer]
        cdn = elsewhere.requests_to("/cdn/")
        assert len(cdn) == 1 and "authorization" not in cdn[0].headers
    assert all(s.headers.get("authorization") in (None, "Bearer T0KEN") for s in upstream.seen)


# --- sizes and deadlines -------------------------------------------------------------


def test_blob_larger_than_its_descriptor_is_cut_off(node: NodeProcess, upstream: ScriptedUpstream) -> None:
    image, doc = honest_parts("size/endless")
    layer = doc["layers"][0]["digest"]
    path = serve_manifest(upstream, image, json.dumps(doc).encode())
    assert httpx.get(f"{node.url}{path}", headers={"Accept": images.OCI_MANIFEST}).status_code == 200
    # The descriptor says a few hundred bytes; the upstream sends them, then never stops.
    upstream.route(
        f"/v2/{image.name}/blobs/{layer}", Reply(body=image.blobs[layer], length=-1, endless=b"x" * 65536)
    )
    entry = refused(node, f"/v2/{image.name}/blobs/{layer}", (502,))
    assert entry["code"] == "SIZE_INVALID"
    # A Content-Length that already says too much is refused before the body is read.
    upstream.route(f"/v2/{image.name}/blobs/{layer}", Reply(body=image.blobs[layer], length=10**12))
    assert refused(node, f"/v2/{image.name}/blobs/{layer}", (502,))["code"] == "SIZE_INVALID"


def test_blob_smaller_than_its_descriptor_is_refused(node: NodeProcess, upstream: ScriptedUpstream) -> None:
    """The digest matches, but the manifest claimed another size: the manifest lied."""
    image, doc = honest_parts("size/short")
    layer = doc["layers"][0]["digest"]
    doc["layers"][0]["size"] += 10
    path = serve_manifest(upstream, image, json.dumps(doc).encode())
    assert httpx.get(f"{node.url}{path}", headers={"Accept": images.OCI_MANIFEST}).status_code == 200
    assert refused(node, f"/v2/{image.name}/blobs/{layer}", (502,))["code"] == "SIZE_INVALID"


def _in_background(url: str) -> tuple[threading.Thread, list[httpx.Response]]:
    done: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: done.append(httpx.get(url, timeout=120)), daemon=True)
    thread.start()
    return thread, done


def test_dripping_blob_is_cut_and_others_are_served_meanwhile(
    node: NodeProcess, upstream: ScriptedUpstream
) -> None:
    image, doc = honest_parts("drip/blob")
    layer = doc["layers"][0]["digest"]
    path = serve_manifest(upstream, image, json.dumps(doc).encode())
    assert httpx.get(f"{node.url}{path}", headers={"Accept": images.OCI_MANIFEST}).status_code == 200
    upstream.route(f"/v2/{image.name}/blobs/{layer}", Reply(body=image.blobs[layer], drip_s=0.2))
    before = footprint(node)
    thread, done = _in_background(f"{node.url}/v2/{image.name}/blobs/{layer}")
    wait_for(lambda: len(upstream.requests_to(f"/v2/{image.name}/blobs/")) > 0, 30, "the drip to start")
    assert httpx.get(f"{node.url}/v2/").status_code == 200  # answered while the drip is fetched
    still_serving(node)
    wait_for(lambda: not thread.is_alive(), 60, "the dripping fetch to be cut off")
    assert done[0].status_code in (503, 504)
    assert error_of(done[0])["code"] == "UPSTREAM_TIMEOUT"
    assert footprint(node) == before


def test_dripping_manifest_hits_its_deadline(node: NodeProcess, upstream: ScriptedUpstream) -> None:
    image, doc = honest_parts("drip/manifest")
    body = json.dumps(doc).encode()
    upstream.serve_image(image)
    headers = (("Content-Type", images.OCI_MANIFEST),)
    upstream.route(f"/v2/{image.name}/manifests/1", Reply(body=body, headers=headers, drip_s=0.05))
    before = footprint(node)
    thread, done = _in_background(f"{node.url}/v2/{image.name}/manifests/1")
    wait_for(lambda: len(upstream.requests_to(f"/v2/{image.name}/manifests/")) > 0, 30, "the drip to start")
    assert httpx.get(f"{node.url}/v2/").status_code == 200
    wait_for(lambda: not thread.is_alive(), 60, "the dripping manifest to be cut off")
    assert done[0].status_code in (503, 504) and error_of(done[0])["code"] == "UPSTREAM_TIMEOUT"
    assert footprint(node) == before


# --- a publish that fails half way ---------------------------------------------------


def test_failed_publish_leaves_no_blobs(node: NodeProcess, upstream: ScriptedUpstream) -> None:
    """Index over two platforms: the first is fine (its manifest and config get fetched),
    the second's config is missing upstream. Nothing of the first may stay on disk."""
    good, _ = honest_parts("half/published")
    entries = [
        {"mediaType": images.OCI_MANIFEST, "digest": good.top, "size": len(good.manifests[good.top][1]),
         "platform": {"os": "linux", "architecture": "amd64"}},
    ]  # fmt: skip
    other = images._single(good, [{"g.txt": b"other"}], arch="arm64")
    missing_config = good.config_of(other)
    entries.append(
        {"mediaType": images.OCI_MANIFEST, "digest": other, "size": len(good.manifests[other][1]),
         "platform": {"os": "linux", "architecture": "arm64"}}
    )  # fmt: skip
    index = json.dumps({"schemaVersion": 2, "mediaType": images.OCI_INDEX, "manifests": entries}).encode()
    upstream.serve_image(good, only=[missing_config])
    upstream.route(f"/v2/{good.name}/manifests/1", manifest_reply(index, images.OCI_INDEX))
    refused(node, f"/v2/{good.name}/manifests/1", (404, 502))


# --- Maven ---------------------------------------------------------------------------


def test_maven_file_with_absurd_length_is_refused(node: NodeProcess, upstream: ScriptedUpstream) -> None:
    path = "com/example/huge/1.0/huge-1.0.jar"
    upstream.route(f"/maven2/{path}", Reply(body=b"PK", length=5 * 1024**4))
    refused(node, f"/maven2/{path}", (502,))


def test_maven_dripping_file_is_cut(node: NodeProcess, upstream: ScriptedUpstream) -> None:
    path = "com/example/drip/1.0/drip-1.0.jar"
    upstream.route(f"/maven2/{path}", Reply(body=b"PK" * 1000, drip_s=0.2))
    before = footprint(node)
    thread, done = _in_background(f"{node.url}/maven2/{path}")
    wait_for(lambda: len(upstream.requests_to(f"/maven2/{path}")) > 0, 30, "the drip to start")
    assert httpx.get(f"{node.url}/v2/").status_code == 200
    wait_for(lambda: not thread.is_alive(), 60, "the dripping file to be cut off")
    assert done[0].status_code in (503, 504) and error_of(done[0])["code"] == "UPSTREAM_TIMEOUT"
    assert footprint(node) == before


@pytest.mark.parametrize(
    "reply",
    [
        Reply(status=302, headers=(("Location", "/maven2/com/example/loop/1.0/loop-1.0.jar"),)),
        Reply(body=b"garbage", headers=(("Content-Encoding", "gzip"),)),
    ],
    ids=["redirect-loop", "gzip-garbage"],
)
def test_maven_broken_http_is_an_upstream_fault(
    node: NodeProcess, upstream: ScriptedUpstream, reply: Reply
) -> None:
    path = "com/example/loop/1.0/loop-1.0.jar"
    upstream.route(f"/maven2/{path}", reply)
    refused(node, f"/maven2/{path}", (502, 503))
