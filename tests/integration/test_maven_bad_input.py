"""Bad Maven requests get a clear 4xx and touch nothing; a lying upstream is refused.

A real node runs in front of the static upstream of `tests/support/maven_repo.py`, to
which three liars are added: jars whose published `.sha1` (no `.sha256`) or `.sha256`
(with a `.sha1` that matches) does not match their bytes, and a `maven-metadata.xml`
whose `.sha1` lies. Requests go over a raw socket so no client normalizes `..` away
first. "Nothing stored" is checked on disk (blobs, temp files, path records, log
blocks) and in the log's size; "refused before anything else" by the upstream's own
request list.
"""

from __future__ import annotations

import hashlib
import json
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest

from tests.support.maven_repo import MavenRepo, MavenServer, build
from tests.support.node import NodeProcess

GOOD = "com/example/lib-a/1.0/lib-a-1.0.jar"
LIARS = {
    # path: the algorithm whose published value does not match
    "com/example/liar-sha1/1.0/liar-sha1-1.0.jar": "sha1",
    "com/example/liar-sha256/1.0/liar-sha256-1.0.jar": "sha256",
    "com/example/liar-meta/maven-metadata.xml": "sha1",
}


@dataclass(frozen=True, slots=True)
class Stack:
    repo: MavenRepo
    upstream: MavenServer
    node: NodeProcess


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("maven")
    repo = build(work / "repo", work / "build")
    original = repo.read("com/example/lib-b/1.0/lib-b-1.0.jar")
    tampered = original + b"\0"
    jar_sha1, jar_sha256, metadata = LIARS
    repo.put(jar_sha1, tampered, sidecars_of=original, sha256=False)
    repo.put(jar_sha256, tampered, sidecars_of=original)
    repo.file(f"{jar_sha256}.sha1").write_text(hashlib.sha1(tampered).hexdigest())
    real_metadata = repo.read("com/example/lib-b/maven-metadata.xml")
    repo.put(metadata, real_metadata.replace(b"1.1", b"6.6"), sidecars_of=real_metadata, sha256=False)
    with (
        MavenServer(repo.root) as upstream,
        NodeProcess(work / "node", "--maven-upstream", upstream.url) as node,
    ):
        yield Stack(repo, upstream, node)


def raw_request(node: NodeProcess, target: str, method: str = "GET") -> tuple[int, bytes]:
    """One request exactly as written, on its own connection; (status, body)."""
    host, port = node.address.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            f"{method} {target} HTTP/1.1\r\nHost: {node.address}\r\nConnection: close\r\n\r\n".encode()
        )
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def one_line_reason(body: bytes) -> str:
    errors = json.loads(body)["errors"]
    assert len(errors) == 1, errors
    message = str(errors[0]["message"])
    assert message and "\n" not in message and "\r" not in message, message
    return message


def stored(node: NodeProcess) -> tuple[list[str], int]:
    """Every file the node keeps for content (blobs and their temp files, records, log blocks)."""
    files = sorted(
        str(p.relative_to(node.home))
        for part in ("blobs", "refs", "translog/blocks")
        for p in (node.home / part).rglob("*")
        if p.is_file()
    )
    status, body = raw_request(node, "/api/v1/log")
    assert status == 200
    return files, int(json.loads(body)["size"])


