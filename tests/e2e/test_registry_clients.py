"""Real registry clients pull through a real node from a real upstream.

A CNCF docker-registry is seeded with three images: (a) a three-layer Docker schema2
image, (b) a linux/amd64 + linux/arm64 OCI index, (c) an image under a two-level
repository name. skopeo, podman and a Debian dockerd pull them through `pyrsia daemon`;
every digest must equal the upstream's. Then the upstream is stopped and a fresh
client store pulls everything again: only the node can have served it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import images
from tests.support.netns import LoopbackNamespace
from tests.support.node import NodeProcess
from tests.support.registry import RegistryProcess

pytestmark = pytest.mark.e2e

THREE, MULTI, NESTED = images.three_layer(), images.multi_arch(), images.nested()
ALL = [THREE, MULTI, NESTED]


@pytest.fixture(scope="module")
def seeded_storage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry root holding the three images; each test serves it with its own process."""
    root = tmp_path_factory.mktemp("upstream")
    with RegistryProcess(root) as registry:
        for image in ALL:
            images.push(registry.url, image)
    return root


def run(*argv: str, env: dict[str, str] | None = None, timeout_s: float = 120) -> str:
    result = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout_s, env={**os.environ, **(env or {})}
    )
    assert result.returncode == 0, f"{' '.join(argv)}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def assert_upstream_down(registry: RegistryProcess) -> None:
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{registry.url}/v2/", timeout=2)


# --- skopeo -------------------------------------------------------------------------


def skopeo_pull_all(node: NodeProcess, into: Path) -> None:
    into.mkdir(parents=True)
    for image in ALL:
        source = f"docker://{node.address}/{image.reference}"
        target = into / image.name.replace("/", "_")
        run("skopeo", "copy", "--all", "--src-tls-verify=false", source, f"oci:{target}:{image.tag}")
        inspected = json.loads(run("skopeo", "inspect", "--tls-verify=false", source))
        raw = run("skopeo", "inspect", "--raw", "--tls-verify=false", source)
        assert images.sha256(raw.encode()) == image.top
        layout = json.loads((target / "index.json").read_text())
        blobs = {f"sha256:{p.name}" for p in (target / "blobs" / "sha256").iterdir()}
        # Every upstream layer arrived byte for byte under its own digest.
        manifest = image.platforms["linux/amd64"]
        assert set(image.layers_of(manifest)) <= blobs
        assert inspected["Layers"] == image.layers_of(manifest)
        if image.top_media_type != images.DOCKER_MANIFEST:  # OCI stays OCI, digest and all
            assert [m["digest"] for m in layout["manifests"]] == [image.top]
        else:
            assert inspected["Digest"] == image.top


def pull_then_pull_with_upstream_gone(
    seeded_storage: Path, tmp_path: Path, pull_all: Callable[[NodeProcess, Path], None]
) -> None:
    """`pull_all` into a fresh client store twice: from a node with its upstream, then without."""
    registry = RegistryProcess(seeded_storage).start()
    try:
        with NodeProcess(tmp_path / "node", "--docker-upstream", registry.url) as node:
            pull_all(node, tmp_path / "first")
            registry.stop()
            assert_upstream_down(registry)
            pull_all(node, tmp_path / "second")
    finally:
        registry.stop()


def test_skopeo_copies_and_inspects_then_node_serves_alone(seeded_storage: Path, tmp_path: Path) -> None:
    pull_then_pull_with_upstream_gone(seeded_storage, tmp_path, skopeo_pull_all)


# --- podman -------------------------------------------------------------------------


