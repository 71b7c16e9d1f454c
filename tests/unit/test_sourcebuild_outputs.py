"""The pure readers behind a source build's outputs and its tree checks, driven directly:
Maven's `.buildinfo` (`buildinfo.py`), the modules of a project from its poms
(`modules.py`), what a cloned tree may hold (`tree.py`), and the capped filesystem and
git settings in the sandbox plan (`plan.py`)."""

from __future__ import annotations

import hashlib
import random
from pathlib import PurePosixPath

import pytest

from pyrsia.errors import BuildFailed
from pyrsia.sourcebuild.buildinfo import (
    BUILDINFO_BYTES_MAX,
    FileFacts,
    check_buildinfo,
    parse_buildinfo,
    parse_properties,
)
from pyrsia.sourcebuild.modules import (
    POM_BYTES_MAX,
    check_unique,
    child_location,
    command_properties,
    parse_pom,
    resolve_module,
)
from pyrsia.sourcebuild.plan import (
    GIT_SAFE_CONFIG,
    SandboxLayout,
    SandboxLimits,
    clone_argv,
    git_environment,
    mkfs_argv,
    module_output_names,
    mount_argv,
    sandbox_argv,
)
from pyrsia.sourcebuild.spec import Jdk, spec_from_fields
from pyrsia.sourcebuild.tree import check_jvm_config, check_link, check_maven_config, link_escapes

JAR = b"jar bytes"
POM = b"<project/>"


def _sha512(data: bytes) -> str:
    return hashlib.sha512(data).hexdigest()


# -- .buildinfo ---------------------------------------------------------------------------

FLAT = f"""# https://reproducible-builds.org/docs/jvm/
buildinfo.version=1.0-SNAPSHOT
name=hello
group-id=com.example
java.version=17.0.15
outputs.0.filename=hello-1.0.jar
outputs.0.length={len(JAR)}
outputs.0.checksums.sha512={_sha512(JAR)}
outputs.1.filename=hello-1.0.pom
outputs.1.length={len(POM)}
outputs.1.checksums.sha512={_sha512(POM).upper()}
""".encode()

AGGREGATED = f"""outputs.0.coordinates=com.example:multi-core
outputs.0.0.groupId=com.example
outputs.0.0.filename=multi-core-2.1.pom
outputs.0.0.length={len(POM)}
outputs.0.0.checksums.sha512={_sha512(POM)}
outputs.0.1.filename=multi-core-2.1.jar
outputs.0.1.length={len(JAR)}
outputs.0.1.checksums.sha512={_sha512(JAR)}
outputs.1.coordinates=com.example:multi-app
outputs.1.0.filename=multi-app-2.1.pom
outputs.1.0.length={len(POM)}
outputs.1.0.checksums.sha512={_sha512(POM)}
""".encode()


def test_flat_buildinfo_lists_its_outputs_in_order() -> None:
    info = parse_buildinfo(FLAT)
    assert [(o.filename, o.length) for o in info.outputs] == [("hello-1.0.jar", 9), ("hello-1.0.pom", 10)]
    assert info.outputs[1].sha512 == _sha512(POM)  # upper-case hex is read as the same digest
    assert info.properties["java.version"] == "17.0.15"


def test_aggregated_buildinfo_reads_every_module() -> None:
    names = [o.filename for o in parse_buildinfo(AGGREGATED).outputs]
    assert names == ["multi-core-2.1.pom", "multi-core-2.1.jar", "multi-app-2.1.pom"]


def test_buildinfo_checks_every_listed_output() -> None:
    info = parse_buildinfo(FLAT)
    facts = {
        "hello-1.0.jar": FileFacts(length=len(JAR), sha512=_sha512(JAR)),
        "hello-1.0.pom": FileFacts(length=len(POM), sha512=_sha512(POM)),
        "hello-1.0-sources.jar": FileFacts(length=1, sha512=_sha512(b"x")),  # not listed: left to compare
    }
    assert check_buildinfo(info, facts) == ("hello-1.0.jar", "hello-1.0.pom")


