"""The sandboxed Maven builder with real tools: git daemon, bubblewrap, setpriv,
prlimit, socat and Debian's Maven, dependencies through an HTTP mirror over Debian's
Maven repository.

- the same tag built twice, in other directories, timezones and uids: byte-identical;
- a project that embeds the wall-clock build time: the comparison names the entry;
- bad sources: a branch, a missing tag, a missing commit, a URL that is not git;
- escapes fail cleanly and leave the calling process unharmed: a socket to another
  address, writes outside the build's directory, an unbounded fork, a disk filled past
  the output limit (a hard cap: the build's own filesystem), a build that runs past its
  time limit; and a Maven build whose unit test tries the network and the host's files;
- hostile trees: symlinks out of the clone, `.mvn/` files that override the sandbox,
  hooks and config from the node's environment, submodules, `mvnw`;
- outputs: every module's jar, classifier jars and pom of a multi-module project, named
  by their coordinates; a `.buildinfo` checked against them.

Needs root (the build drops to an unprivileged uid) and the tools `.ci/install-tools`
installs. Each escape test uses its own uid, since RLIMIT_NPROC counts per uid.
"""

from __future__ import annotations

import hashlib
import os
import select
import shutil
import socket
import subprocess
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pytest

from pyrsia.errors import BuildFailed, SourceUnavailable
from pyrsia.sourcebuild.compare import compare_outputs
from pyrsia.sourcebuild.plan import SandboxLayout, SandboxLimits, SourceBuildResult
from pyrsia.sourcebuild.sandbox import (
    MirrorAddress,
    SandboxOutcome,
    collect_build_outputs,
    collect_outputs,
    disk_usage_bytes,
    fetch_source,
    prepare_work_dir,
    probe_toolchain,
    release_work_dir,
    run_in_sandbox,
    run_source_build,
)
from pyrsia.sourcebuild.spec import BuildSpec, Toolchain, require_supported, spec_from_fields
from tests.support.source_repo import (
    FAST_JVM,
    GitDaemon,
    MavenMirror,
    git,
    hello_project,
    make_repository,
    multi_module_project,
    spec_fields,
)
from tests.support.wait import eventually

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox drops to an unprivileged uid: needs root"),
    pytest.mark.skipif(
        not all(shutil.which(tool) for tool in ("bwrap", "setpriv", "prlimit", "socat", "mvn", "git")),
        reason="needs bubblewrap, util-linux, socat, maven and git (.ci/install-tools)",
    ),
]

# A unit test that tries to leave the sandbox; it records what happened and passes.
ESCAPE_TEST = """package com.example.hello;

import java.io.File;
import java.io.FileWriter;
import java.net.InetSocketAddress;
import java.net.Socket;
import org.junit.Test;

public class EscapeTest {
    private static String attempt(String host, int port) {
        try (Socket socket = new Socket()) {
            socket.connect(new InetSocketAddress(host, port), 3000);
            return "connected";
        } catch (Exception e) {
            return e.getClass().getSimpleName();
        }
    }

    private static String write(String path) {
        try (FileWriter writer = new FileWriter(new File(path))) {
            writer.write("escaped");
            return "written";
        } catch (Exception e) {
            return e.getClass().getSimpleName();
        }
    }

    @Test
    public void tryToEscape() throws Exception {
        StringBuilder report = new StringBuilder();
        report.append("loopback ").append(attempt("127.0.0.1", @PORT@)).append('\\n');
        report.append("host ").append(attempt("@HOST@", @PORT@)).append('\\n');
        report.append("outside ").append(attempt("10.0.0.1", @PORT@)).append('\\n');
        report.append("etc ").append(write("/etc/pyrsia-escape")).append('\\n');
        report.append("hostpath ").append(write("@HOSTPATH@")).append('\\n');
        System.out.println("ESCAPE REPORT\\n" + report);
    }
}
"""


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    # Under /tmp, not pytest's 0700 tmp_path: the build uid must be able to reach it.
    root = Path(tempfile.mkdtemp(prefix="pyrsia-srcbuild-", dir="/tmp"))
    root.chmod(0o755)
    (root / "git").mkdir()
    yield root
    for mount in _mounts_under(root):  # builds driven piecewise below keep theirs mounted
        subprocess.run(["umount", "-l", mount], check=False)
    shutil.rmtree(root, ignore_errors=True)


def _mounts_under(root: Path) -> list[str]:
    with open("/proc/self/mounts") as mounts:
        points = [line.split()[1] for line in mounts]
    return sorted((p for p in points if p.startswith(f"{root}/")), reverse=True)


