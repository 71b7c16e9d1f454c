"""`GET /maven2/<dir>/`: a node lists a Maven directory over HTTP.

A real node runs in front of the static upstream of `tests/support/maven_repo.py`
(Python's file server, which answers directory listings as HTML, as Maven Central
does). Before the node has fetched anything the listing comes from the upstream; a
version the upstream later drops stays listed because the log holds it; with the
upstream gone the log's entries are served alone. Bad directory paths are a 400 before
the upstream is asked. Requests go over raw sockets where a client would normalize
the path first.
"""

from __future__ import annotations

import json
import os
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path

import httpx
import pytest

from tests.support.maven_repo import MavenRepo, MavenServer, build
from tests.support.node import NodeProcess

HREF = re.compile(r'<a href="([^"]*)"')
SIDECARS = ("md5", "sha1", "sha256", "sha512")


@dataclass(frozen=True, slots=True)
class Stack:
    repo: MavenRepo
    upstream: MavenServer
    node: NodeProcess


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("maven")
    return build(work / "repo", work / "build").root


def stack_of(root: Path, home: Path) -> Iterator[Stack]:
    with (
        MavenServer(root) as upstream,
        NodeProcess(home, "--maven-upstream", upstream.url, "--upstream-retries-max", "0") as node,
    ):
        yield Stack(MavenRepo(root), upstream, node)


@pytest.fixture(scope="module")
def stack(built: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from stack_of(built, tmp_path_factory.mktemp("node"))


def listing(node: NodeProcess, directory: str) -> tuple[httpx.Response, list[str]]:
    response = httpx.get(f"{node.url}/maven2/{directory}", timeout=30)
    return response, HREF.findall(response.text)


def raw_request(node: NodeProcess, target: str, method: str = "GET") -> tuple[int, bytes]:
    host, port = node.address.split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(f"{method} {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def one_line(body: bytes) -> str:
    (error,) = json.loads(body)["errors"]
    assert "\n" not in error["message"] and len(error["message"]) < 300
    return str(error["message"])


def test_a_directory_is_listed_from_the_upstream_before_anything_was_fetched(stack: Stack) -> None:
    response, hrefs = listing(stack.node, "com/example/lib-b/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert hrefs == ["../", "1.0/", "1.1/", *(f"maven-metadata.xml{s}" for s in ("", ".md5", ".sha1"))]
    assert ("/com/example/lib-b/", 200) in stack.upstream.requests()
    head = httpx.head(f"{stack.node.url}/maven2/com/example/lib-b/", timeout=30)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(response.content))


def test_a_group_directory_lists_its_artifacts(stack: Stack) -> None:
    _, hrefs = listing(stack.node, "com/example/")
    assert {"app/", "bom/", "lib-a/", "lib-b/", "parent/"} <= set(hrefs)


def test_a_version_the_upstream_drops_stays_listed_from_the_log(stack: Stack) -> None:
    jar = "com/example/app/1.0/app-1.0.jar"
    assert httpx.get(f"{stack.node.url}/maven2/{jar}", timeout=30).status_code == 200
    stack.repo.remove("com/example/app/1.0")
    response, hrefs = listing(stack.node, "com/example/app/")
    assert response.status_code == 200 and "1.0/" in hrefs
    response, hrefs = listing(stack.node, "com/example/app/1.0/")
    assert response.status_code == 200
    assert hrefs == ["../", "app-1.0.jar", *(f"app-1.0.jar.{s}" for s in SIDECARS)]
    for href in hrefs[1:]:  # every entry the node lists, it serves
        assert httpx.get(f"{stack.node.url}/maven2/com/example/app/1.0/{href}", timeout=30).status_code == 200


def test_a_directory_nobody_has_is_404(stack: Stack) -> None:
    status, body = raw_request(stack.node, "/maven2/com/example/absent/")
    assert status == 404 and "com/example/absent/" in one_line(body)


@pytest.mark.parametrize(
    "target",
    [
        "/maven2/",
        "/maven2/com//example/",
        "/maven2/com/../",
        "/maven2/com/%2e%2e/",
        "/maven2/com/./example/",
        "/maven2/a%20b/",
        "/maven2/com/exa%0Ample/",
        "/maven2/com/exa%0A/",
        "/maven2/com/ex%C3%A4mple/",
        "/maven2/" + "a/" * 600,
    ],
)
def test_bad_directories_are_400_before_the_upstream_is_asked(stack: Stack, target: str) -> None:
    asked = len(stack.upstream.requests())
    status, body = raw_request(stack.node, target)
    assert status == 400, body[:300]
    one_line(body)
    assert len(stack.upstream.requests()) == asked


def test_without_the_slash_a_path_is_a_file(stack: Stack) -> None:
    status, body = raw_request(stack.node, "/maven2/com/example/lib-b")
    assert status == 400 and "a directory listing needs a trailing '/'" in one_line(body)
    status, body = raw_request(stack.node, "/maven2/com/exa%20mple/lib-b")
    assert status == 400 and "trailing" not in one_line(body)


def test_listings_are_read_only(stack: Stack) -> None:
    assert httpx.put(f"{stack.node.url}/maven2/com/example/", content=b"x", timeout=30).status_code == 405


def test_with_the_upstream_gone_the_log_is_listed_alone(built: Path, tmp_path: Path) -> None:
    for running in stack_of(built, tmp_path / "node"):
        pom = "com/example/lib-a/1.0/lib-a-1.0.pom"
        assert httpx.get(f"{running.node.url}/maven2/{pom}", timeout=30).status_code == 200
        running.upstream.stop()
        response, hrefs = listing(running.node, "com/example/lib-a/")
        assert response.status_code == 200 and hrefs == ["../", "1.0/"]
        _, hrefs = listing(running.node, "com/example/lib-a/1.0/")
        assert hrefs == ["../", "lib-a-1.0.pom", *(f"lib-a-1.0.pom.{s}" for s in SIDECARS)]
        status, body = raw_request(running.node, "/maven2/com/example/lib-b/")
        assert status == 503 and "upstream" in one_line(body)


def test_a_file_keeps_its_upstream_last_modified_for_conditional_gets(built: Path, tmp_path: Path) -> None:
    """`Last-Modified` is the upstream's date for the file, not when the node fetched it."""
    path = "com/example/lib-a/1.0/lib-a-1.0.pom"
    old = 1_600_000_000  # 2020-09-13: far from any fetch time
    os.utime(built / path, (old, old))
    for stack in stack_of(built, tmp_path / "node"):
        upstream = httpx.get(f"{stack.upstream.url}/{path}", timeout=30)
        through = httpx.get(f"{stack.node.url}/maven2/{path}", timeout=30)
        assert through.status_code == 200 and through.content == upstream.content
        modified = formatdate(old, usegmt=True)
        assert through.headers["last-modified"] == upstream.headers["last-modified"] == modified
        since = {"If-Modified-Since": modified}
        assert httpx.get(f"{stack.node.url}/maven2/{path}", headers=since).status_code == 304
        etag = {"If-None-Match": through.headers["etag"]}
        assert httpx.get(f"{stack.node.url}/maven2/{path}", headers=etag).status_code == 304
