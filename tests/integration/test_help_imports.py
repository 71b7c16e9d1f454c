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
    """Every module `python -X importtime ARGS` imports (importtime reports on stderr)."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return {line.split("|")[-1].strip() for line in result.stderr.splitlines() if "|" in line}


def heavy(modules: set[str]) -> set[str]:
    return {m for m in modules if m.split(".")[0] in HEAVY or m.startswith(HEAVY)}


@pytest.mark.parametrize("args", [("--help",), ("log", "--help"), ("pull", "image", "--help")])
def test_help_imports_nothing_heavy(args: tuple[str, ...]) -> None:
    modules = imported("-m", "pyrsia", *args)
    assert "typer" in modules and "pyrsia.cli.app" in modules  # the measurement itself works
    assert not heavy(modules)


def test_the_check_sees_a_heavy_import() -> None:
    assert heavy(imported("-c", "import pyrsia.cli.client")) >= {"httpx", "pyrsia.node"}
