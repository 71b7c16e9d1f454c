"""A real `pyrsia daemon` (pulling through a real `docker-registry`) against hostile
and sloppy HTTP clients, the way the defects were first found: by probing a node.

Idle keep-alive connections by the hundred must not lock other clients out;
a request smuggled behind Content-Length plus Transfer-Encoding is never answered;
a Range with thousands of digits is a 416, not a 500; a resumed download with a stale
If-Range gets the whole blob; a cached copy is confirmed with 304. The daemon's output
must hold no traceback at the end.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import images
from tests.support.node import NodeProcess
from tests.support.registry import RegistryProcess
from tests.support.wait import eventually

IMAGE = images.three_layer("library/probe", "1")
LAYER = IMAGE.layers_of(IMAGE.top)[0]
LAYER_BYTES = IMAGE.blobs[LAYER]


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    with RegistryProcess(tmp_path_factory.mktemp("upstream")) as registry:
        images.push(registry.url, IMAGE)
        home = tmp_path_factory.mktemp("node")
        with NodeProcess(home, "--docker-upstream", registry.url, "--http-header-timeout", "2") as node:
            manifest = httpx.get(
                f"{node.url}/v2/{IMAGE.name}/manifests/{IMAGE.tag}", headers={"Accept": IMAGE.top_media_type}
            )
            assert manifest.status_code == 200
            assert httpx.get(blob_url(node)).content == LAYER_BYTES  # cached from now on
            yield node
            assert "Traceback" not in node.output()


def blob_url(node: NodeProcess) -> str:
    return f"{node.url}/v2/{IMAGE.name}/blobs/{LAYER}"


def connect(node: NodeProcess) -> socket.socket:
    host, port = node.address.split(":")
    return socket.create_connection((host, int(port)), timeout=15)


def raw(node: NodeProcess, data: bytes) -> bytes:
    with connect(node) as sock:
        sock.sendall(data)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
    return received


def ask_v2(sock: socket.socket) -> bytes:
    """One `GET /v2/` on a keep-alive connection; its answer read to the end of the body."""
    sock.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
    answer = b""
    while not answer.endswith(b"\r\n\r\n{}"):
        chunk = sock.recv(65536)
        assert chunk, answer
        answer += chunk
    return answer


def closed_now(sock: socket.socket) -> bool:
    """Whether the peer has closed `sock`, without waiting."""
    sock.setblocking(False)
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True
    finally:
        sock.setblocking(True)
        sock.settimeout(15)


def statuses(answer: bytes) -> list[int]:
    return [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)]


def test_idle_keep_alive_connections_do_not_lock_out_new_clients(node: NodeProcess) -> None:
    idle: list[socket.socket] = []
    try:
        # Far more than the default 64 workers plus their 64-deep queue.
        for _ in range(300):
            idle.append(connect(node))
            assert statuses(ask_v2(idle[-1])) == [200]
        assert httpx.get(blob_url(node), timeout=15).content == LAYER_BYTES
        for sock in idle[::50]:
            assert statuses(ask_v2(sock)) == [200]
    finally:
        for sock in idle:
            sock.close()


def test_smuggled_request_is_never_answered(node: NodeProcess) -> None:
    smuggled = f"GET /v2/{IMAGE.name}/blobs/{LAYER} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    answer = raw(
        node,
        b"GET /v2/ HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        + smuggled,
    )
    assert statuses(answer) == [400]
    assert LAYER_BYTES not in answer


@pytest.mark.parametrize(
    ("header", "status"),
    [
        ("bytes=" + "9" * 5000 + "-", 416),
        ("bytes=0-" + "9" * 5000, 206),
        ("bytes=-" + "9" * 5000, 206),
        ("bytes=\u0661-\u0662", 416),
    ],
)
def test_range_numbers_of_any_length(node: NodeProcess, header: str, status: int) -> None:
    got = httpx.get(blob_url(node), headers={"Range": header.encode("utf-8")})
    assert got.status_code == status
    if status == 206:
        assert got.content == LAYER_BYTES


def test_resuming_with_a_stale_if_range_gets_the_whole_blob(node: NodeProcess) -> None:
    etag = httpx.head(blob_url(node)).headers["etag"]
    assert etag == f'"{LAYER}"'
    resumed = httpx.get(blob_url(node), headers={"Range": "bytes=10-", "If-Range": etag})
    assert resumed.status_code == 206 and resumed.content == LAYER_BYTES[10:]
    stale = httpx.get(blob_url(node), headers={"Range": "bytes=10-", "If-Range": '"sha256:' + "0" * 64 + '"'})
    assert stale.status_code == 200 and stale.content == LAYER_BYTES


def test_a_cached_copy_is_confirmed_with_304(node: NodeProcess) -> None:
    manifest_url = f"{node.url}/v2/{IMAGE.name}/manifests/{IMAGE.tag}"
    accept = {"Accept": IMAGE.top_media_type}
    for target, etag in ((manifest_url, f'"{IMAGE.top}"'), (blob_url(node), f'"{LAYER}"')):
        got = httpx.get(target, headers={**accept, "If-None-Match": etag})
        assert got.status_code == 304 and got.content == b"" and got.headers["etag"] == etag
        changed = httpx.get(target, headers={**accept, "If-None-Match": '"sha256:other"'})
        assert changed.status_code == 200 and changed.headers["etag"] == etag


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET http://[::1/v2/ HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET //[x/v2/ HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /v2/ HTTP/2.0\r\nHost: x\r\n\r\n",
        b"PUT /v2/ HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5000000\r\n\r\n",
        b"GET /v2/ HTTP/1.1\r\nHost: x\r\nX-A: \xff\xfe\r\nIf-Modified-Since: \xff\r\nIf-None-Match: \x80\r\n"
        b"Range: bytes=\xff-\r\nConnection: close\r\n\r\n",
        b"GET /v2/" + b"%ff" * 1000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\xff" * 70000,
    ],
)
def test_malformed_requests_never_get_a_500(node: NodeProcess, request_bytes: bytes) -> None:
    answer = raw(node, request_bytes)
    got = statuses(answer[:100])
    assert got, answer[:300]
    assert 200 <= got[0] < 500 or got[0] == 505, answer[:300]
    assert httpx.get(f"{node.url}/v2/").status_code == 200


@pytest.mark.parametrize("n", ["%C2%B2", "9" * 5000])
def test_tag_page_sizes_that_int_refuses_are_400(node: NodeProcess, n: str) -> None:
    got = httpx.get(f"{node.url}/v2/{IMAGE.name}/tags/list?n={n}")
    assert got.status_code == 400 and got.json()["errors"][0]["code"] == "PAGINATION_NUMBER_INVALID"


def test_parked_connections_fit_the_file_limit(tmp_path: Path) -> None:
    """Under `ulimit -n 256` the node parks at most 256 - 128 reserved - 3 per worker
    connections, closing the oldest idle ones, and never runs out of descriptors."""
    command = ["prlimit", "--nofile=256:256", *NodeProcess.default_command()]
    opened: list[socket.socket] = []
    with NodeProcess(tmp_path / "node", "--http-workers", "4", command=command) as small:
        try:
            for _ in range(300):
                opened.append(connect(small))
                assert statuses(ask_v2(opened[-1])) == [200]
            parked_max = 256 - 128 - 3 * 4
            # The oldest go first, in the order the node parked them. A worker hands a
            # connection back just after its answer, so the next one may be parked before
            # it: neighbours at the edge can swap places. A worker the host stalls between
            # its answer and the hand-back parks its connection later still, as a newer idle
            # one: a few such stragglers may outlive their neighbours.
            edge, stragglers_max = 8, 8
            oldest = opened[: 300 - parked_max - edge]
            eventually(
                lambda: sum(not closed_now(sock) for sock in oldest) <= stragglers_max, "the oldest closed"
            )
            eventually(
                lambda: sum(not closed_now(sock) for sock in opened) <= parked_max, "parked within the limit"
            )
            for sock in opened[-100:]:
                assert statuses(ask_v2(sock)) == [200]
            assert httpx.get(f"{small.url}/v2/").status_code == 200
        finally:
            for sock in opened:
                sock.close()
        assert "Traceback" not in small.output() and "Too many open files" not in small.output()
