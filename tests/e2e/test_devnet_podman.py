"""podman pulls an image through a regular node of a `pyrsia devnet`.

The devnet's nodes pull through a real CNCF docker-registry holding a three-layer
image; podman, confined to a directory of the test's, pulls it from node1 (a regular
node that joined through the authority), and the digest it records must be the
upstream's. `devnet down` then leaves no daemon behind.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.test_registry_clients import podman_env, run
from tests.integration.test_devnet import (
    IMAGE,
    daemons_under,
    devnet,
    kill_leftovers,
    ok,
    record,
)
from tests.support import images
from tests.support.registry import RegistryProcess

pytestmark = pytest.mark.e2e
TOOLS = ("podman", "runc", "docker-registry")


@dataclass(frozen=True)
class DevnetNode:
    """What `podman_env` needs of a node: where registry clients reach it."""

    address: str


@pytest.fixture(scope="module", autouse=True)
def tools_present() -> None:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"missing tools (run .ci/install-tools): {' '.join(missing)}")


@pytest.fixture
def network(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "net"
    with RegistryProcess(tmp_path / "upstream") as registry:
        images.push(registry.url, IMAGE)
        try:
            ok(devnet("up", "--nodes", "3", "--dir", str(directory), "--docker-upstream", registry.url))
            yield directory
        finally:
            devnet("down", "--dir", str(directory))
            kill_leftovers(directory)


def test_podman_pulls_through_a_regular_node(network: Path, tmp_path: Path) -> None:
    regular = record(network)["nodes"][1]
    assert regular["role"] == "regular"
    node = DevnetNode(address=regular["http_url"].removeprefix("http://"))
    env = podman_env(tmp_path / "podman", node)  # it reads only `address`
    reference = f"{node.address}/{IMAGE.reference}"
    run("podman", "pull", "--tls-verify=false", reference, env=env)
    digest = run("podman", "image", "inspect", "--format", "{{.Digest}}", reference, env=env)
    assert digest.strip() == IMAGE.top
    ok(devnet("down", "--dir", str(network)))
    assert daemons_under(network) == {}
