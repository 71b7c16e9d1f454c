"""A real `mvn -B -C` resolves a dependency graph through a node as its only mirror.

The graph (app → lib-a → lib-b, a parent, a BOM import, a classifier) lives in a
static upstream tree; Maven's plugins come from Debian's repository as a local
symlink farm, so nothing leaves loopback. Then the upstream is stopped and the local
repository emptied: the same build succeeds from the node alone. A version range
resolves through the `maven-metadata.xml` the node serves.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.maven_repo import MavenRepo, MavenServer, build, local_repository, settings_xml
from tests.support.node import NodeProcess

pytestmark = pytest.mark.e2e

DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.5.0"
GRAPH = [
    "com/example/app/1.0/app-1.0.pom",
    "com/example/app/1.0/app-1.0.jar",
    "com/example/parent/1.0/parent-1.0.pom",
    "com/example/bom/1.0/bom-1.0.pom",
    "com/example/lib-a/1.0/lib-a-1.0.pom",
    "com/example/lib-a/1.0/lib-a-1.0.jar",
    "com/example/lib-b/1.0/lib-b-1.0.pom",
    "com/example/lib-b/1.0/lib-b-1.0.jar",
    "com/example/lib-b/1.0/lib-b-1.0-natives.jar",
]


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> MavenRepo:
    work = tmp_path_factory.mktemp("maven")
    return build(work / "repo", work / "build")


@pytest.fixture
def upstream(repo: MavenRepo) -> Iterator[MavenServer]:
    with MavenServer(repo.root) as server:
        yield server


def mvn(settings: Path, local: Path, *goal: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["mvn", "-B", "-C", "-s", str(settings), f"-Dmaven.repo.local={local}", *goal],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=settings.parent,
    )
    assert result.returncode == 0 and "BUILD SUCCESS" in result.stdout, result.stdout[-4000:]
    warnings = [line for line in result.stdout.splitlines() if "checksum" in line.lower()]
    assert warnings == [], warnings
    return result


def test_mvn_resolves_the_graph_through_the_node_then_from_the_node_alone(
    repo: MavenRepo, upstream: MavenServer, tmp_path: Path
) -> None:
    with NodeProcess(tmp_path / "node", "--maven-upstream", upstream.url) as node:
        settings = settings_xml(tmp_path / "settings.xml", f"{node.url}/maven2/")
        get_app = (f"{DEPENDENCY_PLUGIN}:get", "-Dartifact=com.example:app:1.0")
        first = mvn(settings, local_repository(tmp_path / "m2-first"), *get_app)
        for path in GRAPH:
            assert f"Downloaded from pyrsia: {node.url}/maven2/{path}" in first.stdout
            assert (tmp_path / "m2-first" / path).read_bytes() == (repo.root / path).read_bytes()

        upstream.stop()
        second = mvn(settings, local_repository(tmp_path / "m2-second"), *get_app)
        for path in GRAPH:
            assert f"Downloaded from pyrsia: {node.url}/maven2/{path}" in second.stdout
            assert (tmp_path / "m2-second" / path).read_bytes() == (repo.root / path).read_bytes()

        # Every file mvn received is vouched for by the log, with the POM's provenance.
        found = subprocess.run(
            [sys.executable, "-m", "pyrsia", "log", "search", "--type", "maven", "--limit", "1000",
             "--json", "--node", node.url],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        records = {r["path"]: r for r in json.loads(found.stdout)}
        assert {f"/maven2/{path}" for path in GRAPH} <= set(records)
        lib_a = records["/maven2/com/example/lib-a/1.0/lib-a-1.0.jar"]
        assert (
            lib_a["author"] == "Ada Lovelace <ada@example.com>"
            and lib_a["package_id"] == "com.example:lib-a:1.0"
        )


def test_version_range_resolves_through_the_nodes_metadata(
    repo: MavenRepo, upstream: MavenServer, tmp_path: Path
) -> None:
    with NodeProcess(tmp_path / "node", "--maven-upstream", upstream.url) as node:
        settings = settings_xml(tmp_path / "settings.xml", f"{node.url}/maven2/")
        local = local_repository(tmp_path / "m2")
        result = mvn(settings, local, f"{DEPENDENCY_PLUGIN}:get", "-Dartifact=com.example:lib-b:[1.0,)")
        metadata = "com/example/lib-b/maven-metadata.xml"
        assert f"Downloaded from pyrsia: {node.url}/maven2/{metadata}" in result.stdout
        assert (
            f"Downloaded from pyrsia: {node.url}/maven2/com/example/lib-b/1.1/lib-b-1.1.jar" in result.stdout
        )
        stored = local / "com/example/lib-b/maven-metadata-pyrsia.xml"
        assert stored.read_bytes() == (repo.root / metadata).read_bytes()
