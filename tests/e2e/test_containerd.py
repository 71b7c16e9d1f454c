"""containerd's `ctr` pulls through a real node, directly and as a docker.io mirror.

A CNCF docker-registry upstream is seeded with a three-layer Docker schema2 image, a
linux/amd64 + linux/arm64 OCI index and an image under a two-level name. A private
containerd (CRI off, its own content store) and `ctr` run in a loopback-only network
namespace with the registry and the node, so a fallback to the real Docker Hub has
nowhere to go. Every image, manifest and blob digest containerd records must equal
the upstream's, and every layer's uncompressed digest (which containerd computes when
it unpacks) must equal the diff id in the upstream's config.
(a) `ctr images pull --plain-http NODE/NAME:TAG`, one platform and all platforms;
(b) `docker.io/NAME:TAG` with the node as mirror in `hosts.toml`: containerd adds
    `?ns=docker.io` to each request, and the node's access log must show them;
(c) the upstream stopped, fresh content stores pull both ways from the node alone.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support import images
from tests.support.containerd import Containerd
from tests.support.netns import LoopbackNamespace
from tests.support.node import NodeProcess
from tests.support.registry import RegistryProcess

pytestmark = pytest.mark.e2e

THREE, MULTI, NESTED = images.three_layer(), images.multi_arch(), images.nested()
ALL = [THREE, MULTI, NESTED]
AMD64, ARM64 = "linux/amd64", "linux/arm64"
TOOLS = ("containerd", "ctr", "nsenter", "ip", "curl", "docker-registry")
DOCKER_HUB = "https://registry-1.docker.io"
NAMESPACE_IDS = itertools.count()


@pytest.fixture(scope="module", autouse=True)
def tools_present() -> None:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"missing tools (run .ci/install-tools): {' '.join(missing)}")


@pytest.fixture(scope="module")
def seeded_storage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry root holding the three images; each test serves it with its own process."""
    root = tmp_path_factory.mktemp("upstream")
    with RegistryProcess(root) as registry:
        for image in ALL:
            images.push(registry.url, image)
    return root


@pytest.fixture
def namespace() -> Iterator[LoopbackNamespace]:
    with LoopbackNamespace(f"pyrsia-ctr-{os.getpid()}-{next(NAMESPACE_IDS)}") as ns:
        yield ns


@pytest.fixture
def upstream(seeded_storage: Path, namespace: LoopbackNamespace) -> Iterator[RegistryProcess]:
    registry = RegistryProcess(seeded_storage, prefix=namespace.prefix).start()
    try:
        yield registry
    finally:
        registry.stop()


@pytest.fixture
def node(tmp_path: Path, namespace: LoopbackNamespace, upstream: RegistryProcess) -> Iterator[NodeProcess]:
    command = [*namespace.prefix, *NodeProcess.default_command()]
    with NodeProcess(tmp_path / "node", "--docker-upstream", upstream.url, command=command) as process:
        yield process


@contextmanager
def fresh_containerd(namespace: LoopbackNamespace, node: NodeProcess) -> Iterator[Containerd]:
    """A containerd with an empty store whose docker.io names resolve at the node only."""
    with Containerd(prefix=namespace.prefix) as containerd:
        containerd.mirror("docker.io", DOCKER_HUB, node.url)
        yield containerd


# --- what the upstream holds ------------------------------------------------------------


def expected_content(image: images.Image, platforms: list[str]) -> set[str]:
    """Digests containerd must hold after pulling `image` for `platforms`."""
    digests = {image.top}
    for platform in platforms:
        manifest = image.platforms[platform]
        digests |= {manifest, image.config_of(manifest), *image.layers_of(manifest)}
    return digests


def diff_ids(image: images.Image, platform: str) -> dict[str, str]:
    """Layer digest -> diff id (digest of the uncompressed tar), from the upstream's config."""
    manifest = image.platforms[platform]
    config = json.loads(image.blobs[image.config_of(manifest)])
    return dict(zip(image.layers_of(manifest), config["rootfs"]["diff_ids"], strict=True))


