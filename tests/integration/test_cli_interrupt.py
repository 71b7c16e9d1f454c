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
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.test_exchange_resume import one_layer
from tests.support.node import PYRSIA, NodeProcess
from tests.support.scripted_upstream import Reply, ScriptedUpstream, wait_for

LAYER_BYTES = 2 * 1024 * 1024
EXIT_S_MAX = 1.0
REDRAW_WATCH_S = 2.0
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


@dataclass(frozen=True, slots=True, kw_only=True)
class Interrupted:
    code: int
    exit_s: float  # from SIGINT to exit
    ran_s: float  # from start to exit
    out: Path
    stderr: bytes


def _interrupt_pull(node: NodeProcess, tmp: Path, *flags: str, terminal: bool) -> Interrupted:
    out = tmp / "out"
    extra = {"FORCE_COLOR": "1"} if terminal else {}
    started = time.monotonic()
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
        if terminal:
            time.sleep(REDRAW_WATCH_S)  # the bars run a while: their redraws are counted below
        sent = time.monotonic()
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=30)
        ended = time.monotonic()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    _, err = process.communicate()
    assert b"Traceback" not in err, err.decode(errors="replace")
    return Interrupted(code=code, exit_s=ended - sent, ran_s=ended - started, out=out, stderr=err)


@pytest.mark.parametrize("terminal", [True, False], ids=["bars", "piped"])
def test_ctrl_c_stops_a_pull_at_once_and_leaves_no_partial_file(
    slow_node: tuple[NodeProcess, str], tmp_path: Path, terminal: bool
) -> None:
    node, _ = slow_node
    run = _interrupt_pull(node, tmp_path, terminal=terminal)
    assert run.code == 130
    assert run.exit_s < EXIT_S_MAX, f"exit took {run.exit_s:.2f} s"
    assert not run.out.exists(), sorted(run.out.rglob("*"))
    assert not list(tmp_path.glob("*.part")) and not list(tmp_path.glob(".pyrsia-pull-*"))
    if terminal:
        # Each redraw of the bars starts with a carriage return: at most 10 a second.
        redraws = run.stderr.count(b"\r")
        assert 3 <= redraws <= 10 * run.ran_s + 2, (redraws, run.ran_s)


def test_ctrl_c_of_a_docker_archive_pull_leaves_neither_archive_nor_layout(
    slow_node: tuple[NodeProcess, str], tmp_path: Path
) -> None:
    node, _ = slow_node
    run = _interrupt_pull(node, tmp_path, "--format", "docker-archive", terminal=False)
    assert run.code == 130 and run.exit_s < EXIT_S_MAX, (run.code, run.exit_s)
    assert not run.out.exists()
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


def test_ctrl_c_stops_a_command_waiting_on_a_silent_node(tmp_path: Path) -> None:
    """Any command, not only a pull: `status` against a port that accepts and never answers."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        server.settimeout(START_TIMEOUT_S)
        url = f"http://127.0.0.1:{server.getsockname()[1]}"
        process = subprocess.Popen(
            [*PYRSIA, "status", "--node", url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=_env(tmp_path),
        )
        try:
            conn, _ = server.accept()  # the CLI is now waiting for an answer that never comes
            with conn:
                sent = time.monotonic()
                process.send_signal(signal.SIGINT)
                code = process.wait(timeout=30)
                took = time.monotonic() - sent
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    _, err = process.communicate()
    assert code == 130 and took < EXIT_S_MAX, (code, took, err)
    assert err.decode().strip().endswith("interrupted") and b"Traceback" not in err