@pytest.mark.parametrize(
    ("facts", "needle"),
    [
        ({"hello-1.0.pom": (len(POM), POM)}, "lists hello-1.0.jar, which the build did not produce"),
        (
            {"hello-1.0.jar": (len(JAR) + 1, JAR), "hello-1.0.pom": (len(POM), POM)},
            "says hello-1.0.jar has 9",
        ),
        ({"hello-1.0.jar": (len(JAR), b"other"), "hello-1.0.pom": (len(POM), POM)}, "another SHA-512"),
    ],
)
def test_buildinfo_names_the_first_disagreement(facts: dict[str, tuple[int, bytes]], needle: str) -> None:
    measured = {name: FileFacts(length=n, sha512=_sha512(data)) for name, (n, data) in facts.items()}
    with pytest.raises(BuildFailed) as caught:
        check_buildinfo(parse_buildinfo(FLAT), measured)
    assert caught.value.reason == "buildinfo" and needle in caught.value.message


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (b"name=hello\n", "lists no outputs"),
        (b"outputs.0.filename=a.jar\noutputs.0.length=3\n", "outputs.0 without checksums.sha512"),
        (
            b"outputs.0.filename=../a.jar\noutputs.0.length=3\noutputs.0.checksums.sha512=" + b"0" * 128,
            "not a file name",
        ),
        (
            b"outputs.0.filename=a.jar\noutputs.0.length=-3\noutputs.0.checksums.sha512=" + b"0" * 128,
            "not a byte count",
        ),
        (b"outputs.0.filename=a.jar\noutputs.0.length=3\noutputs.0.checksums.sha512=xyz", "not 128 hex"),
        (b"x" * (BUILDINFO_BYTES_MAX + 1), "larger than"),
    ],
)
def test_malformed_buildinfo_is_refused(text: bytes, needle: str) -> None:
    with pytest.raises(BuildFailed) as caught:
        parse_buildinfo(text)
    assert caught.value.reason == "buildinfo" and needle in caught.value.message


def test_java_properties_syntax() -> None:
    text = (
        b"# comment\n! also a comment\n  key1 = value one\nkey2:value2\nkey3 value3\n"
        b"long=first \\\n    second\nesc\\=aped=a\\tb\\u0041\nempty=\n"
    )
    assert parse_properties(text) == {
        "key1": "value one",
        "key2": "value2",
        "key3": "value3",
        "long": "first second",
        "esc=aped": "a\tbA",
        "empty": "",
    }


@pytest.mark.parametrize("seed", range(200))
def test_any_bytes_parse_or_refuse_cleanly(seed: int) -> None:
    rng = random.Random(seed)
    alphabet = b"outputs.0123456789filenamelengthchecksumsha512=:\\\n #!abcdef"
    data = bytes(rng.choice(alphabet) for _ in range(rng.randint(0, 400)))
    try:
        info = parse_buildinfo(data)
    except BuildFailed as exc:
        assert exc.reason == "buildinfo"
    else:
        assert all(len(o.sha512) == 128 and o.length >= 0 for o in info.outputs)


# -- poms and modules ---------------------------------------------------------------------

NS = 'xmlns="http://maven.apache.org/POM/4.0.0"'
PARENT = f"""<?xml version="1.0"?><project {NS}><modelVersion>4.0.0</modelVersion>
<groupId>com.example</groupId><artifactId>parent</artifactId><version>${{revision}}</version>
<packaging>pom</packaging><properties><revision>2.1</revision></properties>
<modules><module>core</module><module>./app/</module><module>tools/alt-pom.xml</module></modules>
<dependencies><dependency><groupId>x</groupId><artifactId>y</artifactId><version>9</version></dependency></dependencies>
</project>""".encode()
CHILD = f"""<project {NS}><parent><groupId>com.example</groupId><artifactId>parent</artifactId>
<version>${{revision}}</version></parent><artifactId>core</artifactId></project>""".encode()