def assert_pulled(containerd: Containerd, ref: str, image: images.Image, platforms: list[str]) -> None:
    """The image record and content store match the upstream, platform for platform."""
    record = containerd.images()[ref]
    assert (record.digest, record.media_type) == (image.top, image.top_media_type)
    content = containerd.content()
    wanted = expected_content(image, platforms)
    assert wanted <= set(content), f"{ref}: missing {wanted - set(content)}"
    others = expected_content(image, list(image.platforms)) - expected_content(image, platforms)
    assert not others & set(content), f"{ref}: fetched platforms not asked for"
    for platform in platforms:
        for layer, diff_id in diff_ids(image, platform).items():
            # Set by the unpacker from the bytes it decompressed.
            assert content[layer]["containerd.io/uncompressed"] == diff_id


def pull_direct(containerd: Containerd, node: NodeProcess) -> None:
    """(a) Each image by the node's address, multi-arch by one platform and by all."""
    for image in (THREE, NESTED):
        ref = f"{node.address}/{image.reference}"
        containerd.pull(ref, "--plain-http")
        assert_pulled(containerd, ref, image, [AMD64])
    multi = f"{node.address}/{MULTI.reference}"
    containerd.pull(multi, "--plain-http", "--platform", ARM64)
    assert_pulled(containerd, multi, MULTI, [ARM64])
    containerd.pull(multi, "--plain-http", "--all-platforms")
    assert_pulled(containerd, multi, MULTI, [AMD64, ARM64])


def docker_io(image: images.Image) -> str:
    return f"docker.io/{image.reference}"


def pull_through_mirror(containerd: Containerd) -> None:
    """(b) The same images as docker.io names, resolved and fetched at the mirror."""
    for image in (THREE, NESTED):
        containerd.pull(docker_io(image))
        assert_pulled(containerd, docker_io(image), image, [AMD64])
    containerd.pull(docker_io(MULTI), "--all-platforms")
    assert_pulled(containerd, docker_io(MULTI), MULTI, [AMD64, ARM64])


ACCESS = re.compile(r'"(GET|HEAD) (/v2/\S+)" (\d{3}) ')


def mirror_requests(node: NodeProcess) -> set[tuple[str, str]]:
    """(method, path) of every 200 the node answered to a request carrying `?ns=docker.io`."""
    seen = set()
    for method, target, status in ACCESS.findall(node.output()):
        path, _, query = target.partition("?")
        if status == "200" and query == "ns=docker.io":
            seen.add((method, path))
    return seen


def assert_mirror_served(node: NodeProcess) -> None:
    seen = mirror_requests(node)
    for image in ALL:
        platforms = list(image.platforms)
        gets = {path for method, path in seen if method == "GET"}
        resolved = {path for _, path in seen}
        assert f"/v2/{image.name}/manifests/{image.tag}" in resolved
        for digest in expected_content(image, platforms):
            kind = "blobs" if digest in image.blobs else "manifests"
            assert f"/v2/{image.name}/{kind}/{digest}" in gets, f"{image.name} {digest} not via mirror"


# --- the tests --------------------------------------------------------------------------


def test_ctr_pulls_each_image_directly_from_the_node(namespace: LoopbackNamespace, node: NodeProcess) -> None:
    with fresh_containerd(namespace, node) as containerd:
        pull_direct(containerd, node)


def test_ctr_pulls_docker_io_names_with_the_node_as_mirror(
    namespace: LoopbackNamespace, node: NodeProcess
) -> None:
    with fresh_containerd(namespace, node) as containerd:
        pull_through_mirror(containerd)
    assert_mirror_served(node)


def test_ctr_pulls_from_the_node_alone_once_the_upstream_is_gone(
    namespace: LoopbackNamespace, node: NodeProcess, upstream: RegistryProcess
) -> None:
    with fresh_containerd(namespace, node) as containerd:
        pull_direct(containerd, node)
    upstream.stop()
    assert namespace.run("curl", "-sf", f"{upstream.url}/v2/").returncode != 0
    with fresh_containerd(namespace, node) as containerd:
        pull_direct(containerd, node)
    with fresh_containerd(namespace, node) as containerd:  # empty again: every blob via the mirror
        pull_through_mirror(containerd)
    assert_mirror_served(node)
