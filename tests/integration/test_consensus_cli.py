"""`pyrsia build`, `authorize-node`, `deauthorize-node` and `authorities` against real
daemons: the embedded one-authority network (where an authority change commits at
once and a build on the authority commits directly) and a regular node joined to it
(whose builds go to the authority over p2p, and whose admin may not approve
authorities). Upstreams are a CNCF docker-registry and a static Maven repository on
loopback. Every command runs as `python -m pyrsia …`, exactly as typed in a shell.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import images
from tests.support.bft import prepare
from tests.support.cli import ok, one_line_error, run
from tests.support.maven_repo import MavenRepo, MavenServer
from tests.support.node import NodeProcess
from tests.support.registry import RegistryProcess

CANDIDATE = "12D3KooWPR5a27uw5gWSi2G2SD6LzLksuSABgWSPJpBmgYodNcTr"
HELLO_POM = b"<project><modelVersion>4.0.0</modelVersion><groupId>com.example</groupId>" + (
    b"<artifactId>hello</artifactId><version>1.0</version></project>\n"
)
HELLO_JAR = b"PK\x05\x06" + b"\0" * 18  # an empty zip: the node checks bytes, not classes
WAIT_S = "120"


@pytest.fixture(autouse=True)
def isolated_client(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No developer settings, and no node home or token unless a test passes one."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("xdg")))
    monkeypatch.setenv("PYRSIA_HOME", str(tmp_path_factory.mktemp("no-node-here")))
    for name in ("PYRSIA_NODE", "PYRSIA_ADMIN_TOKEN"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def docker_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    with RegistryProcess(tmp_path_factory.mktemp("upstream")) as registry:
        images.push(registry.url, images.three_layer())
        images.push(registry.url, images.nested())
        yield registry


@pytest.fixture(scope="module")
def maven_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MavenServer]:
    repo = MavenRepo(tmp_path_factory.mktemp("maven"))
    repo.put("com/example/hello/1.0/hello-1.0.pom", HELLO_POM)
    repo.put("com/example/hello/1.0/hello-1.0.jar", HELLO_JAR)
    with MavenServer(repo.root) as server:
        yield server


def upstream_flags(docker: RegistryProcess, maven: MavenServer) -> tuple[str, ...]:
    return ("--docker-upstream", docker.url, "--maven-upstream", maven.url)


@pytest.fixture(scope="module")
def regular_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The regular node's home, its identity made first so the authority may list it."""
    home = tmp_path_factory.mktemp("regular")
    prepare(home)
    return home


@pytest.fixture(scope="module")
def authority(
    tmp_path_factory: pytest.TempPathFactory,
    docker_upstream: RegistryProcess,
    maven_upstream: MavenServer,
    regular_home: Path,
) -> Iterator[NodeProcess]:
    """The embedded network's only authority; its authority set is never changed here.
    It takes build requests from the regular node below (`build_requesters`)."""
    home = tmp_path_factory.mktemp("authority")
    requester = ("--build-requesters", prepare(regular_home))
    with NodeProcess(home, *upstream_flags(docker_upstream, maven_upstream), *requester) as node:
        yield node


@pytest.fixture(scope="module")
def regular(
    regular_home: Path,
    authority: NodeProcess,
    docker_upstream: RegistryProcess,
    maven_upstream: MavenServer,
) -> Iterator[NodeProcess]:
    home = regular_home
    flags = (*upstream_flags(docker_upstream, maven_upstream), "--bootstrap", authority.p2p_address)
    with NodeProcess(home, *flags) as node:
        yield node


def on(node: NodeProcess) -> tuple[str, ...]:
    """Flags that point a command at `node` with its admin token (read from its home)."""
    return ("--node", node.url, "--home", str(node.home))


def status(node: NodeProcess) -> dict[str, object]:
    doc: dict[str, object] = httpx.get(f"{node.url}/api/v1/status", timeout=10).json()
    return doc


def height(node: NodeProcess) -> int:
    translog = status(node)["translog"]
    assert isinstance(translog, dict)
    return int(translog["height"])


def peer_id(node: NodeProcess) -> str:
    return str(status(node)["peer_id"])


def logged(node: NodeProcess, package: str) -> set[str]:
    found = httpx.get(f"{node.url}/api/v1/log/search", params={"package": package}, timeout=30).json()
    return {r["digest"] for r in found["results"]}


