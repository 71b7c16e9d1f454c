"""Build from source through the network: four authority daemons of one genesis and a
regular node, a git repository served by `git daemon` on loopback, the authorities'
Maven upstream a plain HTTP server over Debian's repository.

One set of daemons (module fixture) for every test. Before the daemons start, a
reference build runs outside the network against the Maven mirror, which notes every
file Maven asked for; once they run, those plugins and dependencies are published
through the authorities all at once (`build maven` of each, batched into few blocks),
so the rebuilds below resolve through each authority's `/maven2/` without one
consensus round per file. Then, in order:

- a small Maven project (one dependency, commons-lang3, resolved through each
  authority's own `/maven2/` from inside the sandbox) is rebuilt by all four from its
  tag; its jar and pom commit, every certificate signer and endorser matched, the
  records carry source, commit and builders; `mvn -C` resolves the jar through the
  regular node, byte-identical to a reference build, and `inspect-log`/`log search`
  find it;
- a project embedding the wall-clock time is refused, and `build status` names the
  differing jar entry;
- two authorities that build with JDK 17 only refuse a spec for JDK 25 (the reason
  names the JDK), and with two of four refusing nothing commits;
- bad input through the CLI: a branch, a missing tag, a URL that is not git, a command
  with shell metacharacters, an enormous spec: one line, non-zero exit;
- one authority down: a rebuild asked for on the regular node (`pyrsia build source
  --wait` there, handed to one authority) still commits, signed by the three alive.

Needs root (builds drop to an unprivileged uid) and the tools `.ci/install-tools`
installs; JDK 25 for the disagreement test.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from pyrsia.sourcebuild.compare import zip_entries
from pyrsia.sourcebuild.sandbox import MirrorAddress, run_source_build
from pyrsia.sourcebuild.spec import canonical_fields, spec_from_fields
from tests.support.bft import Member, eventually, prepare, start_network
from tests.support.cli import one_line_error, run
from tests.support.source_repo import (
    DEBIAN_MAVEN_REPO,
    FAST_JVM,
    GitDaemon,
    MavenMirror,
    _Handler,
    hello_project,
    make_repository,
    pom,
    spec_fields,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox drops to an unprivileged uid: needs root"),
    pytest.mark.skipif(
        not all(shutil.which(tool) for tool in ("bwrap", "setpriv", "prlimit", "socat", "mvn", "git")),
        reason="needs bubblewrap, util-linux, socat, maven and git (.ci/install-tools)",
    ),
]

BUILD_S = 900.0
JDK25 = Path("/usr/lib/jvm/temurin-25-jdk-amd64")
CLOCK_RESOURCE = "built=${maven.build.timestamp} ${session.request.startTime.time}\n"


@dataclass
class Net:
    scratch: Path
    git: GitDaemon
    mirror: MavenMirror
    authorities: list[Member]
    regular: Member
    reference_jar: bytes


class _Recording(_Handler):
    def log_message(self, format: str, *args: Any) -> None:
        super().log_message(format, *args)
        self.server.paths.add(self.path)  # type: ignore[attr-defined]


class RecordingMirror(MavenMirror):
    """The Maven mirror over Debian's repository, noting each path asked for."""

    def __init__(self) -> None:
        self.server = ThreadingHTTPServer(
            ("127.0.0.1", 0), partial(_Recording, directory=str(DEBIAN_MAVEN_REPO))
        )
        self.server.requests = 0  # type: ignore[attr-defined]
        self.server.paths = set()  # type: ignore[attr-defined]
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def coordinates(self) -> set[str]:
        """G:A:V of every file asked for (checksums and metadata aside)."""
        found = set()
        for path in self.server.paths:  # type: ignore[attr-defined]
            parts = path.removeprefix("/maven2/").split("/")
            if len(parts) >= 4 and parts[-1].endswith((".pom", ".jar")):
                found.add(f"{'.'.join(parts[:-3])}:{parts[-3]}:{parts[-2]}")
        return found


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    # Under /tmp, not pytest's 0700 tmp_path: the build uid must reach the build directories.
    scratch = Path(tempfile.mkdtemp(prefix="pyrsia-srcnet-", dir="/tmp"))
    scratch.chmod(0o755)
    (scratch / "git").mkdir()
    make_repository(scratch / "git", "hello", hello_project(), branch="release")
    clock_files = hello_project("clock", with_build_time=True)
    clock_files["src/main/resources/build-time.properties"] = CLOCK_RESOURCE
    make_repository(scratch / "git", "clock", clock_files)
    make_repository(scratch / "git", "later", hello_project("later"))
    make_repository(scratch / "git", "modern", hello_project("modern"))
    try:
        with ExitStack() as stack:
            served = stack.enter_context(GitDaemon(scratch / "git"))
            mirror = stack.enter_context(RecordingMirror())
            reference = run_source_build(
                spec_from_fields(spec_fields(served.url("hello"), "hello")),
                work_dir=scratch / "reference",
                mirror=MirrorAddress(host="127.0.0.1", port=mirror.port),
                uid=4350,
            )
            reference_jar = (Path(reference.output_dir) / "hello-1.0.jar").read_bytes()
            upstream = f"http://127.0.0.1:{mirror.port}/maven2/"
            root = tmp_path_factory.mktemp("net")
            requester = prepare(root / "node-0")  # the regular node may ask for builds

            def flags(role: str, i: int) -> tuple[str, ...]:
                if role != "authority":
                    return ("--maven-upstream", upstream)
                builds = scratch / f"builds-{i}"
                builds.mkdir(mode=0o755)
                jdks = ("17", "25") if i >= 2 else ("17",)
                return (
                    "--maven-upstream", upstream,
                    "--source-build-dir", str(builds),
                    "--source-build-uid", str(4300 + i),
                    *(arg for major in jdks for arg in ("--source-build-jdks", major)),
                    "--request-timeout", "600",
                    "--build-requesters", requester,
                )  # fmt: skip

            authorities, regular, _ = start_network(stack, root, authorities=4, regular=1, flags=flags)
            prewarm(authorities[0], mirror.coordinates())
            yield Net(
                scratch=scratch,
                git=served,
                mirror=mirror,
                authorities=authorities,
                regular=regular[0],
                reference_jar=reference_jar,
            )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def prewarm(member: Member, coordinates: set[str]) -> None:
    """Publish what the builds will resolve, every version at once (one consensus, few blocks)."""
    assert len(coordinates) > 10, coordinates
    ids = [member.build("maven", gav) for gav in sorted(coordinates)]
    for build_id in ids:
        done = member.finished_build(build_id, within_s=BUILD_S)
        assert done["state"] == "committed", done


