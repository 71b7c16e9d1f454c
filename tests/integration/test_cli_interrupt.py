"""Ctrl-C and file modes of `pyrsia pull`, against a real node and a real upstream.

The upstream is a scripted HTTP server that drips the image's one layer a byte at a
time, so the pull through a real `pyrsia daemon` lasts as long as the test wants. The
CLI runs as a subprocess; SIGINT is sent once its partial blob exists. It must exit
130 within a second and leave nothing of the output behind. An honest pull writes its
files with the mode `open()` gives under the caller's umask.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_exchange_resume import one_layer
from tests.support.node import PYRSIA, NodeProcess
from tests.support.scripted_upstream import Reply, ScriptedUpstream, wait_for

LAYER_BYTES = 2 * 1024 * 1024
EXIT_S_MAX = 1.0
START_TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def slow_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NodeProcess, str]]:
    """A node whose upstream serves `library/slow:1.0` (layer dripped) and `library/fast:1.0`."""
    slow, slow_layer = one_layer("library/slow", "1.0", LAYER_BYTES, seed=21)
    fast, _ = one_layer("library/fast", "1.0", 64 * 1024, seed=22)
    with ScriptedUpstream() as upstream:
        upstream.serve_image(slow)
        upstream.serve_image(fast)
        upstream.route(
            f"/v2/{slow.name}/blobs/{slow_layer}", Reply(body=slow.blobs[slow_layer], drip_s=0.001)
        )
        home = tmp_path_factory.mktemp("node")
        with NodeProcess(home, "--docker-upstream", upstream.url) as node:
            yield node, slow_layer


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "COLUMNS": "120", "XDG_CONFIG_HOME": str(tmp / "xdg"), **extra}
    env.pop("PYRSIA_NODE", None)
    return env


def _interrupt_pull(node: NodeProcess, tmp: Path, *flags: str, terminal: bool) -> tuple[int, float, Path]:
    out = tmp / "out"
    extra = {"FORCE_COLOR": "1"} if terminal else {}
    process = subprocess.Popen(
        [*PYRSIA, "pull", "image", "library/slow:1.0", "--node", node.url, "-o", str(out), *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(tmp, **extra),
    )
    try:
        # The layer's partial file exists once the CLI is receiving it.
        wait_for(
            lambda: any(out.parent.rglob("*.part")) or process.poll() is not None,
            START_TIMEOUT_S,
            "the pull to start writing its layer",
        )
        assert process.poll() is None, process.communicate()
        sent = time.monotonic()
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=30)
        took = time.monotonic() - sent
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    _, err = process.communicate()
    assert b"Traceback" not in err, err.decode(errors="replace")
    return code, took, out


@pytest.mark.parametrize("terminal", [True, False], ids=["bars", "piped"])
def test_ctrl_c_stops_a_pull_at_once_and_leaves_no_partial_file(
    slow_node: tuple[NodeProcess, str], tmp_path: Path, terminal: bool
) -> None:
    node, _ = slow_node
    code, took, out = _interrupt_pull(node, tmp_path, terminal=terminal)
    assert code == 130
    assert took < EXIT_S_MAX, f"exit took {took:.2f} s"
    assert not out.exists(), sorted(out.rglob("*"))
    assert not list(tmp_path.glob("*.part")) and not list(tmp_path.glob(".pyrsia-pull-*"))


def test_ctrl_c_of_a_docker_archive_pull_leaves_neither_archive_nor_layout(
    slow_node: tuple[NodeProcess, str], tmp_path: Path
) -> None:
    node, _ = slow_node
    code, took, out = _interrupt_pull(node, tmp_path, "--format", "docker-archive", terminal=False)
    assert code == 130 and took < EXIT_S_MAX, (code, took)
    assert not out.exists()
    assert not list(tmp_path.glob(".pyrsia-pull-*"))


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640)])
def test_pulled_files_follow_the_umask(
    slow_node: tuple[NodeProcess, str], tmp_path: Path, umask: int, mode: int
) -> None:
    node, _ = slow_node
    out = tmp_path / "fast"
    result = subprocess.run(
        [*PYRSIA, "pull", "image", "library/fast:1.0", "--node", node.url, "-o", str(out), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(tmp_path),
        preexec_fn=lambda: os.umask(umask),  # the child's own umask, set before exec
    )
    assert result.returncode == 0, result.stderr
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len([p for p in files if "blobs" in p.parts]) == 3  # manifest, config, layer
    assert {oct(stat.S_IMODE(p.stat().st_mode)) for p in files} == {oct(mode)}