def test_authorities_on_the_embedded_network(authority: NodeProcess) -> None:
    me = peer_id(authority)
    out = ok(run("authorities", "--node", authority.url, timeout_s=180))
    assert "1 authorities at height" in out and "quorum 1" in out
    assert out.splitlines()[-1] == f"this node {me} is an authority"
    doc = json.loads(ok(run("authorities", "--json", "--node", authority.url, timeout_s=180)))
    assert doc["authorities"] == [me] and doc["me"] == me and doc["is_authority"] is True
    assert doc["quorum"] == 1 and doc["pending"] == [] and isinstance(doc["height"], int)


def test_build_docker_on_the_authority_commits_directly(authority: NodeProcess) -> None:
    image = images.three_layer()
    result = run(
        "build", "docker", image.reference, "--wait", "--timeout", WAIT_S, *on(authority), timeout_s=180
    )
    out = ok(result)
    assert out.splitlines()[-1] == "state committed"
    assert "committed at height" in result.stderr
    build_id = next(line.split()[1] for line in out.splitlines() if line.startswith("build "))
    doc = json.loads(ok(run("build", "status", build_id, "--json", "--node", authority.url, timeout_s=180)))
    assert doc["state"] == "committed" and doc["via"] == "this node" and doc["height"] >= 1
    assert doc["transactions"] and all(t["state"] == "committed" for t in doc["transactions"])
    assert image.top in {t["digest"] for t in doc["transactions"]}
    assert [(v["authority"], v["verdict"]) for v in doc["verdicts"]] == [(peer_id(authority), "endorsed")]
    assert image.top in logged(authority, image.name)
    listed = json.loads(ok(run("build", "list", "--json", "--node", authority.url, timeout_s=180)))
    assert build_id in {b["id"] for b in listed}


def test_build_docker_without_wait_prints_the_id_and_the_build_can_be_followed(
    authority: NodeProcess,
) -> None:
    image = images.nested()
    build_id = ok(run("build", "docker", image.reference, *on(authority), timeout_s=180)).strip()
    assert len(build_id) == 16 and int(build_id, 16) >= 0
    out = ok(
        run(
            "build", "status", build_id, "--wait", "--timeout", WAIT_S, "--node", authority.url, timeout_s=180
        )
    )
    assert out.splitlines()[-1] == "state committed"
    assert image.top in logged(authority, image.name)


def test_build_maven_on_the_authority_commits_jar_and_pom(authority: NodeProcess) -> None:
    result = run(
        "build",
        "maven",
        "com.example:hello:1.0",
        "--wait",
        "--timeout",
        WAIT_S,
        "--json",
        *on(authority),
        timeout_s=180,
    )
    doc = json.loads(ok(result))
    assert doc["state"] == "committed"
    paths = {t["path"].removeprefix("/maven2/") for t in doc["transactions"]}
    assert {"com/example/hello/1.0/hello-1.0.pom", "com/example/hello/1.0/hello-1.0.jar"} <= paths
    assert logged(authority, "com.example:hello:1.0")


def test_a_build_of_what_the_upstream_lacks_fails_in_one_line(authority: NodeProcess) -> None:
    before = height(authority)
    result = run(
        "build",
        "docker",
        "library/threelayer:missing",
        "--wait",
        "--timeout",
        WAIT_S,
        *on(authority),
        timeout_s=180,
    )
    one_line_error(result, 1, "failed")
    assert result.stdout.splitlines()[-1] == "state failed"
    assert height(authority) == before


@pytest.mark.parametrize(
    "args",
    [
        ("build", "docker", "library/threelayer:1.0"),
        ("build", "maven", "com.example:hello:1.0"),
        ("authorize-node", CANDIDATE),
        ("authorize", "--peer", CANDIDATE),
        ("deauthorize-node", CANDIDATE),
    ],
)
def test_without_the_admin_token_nothing_changes(authority: NodeProcess, args: tuple[str, ...]) -> None:
    before_height, before_builds = (
        height(authority),
        ok(run("build", "list", "--json", "--node", authority.url, timeout_s=180)),
    )
    one_line_error(run(*args, "--node", authority.url, timeout_s=180), 1, "no admin token")
    one_line_error(
        run(*args, "--node", authority.url, "--admin-token", "not-the-token", timeout_s=180),
        1,
        "401",
        "admin token",
    )
    assert height(authority) == before_height
    assert ok(run("build", "list", "--json", "--node", authority.url, timeout_s=180)) == before_builds
    assert (
        json.loads(ok(run("authorities", "--json", "--node", authority.url, timeout_s=180)))["approvals"]
        == []
    )