def start(member: Member, fields: dict[str, str]) -> str:
    spec = canonical_fields(spec_from_fields(fields))
    response = member.post("/api/v1/builds", {"kind": "source", "spec": spec})
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def views(doc: dict[str, object]) -> dict[str, dict[str, object]]:
    return {str(a["authority"]): a for a in doc["authorities"]}  # type: ignore[union-attr,index]


def on(member: Member) -> tuple[str, ...]:
    return ("--node", member.url, "--home", str(member.node.home))


def test_four_authorities_rebuild_a_release_and_a_regular_node_serves_it_to_mvn(net: Net) -> None:
    first = net.authorities[0]
    fields = spec_fields(net.git.url("hello"), "hello")
    build_id = start(first, fields)
    done = first.finished_build(build_id, within_s=BUILD_S)
    assert done["state"] == "committed", json.dumps(done, indent=1)
    paths = {t["path"] for t in done["transactions"]}  # type: ignore[union-attr]
    assert paths == {
        "/maven2/com/example/hello/1.0/hello-1.0.jar",
        "/maven2/com/example/hello/1.0/hello-1.0.pom",
    }
    every = {a.peer_id for a in net.authorities}

    def all_matched() -> bool:
        done.update(first.build_status(build_id))
        return {p for p, v in views(done).items() if v["state"] == "matched"} == every

    eventually(all_matched, "every authority's build matched", within_s=120)
    commits = {str(v.get("commit")) for v in views(done).values()}
    assert len(commits) == 1 and len(commits.pop()) == 40

    # The records: source, commit, spec digest, builder; every endorser and certificate signer matched.
    records = first.get("/api/v1/log/search", build_source=net.git.url("hello"))["results"]
    assert {r["path"] for r in records} == paths  # type: ignore[union-attr,index]
    for record in records:  # type: ignore[union-attr]
        assert record["build_commit"] == done["transactions"][0]["commit"]  # type: ignore[index]
        assert record["build_spec"] == done["spec_digest"]
        assert record["builder_jdk"].startswith("17") and record["builder_maven"]
        assert record["reproduces_upstream"] == "absent"  # Debian's repository has no com.example
        block = first.block(record["height"])
        assert set(block["certificate"]) <= every and len(block["certificate"]) >= 3  # type: ignore[arg-type]
        for tx in block["transactions"]:  # type: ignore[union-attr]
            if tx["payload"].get("build"):
                assert set(tx["endorsements"]) <= every and len(tx["endorsements"]) >= 3

    # mvn -C through the regular node: the jar, byte-identical to the reference build.
    expected = net.reference_jar
    height = int(done["height"])  # type: ignore[arg-type]
    eventually(lambda: net.regular.height() >= height, "the regular node synced the build")
    consumer = net.scratch / "consumer"
    (consumer / "src/main/java/com/example/use").mkdir(parents=True)
    dependency = (
        "<dependency><groupId>com.example</groupId><artifactId>hello</artifactId><version>1.0</version>"
        "</dependency>"
    )
    (consumer / "pom.xml").write_text(
        pom("consumer").replace("<dependencies>", "<dependencies>" + dependency)
    )
    (consumer / "src/main/java/com/example/use/Use.java").write_text(
        "package com.example.use;\npublic final class Use { public static String go() "
        '{ return com.example.hello.Hello.greet("pyrsia"); } }\n'
    )
    (consumer / "settings.xml").write_text(
        "<settings><mirrors><mirror><id>pyrsia</id><mirrorOf>*</mirrorOf>"
        f"<url>{net.regular.url}/maven2/</url></mirror></mirrors></settings>"
    )
    local = net.scratch / "consumer-m2"
    done_mvn = subprocess.run(
        ["mvn", "-C", "-B", "-s", "settings.xml", f"-Dmaven.repo.local={local}", "package", "-DskipTests"],
        cwd=consumer,
        capture_output=True,
        text=True,
        timeout=BUILD_S,
        env={**os.environ, "JAVA_HOME": "/usr/lib/jvm/java-17-openjdk-amd64", "MAVEN_OPTS": FAST_JVM},
    )
    assert done_mvn.returncode == 0, done_mvn.stdout[-4000:]
    assert (local / "com/example/hello/1.0/hello-1.0.jar").read_bytes() == expected

    # inspect-log shows source, commit and builders; log search finds it by source.
    out = run(
        "inspect-log", "maven", "--gav", "com.example:hello:1.0", "--node", net.regular.url, timeout_s=120
    )
    assert out.returncode == 0, out.stderr
    shown = json.loads(out.stdout)
    assert {r["build_source"] for r in shown} == {net.git.url("hello")}
    assert all(set(r["builders"]) <= every and len(r["builders"]) >= 3 for r in shown)
    found = run(
        "log", "search", "--source", net.git.url("hello"), "--json", "--node", net.regular.url, timeout_s=120
    )
    assert found.returncode == 0, found.stderr
    assert {r["path"] for r in json.loads(found.stdout)} == paths
    none = run("log", "search", "--reproducible", "--json", "--node", net.regular.url, timeout_s=120)
    assert none.returncode == 0 and json.loads(none.stdout) == []


