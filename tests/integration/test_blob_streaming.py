"""A node serves a layer while it downloads it from peers, real daemons on loopback.

Authority A pulls a one-layer image of about 60 MB through from a real docker-registry
when regular node B asks for it; both then provide it. The upstream is stopped. C, a
regular node whose peer downloads are capped (`--max-download-rate`) so the transfer
lasts a while, is asked for the layer: the client receives its first bytes while C's
own status still lists the transfer as running, and the whole body equals the
upstream's bytes. Once held, a Range request is served from the store as before.
"""

from __future__ import annotations

import random
from contextlib import ExitStack
from pathlib import Path

import httpx

from tests.integration.test_p2p_network import eventually, height, pull_blobs, pull_manifest, status
from tests.support import images
from tests.support.node import NodeProcess
from tests.support.registry import RegistryProcess

LAYER_BYTES = 60_000_000
RATE_BYTES_PER_S = 8_000_000


def one_layer_image() -> images.Image:
    image = images.Image("bench/stream", "1.0")
    image.top = images._single(image, [{"data.bin": random.Random(9).randbytes(LAYER_BYTES)}], docker=True)
    image.top_media_type = images.DOCKER_MANIFEST
    image.platforms["linux/amd64"] = image.top
    return image


def transfers(node: NodeProcess) -> list[str]:
    exchange = status(node)["exchange"]
    assert isinstance(exchange, dict)
    return [str(t["digest"]) for t in exchange["transfers"]]


def test_a_layer_streams_to_the_client_while_the_node_downloads_it_from_peers(tmp_path: Path) -> None:
    image = one_layer_image()
    layer = max(image.blobs, key=lambda d: len(image.blobs[d]))
    with ExitStack() as stack:
        registry = stack.enter_context(RegistryProcess(tmp_path / "upstream"))
        images.push(registry.url, image)
        up = ("--docker-upstream", registry.url)
        a = stack.enter_context(NodeProcess(tmp_path / "a", *up))
        joined = (*up, "--bootstrap", a.p2p_address)
        b = stack.enter_context(NodeProcess(tmp_path / "b", *joined))
        c = stack.enter_context(
            NodeProcess(tmp_path / "c", *joined, "--max-download-rate", str(RATE_BYTES_PER_S))
        )
        assert pull_manifest(b, image) == image.top
        pull_blobs(b, image)
        eventually(lambda: height(c) == height(a), "c synced the log")
        registry.stop()

        assert pull_manifest(c, image) == image.top
        received = bytearray()
        running_at_first_bytes: list[str] | None = None
        url = f"{c.url}/v2/{image.name}/blobs/{layer}"
        with httpx.Client(timeout=120) as client, client.stream("GET", url) as response:
            assert response.status_code == 200
            assert response.headers["content-length"] == str(len(image.blobs[layer]))
            assert response.headers["docker-content-digest"] == layer
            for data in response.iter_raw():
                if running_at_first_bytes is None:
                    running_at_first_bytes = transfers(c)
                received += data
        assert running_at_first_bytes is not None and layer in running_at_first_bytes
        assert bytes(received) == image.blobs[layer]
        eventually(lambda: transfers(c) == [], "c's transfer ended")

        # Held now: served whole from the store, Range included.
        ranged = httpx.get(
            f"{c.url}/v2/{image.name}/blobs/{layer}", headers={"Range": "bytes=10-19"}, timeout=60
        )
        assert ranged.status_code == 206 and ranged.content == image.blobs[layer][10:20]