def test_a_build_on_a_regular_node_goes_to_the_authorities(
    authority: NodeProcess, regular: NodeProcess
) -> None:
    image = images.three_layer(tag="regular")
    # Not in the upstream under this tag: the authority refuses to vouch, and says so.
    result = run(
        "build",
        "docker",
        image.reference,
        "--wait",
        "--timeout",
        WAIT_S,
        "--json",
        *on(regular),
        timeout_s=180,
    )
    assert result.returncode == 1, result.stderr
    doc = json.loads(result.stdout)
    assert doc["via"] == "authorities" and doc["state"] in ("refused", "failed") and doc["error"]
    # What the upstream has commits on the authority and reaches the regular node.
    good = images.nested()
    doc = json.loads(
        ok(
            run(
                "build",
                "docker",
                good.reference,
                "--wait",
                "--timeout",
                WAIT_S,
                "--json",
                *on(regular),
                timeout_s=180,
            )
        )
    )
    assert doc["via"] == "authorities" and doc["state"] == "committed"
    assert good.top in logged(regular, good.name)


def test_a_regular_nodes_admin_cannot_approve_authorities(regular: NodeProcess) -> None:
    one_line_error(
        run("authorize-node", CANDIDATE, *on(regular), timeout_s=180), 1, "403", "not an authority"
    )
    doc = json.loads(ok(run("authorities", "--json", "--node", regular.url, timeout_s=180)))
    assert doc["is_authority"] is False and doc["me"] not in doc["authorities"]


@pytest.mark.parametrize("command", [("authorize-node", CANDIDATE), ("authorize", "--peer", CANDIDATE)])
def test_authorize_node_commits_at_once_on_the_embedded_network(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    with NodeProcess(tmp_path / "solo") as solo:
        me = peer_id(solo)
        result = run(*command, *on(solo), timeout_s=180)
        out = ok(result)
        assert f"approves adding {CANDIDATE}" in result.stderr
        assert "committed at height 1" in out
        doc = json.loads(ok(run("authorities", "--json", "--node", solo.url, timeout_s=180)))
        assert sorted(doc["authorities"]) == sorted([me, CANDIDATE])
        assert doc["quorum"] == 2 and doc["height"] == 1
        assert {"peer_id": CANDIDATE, "action": "add"} in doc["approvals"]
        table = ok(run("authorities", "--node", solo.url, timeout_s=180))
        assert "2 authorities at height 1, quorum 2" in table and CANDIDATE in table
        # Adding it twice is the node's usage error, in one line.
        one_line_error(run("authorize-node", CANDIDATE, *on(solo), timeout_s=180), 2, "400", "already")


def test_deauthorize_node_waits_for_the_other_authority(tmp_path: Path) -> None:
    with NodeProcess(tmp_path / "solo") as solo:
        me = peer_id(solo)
        ok(run("authorize-node", CANDIDATE, *on(solo), timeout_s=180))
        # Two authorities now, the candidate offline: a removal needs both, so it stays pending.
        answer = json.loads(ok(run("deauthorize-node", CANDIDATE, "--json", *on(solo), timeout_s=180)))
        assert answer["action"] == "remove" and answer["state"] == "pending" and answer["tx_id"]
        doc = json.loads(ok(run("authorities", "--json", "--node", solo.url, timeout_s=180)))
        assert sorted(doc["authorities"]) == sorted([me, CANDIDATE])
        pending = [p for p in doc["pending"] if p["action"] == "remove"]
        assert [(p["peer_id"], p["tx_id"]) for p in pending] == [(CANDIDATE, answer["tx_id"])]
        assert pending[0]["submitter"] == me and me in pending[0]["endorsed_by"]
        table = ok(run("authorities", "--node", solo.url, timeout_s=180))
        assert "pending authority changes (1)" in table and "of 2 needed" in table
