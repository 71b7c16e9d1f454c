"""`pyrsia pull image` without docker: what it writes, real tools read.

The OCI layout must satisfy `skopeo inspect oci:DIR`; the docker-archive must load
into podman with the same image id (config digest) the upstream published.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_registry_clients import podman_env, run
from tests.support import images
from tests.support.node import NodeProcess
from tests.support.registry import RegistryProcess

pytestmark = pytest.mark.e2e

THREE, MULTI = images.three_layer(), images.multi_arch()


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    with RegistryProcess(tmp_path_factory.mktemp("upstream")) as registry:
        for image in (THREE, MULTI):
            images.push(registry.url, image)
        with NodeProcess(tmp_path_factory.mktemp("node"), "--docker-upstream", registry.url) as node:
            yield node


def pull(node: NodeProcess, *args: str) -> dict[str, object]:
    result = subprocess.run(
        [sys.executable, "-m", "pyrsia", "pull", "image", *args, "--node", node.url, "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    doc: dict[str, object] = json.loads(result.stdout)
    return doc


def test_oci_layout_reads_with_skopeo(node: NodeProcess, tmp_path: Path) -> None:
    out = tmp_path / "three-oci"
    doc = pull(node, THREE.reference, "--output", str(out))
    assert doc["manifest_digest"] == THREE.top and doc["layers"] == THREE.layers_of(THREE.top)
    inspected = json.loads(run("skopeo", "inspect", f"oci:{out}"))
    assert inspected["Digest"] == THREE.top
    assert inspected["Layers"] == THREE.layers_of(THREE.top)


def test_platform_pick_from_an_index(node: NodeProcess, tmp_path: Path) -> None:
    out = tmp_path / "multi-arm64"
    doc = pull(node, MULTI.reference, "--platform", "linux/arm64", "--output", str(out))
    arm64 = MULTI.platforms["linux/arm64"]
    assert doc["manifest_digest"] == arm64 and doc["platform"] == "linux/arm64"
    inspected = json.loads(run("skopeo", "inspect", f"oci:{out}"))
    assert inspected["Architecture"] == "arm64" and inspected["Layers"] == MULTI.layers_of(arm64)


def test_docker_archive_loads_into_podman(node: NodeProcess, tmp_path: Path) -> None:
    archive = tmp_path / "three.tar"
    pull(node, THREE.reference, "--format", "docker-archive", "-o", str(archive))
    env = podman_env(tmp_path / "podman", node)
    loaded = run("podman", "load", "-i", str(archive), env=env)
    assert "threelayer:1.0" in loaded
    image_id = run("podman", "image", "inspect", "--format", "{{.Id}}", "threelayer:1.0", env=env).strip()
    assert f"sha256:{image_id}" == THREE.config_of(THREE.top)
