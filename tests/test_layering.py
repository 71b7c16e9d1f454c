"""Pure cores never do I/O: no sockets, threads, clocks, randomness or files.

Reads each core module's imports and calls; a core that grows a dependency on the
outside world fails here, before it makes simulation tests nondeterministic.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "pyrsia"
PURE_MODULES = [
    "errors.py",
    "artifacts/digest.py",
    "artifacts/provenance.py",
    "translog/block.py",
    "translog/checkpoint.py",
    "translog/codec.py",
    "translog/merkle.py",
    "translog/tx.py",
    "http/message.py",
    "http/ranges.py",
    "p2p/identity.py",
    "p2p/multiaddr.py",
    "p2p/multistream.py",
    "p2p/noise.py",
    "p2p/yamux.py",
    "p2p/identify.py",
    "p2p/ping.py",
    "p2p/connection.py",
    "registry/manifest.py",
    "registry/maven_layout.py",
    "registry/reference.py",
]
FORBIDDEN_IMPORTS = {
    "socket",
    "selectors",
    "threading",
    "time",
    "random",
    "os",
    "subprocess",
    "asyncio",
    "httpx",
    "h11",
    "sqlite3",
    "shutil",
    "tempfile",
    "signal",
}
FORBIDDEN_CALLS = {"open", "print", "input"}


def _violations(source: str) -> list[str]:
    tree = ast.parse(source)
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] in FORBIDDEN_IMPORTS]
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.split(".")[0] in FORBIDDEN_IMPORTS:
                found.append(node.module)
        elif (
            isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FORBIDDEN_CALLS
        ):
            found.append(f"{node.func.id}()")
    return found


@pytest.mark.parametrize("module", PURE_MODULES)
def test_core_is_pure(module: str) -> None:
    assert _violations((ROOT / module).read_text()) == []


def test_checker_catches_io() -> None:
    source = "import socket\nfrom time import monotonic\nopen('x')\n"
    assert _violations(source) == ["socket", "time", "open()"]
