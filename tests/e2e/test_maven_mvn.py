"""A real `mvn -B -C` resolves a dependency graph through a node as its only mirror.

The graph (app → lib-a → lib-b, a parent, a BOM import that pins lib-b, a classifier
jar) lives in a static upstream on loopback (`tests/support/maven_repo.py`); Maven's
own plugins come from Debian's repository through a symlink-farm local repository, so
nothing leaves the machine and every `com.example` file goes through the node. `-C`
makes Maven fail on any checksum the node serves that does not match its bytes.

Then the upstream is stopped and the local repository replaced by a fresh one: the
same build succeeds from the node alone. A version range and LATEST resolve through the
`maven-metadata.xml` the node serves. A missing `mvn`, JDK or Debian plugin fails these
tests; it never skips them.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.maven_repo import (
    APP_GRAPH,
    MIRROR_ID,
    MavenRepo,
    MavenServer,
    build,
    dependency_plugin,
    local_repository,
    mvn,
    settings_xml,
)
from tests.support.node import NodeProcess

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> MavenRepo:
    work = tmp_path_factory.mktemp("maven")
    return build(work / "repo", work / "build")


@pytest.fixture
def upstream(repo: MavenRepo) -> Iterator[MavenServer]:
    with MavenServer(repo.root) as server:
        yield server


@pytest.fixture
def node(upstream: MavenServer, tmp_path: Path) -> Iterator[NodeProcess]:
    with NodeProcess(tmp_path / "node", "--maven-upstream", upstream.url) as started:
        yield started


def get(node: NodeProcess, tmp_path: Path, artifact: str, local: str) -> tuple[str, Path]:
    """`dependency:get` of `artifact` through the node into a fresh local repository."""
    settings = settings_xml(tmp_path / "settings.xml", f"{node.url}/maven2/")
    repository = local_repository(tmp_path / local)
    result = mvn(settings, repository, f"{dependency_plugin()}:get", f"-Dartifact={artifact}")
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "BUILD SUCCESS" in result.stdout, output[-4000:]
    # With -C a bad checksum fails the build; a warning about one must not appear either.
    complaints = [line for line in output.splitlines() if "checksum" in line.lower()]
    assert complaints == [], complaints
    return result.stdout, repository


def downloaded(stdout: str, node: NodeProcess) -> set[str]:
    prefix = f"Downloaded from {MIRROR_ID}: {node.url}/maven2/"
    return {m.group(1) for m in re.finditer(re.escape(prefix) + r"(\S+)", stdout)}


def pulled(node: NodeProcess) -> list[str]:
    """Paths the node fetched from its upstream, from its own log."""
    return re.findall(r"pulled (\S+) from upstream", node.output())


def record(node: NodeProcess, path: str) -> dict[str, object]:
    held = node.home / "refs" / "maven" / f"{path}@"
    assert held.is_file(), f"the node holds no record for {path}"
    loaded: dict[str, object] = json.loads(held.read_bytes())
    return loaded


def test_mvn_resolves_the_graph_through_the_node_then_from_the_node_alone(
    repo: MavenRepo, upstream: MavenServer, node: NodeProcess, tmp_path: Path
) -> None:
    stdout, local = get(node, tmp_path, "com.example:app:1.0", "m2-first")
    assert downloaded(stdout, node) >= set(APP_GRAPH)
    for path in APP_GRAPH:
        assert (local / path).read_bytes() == repo.read(path), path
        assert (local / f"{path}.sha1").read_text().strip() == repo.file(f"{path}.sha1").read_text()
    # The BOM pins lib-b to 1.0 although the upstream also has 1.1.
    assert not (local / "com/example/lib-b/1.1").exists()

    # The node fetched each file from the upstream once, though mvn asked for it and its .sha1,
    # stored it under its sha256, and the log vouches for it with the POM's provenance.
    fetched = [p.lstrip("/") for p, status in upstream.requests() if status == 200]
    for path in APP_GRAPH:
        assert fetched.count(path) == 1, (path, fetched)
        assert record(node, path)["sha256"] == hashlib.sha256(repo.read(path)).hexdigest()
    assert sorted(pulled(node)) == sorted(APP_GRAPH)
    found = httpx.get(f"{node.url}/api/v1/log/search", params={"type": "maven", "limit": "1000"})
    records = {r["path"]: r for r in found.json()["results"]}
    assert {f"/maven2/{path}" for path in APP_GRAPH} <= set(records)
    lib_a = records["/maven2/com/example/lib-a/1.0/lib-a-1.0.jar"]
    assert lib_a["author"] == "Ada Lovelace <ada@example.com>"
    assert lib_a["package_id"] == "com.example:lib-a:1.0"
    log_size = httpx.get(f"{node.url}/api/v1/log").json()["size"]

    upstream.stop()
    with pytest.raises(httpx.TransportError):
        httpx.get(upstream.url, timeout=5)
    stdout, local = get(node, tmp_path, "com.example:app:1.0", "m2-second")
    assert downloaded(stdout, node) >= set(APP_GRAPH)
    for path in APP_GRAPH:
        assert (local / path).read_bytes() == repo.read(path), path
    assert sorted(pulled(node)) == sorted(APP_GRAPH)  # nothing fetched again
    assert httpx.get(f"{node.url}/api/v1/log").json()["size"] == log_size


@pytest.mark.parametrize("version", ["[1.0,)", "LATEST"])
def test_a_version_resolves_through_the_metadata_the_node_serves(
    repo: MavenRepo, upstream: MavenServer, node: NodeProcess, tmp_path: Path, version: str
) -> None:
    metadata = "com/example/lib-b/maven-metadata.xml"
    stdout, local = get(node, tmp_path, f"com.example:lib-b:{version}", "m2")
    assert metadata in downloaded(stdout, node)
    assert "com/example/lib-b/1.1/lib-b-1.1.jar" in downloaded(stdout, node)
    assert (local / "com/example/lib-b/1.1/lib-b-1.1.jar").read_bytes() == repo.read(
        "com/example/lib-b/1.1/lib-b-1.1.jar"
    )
    assert not (local / "com/example/lib-b/1.0/lib-b-1.0.jar").exists()
    # Maven keeps the metadata it read under the mirror's id: the node's bytes, the upstream's.
    assert (local / f"com/example/lib-b/maven-metadata-{MIRROR_ID}.xml").read_bytes() == repo.read(metadata)
    assert record(node, metadata)["sha256"] == hashlib.sha256(repo.read(metadata)).hexdigest()
    assert (f"/{metadata}", 200) in upstream.requests()


def test_the_tools_these_tests_need_are_installed() -> None:
    # Reported as a failure of its own, so a machine without them never passes silently.
    missing = [tool for tool in ("mvn", "javac", "jar") if shutil.which(tool) is None]
    assert missing == [], f"not installed: {missing}"
    assert dependency_plugin().startswith("org.apache.maven.plugins:maven-dependency-plugin:")
