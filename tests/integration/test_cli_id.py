"""`pyrsia id` names a node before it runs, and the daemon then answers to that name."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx

from tests.support.node import NodeProcess


def pyrsia(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pyrsia", *args], capture_output=True, text=True, timeout=60)


def test_id_creates_the_identity_once_and_the_daemon_uses_it(tmp_path: Path) -> None:
    home = tmp_path / "node"
    first = pyrsia("id", "--home", str(home))
    assert first.returncode == 0, first.stderr
    peer_id = first.stdout.strip()
    assert peer_id.startswith("12D3KooW") and len(peer_id.splitlines()) == 1
    assert (home / "identity.key").stat().st_mode & 0o777 == 0o600
    again = pyrsia("id", "--home", str(home), "--json")
    assert json.loads(again.stdout) == {"peer_id": peer_id, "key_file": str(home / "identity.key")}
    with NodeProcess(home) as node:
        assert httpx.get(f"{node.url}/api/v1/status").json()["peer_id"] == peer_id


def test_id_refuses_a_damaged_key_with_one_line(tmp_path: Path) -> None:
    home = tmp_path / "node"
    home.mkdir()
    (home / "identity.key").write_bytes(b"short")
    result = pyrsia("id", "--home", str(home))
    assert result.returncode == 2
    assert "identity.key is damaged" in result.stderr and "Traceback" not in result.stderr