def test_a_build_that_embeds_the_wall_clock_is_refused_naming_the_entry(net: Net) -> None:
    proposer = net.authorities[1]
    build_id = start(proposer, spec_fields(net.git.url("clock"), "clock"))
    done = proposer.finished_build(build_id, within_s=BUILD_S)
    assert done["state"] == "refused", json.dumps(done, indent=1)

    def differed() -> bool:
        done.update(proposer.build_status(build_id))
        return sum(v["state"] == "differed" for v in views(done).values()) >= 2

    eventually(differed, "the other authorities' builds differed", within_s=120)
    for view in views(done).values():
        if view["state"] == "differed":
            assert "clock-1.0.jar" in str(view["detail"]) and "build-time.properties" in str(view["detail"])
    refusals = [v["reason"] for v in done["verdicts"] if v["verdict"] == "refused"]  # type: ignore[union-attr]
    assert len(refusals) >= 2 and all("clock-1.0.jar" in r for r in refusals)
    status = run("build", "status", build_id, "--node", proposer.url, timeout_s=60)
    assert status.returncode == 1
    assert "build-time.properties" in status.stdout + status.stderr
    assert proposer.get("/api/v1/log/search", build_source=net.git.url("clock"))["results"] == []


@pytest.mark.skipif(not JDK25.exists(), reason="needs a JDK 25 besides 17")
def test_two_authorities_without_the_jdk_refuse_and_nothing_commits(net: Net) -> None:
    proposer = net.authorities[2]  # builds with 17 and 25; authorities 0 and 1 with 17 only
    height = proposer.height()
    build_id = start(proposer, spec_fields(net.git.url("modern"), "modern", jdk="25"))
    done = proposer.finished_build(build_id, within_s=BUILD_S)
    assert done["state"] == "refused", json.dumps(done, indent=1)
    verdicts = {v["authority"]: v for v in done["verdicts"]}  # type: ignore[union-attr]
    for member in net.authorities[:2]:
        assert verdicts[member.peer_id]["verdict"] == "refused"
        assert "jdk 25" in str(verdicts[member.peer_id]["reason"]).lower()
    # The other authority with JDK 25 built the same bytes (its verdict may come after the refusal).
    other = net.authorities[3].peer_id
    eventually(
        lambda: views(proposer.build_status(build_id))[other]["state"] == "matched",
        "the other JDK 25 authority matched",
        within_s=300,
    )
    refusal = views(proposer.build_status(build_id))[net.authorities[0].peer_id]
    assert refusal["state"] == "failed" and "JDK 17" in str(refusal["detail"])
    assert all(m.height() == height for m in net.authorities)


