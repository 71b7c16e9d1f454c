"""The pure parts of a source build: output comparison (file and jar entry) and the
sandbox plan (argv, environment, tag resolution), driven directly."""

from __future__ import annotations

import dataclasses
import io
import zipfile
from pathlib import PurePosixPath

import pytest

from pyrsia.errors import BuildFailed, SourceUnavailable
from pyrsia.sourcebuild.compare import OutputFile, compare_outputs, describe_output
from pyrsia.sourcebuild.plan import (
    MIRROR_PORT_INSIDE,
    SandboxLayout,
    SandboxLimits,
    clone_argv,
    etc_visible,
    git_environment,
    maven_argv,
    maven_settings,
    resolve_tag,
    said_out_of_space,
    sandbox_argv,
)
from pyrsia.sourcebuild.spec import Jdk, spec_from_fields

SPEC = spec_from_fields(
    {
        "groupId": "com.example",
        "artifactId": "hello",
        "version": "1.0",
        "gitRepo": "git://127.0.0.1:9418/hello.git",
        "gitTag": "v1.0",
        "tool": "mvn",
        "jdk": 17,
        "command": "mvn package -DskipTests",
        "timezone": "America/New_York",
    }
)
JDK = Jdk(major=17, version="17.0.15", home="/usr/lib/jvm/java-17-openjdk-amd64")
LAYOUT = SandboxLayout(work=PurePosixPath("/var/lib/pyrsia/builds/b1"))


def _jar(entries: dict[str, bytes]) -> OutputFile:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries.items():
            archive.writestr(zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0)), data)
    buffer.seek(0)
    return describe_output("hello-1.0.jar", buffer)


def _pom(data: bytes) -> OutputFile:
    return describe_output("hello-1.0.pom", io.BytesIO(data))


def test_identical_builds_compare_ok() -> None:
    a = [_jar({"A.class": b"x", "build.properties": b"t=1"}), _pom(b"<project/>")]
    b = [_jar({"A.class": b"x", "build.properties": b"t=1"}), _pom(b"<project/>")]
    result = compare_outputs(a, b)
    assert result.identical and result.reason() == "identical"
    assert result.ok_files == ("hello-1.0.jar", "hello-1.0.pom")
    assert result.buildcompare() == 'ok=2\nko=0\nokFiles="hello-1.0.jar hello-1.0.pom"\nkoFiles=""\n'


def test_a_differing_jar_entry_is_named_with_size_and_crc() -> None:
    ours = [_jar({"A.class": b"x", "build.properties": b"t=10:00:01"}), _pom(b"<project/>")]
    theirs = [_jar({"A.class": b"x", "build.properties": b"t=10:00:02"}), _pom(b"<project/>")]
    result = compare_outputs(ours, theirs)
    assert not result.identical
    assert result.ok_files == ("hello-1.0.pom",)
    (diff,) = result.ko_files
    assert diff.name == "hello-1.0.jar" and diff.kind == "differs"
    assert [e.name for e in diff.entries] == ["build.properties"]
    entry = diff.entries[0]
    assert entry.ours is not None and entry.theirs is not None
    assert entry.ours.size == entry.theirs.size and entry.ours.crc != entry.theirs.crc
    assert "build.properties (size 10 vs 10, crc" in result.reason()
    assert 'koFiles="hello-1.0.jar"' in result.buildcompare()


def test_missing_files_and_entries_and_same_entries_other_bytes() -> None:
    base = _jar({"A.class": b"x"})
    extra = _jar({"A.class": b"x", "B.class": b"y"})
    result = compare_outputs([base], [extra, _pom(b"p")])
    kinds = {d.name: d for d in result.ko_files}
    assert kinds["hello-1.0.pom"].kind == "only_theirs"
    assert [e.name for e in kinds["hello-1.0.jar"].entries] == ["B.class"]
    assert "B.class only in theirs" in result.reason()
    # Same entries, other archive bytes (here: an entry's timestamp).
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(zipfile.ZipInfo("A.class", date_time=(2025, 1, 1, 0, 0, 0)), b"x")
    buffer.seek(0)
    later = describe_output("hello-1.0.jar", buffer)
    (diff,) = compare_outputs([base], [later]).ko_files
    assert diff.same_entries and "same entries, other bytes" in diff.describe()