def test_a_reactor_resolves_inherited_and_ci_friendly_coordinates() -> None:
    pom = parse_pom(PARENT)
    assert pom.modules == ("core", "app", "tools/alt-pom.xml") and pom.packaging == "pom"
    root = resolve_module(pom, path="", parent=None)
    assert root.gav == "com.example:parent:2.1" and not root.publishes_jar
    core = resolve_module(parse_pom(CHILD), path="core", pom_path="core/pom.xml", parent=root)
    assert core.gav == "com.example:core:2.1" and core.publishes_jar and core.file_base() == "core-2.1"
    assert child_location("", "core") == ("core", "core/pom.xml")
    assert child_location("", "tools/alt-pom.xml") == ("tools", "tools/alt-pom.xml")
    assert child_location("a", "b") == ("a/b", "a/b/pom.xml")


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"<project><modules><module>../outside</module></modules></project>", "inside the source"),
        (b"<project><modules><module>/abs</module></modules></project>", "inside the source"),
        (b'<!DOCTYPE x [<!ENTITY a "b">]><project/>', "DOCTYPE"),
        (b"<project>", "not well-formed"),
        (b"<settings/>", "not a Maven project"),
        (b"<project>" + b" " * POM_BYTES_MAX + b"</project>", "larger than"),
    ],
)
def test_bad_poms_are_refused(data: bytes, needle: str) -> None:
    with pytest.raises(BuildFailed) as caught:
        parse_pom(data)
    assert caught.value.reason == "modules" and needle in caught.value.message


def test_command_line_properties_win_over_the_poms() -> None:
    argv = ("mvn", "-Drevision=3.0", "-DskipTests", "package")
    assert command_properties(argv) == {"revision": "3.0", "skipTests": "true"}
    given = command_properties(argv)
    root = resolve_module(parse_pom(PARENT), path="", parent=None, user_properties=given)
    assert root.version == "3.0"
    core = resolve_module(parse_pom(CHILD), path="core", parent=root, user_properties=given)
    assert core.gav == "com.example:core:3.0"


def test_unresolved_or_odd_coordinates_are_refused() -> None:
    pom = parse_pom(
        b"<project><groupId>g</groupId><artifactId>a</artifactId><version>${nope}</version></project>"
    )
    with pytest.raises(BuildFailed, match="refers to a property the pom does not define"):
        resolve_module(pom, path="", parent=None)
    looping = parse_pom(
        b"<project><groupId>g</groupId><artifactId>a</artifactId><version>${a}</version>"
        b"<properties><a>${b}</a><b>${a}</b></properties></project>"
    )
    with pytest.raises(BuildFailed, match="refers to a property"):
        resolve_module(looping, path="", parent=None)
    spaced = parse_pom(
        b"<project><groupId>g h</groupId><artifactId>a</artifactId><version>1</version></project>"
    )
    with pytest.raises(BuildFailed, match="not a Maven coordinate"):
        resolve_module(spaced, path="", parent=None)


def test_two_modules_with_the_same_file_names_are_refused() -> None:
    first = resolve_module(
        parse_pom(b"<project><groupId>a</groupId><artifactId>x</artifactId><version>1</version></project>"),
        path="one",
        parent=None,
    )
    second = resolve_module(
        parse_pom(b"<project><groupId>b</groupId><artifactId>x</artifactId><version>1</version></project>"),
        path="two",
        parent=None,
    )
    with pytest.raises(BuildFailed, match="both publish x-1"):
        check_unique([first, second])


def test_module_output_names_take_classifiers_and_the_packaging() -> None:
    listing = [
        "classes",
        "core-2.1.jar",
        "core-2.1-sources.jar",
        "core-2.1-tests.jar",
        "core-2.10.jar",
        "x.jar",
    ]
    assert module_output_names(
        artifact_id="core", version="2.1", packaging="jar", target_listing=listing
    ) == (
        "core-2.1.jar",
        "core-2.1-sources.jar",
        "core-2.1-tests.jar",
    )
    assert (
        module_output_names(artifact_id="web", version="1", packaging="war", target_listing=[])[0]
        == "web-1.war"
    )


