"""The package graph points one way, and pure cores never do I/O.

Layers, lowest first: a package may import its own modules and those of lower
layers, never a peer or a higher one, so no two packages can form a cycle:

    errors, pyrsia  <  durable, formats, sockets  <  config, setup  <  translog, http
        <  upstream, p2p, web, sourcebuild  <  consensus  <  artifacts  <  registry
        <  node  <  cli  <  __main__

Pure cores (the modules listed below) also import nothing that touches sockets,
threads, clocks, randomness or files: a core that grows a dependency on the outside
world fails here, before it makes simulation tests nondeterministic.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "pyrsia"
LAYERS = [
    {"errors", "__init__"},
    {"durable", "formats", "sockets"},
    {"config", "setup"},
    {"translog", "http"},
    {"upstream", "p2p", "web", "sourcebuild"},
    {"consensus"},
    {"artifacts"},
    {"registry"},
    {"node"},
    {"cli"},
    {"__main__"},
]
PURE_MODULES = [
    "errors.py",
    "formats/build_target.py",
    "formats/digest.py",
    "formats/docker_config.py",
    "formats/manifest.py",
    "formats/maven_layout.py",
    "formats/maven_listing.py",
    "formats/maven_metadata.py",
    "formats/peer_id.py",
    "formats/reference.py",
    "formats/registry_host.py",
    "setup/__init__.py",
    "setup/containerd.py",
    "setup/docker.py",
    "setup/maven.py",
    "setup/plan.py",
    "setup/podman.py",
    "artifacts/manifest_cache.py",
    "artifacts/provenance.py",
    "consensus/compact.py",
    "consensus/core.py",
    "consensus/mempool.py",
    "consensus/messages.py",
    "consensus/quorum.py",
    "consensus/wire.py",
    "translog/block.py",
    "translog/chain.py",
    "translog/checkpoint.py",
    "translog/chunks.py",
    "translog/codec.py",
    "translog/merkle.py",
    "translog/tx.py",
    "translog/view.py",
    "http/conditional.py",
    "http/message.py",
    "http/ranges.py",
    "registry/metrics.py",
    "registry/peer_gate.py",
    "web/traffic.py",
    "p2p/identity.py",
    "p2p/ipnet.py",
    "p2p/swarm/behaviour.py",
    "p2p/wire/connection.py",
    "p2p/behaviours/kad/messages.py",
    "p2p/behaviours/exchange/scheduler.py",
    "p2p/behaviours/exchange/wire.py",
    "p2p/behaviours/identify.py",
    "p2p/behaviours/kad/behaviour.py",
    "p2p/behaviours/kad/core.py",
    "p2p/behaviours/kad/addresses.py",
    "p2p/wire/multiaddr.py",
    "p2p/swarm/addresses.py",
    "p2p/wire/multistream.py",
    "p2p/wire/noise.py",
    "p2p/behaviours/ping.py",
    "p2p/behaviours/relay/__init__.py",
    "p2p/behaviours/relay/client.py",
    "p2p/behaviours/relay/hop.py",
    "p2p/behaviours/relay/messages.py",
    "p2p/behaviours/relay/voucher.py",
    "p2p/behaviours/dcutr.py",
    "p2p/behaviours/autonat/__init__.py",
    "p2p/behaviours/autonat/admission.py",
    "p2p/behaviours/autonat/client.py",
    "p2p/behaviours/autonat/messages.py",
    "p2p/behaviours/autonat/reachability.py",
    "p2p/behaviours/autonat/server.py",
    "p2p/behaviours/autonat/v1.py",
    "p2p/wire/protobuf.py",
    "p2p/ratelimit.py",
    "p2p/behaviours/requests.py",
    "p2p/behaviours/sync/behaviour.py",
    "p2p/behaviours/sync/core.py",
    "p2p/wire/varint.py",
    "p2p/wire/yamux.py",
    "cli/layout.py",
    "sourcebuild/__init__.py",
    "sourcebuild/buildinfo.py",
    "sourcebuild/compare.py",
    "sourcebuild/modules.py",
    "sourcebuild/plan.py",
    "sourcebuild/spec.py",
    "sourcebuild/status.py",
    "sourcebuild/tree.py",
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


def _rank(unit: str) -> int:
    for rank, layer in enumerate(LAYERS):
        if unit in layer:
            return rank
    raise AssertionError(f"pyrsia/{unit} is in no layer of tests/test_layering.py")


def _unit(module: str) -> str:
    """`pyrsia.translog.block` -> `translog`; `pyrsia` -> `__init__`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imported_units(source: str) -> set[str]:
    units: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            units |= {_unit(a.name) for a in node.names if a.name.startswith("pyrsia.")}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module == "pyrsia":
            # `from pyrsia import errors` names a module; `from pyrsia import __version__` the root
            for alias in node.names:
                is_module = (ROOT / alias.name).is_dir() or (ROOT / f"{alias.name}.py").is_file()
                units.add(alias.name if is_module else "__init__")
        elif (
            isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("pyrsia.")
        ):
            units.add(_unit(node.module or ""))
    return units


def _upward_imports() -> list[str]:
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        relative = path.relative_to(ROOT)
        unit = relative.parts[0].removesuffix(".py")
        for imported in _imported_units(path.read_text()) - {unit}:
            if _rank(imported) >= _rank(unit):
                found.append(f"{relative} imports pyrsia.{imported}")
    return found


def test_packages_import_only_downward() -> None:
    assert _upward_imports() == []


def test_rank_checker_catches_a_cycle() -> None:
    assert _imported_units("from pyrsia.registry.docker import x\nimport pyrsia.translog.tx\n") == {
        "registry",
        "translog",
    }
    assert _rank("translog") < _rank("artifacts") < _rank("registry")
