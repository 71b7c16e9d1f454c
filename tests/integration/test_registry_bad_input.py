"""Hostile and broken input: each gets an error status or a closed connection,
nothing wrong is stored or served, and the node keeps serving everyone else.

Requests that a client library would normalize go over raw sockets. The "evil
upstream" is a small fake registry in this process that truncates a blob, sends wrong
bytes for a digest and labels a manifest with a digest its bytes do not have.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import images
from tests.support.node import NodeProcess
from tests.support.registry import RegistryProcess

BIG = images.Image("library/big", "1")
BIG.top = images._single(BIG, [{"big.bin": os.urandom(8 * 1024 * 1024)}])
BIG.top_media_type = images.OCI_MANIFEST
NO_RETRIES = {"PYRSIA_UPSTREAM_RETRIES_MAX": "0"}


def raw(node: NodeProcess, data: bytes, timeout_s: float = 10) -> bytes:
    """Sends bytes, returns everything the node answers until it closes."""
    host, port = node.address.split(":")
    with socket.create_connection((host, int(port)), timeout=timeout_s) as sock:
        sock.sendall(data)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
    return received


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()


def footprint(node: NodeProcess) -> tuple[list[Path], int]:
    """Stored blob files (temp files included) and the log's size."""
    files = sorted(p for p in (node.home / "blobs").rglob("*") if p.is_file())
    return files, httpx.get(f"{node.url}/api/v1/log").json()["size"]


def still_serving(node: NodeProcess) -> None:
    answer = httpx.get(
        f"{node.url}/v2/{BIG.name}/manifests/{BIG.tag}", headers={"Accept": images.OCI_MANIFEST}
    )
    assert answer.status_code == 200 and answer.headers["docker-content-digest"] == BIG.top


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    with RegistryProcess(tmp_path_factory.mktemp("upstream")) as registry:
        images.push(registry.url, BIG)
        home = tmp_path_factory.mktemp("node")
        with NodeProcess(home, "--docker-upstream", registry.url, "--http-header-timeout", "2") as node:
            still_serving(node)
            yield node


@pytest.mark.parametrize(
    "path",
    [
        "/v2/../../etc/passwd/manifests/x",
        "/v2/library/%2e%2e/%2e%2e/manifests/latest",
        "/v2/library%2F..%2F..%2Fetc/manifests/latest",
        "/v2//etc/passwd/manifests/latest",
        "//etc/passwd",
        "/v2/library/big/blobs/sha256:../../../../etc/passwd",
        "/v2/library/big/manifests/..%2f..%2fetc",
    ],
)
def test_path_traversal_is_refused(node: NodeProcess, path: str) -> None:
    before = footprint(node)
    answer = raw(node, get(path))
    assert status_of(answer) in (400, 404)
    body = json.loads(answer.partition(b"\r\n\r\n")[2])
    assert body["errors"][0]["code"] in ("NAME_INVALID", "NOT_FOUND", "DIGEST_INVALID", "TAG_INVALID")
    assert footprint(node) == before
    still_serving(node)


def test_oversized_headers_get_431_or_a_close(node: NodeProcess) -> None:
    answer = raw(node, b"GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n")
    assert status_of(answer) in (431, 0)
    still_serving(node)


@pytest.mark.parametrize(
    ("header", "status"),
    [("bytes=abc", 416), ("bytes=--1", 416), ("items=0-1", 200), ("bytes=0-1,5-6", 200)],
)
def test_malformed_or_unsupported_ranges(node: NodeProcess, header: str, status: int) -> None:
    """RFC 9110 §14.2: a malformed bytes range is unsatisfiable; other units and
    multiple ranges may be ignored, and are: the whole blob comes back."""
    layer = BIG.layers_of(BIG.top)[0]
    got = httpx.get(f"{node.url}/v2/{BIG.name}/blobs/{layer}", headers={"Range": header})
    assert got.status_code == status
    if status == 200:
        assert got.content == BIG.blobs[layer]


def test_garbage_instead_of_http(node: NodeProcess) -> None:
    answer = raw(node, os.urandom(4096) + b"\r\n\r\n")
    assert status_of(answer) in (400, 0)
    still_serving(node)


