"""The pyrsia container image (`packaging/docker/Dockerfile`), built by the tests from
an offline Debian base, run with podman the way its header says: a named volume on
/var/lib/pyrsia, the node serving on the host's loopback.

skopeo pulls an image through the containerised node from a real upstream; the
container is stopped (the node exits cleanly on SIGTERM), the upstream is shut down,
and the container started again: the same node (same peer id, the data in the volume)
serves the pulled image alone.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import pyrsia
from tests.support import images
from tests.support.containers import ULIMITS, Podman
from tests.support.ports import free_port
from tests.support.registry import RegistryProcess
from tests.support.wait import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

THREE = images.three_layer()
IMAGE_UID = 7888  # the Dockerfile's fixed pyrsia uid/gid
START_WITHIN_S = 120.0


class Container:
    """One `podman run -d` of the node image; `url` is the node on the host's loopback."""

    def __init__(self, podman: Podman, image: str, volume: str, upstream: str) -> None:
        self.podman = podman
        self.name = f"pyrsia-test-{uuid.uuid4().hex[:8]}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        podman.run(
            "run", "-d", "--name", self.name, *ULIMITS, "--network", "host",
            "-v", f"{volume}:/var/lib/pyrsia", "-e", "PYRSIA_P2P_PORT=0",
            # The port by variable, not flag, so the image's healthcheck follows it.
            "-e", f"PYRSIA_HTTP_PORT={self.port}",
            image, "daemon", "--http-host", "127.0.0.1", "--docker-upstream", upstream,
        )  # fmt: skip

    def state(self) -> dict[str, object]:
        shown: dict[str, object] = json.loads(
            self.podman.out("inspect", "--format", "{{json .State}}", self.name)
        )
        return shown

    def logs(self) -> str:
        result = self.podman.run("logs", self.name, check=False)
        return result.stdout + result.stderr

    def answers(self) -> bool:
        if not self.state().get("Running"):
            raise AssertionError(f"the container exited: {self.state()}\n{self.logs()}")
        try:
            return httpx.get(f"{self.url}/v2/", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def wait_ready(self) -> None:
        eventually(
            self.answers, lambda: f"node in {self.name} answering /v2/\n{self.logs()}", START_WITHIN_S, 0.2
        )

    def status(self) -> dict[str, object]:
        answer = httpx.get(f"{self.url}/api/v1/status", timeout=10)
        assert answer.status_code == 200, answer.text
        doc: dict[str, object] = answer.json()
        return doc


def skopeo_pull(container: Container, out: Path) -> dict[str, object]:
    """skopeo copies the image through the node into `dir:OUT` (every blob fetched and
    its digest checked, the manifest kept byte for byte); returns what `skopeo inspect`
    says of the copy, with the copied manifest's digest."""
    source = f"docker://127.0.0.1:{container.port}/{THREE.reference}"
    result = subprocess.run(
        ["skopeo", "copy", "--src-tls-verify=false", source, f"dir:{out}"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr + container.logs()
    inspected = subprocess.run(
        ["skopeo", "inspect", f"dir:{out}"], capture_output=True, text=True, timeout=60, check=True
    )
    doc: dict[str, object] = json.loads(inspected.stdout)
    doc["ManifestDigest"] = "sha256:" + hashlib.sha256((out / "manifest.json").read_bytes()).hexdigest()
    return doc


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[RegistryProcess]:
    with RegistryProcess(tmp_path / "upstream") as registry:
        images.push(registry.url, THREE)
        yield registry


@pytest.fixture
def volume(podman: Podman) -> Iterator[str]:
    name = f"pyrsia-data-{uuid.uuid4().hex[:8]}"
    podman.run("volume", "create", name)
    try:
        yield name
    finally:
        podman.run("volume", "rm", "--force", name, check=False)


def test_image_metadata(podman: Podman, node_image: str) -> None:
    config = json.loads(podman.out("image", "inspect", "--format", "{{json .Config}}", node_image))
    assert config["Entrypoint"] == ["/usr/bin/pyrsia"]
    assert config["Cmd"] == ["daemon", "--http-host", "0.0.0.0"]
    assert config["User"] == "pyrsia:pyrsia"
    assert "/var/lib/pyrsia" in config["Volumes"] and {"7888/tcp", "44000/tcp", "44001/tcp"} <= set(
        config["ExposedPorts"]
    )
    assert "PYRSIA_HOME=/var/lib/pyrsia" in config["Env"]
    # Kept because podman builds in docker format (OCI image configs have no healthcheck).
    health = json.loads(podman.out("image", "inspect", "--format", "{{json .HealthCheck}}", node_image))
    assert "pyrsia status" in " ".join(health["Test"]), health
    labels = config["Labels"]
    assert labels["org.opencontainers.image.title"] == "pyrsia"
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    # The binary in the image is this checkout's version and runs on the image's libc.
    version = podman.run("run", "--rm", *ULIMITS, "--network", "none", node_image, "--version")
    assert version.stdout.strip() == f"pyrsia {pyrsia.__version__}"


def test_run_pull_restart_keeps_data(
    podman: Podman, node_image: str, upstream: RegistryProcess, volume: str, tmp_path: Path
) -> None:
    container = Container(podman, node_image, volume, upstream.url)
    try:
        container.wait_ready()
        assert podman.out("exec", container.name, "id", "-u") == str(IMAGE_UID)
        first = container.status()
        pulled = skopeo_pull(container, tmp_path / "first")
        assert pulled["ManifestDigest"] == THREE.top and pulled["Layers"] == THREE.layers_of(THREE.top)
        # The healthcheck (`pyrsia status` inside the container) passes on a live node.
        health = podman.run("healthcheck", "run", container.name, check=False)
        assert health.returncode == 0, health.stdout + health.stderr + container.logs()

        podman.run("stop", "--time", "60", container.name, timeout_s=120)
        stopped = container.state()
        assert stopped["Running"] is False and stopped["ExitCode"] == 0, (stopped, container.logs())
        # The node's data lives in the volume, owned by the image's pyrsia user.
        mountpoint = Path(podman.out("volume", "inspect", "--format", "{{.Mountpoint}}", volume))
        assert mountpoint.stat().st_uid == IMAGE_UID and any(mountpoint.iterdir())

        upstream.stop()
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{upstream.url}/v2/", timeout=2)

        podman.run("start", container.name)
        container.wait_ready()
        again = container.status()
        assert again["peer_id"] == first["peer_id"]  # the same identity, read from the volume
        served = skopeo_pull(container, tmp_path / "again")
        assert served["ManifestDigest"] == THREE.top and served["Layers"] == pulled["Layers"]
    finally:
        podman.run("rm", "--force", "--time", "10", container.name, check=False)
