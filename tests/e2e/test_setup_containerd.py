"""`ctr` pulls docker.io names through a node with the hosts.toml `pyrsia setup containerd` wrote.

The set-up of `test_containerd.py` (registry, node and a private containerd in a
loopback-only network namespace, so a fallback to Docker Hub has nowhere to go); the
hosts.toml comes from `pyrsia setup containerd`, which also gives containerd's own
config.toml a `config_path`. containerd adds `?ns=docker.io` to every request to the
node. `--undo` leaves config.toml byte-identical and the hosts directory gone.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.e2e.test_containerd import (  # noqa: F401 - fixtures
    THREE,
    assert_pulled,
    docker_io,
    namespace,
    node,
    seeded_storage,
    tools_present,
    upstream,
)
from tests.support.cli import PYRSIA, ok
from tests.support.containerd import Containerd
from tests.support.netns import LoopbackNamespace
from tests.support.node import NodeProcess

pytestmark = pytest.mark.e2e


def test_ctr_pulls_through_the_node_after_pyrsia_setup_containerd(
    namespace: LoopbackNamespace,  # noqa: F811
    node: NodeProcess,  # noqa: F811
    tmp_path: Path,
) -> None:
    with Containerd(prefix=namespace.prefix) as containerd:
        original = containerd.config_path.read_bytes()
        setup = [*PYRSIA, "setup", "containerd"]
        paths = [
            "--containerd-config",
            str(containerd.config_path),
            "--config-path",
            str(containerd.hosts_dir),
        ]
        backups = ["--backup-dir", str(tmp_path / "backups")]
        env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "xdg")}

        def pyrsia(*args: str) -> str:
            result = subprocess.run([*setup, *args], capture_output=True, text=True, timeout=60, env=env)
            ok(result)
            return result.stderr

        said = pyrsia(*paths, "--node", node.url, *backups)
        assert "restart needed: systemctl restart containerd" in said  # config.toml gained config_path
        assert (containerd.hosts_dir / "docker.io" / "hosts.toml").is_file()

        reference = docker_io(THREE)
        containerd.pull(reference)
        assert_pulled(containerd, reference, THREE, ["linux/amd64"])
        asked = [line for line in node.output().splitlines() if "ns=docker.io" in line]
        assert asked, "the node's access log shows no request with ?ns=docker.io"

        pyrsia("--undo", *backups)
        assert containerd.config_path.read_bytes() == original
        assert not containerd.hosts_dir.exists()