@pytest.fixture(scope="module")
def daemon(scratch: Path) -> Iterator[GitDaemon]:
    make_repository(scratch / "git", "hello", hello_project(), branch="release")
    make_repository(scratch / "git", "clock", hello_project("clock", with_build_time=True))
    with GitDaemon(scratch / "git") as served:
        yield served


@pytest.fixture(scope="module")
def mirror() -> Iterator[MavenMirror]:
    with MavenMirror() as served:
        yield served


@pytest.fixture(scope="module")
def toolchain() -> Toolchain:
    return probe_toolchain()


def _spec(url: str, artifact: str = "hello", **extra: str) -> BuildSpec:
    return spec_from_fields(spec_fields(url, artifact, **extra))


@dataclass(frozen=True)
class Reference:
    """The hello project built once with the default spec, and what it asked the mirror."""

    result: SourceBuildResult
    mirror_requests: int


@pytest.fixture(scope="module")
def reference(scratch: Path, daemon: GitDaemon, mirror: MavenMirror, toolchain: Toolchain) -> Reference:
    # The tests that compare another build of the same tag with the default one share it.
    before = mirror.requests
    result = run_source_build(
        _spec(daemon.url("hello")), work_dir=scratch / "a", mirror=_address(mirror), toolchain=toolchain
    )
    return Reference(result=result, mirror_requests=mirror.requests - before)


def _address(mirror: MavenMirror) -> MirrorAddress:
    return MirrorAddress(host="127.0.0.1", port=mirror.port)


