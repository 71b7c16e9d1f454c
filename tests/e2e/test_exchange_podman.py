"""Four nodes share a 60 MB image; the last gets it from its peers, not from the upstream.

Authority A pulls through from a real docker-registry; regular nodes B and C pull the
image with podman (their layers come from the network, each verified chunk by chunk,
then they provide them). The upstream is then stopped, and D, a regular node that talks
to the others over p2p only, pulls with podman: every digest equals the upstream's, and
D's `/metrics` shows bytes from at least two peers and none from the upstream.
"""

from __future__ import annotations

import re
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_registry_clients import assert_upstream_down, podman_env, run
from tests.integration.test_p2p_network import eventually, height
from tests.support import images
from tests.support.node import NodeProcess
from tests.support.registry import RegistryProcess

pytestmark = pytest.mark.e2e
RECEIVED = re.compile(r'^pyrsia_exchange_received_bytes_total\{peer="([^"]+)"\} (\d+)', re.M)
BY_SOURCE = re.compile(r'^pyrsia_blob_bytes_total\{source="([^"]+)"\} (\d+)', re.M)


def podman_pull(root: Path, node: NodeProcess, image: images.Image) -> str:
    env = podman_env(root, node)
    reference = f"{node.address}/{image.reference}"
    run("podman", "pull", "--tls-verify=false", reference, env=env, timeout_s=300)
    return run("podman", "image", "inspect", "--format", "{{.Digest}}", reference, env=env).strip()


def test_the_last_node_pulls_from_its_peers_with_the_upstream_gone(tmp_path: Path) -> None:
    image = images.large("library/big", "1.0", 20_000_000)
    with ExitStack() as stack:
        registry = stack.enter_context(RegistryProcess(tmp_path / "upstream"))
        images.push(registry.url, image)
        up = ("--docker-upstream", registry.url)
        a = stack.enter_context(NodeProcess(tmp_path / "a", *up))
        joined = (*up, "--bootstrap", a.p2p_address)
        b = stack.enter_context(NodeProcess(tmp_path / "b", *joined))
        c = stack.enter_context(NodeProcess(tmp_path / "c", *joined))
        d = stack.enter_context(NodeProcess(tmp_path / "d", *joined))
        assert podman_pull(tmp_path / "pb", b, image) == image.top
        assert podman_pull(tmp_path / "pc", c, image) == image.top
        eventually(lambda: height(d) == height(a), "d synced the log")

        registry.stop()
        assert_upstream_down(registry)
        assert podman_pull(tmp_path / "pd", d, image) == image.top
        for digest, data in image.blobs.items():
            served = httpx.get(f"{d.url}/v2/{image.name}/blobs/{digest}", timeout=60)
            assert served.status_code == 200 and served.content == data

        metrics = httpx.get(f"{d.url}/metrics", timeout=10).text
        peers = {peer: int(n) for peer, n in RECEIVED.findall(metrics) if int(n) > 0}
        assert len(peers) >= 2, metrics
        sources = {source: int(n) for source, n in BY_SOURCE.findall(metrics)}
        total = sum(len(blob) for blob in image.blobs.values())
        assert sources.get("upstream", 0) == 0 and sources["peer"] >= total
        # Origin bytes: the image crossed from the upstream once, into the authority alone.
        origin = {}
        for node in (a, b, c):
            text = httpx.get(f"{node.url}/metrics", timeout=10).text
            origin[node.home.name] = dict(BY_SOURCE.findall(text)).get("upstream", "0")
        assert int(origin["a"]) == total and origin["b"] == origin["c"] == "0", origin
