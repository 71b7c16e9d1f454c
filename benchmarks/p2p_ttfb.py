"""Time to first byte of a layer a node must fetch from its peers, with real daemons.

    python benchmarks/p2p_ttfb.py [--size-mib 500]

An authority A pulls a one-layer image through from a real docker-registry; regular
nodes B and C fetch the layer from the network, so three daemons provide it. The
upstream is then stopped and two fresh regular nodes are asked for the layer:

streamed  D, plain GET: the response starts once the first chunks from the peers are
          verified, and streams the verified prefix while the download runs.
whole     E, GET with `Range: bytes=0-`: a Range request waits for the whole blob, as
          every request did before streaming (verified, committed, then sendfile).
held      D again, now holding the blob: served from its store with sendfile.

Each row: seconds to the first body byte and to the last, measured by an httpx client
that hashes what it reads (the body is checked against the layer's digest).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.integration.test_p2p_network import eventually, height, pull_manifest
from tests.support import images
from tests.support.node import NodeProcess
from tests.support.registry import RegistryProcess

MIB = 1 << 20
os.environ.setdefault("PYRSIA_P2P_PORT", "0")  # free p2p ports, beside any node on 44000


def one_layer_image(size_bytes: int) -> tuple[images.Image, str]:
    """An image whose only layer is `size_bytes` random bytes (served as a blob; never unpacked)."""
    image = images.Image("bench/ttfb", "1.0")
    blob = os.urandom(size_bytes)
    digest = images.sha256(blob)
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers"}}).encode()
    image.blobs[images.sha256(config)] = config
    image.blobs[digest] = blob
    image.top = images._add_manifest(
        image,
        images.DOCKER_MANIFEST,
        {
            "schemaVersion": 2,
            "mediaType": images.DOCKER_MANIFEST,
            "config": {
                "mediaType": images.DOCKER_CONFIG,
                "digest": images.sha256(config),
                "size": len(config),
            },
            "layers": [{"mediaType": images.DOCKER_LAYER, "digest": digest, "size": size_bytes}],
        },
    )
    image.top_media_type = images.DOCKER_MANIFEST
    image.platforms["linux/amd64"] = image.top
    return image, digest


def timed_get(url: str, digest: str, headers: dict[str, str] | None = None) -> tuple[float, float]:
    """(seconds to the first body byte, seconds to the last), the body checked against `digest`."""
    hasher = hashlib.sha256()
    started = time.perf_counter()
    first = None
    with httpx.Client(timeout=600) as client, client.stream("GET", url, headers=headers or {}) as response:
        assert response.status_code in (200, 206), response.status_code
        for data in response.iter_raw(1 << 20):
            if first is None:
                first = time.perf_counter() - started
            hasher.update(data)
    total = time.perf_counter() - started
    assert f"sha256:{hasher.hexdigest()}" == digest, "body does not match the layer"
    return first or total, total


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mib", type=int, default=500)
    args = parser.parse_args()
    image, layer = one_layer_image(args.size_mib * MIB)
    rows: list[tuple[str, float, float]] = []
    with tempfile.TemporaryDirectory(prefix="pyrsia-ttfb-") as tmp, ExitStack() as stack:
        root = Path(tmp)
        registry = stack.enter_context(RegistryProcess(root / "upstream"))
        images.push(registry.url, image)
        up = ("--docker-upstream", registry.url)
        a = stack.enter_context(NodeProcess(root / "a", *up))
        joined = (*up, "--bootstrap", a.p2p_address)
        providers = [stack.enter_context(NodeProcess(root / n, *joined)) for n in ("b", "c")]
        for node in providers:
            pull_manifest(node, image)
            timed_get(f"{node.url}/v2/{image.name}/blobs/{layer}", layer)
        d = stack.enter_context(NodeProcess(root / "d", *joined))
        e = stack.enter_context(NodeProcess(root / "e", *joined))
        for node in (d, e):
            eventually(lambda node=node: height(node) == height(a), "synced", 120)
        registry.stop()
        for node in (d, e):
            pull_manifest(node, image)
        url = "{}/v2/" + image.name + "/blobs/" + layer
        rows.append(("streamed (from 3 peers)", *timed_get(url.format(d.url), layer)))
        rows.append(
            ("whole (Range, from 3 peers)", *timed_get(url.format(e.url), layer, {"Range": "bytes=0-"}))
        )
        rows.append(("held (local store)", *timed_get(url.format(d.url), layer)))
    print(f"layer: {args.size_mib} MiB, providers: 3 daemons on loopback, {os.cpu_count()} cores")
    print(f"{'case':<30} {'first byte s':>12} {'last byte s':>12} {'MiB/s':>8}")
    for case, first, total in rows:
        print(f"{case:<30} {first:>12.3f} {total:>12.3f} {args.size_mib / total:>8.1f}")


if __name__ == "__main__":
    main()
