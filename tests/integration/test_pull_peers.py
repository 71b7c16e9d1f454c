"""`pyrsia pull image` shows on a layer's bar how many peers the node fetches it from.

Authority A pulls a one-layer image through from a real docker-registry and regular
node B gets it from A, so two peers provide the layer. D, a regular node capped to a
slow download rate so its transfer lasts, serves `pyrsia pull image` run as a real
subprocess on a forced terminal: the bar says "from 2 peers". Pulled again from A,
which serves from its store, there is no such note; with `--json` on a pipe the output
is the plain result document.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from contextlib import ExitStack
from pathlib import Path

from tests.integration.test_exchange_resume import MIB, get_blob, one_layer
from tests.integration.test_p2p_network import eventually, height, pull_manifest
from tests.support import images
from tests.support.node import PYRSIA, NodeProcess
from tests.support.registry import RegistryProcess


def pull(node: NodeProcess, out: Path, *flags: str, terminal: bool) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "XDG_CONFIG_HOME": str(out.parent / "xdg")}
    env.pop("PYRSIA_NODE", None)
    if terminal:
        env["FORCE_COLOR"] = "1"  # rich draws its bars as on a terminal
    else:
        env.pop("FORCE_COLOR", None)
    return subprocess.run(
        [*PYRSIA, "pull", "image", "library/spread:1.0", "--node", node.url, "-o", str(out), *flags],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def test_the_bar_names_the_peers_a_layer_comes_from(tmp_path: Path) -> None:
    image, layer = one_layer("library/spread", "1.0", 24 * MIB, seed=9)
    with ExitStack() as stack:
        registry = stack.enter_context(RegistryProcess(tmp_path / "upstream"))
        images.push(registry.url, image)
        up = ("--docker-upstream", registry.url)
        a = stack.enter_context(NodeProcess(tmp_path / "a", *up))
        joined = (*up, "--bootstrap", a.p2p_address)
        b = stack.enter_context(NodeProcess(tmp_path / "b", *joined))
        d = stack.enter_context(NodeProcess(tmp_path / "d", *joined, "--max-download-rate", str(3 * MIB)))
        assert pull_manifest(a, image) == image.top
        for digest, data in image.blobs.items():
            assert get_blob(a, image, digest) == data
        eventually(lambda: height(b) == height(d) == height(a), "the log reached b and d")
        assert get_blob(b, image, layer) == image.blobs[layer]

        shown = pull(d, tmp_path / "from-d", terminal=True)
        assert shown.returncode == 0, shown.stderr
        assert "from 2 peers" in shown.stderr, shown.stderr
        pulled = tmp_path / "from-d" / "blobs" / "sha256" / layer.removeprefix("sha256:")
        assert pulled.read_bytes() == image.blobs[layer]

        stored = pull(a, tmp_path / "from-a", terminal=True)
        assert stored.returncode == 0, stored.stderr
        assert layer.removeprefix("sha256:")[:12] in stored.stderr  # the bar was drawn
        assert not re.search(r"from \d+ peers?", stored.stderr), stored.stderr

        piped = pull(d, tmp_path / "json", "--json", terminal=False)
        assert piped.returncode == 0 and piped.stderr == "", piped.stderr
        result = json.loads(piped.stdout)
        assert result["layers"] == [layer] and "peers" not in result