TRAVERSAL = [
    "/maven2/com/example/../../../etc/passwd",
    "/maven2/com/%2e%2e/%2e%2e/etc/passwd",
    "/maven2/com/%2E%2E/%2E%2E/etc/passwd",
    "/maven2/..%2f..%2fetc/passwd",
    "/maven2/com/example/lib-a/1.0/%2e%2e%2f%2e%2e%2flib-b%2f1.0%2flib-b-1.0.jar",
    "/maven2/com/example/lib-a/./1.0/lib-a-1.0.jar",
]
ILLEGAL_GROUP = [
    "/maven2/com/exa$mple/lib-a/1.0/lib-a-1.0.jar",
    "/maven2/com/exa%20mple/lib-a/1.0/lib-a-1.0.jar",
    "/maven2/com/exa%00mple/lib-a/1.0/lib-a-1.0.jar",
    "/maven2/com/ex%C3%A4mple/lib-a/1.0/lib-a-1.0.jar",
    "/maven2/com\\example/lib-a/1.0/lib-a-1.0.jar",
    "/maven2/-com/example/lib-a/1.0/lib-a-1.0.jar",
]
HUGE = [
    "/maven2/com/example/" + "x" * 10240 + "/1.0/x-1.0.jar",
    "/maven2/" + "a/" * 5120 + "a-1.jar",
]
NOT_LAYOUT = [
    "/maven2/",
    "/maven2/justafile",
    "/maven2/com//example/lib-a/1.0/lib-a-1.0.jar",
    "/maven2/com/example/lib-a/1.0/other-1.0.jar",
    "/maven2/com/example/lib-a/1.0/lib-a-1.0",
    "/maven2/lib-a/1.0/lib-a-1.0.jar",
    "/maven2/com/example/lib-a/1.0/lib-a-1.0.jar.sha1.sha1",
    "/maven2/com/example/lib-a/1.0/lib-a-1.0.jar%3F.jar",
    "/maven2/com/example/lib-a/1.0/lib-a-1.0.jar%23.jar",
    "/maven2/com/example/lib-a/1.0/lib-a-1.0-%0d%0a.jar",
]


@pytest.mark.parametrize("target", TRAVERSAL + ILLEGAL_GROUP + HUGE + NOT_LAYOUT)
def test_bad_paths_get_400_with_one_line_and_touch_nothing(stack: Stack, target: str) -> None:
    before, asked = stored(stack.node), len(stack.upstream.requests())
    status, body = raw_request(stack.node, target)
    assert status == 400, body[:300]
    assert len(one_line_reason(body)) < 300
    assert raw_request(stack.node, target, "HEAD")[0] == 400
    assert stored(stack.node) == before
    assert len(stack.upstream.requests()) == asked  # refused before the upstream was asked
    assert raw_request(stack.node, "/api/v1/status")[0] == 200


@pytest.mark.parametrize(
    "target", ["/maven2x/com/example/lib-a/1.0/lib-a-1.0.jar", "/maven2", "/maven/com/example/a/1/a-1.jar"]
)
def test_paths_outside_the_repository_get_404(stack: Stack, target: str) -> None:
    before = stored(stack.node)
    status, body = raw_request(stack.node, target)
    assert status == 404
    one_line_reason(body)
    assert stored(stack.node) == before


def test_a_file_the_upstream_lacks_is_404_and_not_remembered(stack: Stack) -> None:
    before = stored(stack.node)
    for _ in range(2):
        status, body = raw_request(stack.node, "/maven2/com/example/absent/1.0/absent-1.0.jar")
        assert status == 404
        assert "absent-1.0.jar" in one_line_reason(body)
    assert stored(stack.node) == before
    files = [p for p, _ in stack.upstream.requests() if p == "/com/example/absent/1.0/absent-1.0.jar"]
    assert len(files) == 2


@pytest.mark.parametrize("path", sorted(LIARS))
def test_bytes_that_miss_the_published_checksum_are_refused_every_time(stack: Stack, path: str) -> None:
    before = stored(stack.node)
    asked = len(stack.upstream.requests())
    for target in (path, path, f"{path}.sha1", f"{path}.md5"):
        # Neither the file nor a sidecar computed from it comes from a cache: each goes upstream and fails.
        status, body = raw_request(stack.node, f"/maven2/{target}")
        assert status == 502, body[:300]
        assert f"expected {LIARS[path]}:" in one_line_reason(body)
    fetched = [p for p, _ in stack.upstream.requests()[asked:] if p == f"/{path}"]
    assert len(fetched) == 4
    assert stored(stack.node) == before
    assert not list((stack.node.home / "blobs").rglob("*.part"))


def test_the_node_keeps_serving_other_clients_after_bad_input(stack: Stack) -> None:
    bad = [*TRAVERSAL, *HUGE, *(f"/maven2/{p}" for p in LIARS)] * 3
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(lambda t: raw_request(stack.node, t)[0], bad))
        good = list(pool.map(lambda _: raw_request(stack.node, f"/maven2/{GOOD}"), range(8)))
    assert set(statuses) == {400, 502}
    assert all(status == 200 and body == stack.repo.read(GOOD) for status, body in good)
    status, body = raw_request(stack.node, f"/maven2/{GOOD}.sha1")
    assert (status, body.decode()) == (200, stack.repo.file(f"{GOOD}.sha1").read_text())