def test_bad_input_through_the_cli_is_one_line_and_a_non_zero_exit(net: Net, tmp_path: Path) -> None:
    node = net.authorities[0]
    url = net.git.url("hello")
    base = ("build", "source", "--gav", "com.example:hello:1.0", "--jdk", "17", *on(node))
    # Refused before anything is sent: shell metacharacters, a URL that is not git, an enormous spec.
    escape = run(*base, "--git", url, "--tag", "v1.0", "--command", "mvn package; curl evil", timeout_s=60)
    one_line_error(escape, 2, "command")
    not_git = run(
        *base, "--git", "ftp://127.0.0.1/x", "--tag", "v1.0", "--command", "mvn package", timeout_s=60
    )
    one_line_error(not_git, 2)
    enormous = tmp_path / "enormous.buildspec"
    enormous.write_text("groupId=com.example\n" + "# padding\n" * 20_000)
    one_line_error(run("build", "source", str(enormous), *on(node), timeout_s=60), 2, "bytes")
    # Refused by the authorities: a branch, a missing tag (each its own line, exit 1).
    not_a_repository = f"http://127.0.0.1:{net.mirror.port}/maven2/"
    for git, tag, needle in (
        (url, "release", "branch"),
        (url, "v9.9", "v9.9"),
        (not_a_repository, "v1.0", "git"),
    ):
        flags = ("--git", git, "--tag", tag, "--command", "mvn package", "--wait", "--timeout", "600")
        result = run(*base, *flags, timeout_s=700)
        line = one_line_error(result, 1, needle)
        assert "failed" in line or "refused" in line


def test_one_authority_down_still_commits_asked_through_a_regular_node(net: Net) -> None:
    net.authorities[3].node.stop()
    # `pyrsia build source` on the regular node: it hands the build to one authority.
    flags = ("--git", net.git.url("later"), "--tag", "v1.0", "--gav", "com.example:later:1.0", "--jdk", "17")
    result = run(
        "build", "source", *flags, "--command", "mvn package -DskipTests", *on(net.regular), "--json",
        "--wait", "--timeout", str(BUILD_S), timeout_s=BUILD_S + 60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    done = json.loads(result.stdout)
    assert done["state"] == "committed" and done["via"] == "authorities", done
    live = {a.peer_id for a in net.authorities[:3]}
    proposer = net.authorities[0]
    record = proposer.get("/api/v1/log/search", build_source=net.git.url("later"))["results"][0]  # type: ignore[index]
    block = proposer.block(record["height"])
    assert set(block["certificate"]) == live  # type: ignore[arg-type]
    jar = httpx.get(f"{proposer.url}/maven2/com/example/later/1.0/later-1.0.jar", timeout=60)
    assert jar.status_code == 200 and zip_entries(io.BytesIO(jar.content))