def test_a_peers_description_round_trips_and_bad_ones_are_refused() -> None:
    jar = _jar({"A.class": b"x"})
    assert OutputFile.from_fields(jar.to_fields()) == jar
    for bad in (
        {},
        {**jar.to_fields(), "size": -1},
        {**jar.to_fields(), "sha256": "zz"},
        {**jar.to_fields(), "entries": [["A", 1]]},
        {**jar.to_fields(), "entries": "nope"},
        {**jar.to_fields(), "name": ""},
    ):
        with pytest.raises(BuildFailed) as caught:
            OutputFile.from_fields(bad)
        assert caught.value.reason == "malformed"


def test_a_jar_that_is_not_a_zip_has_no_entries() -> None:
    described = describe_output("broken.jar", io.BytesIO(b"not a zip"))
    assert described.entries is None and described.size == 9


def test_sandbox_argv_drops_privileges_limits_and_isolates() -> None:
    limits = SandboxLimits(processes_max=64, memory_bytes_max=1 << 32, file_bytes_max=1 << 20)
    argv = sandbox_argv(
        spec=SPEC,
        jdk=JDK,
        layout=LAYOUT,
        limits=limits,
        uid=4300,
        source_date_epoch=1704067200,
        mirror=True,
        drop_privileges=True,
    )
    assert argv[:5] == ("setpriv", "--reuid=4300", "--regid=4300", "--clear-groups", "--")
    assert "--nproc=64" in argv and f"--as={1 << 32}" in argv and f"--fsize={1 << 20}" in argv
    assert "--core=0" in argv
    bwrap = argv.index("bwrap")
    for flag in ("--unshare-all", "--die-with-parent", "--new-session", "--clearenv"):
        assert flag in argv[bwrap:]
    assert "--share-net" not in argv
    # the read-only root comes after every mount, and the only writable bind is the build's home
    remount = argv.index("--remount-ro")
    assert max(i for i, a in enumerate(argv) if a in ("--bind", "--ro-bind", "--tmpfs")) < remount
    binds = [argv[i + 1 : i + 3] for i, a in enumerate(argv) if a == "--bind"]
    assert binds == [(str(LAYOUT.home), "/build")]
    read_only = [argv[i + 1] for i, a in enumerate(argv) if a in ("--ro-bind", "--ro-bind-try")]
    assert "/etc" not in read_only and "/etc/maven" in read_only and "/etc/alternatives" in read_only
    env = {argv[i + 1]: argv[i + 2] for i, a in enumerate(argv) if a == "--setenv"}
    assert env["SOURCE_DATE_EPOCH"] == "1704067200"
    assert env["TZ"] == "America/New_York"
    assert env["JAVA_HOME"] == JDK.home
    assert "-Duser.home=/build" in env["MAVEN_OPTS"]
    # the build's argv follows the fixed inner script as arguments, never as shell text
    inner = argv.index("-c")
    assert argv[inner - 1] == "/usr/bin/bash" and argv[inner + 2 :] == ("bash", *maven_argv(SPEC))
    assert "mvn" not in argv[inner + 1]
    assert f"TCP-LISTEN:{MIRROR_PORT_INSIDE}" in argv[inner + 1] and "umask 022" in argv[inner + 1]
    assert "JAVA_TOOL_OPTIONS" not in env  # lf is the JVM's own default here


