"""A hostile or broken upstream never makes a node answer 500, store what the log does
not vouch for, hang its workers, or hand its bearer token to another origin.

One real `pyrsia daemon` pulls through a scripted upstream (`tests/support/
scripted_upstream.py`) that answers each path exactly as a test says. Every case uses
its own repository name, so cases never see each other's log records. Each refused
case checks the whole outcome: the status (502 for garbage, 503/504 for an upstream
that is down or too slow), the distribution-spec error body, nothing new under
`<home>/blobs` or in the log, and an honest image still served. The hypothesis test
at the end lets random manifests, indexes, configs and headers loose on the same node,
then stops it, verifies its log offline and restarts it.
"""

from __future__ import annotations

import copy
import gzip
import hashlib
import itertools
import json
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.support import images
from tests.support.node import PYRSIA, NodeProcess
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


HONEST_TOKEN = Reply(body=b'{"token": "T0KEN", "expires_in": 3600}')


@pytest.fixture(scope="module")
def token_node(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ScriptedUpstream, NodeProcess]]:
    """An upstream that demands Docker Hub's anonymous token flow, and a node of its own
    that every token case shares: the node caches a token per repository scope, and
    each case pulls a repository of its own, so each fetches its token afresh."""
    with ScriptedUpstream(bearer="T0KEN") as scripted:
        scripted.serve_image(HONEST)
        scripted.route("/token", HONEST_TOKEN)
        home = tmp_path_factory.mktemp("token-node")
        with NodeProcess(home, "--docker-upstream", scripted.url, env=NODE_ENV) as started:
            still_serving(started)
            yield scripted, started


@pytest.fixture
def token_upstream(
    token_node: tuple[ScriptedUpstream, NodeProcess],
) -> tuple[ScriptedUpstream, NodeProcess]:
    """The shared token upstream with its token endpoint honest again."""
    token_node[0].route("/token", HONEST_TOKEN)
    return token_node


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
    image, _ = honest_parts(f"token/victim-{hashlib.sha256(answer).hexdigest()[:12]}")
    upstream.serve_image(image)
    upstream.route("/token", Reply(body=answer))
    refused(node, f"/v2/{image.name}/manifests/1")


@pytest.mark.parametrize("expires", [b'"x"', b"1e400", b"-5", b"null", b"[]"])
def test_token_lifetime_garbage_still_gets_the_image(
    token_upstream: tuple[ScriptedUpstream, NodeProcess], expires: bytes
) -> None:
    """`expires_in` only says how long to cache: a bad one is not worth failing a pull."""
    upstream, node = token_upstream
    image, _ = honest_parts(f"token/lifetime-{hashlib.sha256(expires).hexdigest()[:12]}")
    upstream.serve_image(image)
    upstream.route("/token", Reply(body=b'{"token": "T0KEN", "expires_in": ' + expires + b"}"))
    got = httpx.get(f"{node.url}/v2/{image.name}/manifests/1", headers={"Accept": images.OCI_MANIFEST})
    assert got.status_code == 200 and got.headers["docker-content-digest"] == image.top
    # The node shares nothing cached with the other cases: it asked for this repository's token.
    scope = urlencode({"scope": f"repository:{image.name}:pull"})
    assert any(scope in seen.query for seen in upstream.requests_to("/token"))


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


# --- hypothesis: whatever the upstream sends ------------------------------------------

ALL_MANIFEST_TYPES = (images.OCI_INDEX, "application/vnd.docker.distribution.manifest.list.v2+json",
                      images.OCI_MANIFEST, images.DOCKER_MANIFEST)  # fmt: skip