def test_slowloris_is_cut_off_and_does_not_block_others(node: NodeProcess) -> None:
    host, port = node.address.split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /v2/ HTTP/1.1\r\n")
        closed = b""
        for _ in range(40):  # one header byte every half second, far slower than the 2 s head limit
            still_serving(node)
            try:
                sock.sendall(b"X")
            except (BrokenPipeError, ConnectionResetError):
                break
            sock.settimeout(0.5)
            try:
                closed = sock.recv(65536)
                break
            except TimeoutError:
                continue
        assert time.monotonic() - started < 15
        assert closed == b"" or status_of(closed) == 408


def test_client_gone_mid_blob(node: NodeProcess) -> None:
    layer = BIG.layers_of(BIG.top)[0]
    host, port = node.address.split(":")
    for _ in range(3):
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(get(f"/v2/{BIG.name}/blobs/{layer}"))
            assert sock.recv(1024).startswith(b"HTTP/1.1 200")
    got = httpx.get(f"{node.url}/v2/{BIG.name}/blobs/{layer}")
    assert got.content == BIG.blobs[layer]


# --- an upstream that lies ----------------------------------------------------------

EVIL = images.Image("library/evil", "1")
EVIL.top = images._single(EVIL, [{"a": b"a" * 5000}, {"b": b"b" * 5000}])
TRUNCATED, WRONG = EVIL.layers_of(EVIL.top)


class Evil(BaseHTTPRequestHandler):
    """Serves EVIL correctly except: TRUNCATED stops half way, WRONG is other bytes,
    tag `mislabeled` claims a digest its bytes do not have."""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, body: bytes, length: int | None = None, headers: dict[str, str] | None = None) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        reference = path.rsplit("/", 1)[-1]
        media_type, manifest = EVIL.manifests[EVIL.top]
        if path == "/v2/":
            self._send(b"{}")
        elif path.endswith("/manifests/1") or path.endswith(f"/manifests/{EVIL.top}"):
            self._send(manifest, headers={"Content-Type": media_type, "Docker-Content-Digest": EVIL.top})
        elif path.endswith("/manifests/mislabeled"):
            tampered = manifest.replace(b'"schemaVersion": 2', b'"schemaVersion":  2')
            self._send(tampered, headers={"Content-Type": media_type, "Docker-Content-Digest": EVIL.top})
        elif reference == TRUNCATED:
            self._send(
                EVIL.blobs[TRUNCATED][: len(EVIL.blobs[TRUNCATED]) // 2], length=len(EVIL.blobs[TRUNCATED])
            )
            self.close_connection = True
        elif reference == WRONG:
            self._send(b"x" * len(EVIL.blobs[WRONG]))
        elif reference in EVIL.blobs:
            self._send(EVIL.blobs[reference])
        else:
            self.send_error(404)


@pytest.fixture(scope="module")
def evil_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Evil)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with NodeProcess(tmp_path_factory.mktemp("node"), "--docker-upstream", url, env=NO_RETRIES) as node:
            yield node
    finally:
        server.shutdown()
        server.server_close()


def test_mislabeled_manifest_is_refused_and_not_logged(evil_node: NodeProcess) -> None:
    before = footprint(evil_node)
    for _ in range(2):
        got = httpx.get(f"{evil_node.url}/v2/library/evil/manifests/mislabeled")
        assert got.status_code == 502 and got.json()["errors"][0]["code"] == "DIGEST_INVALID"
    assert footprint(evil_node) == before


@pytest.mark.parametrize("layer", [TRUNCATED, WRONG], ids=["truncated", "wrong-bytes"])
def test_truncated_or_wrong_blob_is_refused_and_not_stored(evil_node: NodeProcess, layer: str) -> None:
    manifest = httpx.get(
        f"{evil_node.url}/v2/library/evil/manifests/1", headers={"Accept": images.OCI_MANIFEST}
    )
    assert manifest.status_code == 200  # the manifest itself is honest and now vouched for
    stored = evil_node.home / "blobs" / "sha256" / layer[7:9] / layer[7:]
    for _ in range(2):  # nothing was cached by the first failure
        got = httpx.get(f"{evil_node.url}/v2/library/evil/blobs/{layer}")
        assert got.status_code in (502, 503)
        assert got.json()["errors"][0]["code"] in ("DIGEST_INVALID", "UPSTREAM_ERROR", "UPSTREAM_UNAVAILABLE")
        assert not stored.exists()
        assert list((evil_node.home / "blobs" / "tmp").iterdir()) == []
    honest = EVIL.config_of(EVIL.top)
    assert httpx.get(f"{evil_node.url}/v2/library/evil/blobs/{honest}").content == EVIL.blobs[honest]