def test_crlf_sets_the_line_separator_of_every_jvm() -> None:
    crlf = dataclasses.replace(SPEC, newline="crlf")
    argv = sandbox_argv(
        spec=crlf,
        jdk=JDK,
        layout=LAYOUT,
        limits=SandboxLimits(),
        uid=4300,
        source_date_epoch=0,
        mirror=False,
        drop_privileges=True,
    )
    env = {argv[i + 1]: argv[i + 2] for i, a in enumerate(argv) if a == "--setenv"}
    assert env["JAVA_TOOL_OPTIONS"] == '-Dline.separator="\r\n"'


def test_without_root_the_uid_is_kept() -> None:
    argv = sandbox_argv(
        spec=SPEC,
        jdk=JDK,
        layout=LAYOUT,
        limits=SandboxLimits(),
        uid=1000,
        source_date_epoch=0,
        mirror=False,
        drop_privileges=False,
    )
    assert argv[0] == "prlimit" and "setpriv" not in argv


def test_only_what_a_jdk_and_maven_need_from_etc_is_visible() -> None:
    listing = [
        "java-17-openjdk",
        "java",
        "maven",
        "mavenrc",
        "pyrsia",
        "docker",
        "shadow",
        "passwd",
        "hostname",
    ]
    assert etc_visible(listing) == ("java", "java-17-openjdk", "maven", "passwd")


def test_maven_argv_puts_the_sandbox_settings_first() -> None:
    assert maven_argv(SPEC) == (
        "mvn",
        "-B",
        "-s",
        "/build/settings.xml",
        "-Dmaven.repo.local=/build/m2",
        "package",
        "-DskipTests",
    )
    assert f"http://127.0.0.1:{MIRROR_PORT_INSIDE}/maven2/" in maven_settings(mirror=True)
    assert "<mirror>" not in maven_settings(mirror=False)


def test_git_runs_without_config_prompts_or_helpers() -> None:
    env = git_environment(LAYOUT)
    assert env["GIT_ALLOW_PROTOCOL"] == "file:git:http:https"
    assert env["GIT_CONFIG_NOSYSTEM"] == "1" and env["GIT_TERMINAL_PROMPT"] == "0"
    argv = clone_argv(SPEC, LAYOUT)
    assert argv[-3:] == ("--", SPEC.git_repo, str(LAYOUT.source))
    assert argv[argv.index("--branch") : argv.index("--branch") + 2] == ("--branch", "v1.0")


LS_REMOTE = (
    "1111111111111111111111111111111111111111\trefs/heads/main\n"
    "2222222222222222222222222222222222222222\trefs/tags/v1.0\n"
    "3333333333333333333333333333333333333333\trefs/tags/v1.0^{}\n"
    "4444444444444444444444444444444444444444\trefs/tags/light\n"
    "5555555555555555555555555555555555555555\trefs/heads/release\n"
)


def test_tag_resolution() -> None:
    assert resolve_tag(LS_REMOTE, "v1.0", git_repo="r") == "3" * 40  # peeled annotated tag
    assert resolve_tag(LS_REMOTE, "light", git_repo="r") == "4" * 40
    with pytest.raises(SourceUnavailable, match="'release' is a branch, not a tag"):
        resolve_tag(LS_REMOTE, "release", git_repo="r")
    with pytest.raises(SourceUnavailable, match=r"has no tag 'v2\.0'"):
        resolve_tag(LS_REMOTE, "v2.0", git_repo="r")


@pytest.mark.parametrize(
    ("stderr", "full"),
    [
        ("fatal: write error: No space left on device\nfatal: fetch-pack: invalid index-pack output\n", True),
        ("error: unable to write file pom.xml: Disk quota exceeded\n", True),
        ("fatal: remote error: access denied or repository not exported: /x.git\n", False),
        ("fatal: early EOF\nfatal: index-pack failed\n", False),
        ("", False),
    ],
)
def test_git_saying_it_ran_out_of_space_is_told_from_other_failures(stderr: str, full: bool) -> None:
    # git removes its partial pack when a write fails: its words are what is left.
    assert said_out_of_space(stderr) is full
