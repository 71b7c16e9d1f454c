"""`pyrsia --help` stays fast because it imports nothing heavy: the daemon, the HTTP
stack, crypto and storage load only inside the commands that need them."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = (
    "httpx",
    "h11",
    "nacl",
    "msgpack",
    "zstandard",
    "sqlite3",
    "pyrsia.node",
    "pyrsia.http",
    "pyrsia.translog",
)


def imported(*args: str) -> set[str]:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "pyrsia", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0
    return {line.split("|")[-1].strip() for line in result.stderr.splitlines() if "|" in line}


@pytest.mark.parametrize("args", [("--help",), ("log", "--help"), ("pull", "image", "--help")])
def test_help_imports_nothing_heavy(args: tuple[str, ...]) -> None:
    modules = imported(*args)
    assert "typer" in modules  # the measurement itself works
    assert not {m for m in modules if m.split(".")[0] in HEAVY or m.startswith(HEAVY)}