def _processes_of(uid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("Uid:") and int(line.split()[1]) == uid:
                found.append(int(entry.name))
    return found


def _host_address() -> str:
    """A non-loopback address of this host (the sandbox must not reach it either)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))
            address = str(probe.getsockname()[0])
        except OSError:
            address = "127.0.0.1"
    return address if not address.startswith("127.") else "127.0.0.2"


# -- reproducible builds ----------------------------------------------------------------


def test_same_tag_in_other_directories_timezones_and_uids_is_byte_identical(
    scratch: Path, daemon: GitDaemon, mirror: MavenMirror, toolchain: Toolchain, reference: Reference
) -> None:
    first = reference.result
    (scratch / "deeper/still").mkdir(parents=True)
    (scratch / "deeper").chmod(0o755)
    (scratch / "deeper/still").chmod(0o755)
    second = run_source_build(
        _spec(daemon.url("hello"), timezone="America/New_York"),
        work_dir=scratch / "deeper/still/b",
        mirror=_address(mirror),
        toolchain=toolchain,
        uid=4251,
    )
    assert compare_outputs(first.outputs, second.outputs).identical
    assert [f.name for f in first.outputs] == ["hello-1.0.jar", "hello-1.0.pom"]
    jar = Path(first.output_dir) / "hello-1.0.jar"
    assert jar.read_bytes() == (Path(second.output_dir) / "hello-1.0.jar").read_bytes()
    tagged = git("rev-parse", "v1.0^{commit}", cwd=scratch / "git/hello.git").strip()
    assert first.commit == second.commit == tagged
    assert first.source_date_epoch == 1704067200  # the commit's time (2024-01-01)
    assert first.builder.jdk_major == 17 and first.builder.maven_version == toolchain.maven_version
    assert first.spec_digest != second.spec_digest  # the timezone is part of the spec
    # commons-lang3 and the plugins came through the mirror: the sandbox has no other way out
    assert reference.mirror_requests > 0
    assert "BUILD SUCCESS" in first.log_tail
    for result in (first, second):  # the clone, local repository and target are gone
        assert not (Path(result.output_dir).parent / "home").exists()


def test_wall_clock_in_a_resource_is_named_as_the_differing_entry(
    scratch: Path, daemon: GitDaemon, mirror: MavenMirror, toolchain: Toolchain
) -> None:
    builds = [
        run_source_build(
            _spec(daemon.url("clock"), "clock"),
            work_dir=scratch / f"clock-{n}",
            mirror=_address(mirror),
            toolchain=toolchain,
        )
        for n in range(2)
    ]
    comparison = compare_outputs(builds[0].outputs, builds[1].outputs)
    assert comparison.ok_files == ("clock-1.0.pom",)
    (diff,) = comparison.ko_files
    assert diff.name == "clock-1.0.jar"
    assert [entry.name for entry in diff.entries] == ["build-time.properties"]
    assert "build-time.properties" in comparison.reason()
    assert 'koFiles="clock-1.0.jar"' in comparison.buildcompare()


def test_crlf_newline_reaches_the_jvm(
    scratch: Path, daemon: GitDaemon, mirror: MavenMirror, toolchain: Toolchain
) -> None:
    result = run_source_build(
        _spec(daemon.url("hello"), newline="crlf"),
        work_dir=scratch / "crlf",
        mirror=_address(mirror),
        toolchain=toolchain,
    )
    with zipfile.ZipFile(Path(result.output_dir) / "hello-1.0.jar") as jar:
        properties = jar.read("META-INF/maven/com.example/hello/pom.properties")
    assert b"\r\n" in properties and properties.count(b"\n") == properties.count(b"\r\n")


def test_another_jdk_major_builds_and_its_difference_is_named(
    scratch: Path, daemon: GitDaemon, mirror: MavenMirror, toolchain: Toolchain, reference: Reference
) -> None:
    majors = sorted(jdk.major for jdk in toolchain.jdks if jdk.major >= 17)
    if len(majors) < 2:
        pytest.skip("needs two JDK majors of 17 or later under /usr/lib/jvm")
    # The spec's default JDK is 17, the lowest major a spec may name: the reference build.
    assert majors[0] == 17 and reference.result.builder.jdk_major == 17
    other = run_source_build(
        _spec(daemon.url("hello"), jdk=str(majors[1])),
        work_dir=scratch / f"jdk-{majors[1]}",
        mirror=_address(mirror),
        toolchain=toolchain,
    )
    builds = [reference.result, other]
    assert [b.builder.jdk_major for b in builds] == majors[:2]
    comparison = compare_outputs(builds[0].outputs, builds[1].outputs)
    (diff,) = comparison.ko_files
    assert diff.name == "hello-1.0.jar"
    assert "META-INF/MANIFEST.MF" in [entry.name for entry in diff.entries]  # Build-Jdk-Spec


# -- bad sources ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"gitTag": "release"}, "'release' is a branch, not a tag"),
        ({"gitTag": "v9.9"}, "has no tag 'v9.9'"),
        ({"gitTag": "0" * 40}, "has no commit " + "0" * 40),
    ],
)
def test_bad_refs_are_refused_and_cleaned(
    scratch: Path, daemon: GitDaemon, toolchain: Toolchain, change: dict[str, str], needle: str
) -> None:
    work = scratch / f"bad-{change['gitTag'][:8]}"
    with pytest.raises(SourceUnavailable) as caught:
        run_source_build(
            _spec(daemon.url("hello"), **change), work_dir=work, mirror=None, toolchain=toolchain
        )
    assert needle in caught.value.message
    assert not (work / "home").exists()


def test_a_url_that_is_not_git_is_refused(scratch: Path, mirror: MavenMirror, toolchain: Toolchain) -> None:
    url = f"http://127.0.0.1:{mirror.port}/maven2/org/apache/commons/"
    with pytest.raises(SourceUnavailable, match="git ls-remote failed"):
        run_source_build(_spec(url), work_dir=scratch / "not-git", mirror=None, toolchain=toolchain)


@pytest.fixture(scope="module")
def bulky(scratch: Path, daemon: GitDaemon) -> str:
    """A repository whose pack alone is past a 16 MiB cap: random text does not compress."""
    bulk = {f"data/blob-{n}.txt": os.urandom(1 << 20).hex() for n in range(24)}
    make_repository(scratch / "git", "bulky", {**hello_project(), **bulk})
    return daemon.url("bulky")


# Watched during the clone, the filesystem is seen full while git writes; looked at only
# after git exits, it no longer is (git removed its partial pack), and what git said
# (ENOSPC) must name the cap all the same.
@pytest.mark.parametrize(("when", "poll_s"), [("watched", SandboxLimits().poll_s), ("after-exit", 3600.0)])
def test_a_clone_larger_than_the_output_limit_fails_and_is_cleaned(
    scratch: Path, toolchain: Toolchain, bulky: str, when: str, poll_s: float
) -> None:
    work = scratch / f"bulky-{when}"
    output_max = 16 << 20
    with pytest.raises(SourceUnavailable) as caught:
        run_source_build(
            _spec(bulky),
            work_dir=work,
            mirror=None,
            toolchain=toolchain,
            limits=SandboxLimits(output_bytes_max=output_max, poll_s=poll_s),
            uid=4274,
        )
    assert caught.value.message.endswith(f"git clone wrote more than {output_max} bytes")
    assert sorted(p.name for p in work.iterdir()) == ["out"]
    assert not _mounts_under(work)


def test_a_pinned_commit_is_cloned_and_checked_out(scratch: Path, daemon: GitDaemon) -> None:
    commit = git("rev-parse", "v1.0^{commit}", cwd=scratch / "git/hello.git").strip()
    spec = _spec(daemon.url("hello"), gitTag=commit)
    layout = prepare_work_dir(scratch / "pinned", uid=4252, drop_privileges=True, mirror=False)
    checkout = fetch_source(spec, layout, limits=SandboxLimits(), uid=4252, drop_privileges=True)
    assert checkout.commit == commit
    # the clone ran as the build uid under umask 022: group and others may read, not write
    pom = Path(layout.source) / "pom.xml"
    assert pom.stat().st_uid == 4252 and pom.stat().st_mode & 0o777 == 0o644


# -- escapes ----------------------------------------------------------------------------

HELLO_POM = (
    "<project><groupId>com.example</groupId><artifactId>hello</artifactId><version>1.0</version></project>"
)
MULTI_POM = (
    "<project><groupId>com.example</groupId><artifactId>hello</artifactId><version>1.0</version>"
    "<modules><module>sub</module></modules></project>"
)


def _sandbox(
    scratch: Path, name: str, uid: int, argv: list[str], toolchain: Toolchain, **limits: float
) -> tuple[SandboxLayout, SandboxOutcome]:
    spec = _spec("git://127.0.0.1/unused.git")
    layout = prepare_work_dir(
        scratch / name,
        uid=uid,
        drop_privileges=True,
        mirror=False,
        limits=SandboxLimits(**limits),  # type: ignore[arg-type]
    )
    os.mkdir(layout.source, 0o755)
    os.chown(layout.source, uid, uid)
    outcome = run_in_sandbox(
        argv,
        spec=spec,
        jdk=require_supported(spec, toolchain),
        layout=layout,
        limits=SandboxLimits(**limits),  # type: ignore[arg-type]
        uid=uid,
        source_date_epoch=0,
        mirror=None,
        drop_privileges=True,
    )
    return layout, outcome


def _no_connection(listener: socket.socket) -> bool:
    readable, _, _ = select.select([listener], [], [], 0)
    return not readable


def test_a_socket_to_another_address_fails(scratch: Path, toolchain: Toolchain) -> None:
    host = _host_address()
    with socket.socket() as listener:
        listener.bind(("0.0.0.0", 0))
        listener.listen()
        port = listener.getsockname()[1]
        script = (
            "import socket\n"
            f"for host in ('127.0.0.1', '{host}', '10.0.0.1', '1.1.1.1'):\n"
            "    try:\n"
            f"        socket.create_connection((host, {port}), timeout=3).close(); print(host, 'connected')\n"
            "    except OSError as exc:\n"
            "        print(host, type(exc).__name__, exc.errno)\n"
            "print(sorted(n for _, n in socket.if_nameindex()))\n"
        )
        _, outcome = _sandbox(scratch, "socket", 4261, ["python3", "-c", script], toolchain)
        assert outcome.exit_code == 0, outcome.log_tail
        assert "connected" not in outcome.log_tail
        assert f"{host} " in outcome.log_tail and "['lo']" in outcome.log_tail
        assert _no_connection(listener)


def test_writes_outside_the_build_directory_fail(scratch: Path, toolchain: Toolchain) -> None:
    token = f"pyrsia-escape-{os.getpid()}"
    targets = ["/etc/" + token, "/usr/" + token, f"/{token}", str(scratch / token), f"/tmp/{token}"]
    script = "".join(
        f"(echo x > {target}) 2>/dev/null && echo 'wrote {target}' || echo 'refused {target}'\n"
        for target in targets
    )
    script += f"echo inside > /build/{token} && echo 'wrote home'\n"
    script += "test -e /etc/hostname && echo 'sees /etc/hostname' || echo 'no /etc/hostname'\n"
    layout, outcome = _sandbox(scratch, "writes", 4262, ["bash", "-c", script], toolchain)
    assert outcome.exit_code == 0, outcome.log_tail
    for target in targets[:4]:
        assert f"refused {target}" in outcome.log_tail
        assert not Path(target).exists()
    assert not Path(f"/tmp/{token}").exists()  # the sandbox's /tmp is its own, on its filesystem
    assert (Path(layout.home) / token).read_text() == "inside\n"  # its own directory is writable
    assert "no /etc/hostname" in outcome.log_tail  # host configuration outside ETC_ALLOWED is not there


def test_an_unbounded_fork_is_capped_and_killed(scratch: Path, toolchain: Toolchain) -> None:
    uid = 4263
    bomb = (
        "import os, time\n"
        "children, refused = 0, False\n"
        "while True:\n"
        "    try:\n"
        "        pid = os.fork()\n"
        "    except OSError as exc:\n"
        "        if not refused:\n"
        "            print('fork refused after', children, exc.strerror, flush=True)\n"
        "            refused = True\n"
        "        time.sleep(0.01)\n"
        "        continue\n"
        "    if pid == 0:\n"
        "        time.sleep(1000)\n"
        "        os._exit(0)\n"
        "    children += 1\n"
    )
    with pytest.raises(BuildFailed) as caught:
        _sandbox(
            scratch, "fork", uid, ["python3", "-c", bomb], toolchain, processes_max=64, wall_time_s_max=8
        )
    assert caught.value.reason == "timeout"
    refusal = caught.value.log_tail.split("fork refused after ", 1)[1].split("\n", 1)[0]
    assert int(refusal.split()[0]) < 64 and "Resource temporarily unavailable" in refusal
    eventually(lambda: not _processes_of(uid), f"every process of uid {uid} gone", within_s=60)
    assert subprocess.run(["true"], check=False).returncode == 0  # the caller can still fork


def test_filling_the_disk_past_the_output_limit_is_stopped_at_the_cap(
    scratch: Path, toolchain: Toolchain
) -> None:
    uid = 4264
    # Files fill the build's directory, then /tmp: both are on its one capped filesystem.
    writer = (
        "import itertools, os\n"
        "block = os.urandom(1 << 20)\n"
        "for n in itertools.count():\n"
        "    with open(f'/build/fill-{n}' if n % 2 else f'/tmp/fill-{n}', 'wb') as f:\n"
        "        for _ in range(4): f.write(block)\n"
    )
    output_max = 64 << 20
    work = scratch / "fill"
    with pytest.raises(BuildFailed) as caught:
        _sandbox(
            scratch, "fill", uid, ["python3", "-c", writer], toolchain, output_bytes_max=output_max,
            file_bytes_max=8 << 20,
        )  # fmt: skip
    assert caught.value.reason == "output_size"
    assert str(output_max) in caught.value.message and "\n" not in caught.value.message
    eventually(lambda: not _processes_of(uid), f"every process of uid {uid} gone", within_s=60)
    # Hard: the node's disk holds the sparse image, and the image is never larger than the cap.
    allocated = os.stat(work / "home.img").st_blocks * 512
    assert allocated <= output_max
    written = disk_usage_bytes(work / "home")
    assert output_max // 2 < written <= output_max
    assert disk_usage_bytes(work / "home/.tmp") > 0  # /tmp counted against the same cap
    release_work_dir(SandboxLayout(work=PurePosixPath(work)))
    assert not (work / "home").exists() and not (work / "home.img").exists()
    assert not _mounts_under(scratch / "fill")


FILL_TEST = """package com.example.hello;

import java.io.FileOutputStream;
import org.junit.Test;

public class FillTest {
    @Test
    public void fill() throws Exception {
        byte[] block = new byte[1 << 20];
        for (int n = 0; ; n++) {
            try (FileOutputStream out = new FileOutputStream("/build/src/target/fill-" + n)) {
                out.write(block);
            }
        }
    }
}
"""


def test_a_maven_build_that_fills_its_cap_fails_cleanly_and_is_cleaned(
    scratch: Path, mirror: MavenMirror, toolchain: Toolchain
) -> None:
    files = hello_project("fill", extra_files={"src/test/java/com/example/hello/FillTest.java": FILL_TEST})
    make_repository(scratch / "git", "fill", files)
    work = scratch / "fill-mvn"
    output_max = 160 << 20  # the clone and the dependencies fit; the test's files do not
    with GitDaemon(scratch / "git") as served, pytest.raises(BuildFailed) as caught:
        run_source_build(
            _spec(served.url("fill"), "fill", command="mvn package"),
            work_dir=work,
            mirror=_address(mirror),
            toolchain=toolchain,
            limits=SandboxLimits(output_bytes_max=output_max),
            uid=4269,
        )
    assert caught.value.reason == "output_size"
    assert caught.value.message == (
        f"the build filled its {output_max}-byte output limit "
        "(its directory, local Maven repository and /tmp) and was stopped"
    )
    assert sorted(p.name for p in work.iterdir()) == ["build.log", "out"]  # home and image gone
    assert not _mounts_under(work)
    eventually(lambda: not _processes_of(4269), "every process of uid 4269 gone", within_s=60)


def test_one_file_past_the_file_limit_fails(scratch: Path, toolchain: Toolchain) -> None:
    writer = (
        "import os\n"
        "with open('/build/big', 'wb') as f:\n"
        "    for _ in range(64): f.write(os.urandom(1 << 20))\n"
    )
    layout, outcome = _sandbox(
        scratch, "bigfile", 4265, ["python3", "-c", writer], toolchain, file_bytes_max=8 << 20
    )
    assert outcome.exit_code != 0
    assert (Path(layout.home) / "big").stat().st_size <= 8 << 20


def test_running_past_the_time_limit_is_killed_with_its_children(scratch: Path, toolchain: Toolchain) -> None:
    uid = 4266
    script = "sleep 1000 & setsid sleep 1000 & echo started; sleep 1000"
    with pytest.raises(BuildFailed) as caught:
        _sandbox(scratch, "slow", uid, ["bash", "-c", script], toolchain, wall_time_s_max=3)
    assert caught.value.reason == "timeout"
    assert "started" in caught.value.log_tail
    eventually(lambda: not _processes_of(uid), f"every process of uid {uid} gone", within_s=60)


@pytest.mark.parametrize(
    "trick",
    [
        f"mkdir target && ln -s /etc/shadow target/hello-1.0.jar && echo '{HELLO_POM}' > pom.xml",
        f"ln -s /etc target && echo '{HELLO_POM}' > pom.xml",
        "mkdir target && echo jar > target/hello-1.0.jar && ln -s /etc/shadow pom.xml",
        f"mkdir target && mkfifo target/hello-1.0.jar && echo '{HELLO_POM}' > pom.xml",
        f"mkdir -p target && echo jar > target/hello-1.0.jar && echo '{MULTI_POM}' > pom.xml "
        "&& mkdir sub && ln -s /etc/passwd sub/pom.xml",
    ],
)
def test_outputs_are_collected_without_following_links(
    scratch: Path, toolchain: Toolchain, trick: str
) -> None:
    name = "links-" + hashlib.sha256(trick.encode()).hexdigest()[:8]
    layout, outcome = _sandbox(scratch, name, 4268, ["bash", "-c", trick], toolchain)
    assert outcome.exit_code == 0, outcome.log_tail
    with pytest.raises(BuildFailed) as caught:
        collect_outputs(_spec("git://127.0.0.1/unused.git"), layout, SandboxLimits())
    assert caught.value.reason == "no_output"
    assert list(Path(layout.out).iterdir()) == []


def test_a_maven_unit_test_cannot_reach_the_network_or_the_host(
    scratch: Path, mirror: MavenMirror, toolchain: Toolchain
) -> None:
    host = _host_address()
    token = scratch / f"escaped-{os.getpid()}"
    with socket.socket() as listener:
        listener.bind(("0.0.0.0", 0))
        listener.listen()
        port = listener.getsockname()[1]
        test = (
            ESCAPE_TEST.replace("@PORT@", str(port)).replace("@HOSTPATH@", str(token)).replace("@HOST@", host)
        )
        files = hello_project("escape", extra_files={"src/test/java/com/example/hello/EscapeTest.java": test})
        make_repository(scratch / "git", "escape", files)
        with GitDaemon(scratch / "git") as served:
            result = run_source_build(
                _spec(served.url("escape"), "escape", command="mvn package"),
                work_dir=scratch / "escape",
                mirror=_address(mirror),
                toolchain=toolchain,
                uid=4267,
            )
        log = Path(result.log_path).read_text(errors="replace")
        report = log.split("ESCAPE REPORT\n", 1)[1].split("\n\n", 1)[0]
        assert report.splitlines() == [
            "loopback ConnectException",  # nothing listens on the sandbox's own loopback
            "host ConnectException" if host.startswith("127.") else "host SocketException",
            "outside SocketException",  # Network is unreachable: only lo exists
            "etc FileNotFoundException",  # read-only
            "hostpath FileNotFoundException",  # the host's directories are not there
        ], report
        assert _no_connection(listener)
    assert not token.exists() and not Path("/etc/pyrsia-escape").exists()


# -- outputs ----------------------------------------------------------------------------


def test_a_multi_module_build_publishes_every_module_by_its_coordinates(
    scratch: Path, mirror: MavenMirror, toolchain: Toolchain
) -> None:
    make_repository(scratch / "git", "multi", multi_module_project())
    with GitDaemon(scratch / "git") as served:
        builds = [
            run_source_build(
                _spec(served.url("multi"), "multi-app", version="2.1"),
                work_dir=scratch / f"multi-{n}",
                mirror=_address(mirror),
                toolchain=toolchain,
                uid=4270 + n,
            )
            for n in range(2)
        ]
    first = builds[0]
    assert [f.name for f in first.outputs] == [
        "multi-app-2.1.jar",
        "multi-app-2.1.pom",
        "multi-core-2.1-sources.jar",
        "multi-core-2.1.jar",
        "multi-core-2.1.pom",
        "multi-parent-2.1.pom",
    ]
    assert [(m.gav, m.packaging, m.path, m.files) for m in first.modules] == [
        ("com.example:multi-parent:2.1", "pom", "", ("multi-parent-2.1.pom",)),
        (
            "com.example:multi-core:2.1",
            "jar",
            "core",
            ("multi-core-2.1.jar", "multi-core-2.1-sources.jar", "multi-core-2.1.pom"),
        ),
        ("com.example:multi-app:2.1", "jar", "app", ("multi-app-2.1.jar", "multi-app-2.1.pom")),
    ]
    coordinates = first.coordinates_of("multi-core-2.1-sources.jar")
    assert coordinates is not None and coordinates.gav == "com.example:multi-core:2.1"
    with zipfile.ZipFile(Path(first.output_dir) / "multi-core-2.1-sources.jar") as sources:
        assert "com/example/hello/Hello.java" in sources.namelist()
    with zipfile.ZipFile(Path(first.output_dir) / "multi-app-2.1.jar") as app:
        assert "com/example/app/App.class" in app.namelist()
    assert compare_outputs(first.outputs, builds[1].outputs).identical


def _buildinfo(files: dict[str, bytes], *, lie: str | None = None) -> str:
    lines = ["# https://reproducible-builds.org/docs/jvm/", "buildinfo.version=1.0-SNAPSHOT"]
    for n, (name, data) in enumerate(files.items()):
        sha512 = hashlib.sha512(data).hexdigest()
        length = len(data) + (1 if name == lie else 0)
        lines += [f"outputs.0.{n}.filename={name}", f"outputs.0.{n}.length={length}"]
        lines.append(f"outputs.0.{n}.checksums.sha512={sha512}")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("lie", [None, "hello-1.0.jar", "hello-1.0.pom"])
def test_a_buildinfo_is_checked_against_the_collected_files(
    scratch: Path, toolchain: Toolchain, lie: str | None
) -> None:
    jar = b"PK\x05\x06" + b"\x00" * 18  # an empty zip
    files = {"hello-1.0.jar": jar, "hello-1.0.pom": (HELLO_POM + "\n").encode()}
    script = (
        "mkdir target && python3 -c "
        '\'open("target/hello-1.0.jar", "wb").write(b"PK\\x05\\x06" + bytes(18))\' '
        f"&& echo '{HELLO_POM}' > pom.xml && cat > target/hello-1.0.buildinfo <<'END'\n"
        f"{_buildinfo(files, lie=lie)}END\n"
    )
    name = f"buildinfo-{lie or 'true'}"
    layout, outcome = _sandbox(scratch, name, 4272, ["bash", "-c", script], toolchain)
    assert outcome.exit_code == 0, outcome.log_tail
    spec = _spec("git://127.0.0.1/unused.git", buildinfo="target/hello-1.0.buildinfo")
    if lie is None:
        collected = collect_build_outputs(spec, layout, SandboxLimits())
        assert collected.buildinfo_files == ("hello-1.0.jar", "hello-1.0.pom")
        assert (Path(layout.out) / "hello-1.0.jar").read_bytes() == jar
        return
    with pytest.raises(BuildFailed) as caught:
        collect_build_outputs(spec, layout, SandboxLimits())
    assert caught.value.reason == "buildinfo"
    assert caught.value.message == (
        f"the build's .buildinfo says {lie} has {len(files[lie]) + 1} bytes; it has {len(files[lie])}"
    )
    assert list(Path(layout.out).iterdir()) == []


def test_a_missing_buildinfo_fails_the_build(scratch: Path, toolchain: Toolchain) -> None:
    script = f"mkdir target && echo jar > target/hello-1.0.jar && echo '{HELLO_POM}' > pom.xml"
    layout, _ = _sandbox(scratch, "no-buildinfo", 4272, ["bash", "-c", script], toolchain)
    spec = _spec("git://127.0.0.1/unused.git", buildinfo="target/hello-1.0.buildinfo")
    with pytest.raises(BuildFailed) as caught:
        collect_build_outputs(spec, layout, SandboxLimits())
    assert caught.value.reason == "buildinfo"
    assert "buildinfo target/hello-1.0.buildinfo, but the build did not write it" in caught.value.message


# -- hostile source trees ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "extra", "links", "needle"),
    [
        ("shadow", {}, {"pom.xml": "/etc/shadow"}, "symlink pom.xml -> /etc/shadow that points outside it"),
        (
            "climb",
            {},
            {"docs/notes": "../../../../etc/passwd"},
            "symlink docs/notes -> ../../../../etc/passwd",
        ),
        ("through", {}, {"here": ".", "up": "here/.."}, "symlink up -> here/.. that resolves outside it"),
        ("agent", {".mvn/jvm.config": "-Xss4m -javaagent:agent.jar\n"}, {}, "'-javaagent:agent.jar'"),
        ("bootcp", {".mvn/jvm.config": "-Xbootclasspath/a:x.jar\n"}, {}, "boot class paths"),
        ("home", {".mvn/jvm.config": "-Duser.home=/tmp/x\n"}, {}, "sets '-Duser.home=/tmp/x'"),
        ("settings", {".mvn/maven.config": "-B -s evil.xml\n"}, {}, ".mvn/maven.config may not set -s"),
        ("repo", {".mvn/maven.config": "-Dmaven.repo.local=/usr\n"}, {}, "may not set -Dmaven.repo.local"),
        ("cfglink", {}, {".mvn/jvm.config": "../pom.xml"}, ".mvn/jvm.config is not a regular file"),
    ],
)
def test_a_hostile_tree_is_refused_before_it_is_built(
    scratch: Path,
    toolchain: Toolchain,
    name: str,
    extra: dict[str, str],
    links: dict[str, str],
    needle: str,
) -> None:
    files = {name: text for name, text in {**hello_project(), **extra}.items() if name not in links}
    make_repository(scratch / "git", f"hostile-{name}", files, symlinks=links)
    work = scratch / f"hostile-{name}"
    with GitDaemon(scratch / "git") as served, pytest.raises(BuildFailed) as caught:
        run_source_build(
            _spec(served.url(f"hostile-{name}")), work_dir=work, mirror=None, toolchain=toolchain
        )
    assert caught.value.reason == "source"
    assert needle in caught.value.message, caught.value.message
    assert "\n" not in caught.value.message
    assert sorted(p.name for p in work.iterdir()) == ["out"]  # nothing built, home removed


def test_node_environment_hooks_and_submodules_do_not_reach_git_or_the_build(
    scratch: Path, mirror: MavenMirror, toolchain: Toolchain, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = scratch / f"hook-ran-{os.getpid()}"
    templates = scratch / "templates"
    (templates / "hooks").mkdir(parents=True)
    for hook in ("post-checkout", "post-merge", "reference-transaction"):
        (templates / "hooks" / hook).write_text(f"#!/bin/sh\ntouch {marker}\n")
        (templates / "hooks" / hook).chmod(0o755)
    templates.chmod(0o755)
    (templates / "hooks").chmod(0o755)
    # What a node's environment could carry into git and the build if it leaked.
    monkeypatch.setenv("GIT_TEMPLATE_DIR", str(templates))
    monkeypatch.setenv("GIT_CONFIG_PARAMETERS", f"'core.hooksPath'='{templates}/hooks'")
    monkeypatch.setenv("PYRSIA_SECRET_TOKEN", "do-not-leak")
    monkeypatch.setenv("MAVEN_OPTS", "-javaagent:/nonexistent.jar")
    monkeypatch.setenv("JAVA_TOOL_OPTIONS", "-javaagent:/nonexistent.jar")
    # A submodule that would be fetched from the node's own file system, and a wrapper
    # that would leave a mark if anything ran it.
    inner = make_repository(scratch / "git", "inner", {"secret.txt": "from the node\n"})
    inner_commit = git("rev-parse", "v1.0^{commit}", cwd=inner).strip()
    files = hello_project(
        "subs",
        extra_files={
            ".gitmodules": f'[submodule "vendor"]\n\tpath = vendor\n\turl = file://{inner}\n',
            "mvnw": f"#!/bin/sh\ntouch /build/mvnw-ran {marker}\n",
            ".mvn/wrapper/maven-wrapper.properties": "distributionUrl=http://192.0.2.1/maven.zip\n",
            ".mvn/jvm.config": f"-Xss4m {FAST_JVM}\n",  # ordinary options are kept
            "src/test/java/com/example/hello/EnvTest.java": ENV_TEST,
        },
    )
    make_repository(scratch / "git", "subs", files, gitlinks={"vendor": inner_commit})
    with GitDaemon(scratch / "git") as served:
        result = run_source_build(
            _spec(served.url("subs"), "subs", command="mvn package"),
            work_dir=scratch / "subs",
            mirror=_address(mirror),
            toolchain=toolchain,
            uid=4273,
        )
    log = Path(result.log_path).read_text(errors="replace")
    report = log.split("ENV REPORT\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert "secret absent" in report and "agent absent" in report, report
    assert "vendor empty" in report, report  # the submodule was not fetched
    assert "mvnw not run" in report, report
    assert not marker.exists()  # no hook, template or wrapper ran on the node


ENV_TEST = """package com.example.hello;

import java.io.File;
import org.junit.Test;

public class EnvTest {
    @Test
    public void report() {
        StringBuilder out = new StringBuilder("ENV REPORT\\n");
        boolean secret = System.getenv("PYRSIA_SECRET_TOKEN") != null;
        out.append(secret ? "secret LEAKED" : "secret absent").append('\\n');
        String options = String.valueOf(System.getenv("JAVA_TOOL_OPTIONS")) + System.getenv("MAVEN_OPTS");
        out.append(options.contains("javaagent") ? "agent LEAKED" : "agent absent").append('\\n');
        String[] vendor = new File("/build/src/vendor").list();
        out.append(vendor != null && vendor.length == 0 ? "vendor empty" : "vendor FETCHED").append('\\n');
        out.append(new File("/build/mvnw-ran").exists() ? "mvnw RAN" : "mvnw not run").append('\\n');
        System.out.println(out);
    }
}
"""