def podman_env(root: Path, node: NodeProcess) -> dict[str, str]:
    """podman confined to `root`: vfs storage, cgroupfs, the node as an insecure registry."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "storage.conf").write_text(
        f'[storage]\ndriver = "vfs"\ngraphroot = "{root}/graph"\nrunroot = "{root}/run"\n'
    )
    (root / "containers.conf").write_text(
        '[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n'
        f'events_logfile_path = "{root}/events.log"\nruntime = "runc"\n'
    )
    (root / "registries.conf").write_text(
        f'unqualified-search-registries = []\n[[registry]]\nlocation = "{node.address}"\ninsecure = true\n'
    )
    return {
        "CONTAINERS_STORAGE_CONF": str(root / "storage.conf"),
        "CONTAINERS_CONF": str(root / "containers.conf"),
        "CONTAINERS_REGISTRIES_CONF": str(root / "registries.conf"),
    }


def podman_pull_all(node: NodeProcess, root: Path) -> None:
    env = podman_env(root, node)
    three = f"{node.address}/{THREE.reference}"
    run("podman", "pull", "--tls-verify=false", three, env=env)
    assert run("podman", "image", "inspect", "--format", "{{.Digest}}", three, env=env).strip() == THREE.top
    multi = f"{node.address}/{MULTI.reference}"
    run("podman", "pull", "--tls-verify=false", "--arch", "arm64", multi, env=env)
    shown = run(
        "podman", "image", "inspect", "--format", "{{.Architecture}} {{.Digest}} {{.Id}}", multi, env=env
    )
    # The image is the arm64 variant (its config digest is the image id) of the upstream index.
    arm64_config = MULTI.config_of(MULTI.platforms["linux/arm64"])
    assert shown.split() == ["arm64", MULTI.top, arm64_config.removeprefix("sha256:")]


def test_podman_pulls_then_node_serves_alone(seeded_storage: Path, tmp_path: Path) -> None:
    pull_then_pull_with_upstream_gone(seeded_storage, tmp_path, podman_pull_all)


# --- docker -------------------------------------------------------------------------

DOCKERD_READY_S = 60.0


@pytest.fixture
def namespace() -> Iterator[LoopbackNamespace]:
    with LoopbackNamespace() as ns:
        yield ns


class Dockerd:
    """A Debian dockerd in the namespace, its state under `root`, the node as mirror."""

    def __init__(self, ns: LoopbackNamespace, root: Path, node: NodeProcess) -> None:
        self.ns, self.root = ns, root
        # Unix socket paths are limited to ~104 bytes; pytest's tmp paths are longer.
        self.run_dir = Path(tempfile.mkdtemp(prefix="pyrsia-d-", dir="/tmp"))
        self.socket = self.run_dir / "docker.sock"
        root.mkdir(parents=True, exist_ok=True)
        config = {
            "data-root": str(root / "data"),
            "exec-root": str(self.run_dir / "exec"),
            "pidfile": str(root / "dockerd.pid"),
            "hosts": [f"unix://{self.socket}"],
            "storage-driver": "vfs",
            "iptables": False,
            "ip6tables": False,
            "bridge": "none",
            "insecure-registries": [node.address],
            "registry-mirrors": [node.url],
        }
        (root / "daemon.json").write_text(json.dumps(config))
        with (root / "dockerd.log").open("ab") as log:
            self.process = subprocess.Popen(
                [*ns.prefix, "dockerd", "--config-file", str(root / "daemon.json")],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + DOCKERD_READY_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            if self.docker("version", check=False).returncode == 0:
                return
            time.sleep(0.2)
        raise RuntimeError((root / "dockerd.log").read_text())

    def docker(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "DOCKER_HOST": f"unix://{self.socket}"}
        result = subprocess.run(["docker", *argv], capture_output=True, text=True, timeout=180, env=env)
        if check:
            assert result.returncode == 0, f"docker {' '.join(argv)}\n{result.stdout}\n{result.stderr}"
        return result

    def repo_digests(self, reference: str) -> list[str]:
        return list(
            json.loads(self.docker("image", "inspect", "--format", "{{json .RepoDigests}}", reference).stdout)
        )

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        # vfs leaves plain directories; nothing is mounted once dockerd has exited.
        shutil.rmtree(self.root, ignore_errors=True)
        shutil.rmtree(self.run_dir, ignore_errors=True)


def docker_pull_all(dockerd: Dockerd, node: NodeProcess) -> None:
    for image in ALL:
        direct = f"{node.address}/{image.reference}"
        dockerd.docker("pull", direct)
        assert f"{node.address}/{image.name}@{image.top}" in dockerd.repo_digests(direct)
        # The same image as a docker.io name, answered by the node as registry mirror.
        short = image.reference.removeprefix("library/")
        dockerd.docker("pull", short)
        assert f"{image.name.removeprefix('library/')}@{image.top}" in dockerd.repo_digests(short)


def test_docker_pulls_directly_and_through_mirror_then_node_serves_alone(
    seeded_storage: Path, tmp_path: Path, namespace: LoopbackNamespace
) -> None:
    registry = RegistryProcess(seeded_storage, prefix=namespace.prefix).start()
    try:
        with NodeProcess(
            tmp_path / "node",
            "--docker-upstream",
            registry.url,
            command=[*namespace.prefix, *NodeProcess.default_command()],
        ) as node:
            dockerd = Dockerd(namespace, tmp_path / "docker", node)
            try:
                docker_pull_all(dockerd, node)
                dockerd.docker("system", "prune", "--all", "--force")
                assert dockerd.docker("image", "ls", "--quiet").stdout.strip() == ""
                registry.stop()
                assert namespace.run("curl", "-sf", f"{registry.url}/v2/").returncode != 0
                docker_pull_all(dockerd, node)
            finally:
                dockerd.stop()
    finally:
        registry.stop()
