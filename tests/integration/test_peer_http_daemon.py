"""The peer HTTP data plane on real daemons: downloads over it, and bad input at its listener.

Each `NodeProcess` gets a free `--peer-http-port`. Bytes that arrived over HTTP are
read from `/metrics` (`pyrsia_exchange_received_bytes_by_path_total{path="http"}`) as
an operator would; the listener is probed with raw sockets where a client library
would tidy the request (a traversing path, a second source address).
"""

from __future__ import annotations

import re
import socket
import threading
from contextlib import ExitStack
from pathlib import Path

import httpx

from tests.integration.test_p2p_network import eventually, height, status
from tests.support import images
from tests.support.node import NodeProcess
from tests.support.ports import free_port
from tests.support.registry import RegistryProcess

BY_PATH = re.compile(
    r'^pyrsia_exchange_received_bytes_by_path_total\{peer="([^"]+)",path="([a-z0-9]+)"\} (\d+)$', re.M
)


def received_by_path(node: NodeProcess) -> dict[tuple[str, str], int]:
    text = httpx.get(f"{node.url}/metrics", timeout=10).text
    return {(peer, path): int(n) for peer, path, n in BY_PATH.findall(text)}


def peer_port(node: NodeProcess) -> int:
    exchange = status(node)["exchange"]
    assert isinstance(exchange, dict)
    return int(exchange["peer_http_port"])


Reply = tuple[int, dict[str, str], bytes]
PROBE = "127.0.0.3"  # the probes' own address, so the flood's limit is not theirs


def raw_get(port: int, target: str, *headers: str, source: str = PROBE) -> Reply:
    """One request on its own connection from `source`; (status, headers, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30, source_address=(source, 0)) as sock:
        lines = (f"GET {target} HTTP/1.1", "Host: peer", "Connection: close", *headers)
        head = "".join(f"{h}\r\n" for h in lines)
        sock.sendall(head.encode() + b"\r\n")
        data = b""
        while chunk := sock.recv(1 << 20):
            data += chunk
    top, _, body = data.partition(b"\r\n\r\n")
    lines = top.decode("latin-1").split("\r\n")
    fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), fields, body


def test_peers_download_over_http_from_one_then_three_providers(tmp_path: Path) -> None:
    """b has one provider (a), c two, d three; every byte each got from peers came over HTTP."""
    image = images.large("library/overhttp", "1.0", 12_000_000)
    layer = next(d for d in image.blobs if len(image.blobs[d]) > 1_000_000)
    size = len(image.blobs[layer])
    with ExitStack() as stack:
        registry = stack.enter_context(RegistryProcess(tmp_path / "upstream"))
        images.push(registry.url, image)
        up = ("--docker-upstream", registry.url)
        a = stack.enter_context(NodeProcess(tmp_path / "a", *up))
        assert httpx.get(f"{a.url}/v2/{image.name}/manifests/{image.tag}", timeout=60).status_code == 200
        assert httpx.get(f"{a.url}/v2/{image.name}/blobs/{layer}", timeout=60).content == image.blobs[layer]
        registry.stop()  # from here on the layer comes from peers only
        joined = (*up, "--bootstrap", a.p2p_address)
        nodes = [a]
        for name in ("b", "c", "d"):
            # d is capped so that no one provider can send it all before the others are asked.
            capped = ("--max-download-rate", str(4 * 1024 * 1024)) if name == "d" else ()
            node = stack.enter_context(NodeProcess(tmp_path / name, *joined, *capped))
            eventually(lambda node=node: height(node) == height(a), f"{name} synced")
            got = httpx.get(f"{node.url}/v2/{image.name}/blobs/{layer}", timeout=120)
            assert got.status_code == 200 and got.content == image.blobs[layer]
            by_path = received_by_path(node)
            assert by_path, f"{name} counted no peer bytes"
            assert {path for _, path in by_path} == {"http"}, by_path
            assert sum(by_path.values()) == size
            holders = {str(status(n)["peer_id"]) for n in nodes}
            assert {peer for peer, _ in by_path} <= holders
            nodes.append(node)
        senders_to_d = {peer for (peer, _), n in received_by_path(nodes[-1]).items() if n > 0}
        assert len(senders_to_d) >= 2, senders_to_d


def test_the_listener_refuses_bad_input_and_a_flooding_address_alone(tmp_path: Path) -> None:
    image = images.three_layer("library/peerprobe")
    layer, data = max(image.blobs.items(), key=lambda item: len(item[1]))
    with ExitStack() as stack:
        registry = stack.enter_context(RegistryProcess(tmp_path / "upstream"))
        images.push(registry.url, image)
        a = stack.enter_context(
            NodeProcess(tmp_path / "a", "--docker-upstream", registry.url, "--peer-http-request-rate", "5")
        )
        assert httpx.get(f"{a.url}/v2/{image.name}/manifests/{image.tag}", timeout=60).status_code == 200
        assert httpx.get(f"{a.url}/v2/{image.name}/blobs/{layer}", timeout=60).content == data
        port = peer_port(a)
        path = f"/peer/v1/blobs/{layer}"
        unvouched = "sha256:" + "ab" * 32
        probes = [
            (raw_get(port, path, "Range: bytes=10-19"), 206),
            (raw_get(port, f"/peer/v1/blobs/{unvouched}"), 404),
            (raw_get(port, path, f"Range: bytes={len(data)}-"), 416),
            (raw_get(port, path, "Range: bytes=x-y"), 416),
            (raw_get(port, f"/peer/v1/blobs/../../v2/{image.name}/blobs/{layer}"), 404),
        ]
        for (status_code, fields, body), expected in probes:
            assert status_code == expected, (status_code, fields, body[:200])
        assert probes[0][0][2] == data[10:20]
        assert probes[2][0][1]["content-range"] == f"bytes */{len(data)}"
        # The registry's routes are not on this port.
        assert raw_get(port, "/v2/", source="127.0.0.4")[0] == 404
        # A flood from 127.0.0.1 runs out of its own tokens; 127.0.0.2 is still served.
        flood = [raw_get(port, path, "Range: bytes=0-0", source="127.0.0.1")[0] for _ in range(30)]
        assert 429 in flood, flood
        refused = raw_get(port, path, "Range: bytes=0-0", source="127.0.0.1")
        if refused[0] == 429:
            assert int(refused[1]["retry-after"]) >= 1
        other = raw_get(port, path, "Range: bytes=0-9", source="127.0.0.2")
        assert other[0] == 206 and other[2] == data[:10]


def test_a_node_that_does_not_serve_opens_no_peer_listener(tmp_path: Path) -> None:
    port = free_port()
    flags = ("--serve-artifacts", "false", "--peer-http-port", str(port))
    with NodeProcess(tmp_path / "quiet", *flags) as quiet:
        assert peer_port(quiet) == 0
        refused = threading.Event()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        except ConnectionRefusedError:
            refused.set()
        assert refused.is_set()
