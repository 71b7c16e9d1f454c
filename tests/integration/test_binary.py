"""The single executable (`make binary` → dist/pyrsia) runs without Python or a venv.

`make test` builds it first; run alone, the test fails with the command to build it.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import httpx
import pytest
from nacl.signing import SigningKey

from pyrsia import __version__
from pyrsia.translog import sigcheck

BINARY = Path(os.environ.get("PYRSIA_BINARY", Path(__file__).resolve().parents[2] / "dist" / "pyrsia"))


@pytest.fixture(scope="module")
def binary() -> Path:
    assert BINARY.is_file(), f"{BINARY} is missing: build it with `make binary`"
    return BINARY


def test_version(binary: Path) -> None:
    result = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == f"pyrsia {__version__}"


def test_the_executable_runs_the_signature_helper(binary: Path) -> None:
    """A daemon of the executable starts its signature helper as `pyrsia HELPER_ARG`
    (it cannot use `python -m`)."""
    key = SigningKey(bytes(range(32)))
    good = (bytes(key.verify_key), b"block hash", key.sign(b"block hash").signature)
    forged = (good[0], b"another block hash", good[2])
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    result = subprocess.run(
        [str(binary), sigcheck.HELPER_ARG],
        input=sigcheck.encode_request([good, forged]),
        capture_output=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 0 and result.stdout == bytes([0, 0, 0, 2, 1, 0]), result.stderr


def test_daemon_serves_and_stops_on_sigterm(binary: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    process = subprocess.Popen(
        [str(binary), "daemon", "--home", str(tmp_path), "--http-port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert process.stdout is not None and process.stderr is not None
    try:
        url = next((line.split()[1] for line in process.stdout if line.startswith("ready ")), None)
        assert url, process.stderr.read()
        response = httpx.get(f"{url}/v2/", timeout=10)
        assert response.status_code == 200
        assert response.headers["docker-distribution-api-version"] == "registry/2.0"
        page = httpx.get(f"{url}/", timeout=10)  # the dashboard's files are in the binary
        assert page.status_code == 200 and "/static/app.js" in page.text
        assert httpx.get(f"{url}/static/merkle.js", timeout=10).status_code == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        assert "stopped" in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
        process.stdout.close()
        process.stderr.close()
