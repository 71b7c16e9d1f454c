"""A real Gradle (Debian's 4.4.1) resolves dynamic versions through a node's directory listing.

The static upstream of `tests/support/maven_repo.py` has no `maven-metadata.xml` for
`com.example:lib-b` (versions 1.0 and 1.1), so Gradle, after the node answers 404 for
the metadata, lists `com/example/lib-b/` — the fallback Gradle takes for Maven
repositories — and picks the version from the node's HTML page. The node has only
fetched 1.0 beforehand: 1.1 is discoverable because the node merges the upstream's
listing into its own, and its jar then comes through the node and into the log. When
the upstream later drops 1.1, a fresh Gradle still resolves `1.+` to it: the node's
listing keeps what its log holds. The node is Gradle's only repository. A missing
`gradle` or JDK fails these tests; it never skips them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.maven_repo import MavenRepo, MavenServer, build
from tests.support.node import NodeProcess

pytestmark = pytest.mark.e2e
GRADLE_TIMEOUT_S = 300.0
LIB_B = "com/example/lib-b"


@dataclass(frozen=True, slots=True)
class Stack:
    repo: MavenRepo
    upstream: MavenServer
    node: NodeProcess


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> MavenRepo:
    work = tmp_path_factory.mktemp("maven")
    built = build(work / "repo", work / "build")
    built.remove(f"{LIB_B}/maven-metadata.xml")
    assert not built.file(f"{LIB_B}/maven-metadata.xml").exists()
    return built


@pytest.fixture
def stack(repo: MavenRepo, tmp_path: Path) -> Iterator[Stack]:
    with (
        MavenServer(repo.root) as upstream,
        NodeProcess(tmp_path / "node", "--maven-upstream", upstream.url) as node,
    ):
        # The node knows 1.0 only; 1.1 it has never fetched.
        assert httpx.get(f"{node.url}/maven2/{LIB_B}/1.0/lib-b-1.0.pom", timeout=30).status_code == 200
        yield Stack(repo, upstream, node)


def gradle_resolve(work: Path, repository_url: str, dependency: str) -> list[Path]:
    """Runs `gradle` on a one-dependency build with a fresh Gradle home; the resolved files."""
    if shutil.which("gradle") is None:
        pytest.fail("gradle is not installed: apt-get install -y --no-install-recommends gradle")
    project = work / "project"
    project.mkdir(parents=True)
    (project / "settings.gradle").write_text("rootProject.name = 'resolve'\n")
    (project / "build.gradle").write_text(
        f"repositories {{ maven {{ url '{repository_url}' }} }}\n"
        "configurations { fetch }\n"
        f"dependencies {{ fetch '{dependency}' }}\n"
        'task fetchIt { doLast { configurations.fetch.resolve().each { println "RESOLVED " + it } } }\n'
    )
    env = {**os.environ, "GRADLE_USER_HOME": str(work / "gradle-home")}
    result = subprocess.run(
        ["gradle", "--no-daemon", "--console=plain", "-q", "fetchIt"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=GRADLE_TIMEOUT_S,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return [Path(m) for m in re.findall(r"^RESOLVED (.+)$", result.stdout, re.MULTILINE)]


def node_requests(node: NodeProcess) -> list[tuple[str, int]]:
    """(path, status) of each request in the node's access log, in order."""
    found = re.findall(r'"GET (/maven2/\S+)" (\d{3})', node.output())
    return [(path, int(status)) for path, status in found]


def logged(node: NodeProcess, package: str) -> list[str]:
    response = httpx.get(f"{node.url}/api/v1/log/search", params={"package": package}, timeout=30)
    return sorted(r["path"] for r in response.json()["results"])


@pytest.mark.parametrize("dependency", ["com.example:lib-b:1.+", "com.example:lib-b:latest.release"])
def test_a_dynamic_version_resolves_from_the_listing(stack: Stack, tmp_path: Path, dependency: str) -> None:
    files = gradle_resolve(tmp_path / "gradle", f"{stack.node.url}/maven2/", dependency)
    assert [f.name for f in files] == ["lib-b-1.1.jar"]
    assert files[0].read_bytes() == stack.repo.read(f"{LIB_B}/1.1/lib-b-1.1.jar")
    asked = node_requests(stack.node)
    assert (f"/maven2/{LIB_B}/maven-metadata.xml", 404) in asked
    assert (f"/maven2/{LIB_B}/", 200) in asked
    assert (f"/maven2/{LIB_B}/1.1/lib-b-1.1.jar", 200) in asked
    assert (f"/{LIB_B}/", 200) in stack.upstream.requests()  # 1.1 came from the upstream's listing
    assert f"/maven2/{LIB_B}/1.1/lib-b-1.1.jar" in logged(stack.node, "com.example:lib-b:1.1")


def test_a_version_the_upstream_dropped_still_resolves_from_the_log(
    repo: MavenRepo, stack: Stack, tmp_path: Path
) -> None:
    first = gradle_resolve(tmp_path / "first", f"{stack.node.url}/maven2/", "com.example:lib-b:1.+")
    assert [f.name for f in first] == ["lib-b-1.1.jar"]
    dropped = tmp_path / "lib-b-1.1"
    shutil.copytree(repo.file(f"{LIB_B}/1.1"), dropped)
    repo.remove(f"{LIB_B}/1.1")
    try:
        again = gradle_resolve(tmp_path / "again", f"{stack.node.url}/maven2/", "com.example:lib-b:1.+")
        assert [f.name for f in again] == ["lib-b-1.1.jar"]
        assert again[0].read_bytes() == first[0].read_bytes()
        upstream_page = httpx.get(f"{stack.upstream.url}/{LIB_B}/", timeout=30).text
        assert (
            "1.1/" not in upstream_page
            and '<a href="1.1/"' in httpx.get(f"{stack.node.url}/maven2/{LIB_B}/", timeout=30).text
        )
    finally:
        shutil.copytree(dropped, repo.file(f"{LIB_B}/1.1"))
