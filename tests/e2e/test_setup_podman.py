"""podman pulls docker.io names through a node after `pyrsia setup podman`.

registries.conf starts as this machine's default (containers-common's), copied to a
temporary `CONTAINERS_REGISTRIES_CONF`; `pyrsia setup podman` adds the node as
docker.io's mirror there. podman then pulls `docker.io/library/NAME:1.0` by its
ordinary name; the image exists only in the node's local upstream registry (this
machine has no route to Docker Hub), and the digest podman stores is that image's.
After `--undo` the file is the default again, byte for byte.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_registry_clients import podman_env, run
from tests.support import images
from tests.support.cli import PYRSIA, ok
from tests.support.node import NodeProcess
from tests.support.registry import RegistryProcess

pytestmark = pytest.mark.e2e
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "setup"


def test_podman_pulls_docker_io_names_through_the_node(tmp_path: Path) -> None:
    image = images.three_layer("library/pyrsia-setup-probe", "1.0")
    with RegistryProcess(tmp_path / "upstream") as registry:
        images.push(registry.url, image)
        with NodeProcess(tmp_path / "node", "--docker-upstream", registry.url) as node:
            env = podman_env(tmp_path / "podman", node)
            conf = Path(env["CONTAINERS_REGISTRIES_CONF"])
            default = (FIXTURES / "registries.conf").read_bytes()
            conf.write_bytes(default)
            setup_env = {**os.environ, **env, "XDG_CONFIG_HOME": str(tmp_path / "xdg")}
            setup = [*PYRSIA, "setup", "podman", "--node", node.url]
            result = subprocess.run(setup, capture_output=True, text=True, timeout=60, env=setup_env)
            ok(result)
            assert f"wrote {conf}" in result.stderr

            reference = "docker.io/library/pyrsia-setup-probe:1.0"
            run("podman", "pull", reference, env=env, timeout_s=300)
            digest = run("podman", "image", "inspect", "--format", "{{.Digest}}", reference, env=env).strip()
            assert digest == image.top
            # The node's log vouches for the manifest podman stored: it came through the node.
            found = httpx.get(f"{node.url}/api/v1/log/search", params={"type": "docker"}, timeout=30).json()
            assert image.top in {r["digest"] for r in found["results"]}, found

            undone = subprocess.run(
                [*setup[:5], "--undo"], capture_output=True, text=True, timeout=60, env=setup_env
            )
            ok(undone)
            assert conf.read_bytes() == default
