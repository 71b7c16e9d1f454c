"""Real clients get what a BFT network of authorities committed, through a regular node.

Four authorities and two regular nodes start from one genesis; one authority is killed.
`pyrsia build docker IMAGE --wait` (the real CLI, with the authority's `--home` for its
admin token) on another authority commits an image that every live authority fetched and
checked against its own upstream, a real CNCF docker-registry. The regular node's log
then holds a record for every file of it; the upstream is stopped, and `podman pull`
through the regular node gets the image with the upstream's digest, every byte from its
peers (its `/metrics` count none from an upstream). The same with Maven: `pyrsia build
maven` of a parent, a BOM and two libraries, then `mvn -C dependency:get` of the library
graph through the regular node as its only mirror.

The regular nodes run with `--on-missing fail`, so a pull of anything their log does
not vouch for is refused rather than turned into a build request: before the builds,
the same podman and mvn commands fail, which is what makes their later success the
consensus' doing.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_exchange_podman import BY_SOURCE
from tests.e2e.test_registry_clients import assert_upstream_down, podman_env, run
from tests.support import images
from tests.support.bft import Member, eventually, start_network
from tests.support.maven_repo import (
    MavenRepo,
    MavenServer,
    build,
    dependency_plugin,
    local_repository,
    mvn,
    settings_xml,
)
from tests.support.node import PYRSIA
from tests.support.registry import RegistryProcess

pytestmark = pytest.mark.e2e
TOOLS = ("podman", "runc", "docker-registry", "mvn", "javac")
CLI_TIMEOUT_S = 180.0

# What `dependency:get com.example:lib-a:1.0` fetches: lib-a, its parent, the BOM the
# parent imports (which pins lib-b), and lib-b.
MAVEN_BUILDS = (
    "com.example:bom:1.0",
    "com.example:parent:1.0",
    "com.example:lib-b:1.0",
    "com.example:lib-a:1.0",
)
LIB_A_GRAPH = (
    "com/example/lib-a/1.0/lib-a-1.0.pom",
    "com/example/lib-a/1.0/lib-a-1.0.jar",
    "com/example/parent/1.0/parent-1.0.pom",
    "com/example/bom/1.0/bom-1.0.pom",
    "com/example/lib-b/1.0/lib-b-1.0.pom",
    "com/example/lib-b/1.0/lib-b-1.0.jar",
)


@pytest.fixture(scope="module", autouse=True)
def tools_present() -> None:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"missing tools (run .ci/install-tools): {' '.join(missing)}")


def pyrsia_build(authority: Member, kind: str, target: str) -> dict[str, object]:
    """`pyrsia build KIND TARGET --wait --json` against `authority`, its token read from --home."""
    result = subprocess.run(
        [*PYRSIA, "build", kind, target, "--wait", "--json", "--node", authority.url,
         "--home", str(authority.node.home)],
        capture_output=True, text=True, timeout=CLI_TIMEOUT_S,
    )  # fmt: skip
    assert result.returncode == 0, f"pyrsia build {kind} {target}:\n{result.stdout}\n{result.stderr}"
    done: dict[str, object] = json.loads(result.stdout)
    assert done["state"] == "committed", done
    return done


def endorsers(done: dict[str, object]) -> set[str]:
    verdicts = done["verdicts"]
    assert isinstance(verdicts, list)
    return {v["authority"] for v in verdicts if v["verdict"] == "endorsed"}


def logged_digests(member: Member, package: str) -> set[str]:
    found = member.get("/api/v1/log/search", package=package, limit="1000")["results"]
    assert isinstance(found, list)
    return {r["digest"] for r in found}


def logged_paths(member: Member) -> set[str]:
    found = member.get("/api/v1/log/search", type="maven", limit="1000")["results"]
    assert isinstance(found, list)
    return {r["path"] for r in found}


def upstream_bytes(member: Member) -> int:
    metrics = httpx.get(f"{member.url}/metrics", timeout=10).text
    return int(dict(BY_SOURCE.findall(metrics)).get("upstream", "0"))


def peer_bytes(member: Member) -> int:
    metrics = httpx.get(f"{member.url}/metrics", timeout=10).text
    return int(dict(BY_SOURCE.findall(metrics)).get("peer", "0"))


def test_podman_pulls_through_a_regular_node_what_the_cli_built_with_one_authority_down(
    tmp_path: Path,
) -> None:
    image = images.three_layer("library/consensus", "1.0")
    with ExitStack() as stack:
        registry = stack.enter_context(RegistryProcess(tmp_path / "upstream"))
        images.push(registry.url, image)
        authorities, regular, _ = start_network(
            stack,
            tmp_path,
            authorities=4,
            regular=2,
            flags=lambda role, i: (
                ("--docker-upstream", registry.url)
                if role == "authority"
                else ("--docker-upstream", registry.url, "--on-missing", "fail")
            ),
        )
        client = regular[1]
        env = podman_env(tmp_path / "podman", client.node)
        reference = f"{client.node.address}/{image.reference}"

        # Nothing committed yet: the regular node refuses the pull, asks no upstream.
        refused = subprocess.run(
            ["podman", "pull", "--tls-verify=false", reference],
            capture_output=True, text=True, timeout=CLI_TIMEOUT_S, env=env,
        )  # fmt: skip
        assert refused.returncode != 0, refused.stdout
        assert f"{image.reference} is not in the transparency log" in refused.stderr, refused.stderr
        assert logged_digests(client, image.name) == set()

        authorities[3].node.kill()
        done = pyrsia_build(authorities[1], "docker", image.reference)
        assert endorsers(done) == {a.peer_id for a in authorities[:3]}
        certificate = authorities[1].block(str(done["height"]))["certificate"]
        assert isinstance(certificate, list)
        assert set(certificate) == {a.peer_id for a in authorities[:3]}

        # Every live node's log holds every file of the image before any client asks.
        files = {image.top, *image.blobs}
        live = [*authorities[:3], *regular]
        eventually(
            lambda: all(logged_digests(m, image.name) == files for m in live), "every live node synced"
        )

        registry.stop()
        assert_upstream_down(registry)
        run("podman", "pull", "--tls-verify=false", reference, env=env, timeout_s=300)
        digest = run("podman", "image", "inspect", "--format", "{{.Digest}}", reference, env=env)
        assert digest.strip() == image.top
        for digest, data in image.blobs.items():
            served = httpx.get(f"{client.url}/v2/{image.name}/blobs/{digest}", timeout=60)
            assert served.status_code == 200 and served.content == data

        # Every byte came from the authorities over p2p, checked against the log.
        assert upstream_bytes(client) == 0
        assert peer_bytes(client) >= sum(len(blob) for blob in image.blobs.values())
        assert "from upstream" not in client.node.output()


def test_mvn_resolves_through_a_regular_node_what_the_cli_built_with_one_authority_down(
    tmp_path: Path,
) -> None:
    repo: MavenRepo = build(tmp_path / "repo", tmp_path / "javac")
    with ExitStack() as stack:
        upstream = stack.enter_context(MavenServer(repo.root))
        authorities, regular, _ = start_network(
            stack,
            tmp_path,
            authorities=4,
            regular=2,
            flags=lambda role, i: (
                ("--maven-upstream", upstream.url)
                if role == "authority"
                else ("--maven-upstream", upstream.url, "--on-missing", "fail")
            ),
        )
        client = regular[1]
        work = tmp_path / "mvn"
        work.mkdir()
        settings = settings_xml(work / "settings.xml", f"{client.url}/maven2/")
        get = (f"{dependency_plugin()}:get", "-Dartifact=com.example:lib-a:1.0")

        # Nothing committed yet: mvn fails through the regular node, which asks no upstream.
        before = mvn(settings, local_repository(work / "m2-before"), *get)
        assert before.returncode != 0 and "BUILD FAILURE" in before.stdout, before.stdout[-4000:]
        assert "Could not find artifact com.example:lib-a:jar:1.0 in pyrsia" in before.stdout
        assert upstream.requests() == []

        authorities[3].node.kill()
        for coordinates in MAVEN_BUILDS:
            done = pyrsia_build(authorities[2], "maven", coordinates)
            assert endorsers(done) == {a.peer_id for a in authorities[:3]}, coordinates

        # The regular node's log vouches for every file mvn will ask for, before it asks.
        wanted = {f"/maven2/{path}" for path in LIB_A_GRAPH}
        eventually(lambda: wanted <= logged_paths(client), "the regular node synced the Maven records")

        upstream.stop()
        with pytest.raises(httpx.TransportError):
            httpx.get(upstream.url, timeout=5)
        local = local_repository(work / "m2-after")
        result = mvn(settings, local, *get)
        output = result.stdout + result.stderr
        assert result.returncode == 0 and "BUILD SUCCESS" in result.stdout, output[-4000:]
        # -C fails the build on a bad checksum; not even a warning about one may appear.
        assert [line for line in output.splitlines() if "checksum" in line.lower()] == []
        for path in LIB_A_GRAPH:
            assert (local / path).read_bytes() == repo.read(path), path
        downloaded = set(
            re.findall(rf"Downloaded from pyrsia: {re.escape(client.url)}/maven2/(\S+)", result.stdout)
        )
        assert set(LIB_A_GRAPH) <= downloaded

        assert upstream_bytes(client) == 0
        assert peer_bytes(client) >= sum(len(repo.read(path)) for path in LIB_A_GRAPH)
        assert "from upstream" not in client.node.output()