MEDIA_TYPES = st.sampled_from(
    [
        *ALL_MANIFEST_TYPES,
        images.OCI_CONFIG,
        images.OCI_LAYER,
        "",
        "text/html",
        "a/b\n",
        "x",
        "application/" + "x" * 300,
    ]
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
SIZES = st.integers(-2, 10**20) | st.none() | st.text(max_size=4) | st.floats() | st.booleans()
DIGESTS = (
    st.from_regex(r"sha256:[0-9a-f]{64}", fullmatch=True)
    | st.text(max_size=80)
    | st.integers()
    | st.just("sha512:" + "a" * 128)
)
FIELD_VALUES = {
    "mediaType": MEDIA_TYPES | JSON,
    "digest": DIGESTS,
    "size": SIZES,
    "annotations": JSON,
    "platform": JSON | st.fixed_dictionaries({"os": st.just("linux"), "architecture": JSON}),
}


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@st.composite
def descriptor(draw: st.DrawFn, honest: dict[str, Any]) -> Any:
    """The honest descriptor with fields swapped for hostile ones, or dropped; or anything at all."""
    if draw(st.integers(0, 4)) == 0:
        return draw(JSON)
    out = dict(honest)
    for key in draw(st.sets(st.sampled_from(sorted(FIELD_VALUES)), min_size=1, max_size=2)):
        out[key] = draw(FIELD_VALUES[key])
    if draw(st.booleans()):
        out.pop(draw(st.sampled_from(sorted(out))))
    return out


@st.composite
def body_reply(draw: st.DrawFn, body: bytes, media_type: str | None, hostile: bool) -> Reply:
    """The reply carrying `body`: honest, or with a lying status, length, type or digest header."""
    headers = [("Content-Type", media_type)] if media_type else []
    headers.append(("Docker-Content-Digest", sha256(body)))
    if not hostile:
        return Reply(body=body, headers=tuple(headers))
    content_type = draw(st.sampled_from([media_type, None, "text/html", "garbage/;;"]))
    headers = [("Content-Type", content_type)] if content_type else []
    dcd = draw(st.sampled_from(["right", "none", "other", "garbage"]))
    if dcd == "right":
        headers.append(("Docker-Content-Digest", sha256(body)))
    elif dcd == "other":
        headers.append(("Docker-Content-Digest", sha256(body + b"x")))
    elif dcd == "garbage":
        printable = st.characters(min_codepoint=0x21, max_codepoint=0x7E)
        headers.append(("Docker-Content-Digest", draw(st.text(printable, max_size=30))))
    length = draw(st.sampled_from([None, -1, max(len(body) - 1, 0), len(body) + 7]))
    status = draw(st.sampled_from([200, 200, 200, 404, 500, 401, 418]))
    return Reply(status=status, body=body, headers=tuple(headers), length=length)


@dataclass(frozen=True)
class Case:
    """One example: what the upstream serves under a fresh repository name."""

    routes: dict[str, Reply]
    tag_path: str
    served: bytes


FAULTS = (
    *("none", "schema", "media-type", "config", "layers", "annotations", "delete", "bytes"),
    *("top-reply", "child-reply", "config-reply", "layer-reply", "config-bytes", "everything"),
)


@st.composite
def upstream_case(draw: st.DrawFn, name: str) -> Case:
    """An image (or an index over one) with one hostile part, none, or every part hostile."""
    fault = draw(st.sampled_from(FAULTS))
    event(f"fault {fault}")

    def bad(aspect: str) -> bool:
        return fault in (aspect, "everything")

    labels = draw(
        st.dictionaries(st.sampled_from(["org.opencontainers.image.authors", "k"]), st.text(max_size=20))
    )
    if draw(st.integers(0, 3)) == 0:
        labels["org.opencontainers.image.authors"] = "A" * draw(st.integers(4000, 6000))
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Labels": labels}}).encode()
    if bad("config-bytes"):
        config = draw(st.binary(max_size=64) | st.just(b'{"a":' * 50_000 + b"1" + b"}" * 50_000))
    layer = draw(st.binary(max_size=200))
    honest_config = {"mediaType": images.OCI_CONFIG, "digest": sha256(config), "size": len(config)}
    honest_layer = {"mediaType": images.OCI_LAYER, "digest": sha256(layer), "size": len(layer)}
    doc: dict[str, Any] = {
        "schemaVersion": draw(st.sampled_from([1, "2", 2.5, None, True])) if bad("schema") else 2,
        "mediaType": draw(MEDIA_TYPES | JSON) if bad("media-type") else images.OCI_MANIFEST,
        "config": draw(descriptor(honest_config)) if bad("config") else honest_config,
        "layers": draw(st.lists(descriptor(honest_layer), max_size=3) | JSON)
        if bad("layers")
        else [honest_layer],
    }
    if draw(st.booleans()) or bad("annotations"):
        authors = st.text(max_size=20) | st.just("B" * 5000)
        honest_annotations = st.fixed_dictionaries({"org.opencontainers.image.authors": authors})
        doc["annotations"] = draw(JSON if bad("annotations") else honest_annotations)
    if bad("delete"):
        del doc[draw(st.sampled_from(sorted(doc)))]
    image_body = draw(st.binary(max_size=100)) if bad("bytes") else json.dumps(doc).encode()
    routes = {
        f"/v2/{name}/blobs/{sha256(config)}": draw(body_reply(config, None, bad("config-reply"))),
        f"/v2/{name}/blobs/{sha256(layer)}": draw(body_reply(layer, None, bad("layer-reply"))),
    }
    image_type = doc.get("mediaType") if isinstance(doc.get("mediaType"), str) else images.OCI_MANIFEST
    top_body = image_body
    if draw(st.integers(0, 3)) == 0:  # an index over the (possibly hostile) image manifest
        honest_child = {
            "mediaType": images.OCI_MANIFEST,
            "digest": sha256(image_body),
            "size": len(image_body),
            "platform": {"os": "linux", "architecture": "amd64"},
        }
        entries = (
            draw(st.lists(descriptor(honest_child), min_size=1, max_size=2) | JSON)
            if bad("layers")
            else [honest_child]
        )
        index = {"schemaVersion": 2, "mediaType": images.OCI_INDEX, "manifests": entries}
        top_body = json.dumps(index).encode()
        child = draw(body_reply(image_body, str(image_type), bad("child-reply")))
        routes[f"/v2/{name}/manifests/{sha256(image_body)}"] = child
        image_type = images.OCI_INDEX
    routes[f"/v2/{name}/manifests/1"] = draw(body_reply(top_body, str(image_type), bad("top-reply")))
    return Case(routes=routes, tag_path=f"/v2/{name}/manifests/1", served=top_body)


NAMES = itertools.count()
ACCEPT_ALL = ", ".join(ALL_MANIFEST_TYPES)


def test_hypothesis_hostile_upstream_never_breaks_the_node(
    node: NodeProcess, upstream: ScriptedUpstream
) -> None:
    """Random manifests, indexes, configs, sizes, digests and headers: never a 500, never a
    stored byte the log does not vouch for; then the log verifies offline and the node restarts."""
    served: list[tuple[str, bytes]] = []

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(data=st.data())
    def one(data: st.DataObject) -> None:
        name = f"fuzz/n{next(NAMES)}"
        case = data.draw(upstream_case(name))
        for path, reply in case.routes.items():
            upstream.route(path, reply)
        before = footprint(node)
        got = httpx.get(f"{node.url}{case.tag_path}", headers={"Accept": ACCEPT_ALL}, timeout=60)
        assert got.status_code in (200, 404, 502, 503, 504), (got.status_code, got.text[:300])
        event(f"manifest {got.status_code}")
        if got.status_code != 200:
            error_of(got)
            assert footprint(node) == before
            return
        assert got.content == case.served
        assert got.headers["docker-content-digest"] == sha256(got.content)
        assert got.headers["content-type"] in ALL_MANIFEST_TYPES
        served.append((case.tag_path, got.content))
        for path in [p for p in case.routes if "/blobs/" in p]:
            digest = path.rsplit("/", 1)[1]
            blob = httpx.get(f"{node.url}{path}", timeout=60)
            assert blob.status_code in (200, 404, 502, 503, 504), (blob.status_code, blob.text[:300])
            event(f"blob {blob.status_code}")
            stored = node.home / "blobs" / "sha256" / digest[7:9] / digest[7:]
            if blob.status_code == 200:
                assert sha256(blob.content) == digest
            else:
                error_of(blob)
                assert not stored.exists() or _vouched(node, digest)
            assert list((node.home / "blobs" / "tmp").iterdir()) == []

    one()
    assert served, "no example got through: the strategies never produce an honest image"
    node.stop()
    verify = subprocess.run(
        [*PYRSIA, "log", "verify", "--home", str(node.home)], capture_output=True, text=True, timeout=120
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    node.start()
    still_serving(node)
    path, body = served[-1]
    again = httpx.get(f"{node.url}{path}", headers={"Accept": ACCEPT_ALL})
    assert again.status_code == 200 and again.content == body


def _vouched(node: NodeProcess, digest: str) -> bool:
    """A config the log vouches for may stay even when a later fetch of it fails."""
    found = httpx.get(f"{node.url}/api/v1/log/search", params={"digest": digest}).json()
    return bool(found["count"])