# -- the cloned tree ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("link", "target", "escapes"),
    [
        ("pom.xml", "/etc/shadow", True),
        ("a/b", "../../x", True),
        ("a/b", "../x", False),
        ("README", "docs/README.md", False),
        ("a/b", "c/../../..", True),
        ("x", "", True),
    ],
)
def test_symlinks_out_of_the_tree_escape(link: str, target: str, escapes: bool) -> None:
    assert link_escapes(link, target) is escapes
    if escapes:
        with pytest.raises(BuildFailed, match="points outside it"):
            check_link(link, target)


def test_mvn_configs_keep_ordinary_options_and_refuse_overrides() -> None:
    assert check_jvm_config(b"-Xss4m --add-opens java.base/java.lang=ALL-UNNAMED -Dfile.encoding=UTF-8\n")
    assert check_maven_config(b"-B -ntp -Drevision=2.1\n") == ("-B", "-ntp", "-Drevision=2.1")
    for text in (b"-javaagent:a.jar", b"-agentlib:jdwp=x", b"-agentpath:/x.so", b"@args", b"-Duser.home=/x"):
        with pytest.raises(BuildFailed) as caught:
            check_jvm_config(text)
        assert caught.value.reason == "source" and ".mvn/jvm.config" in caught.value.message
    for text in (b"-s x.xml", b"--settings=x.xml", b"-gs g.xml", b"-sx.xml", b"-Dmaven.repo.local=/usr"):
        with pytest.raises(BuildFailed) as caught:
            check_maven_config(text)
        assert caught.value.reason == "source" and ".mvn/maven.config may not set" in caught.value.message


# -- the plan: capped filesystem and git ---------------------------------------------------

LAYOUT = SandboxLayout(work=PurePosixPath("/var/lib/pyrsia/builds/b1"))
SPEC = spec_from_fields(
    {
        "groupId": "com.example",
        "artifactId": "hello",
        "version": "1.0",
        "gitRepo": "https://example.org/hello.git",
        "gitTag": "v1.0",
        "tool": "mvn",
        "jdk": 17,
        "command": "mvn package",
    }
)


def test_the_capped_filesystem_is_an_image_mounted_on_home() -> None:
    assert mkfs_argv(LAYOUT)[-1] == "/var/lib/pyrsia/builds/b1/home.img"
    assert mount_argv(LAYOUT) == (
        "mount", "-o", "loop,nosuid,nodev,noatime", "/var/lib/pyrsia/builds/b1/home.img",
        "/var/lib/pyrsia/builds/b1/home",
    )  # fmt: skip
    jdk = Jdk(major=17, version="17.0.15", home="/usr/lib/jvm/java-17-openjdk-amd64")
    capped, plain = (
        sandbox_argv(
            spec=SPEC, jdk=jdk, layout=LAYOUT, limits=SandboxLimits(), uid=4242, source_date_epoch=0,
            mirror=False, drop_privileges=True, tmp_in_home=in_home,
        )
        for in_home in (True, False)
    )  # fmt: skip
    assert capped[capped.index("/tmp") - 2 :][:3] == ("--bind", "/var/lib/pyrsia/builds/b1/home/.tmp", "/tmp")
    assert "--tmpfs" not in capped and "--tmpfs" in plain


def test_git_runs_without_hooks_templates_submodules_or_other_protocols() -> None:
    env = git_environment(LAYOUT, git_repo=SPEC.git_repo)
    assert env["GIT_ALLOW_PROTOCOL"] == "https"
    settings = {
        env[f"GIT_CONFIG_KEY_{n}"]: env[f"GIT_CONFIG_VALUE_{n}"] for n in range(int(env["GIT_CONFIG_COUNT"]))
    }
    assert settings == dict(GIT_SAFE_CONFIG)
    assert settings["core.hooksPath"] == "/dev/null" and settings["core.fsmonitor"] == "false"
    assert git_environment(LAYOUT, git_repo="ext::sh -c evil")["GIT_ALLOW_PROTOCOL"] == ""
    argv = clone_argv(SPEC, LAYOUT)
    assert {"--template=", "--no-recurse-submodules", "--no-local"} <= set(argv)
    assert argv.index("--") == len(argv) - 3  # the URL can never be read as an option
