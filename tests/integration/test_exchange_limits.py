"""Bandwidth settings on real daemons, read from `/metrics` as an operator would.

A provider capped with `--max-upload-rate` never sends more than the cap (within 10%)
in any 5-second window while a peer downloads a large layer from it alone; a node with
`--serve-artifacts false` downloads from peers but announces nothing and serves nothing.
"""

from __future__ import annotations

import re
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import httpx

from tests.integration.test_p2p_network import eventually, height, status
from tests.support import images
from tests.support.node import NodeProcess
from tests.support.registry import RegistryProcess

SERVED = re.compile(r'^pyrsia_exchange_served_bytes_total\{peer="[^"]+"\} (\d+)', re.M)
CAP_BYTES_S = 1_250_000
WINDOW_S = 5.0


def served(node: NodeProcess) -> int:
    return sum(int(n) for n in SERVED.findall(httpx.get(f"{node.url}/metrics", timeout=10).text))


def test_upload_rate_cap_holds_in_every_five_second_window(tmp_path: Path) -> None:
    image = images.large("library/capped", "1.0", 15_000_000)
    layer = next(d for d in image.blobs if len(image.blobs[d]) > 1_000_000)
    with ExitStack() as stack:
        registry = stack.enter_context(RegistryProcess(tmp_path / "upstream"))
        images.push(registry.url, image)
        up = ("--docker-upstream", registry.url)
        a = stack.enter_context(NodeProcess(tmp_path / "a", *up, "--max-upload-rate", str(CAP_BYTES_S)))
        url = f"{a.url}/v2/{image.name}/blobs/{layer}"
        assert httpx.get(f"{a.url}/v2/{image.name}/manifests/{image.tag}", timeout=60).status_code == 200
        assert httpx.get(url, timeout=60).content == image.blobs[layer]
        registry.stop()  # from here on the layer can only come from a
        b = stack.enter_context(NodeProcess(tmp_path / "b", *up, "--bootstrap", a.p2p_address))
        eventually(lambda: height(b) == height(a), "b synced")
        got: list[bytes] = []
        pull = threading.Thread(
            target=lambda: got.append(
                httpx.get(f"{b.url}/v2/{image.name}/blobs/{layer}", timeout=120).content
            )
        )
        pull.start()
        samples: list[tuple[float, int]] = []
        while pull.is_alive():
            samples.append((time.monotonic(), served(a)))
            pull.join(0.5)
        samples.append((time.monotonic(), served(a)))
        assert got == [image.blobs[layer]]
        assert samples[-1][1] >= len(image.blobs[layer])
        assert samples[-1][0] - samples[0][0] > 2 * WINDOW_S  # capped: it took a while
        for start_s, start_bytes in samples:
            for end_s, end_bytes in samples:
                if WINDOW_S <= end_s - start_s <= WINDOW_S + 1.0:
                    rate = (end_bytes - start_bytes) / (end_s - start_s)
                    assert rate <= CAP_BYTES_S * 1.1, f"{rate:.0f} B/s over {end_s - start_s:.1f} s"


def test_a_node_that_does_not_serve_announces_and_serves_nothing(tmp_path: Path) -> None:
    image = images.three_layer()
    with ExitStack() as stack:
        registry = stack.enter_context(RegistryProcess(tmp_path / "upstream"))
        images.push(registry.url, image)
        up = ("--docker-upstream", registry.url)
        a = stack.enter_context(NodeProcess(tmp_path / "a", *up))
        joined = (*up, "--bootstrap", a.p2p_address)
        quiet = stack.enter_context(NodeProcess(tmp_path / "quiet", *joined, "--serve-artifacts", "false"))
        c = stack.enter_context(NodeProcess(tmp_path / "c", *joined))
        for node in (quiet, c):
            for digest, data in image.blobs.items():
                manifest = f"{node.url}/v2/{image.name}/manifests/{image.tag}"
                assert httpx.get(manifest, timeout=60).status_code == 200
                assert httpx.get(f"{node.url}/v2/{image.name}/blobs/{digest}", timeout=60).content == data
        p2p = status(quiet)["p2p"]
        assert isinstance(p2p, dict) and p2p["provided_keys"] == 0
        exchange = status(quiet)["exchange"]
        assert isinstance(exchange, dict) and exchange["serve_artifacts"] is False
        assert served(quiet) == 0
        told_a = status_protocols(a, quiet)  # quiet joined through a: a has its identify
        assert "/pyrsia/sync/1.0.0" in told_a and "/pyrsia/exchange/1.0.0" not in told_a


def status_protocols(viewer: NodeProcess, target: NodeProcess) -> list[str]:
    """The protocols `target` told `viewer` it serves (identify), from viewer's peer list."""
    target_id = status(target)["peer_id"]
    peers = httpx.get(f"{viewer.url}/api/v1/peers", timeout=10).json()["peers"]
    for peer in peers:
        if peer["peer_id"] == target_id:
            return list(peer["protocols"])
    return []
