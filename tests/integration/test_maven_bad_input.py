"""Bad Maven requests get a clear 4xx and touch nothing; a lying upstream is refused.

Requests go over a raw socket so no client library normalizes `..` away first.
"Nothing stored" is checked on disk: no blob, no path record, no log record.
"""

from __future__ import annotations

import hashlib
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.maven_repo import MavenServer
from tests.support.node import NodeProcess

GOOD = "com/example/good/1.0/good-1.0.jar"
BAD = "com/example/bad/1.0/bad-1.0.jar"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    root = tmp_path_factory.mktemp("upstream")
    for path, data, sha1_of in ((GOOD, b"good jar", b"good jar"), (BAD, b"tampered jar", b"original jar")):
        (root / path).parent.mkdir(parents=True)
        (root / path).write_bytes(data)
        Path(f"{root / path}.sha1").write_text(hashlib.sha1(sha1_of).hexdigest())
    with (
        MavenServer(root) as upstream,
        NodeProcess(tmp_path_factory.mktemp("node"), "--maven-upstream", upstream.url) as node,
    ):
        yield node


def raw_get(node: NodeProcess, target: str) -> tuple[int, bytes]:
    host, port = node.address.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def stored(node: NodeProcess) -> tuple[list[str], list[str], int]:
    blobs = sorted(p.name for p in (node.home / "blobs" / "sha256").rglob("*") if p.is_file())
    records = sorted(str(p) for p in (node.home / "refs").rglob("*") if p.is_file())
    log = httpx.get(f"{node.url}/api/v1/log").json()["size"]
    return blobs, records, log


@pytest.mark.parametrize(
    "target",
    [
        "/maven2/com/example/../../../etc/passwd",
        "/maven2/com/%2e%2e/%2e%2e/etc/passwd",
        "/maven2/..%2f..%2fetc/passwd",
        "/maven2/com/exa$mple/lib/1.0/lib-1.0.jar",
        "/maven2/com/example/lib/1.0/other-1.0.jar",
        "/maven2/justafile",
        "/maven2/" + "a/" * 5000 + "x-1.jar",
    ],
)
def test_bad_paths_are_refused_with_one_line_and_nothing_stored(node: NodeProcess, target: str) -> None:
    before = stored(node)
    status, body = raw_get(node, target)
    assert status in (400, 404)
    errors = json.loads(body)["errors"]
    assert len(errors) == 1 and "\n" not in errors[0]["message"] and errors[0]["message"]
    assert stored(node) == before
    assert raw_get(node, "/v2/")[0] == 200  # still serving


def test_checksum_mismatch_from_upstream_is_refused_every_time(node: NodeProcess) -> None:
    before = stored(node)
    for _ in range(2):  # the second request must not find a cached copy either
        status, body = raw_get(node, f"/maven2/{BAD}")
        assert status == 502
        assert "sha1" in json.loads(body)["errors"][0]["message"].lower()
    assert stored(node) == before
    status, body = raw_get(node, f"/maven2/{GOOD}")
    assert status == 200 and body == b"good jar"
