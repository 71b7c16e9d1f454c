"""A node killed with SIGKILL in the middle of a peer download resumes from its verified chunks.

Authority A pulls an 80 MB layer through from a real docker-registry; regular nodes B
and C get it from the network and provide it. D, capped to a slow download rate, asks
for the layer; once its status shows the transfer between 20% and 80% verified, D is
killed with SIGKILL and started again on the same home without the cap. The layer it
then serves is byte for byte the upstream's, and the bytes D received from peers after
the restart fall short of the whole by at least what was verified before the kill.
"""

from __future__ import annotations

import json
import random
import re
import threading
from contextlib import ExitStack, suppress
from pathlib import Path

import httpx

from pyrsia.artifacts.blobstore import ResumableBlobWriter
from tests.integration.test_p2p_network import eventually, height, pull_manifest
from tests.support import images
from tests.support.node import NodeProcess
from tests.support.registry import RegistryProcess

MIB = 1 << 20
RECEIVED = re.compile(r'^pyrsia_exchange_received_bytes_total\{peer="([^"]+)"\} (\d+)', re.M)


def one_layer(name: str, tag: str, layer_bytes: int, seed: int) -> tuple[images.Image, str]:
    """An image whose single layer is `layer_bytes` of seeded random bytes; (image, layer digest).

    Registries and nodes never unpack a layer, so the bytes need not be a tar.
    """
    image = images.Image(name, tag)
    blob = random.Random(seed).randbytes(layer_bytes)
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers"}}).encode()
    layer_digest, config_digest = images.sha256(blob), images.sha256(config)
    image.blobs = {config_digest: config, layer_digest: blob}
    doc = {
        "schemaVersion": 2,
        "mediaType": images.DOCKER_MANIFEST,
        "config": {"mediaType": images.DOCKER_CONFIG, "digest": config_digest, "size": len(config)},
        "layers": [{"mediaType": images.DOCKER_LAYER, "digest": layer_digest, "size": len(blob)}],
    }
    body = json.dumps(doc, sort_keys=True).encode()
    image.top, image.top_media_type = images.sha256(body), images.DOCKER_MANIFEST
    image.manifests[image.top] = (images.DOCKER_MANIFEST, body)
    return image, layer_digest


def get_blob(node: NodeProcess, image: images.Image, digest: str, timeout_s: float = 300) -> bytes:
    response = httpx.get(f"{node.url}/v2/{image.name}/blobs/{digest}", timeout=timeout_s)
    assert response.status_code == 200, response.text
    return response.content


def transfer_of(node: NodeProcess, digest: str) -> dict[str, object] | None:
    doc = httpx.get(f"{node.url}/api/v1/status", timeout=10).json()
    for transfer in doc["exchange"]["transfers"]:
        if transfer["digest"] == digest:
            return dict(transfer)
    return None


def received_bytes(node: NodeProcess) -> int:
    metrics = httpx.get(f"{node.url}/metrics", timeout=10).text
    return sum(int(n) for _, n in RECEIVED.findall(metrics))


def test_a_killed_download_resumes_from_its_verified_chunks(tmp_path: Path) -> None:
    image, layer = one_layer("library/resume", "1.0", 80 * MIB, seed=7)
    size = len(image.blobs[layer])
    with ExitStack() as stack:
        registry = stack.enter_context(RegistryProcess(tmp_path / "upstream"))
        images.push(registry.url, image)
        up = ("--docker-upstream", registry.url)
        a = stack.enter_context(NodeProcess(tmp_path / "a", *up))
        joined = (*up, "--bootstrap", a.p2p_address)
        b = stack.enter_context(NodeProcess(tmp_path / "b", *joined))
        c = stack.enter_context(NodeProcess(tmp_path / "c", *joined))
        capped = ("--max-download-rate", str(6 * MIB))
        d = stack.enter_context(NodeProcess(tmp_path / "d", *joined, *capped))
        assert pull_manifest(a, image) == image.top
        assert get_blob(a, image, layer) == image.blobs[layer]
        eventually(lambda: height(b) == height(c) == height(d) == height(a), "the log reached b, c, d")
        assert get_blob(b, image, layer) == image.blobs[layer]
        assert get_blob(c, image, layer) == image.blobs[layer]
        assert received_bytes(c) == size  # a chunk two peers both sent counts once

        # The request dies with D; its outcome is not what this test is about.
        def doomed() -> None:
            with suppress(httpx.HTTPError):
                httpx.get(f"{d.url}/v2/{image.name}/blobs/{layer}", timeout=300)

        threading.Thread(target=doomed, daemon=True).start()
        seen: dict[str, object] = {}

        def midway() -> bool:
            transfer = transfer_of(d, layer)
            if transfer is None:
                return False
            seen.update(transfer)
            chunks, verified = int(transfer["chunks"]), int(transfer["verified_chunks"])
            assert verified < chunks * 0.8, f"the cap did not hold the transfer back: {transfer}"
            return verified >= chunks * 0.2

        eventually(midway, "d's transfer is between 20% and 80% verified", within_s=120)
        d.kill()
        verified_before = int(seen["verified_chunks"])
        partials = list((d.home / "blobs" / "tmp").glob("*.partial"))
        assert partials, "the kill left no partial download behind"

        d.flags = list(joined)  # the cap lifted
        d.start()
        assert get_blob(d, image, layer) == image.blobs[layer]
        after = received_bytes(d)
        # The progress list is saved every few chunks: a kill loses at most that many.
        lost_max = ResumableBlobWriter.PROGRESS_EVERY_CHUNKS
        assert 0 < after <= size - (verified_before - lost_max) * MIB, (after, size, verified_before)
        assert "resuming with" in d.output()
